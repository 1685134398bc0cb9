//! What one aggregate row (bucket × key) really costs in memory, measured rather than
//! estimated: the figure behind the default row budget and the worst cases in
//! docs/operations.md. This file holds one test so that the counting allocator sees only
//! its allocations.
//!
//! Bytes are counted as glibc's malloc lays them out (each block rounded up to 16 bytes
//! with an 8-byte header, 32 at least), so the figure includes allocator overhead, not only
//! what the program asked for.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use tally_analytics::{Event, IngestBatch, KeyCaps, State};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// The size of the block glibc's malloc hands out for a request of `size` bytes.
fn block(size: usize) -> isize {
    ((size + 8 + 15) & !15).max(32) as isize
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(block(layout.size()), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(block(layout.size()), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(block(new_size) - block(layout.size()), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes per row with short key fields (what the defaults are sized by); the measurement
/// must stay under it, so the documented figure stays true.
const SHORT_ROW_BYTES: usize = 600;
/// Bytes per row with every key field at its validated length limit (2,880 characters).
const LONG_ROW_BYTES: usize = 3_500;

/// 2024-05-01T12:00:00Z.
const T: i64 = 1_714_564_800_000;

/// Live heap bytes per row of a state holding `keys` distinct keys spread over 400 minute
/// buckets (so at every granularity: 3 × `keys` rows), with the dedup window and pending
/// queue emptied so only the aggregates remain.
fn bytes_per_row(keys: usize, field: impl Fn(&str, usize, usize) -> String) -> usize {
    let mut state = State::new();
    let before = LIVE.load(Ordering::Relaxed);
    let events: Vec<Event> = (0..keys)
        .map(|i| Event {
            event_id: format!("e-{i}"),
            ts_ms: T + (i % 400) as i64 * 60_000,
            tenant: field("t", i % 7, 256),
            api_name: field("api", i % 11, 256),
            api_version: field("v", i % 3, 64),
            application_id: Some(field("app", i % 5, 256)),
            resource: Some(field("/r", i, 1024)),
            method: Some(field("GET", i % 4, 1024)),
            response_code: Some(200),
            response_time_ms: Some(5),
            ..Event::default()
        })
        .collect();
    for (n, chunk) in events.chunks(5_000).enumerate() {
        let batch = IngestBatch {
            ingest_ms: T + 30 * 60_000,
            requests: vec![chunk.to_vec()],
        };
        state.apply_capped(1 + n as u64, &batch, &KeyCaps::UNLIMITED);
    }
    drop(events);
    // Drain the pending queue and let the dedup window expire (2 h of ingest time later;
    // the minute buckets are kept 48 h).
    state.advance_sink(100, 99);
    state.apply(
        101,
        &IngestBatch {
            ingest_ms: T + 3 * 3_600_000,
            requests: vec![],
        },
    );
    let stats = state.stats();
    assert_eq!(stats.dedup_ids, 0);
    assert_eq!(state.pending_status().pending_events, 0);
    let rows = stats.buckets_minute + stats.buckets_hour + stats.buckets_day;
    assert_eq!(rows, 3 * keys);
    let live = LIVE.load(Ordering::Relaxed) - before;
    drop(state);
    live as usize / rows
}

#[test]
fn an_aggregate_row_costs_what_the_docs_say() {
    // Short fields: "t3", "api7", "v1", "app2", "/r12345", "GET1".
    let short = bytes_per_row(60_000, |prefix, n, _| format!("{prefix}{n}"));
    // Every field at its limit (distinct per key, as a hostile client would post them).
    let long = bytes_per_row(6_000, |prefix, n, max| {
        let mut s = format!("{prefix}{n}-");
        s.extend(std::iter::repeat_n('x', max - s.len()));
        s
    });
    println!("bytes per aggregate row: {short} with short fields, {long} at the field limits");
    assert!(
        short <= SHORT_ROW_BYTES,
        "{short} B per row with short fields"
    );
    assert!(
        long <= LONG_ROW_BYTES,
        "{long} B per row at the field limits"
    );
    // Not so far under that the documented figure means nothing.
    assert!(
        short * 2 > SHORT_ROW_BYTES,
        "{short} B: update the documented figure"
    );
}
