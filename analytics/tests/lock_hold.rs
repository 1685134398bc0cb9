//! How long a snapshot or a digest keeps `apply` waiting, before and after the state became
//! copy-on-write: a bench-style measurement that prints figures (docs/benchmarks.md), not a
//! timed assertion. Run it optimized:
//!
//! ```text
//! cargo test --release -p tally-analytics --test lock_hold -- --ignored --nocapture
//! ```
//!
//! Before, the node encoded (or hashed) the whole state while holding the read lock, so an
//! apply waited for all of it. Now it holds the lock only for [`State::freeze`], and encodes
//! the copy after releasing it; the price is that the first apply after a freeze copies the
//! buckets and chunks it writes that the copy still shares.

use std::time::{Duration, Instant};

use tally_analytics::{Event, IngestBatch, KeyCaps, State};

/// 2024-05-01T12:00:00Z.
const T: i64 = 1_714_564_800_000;
const MINUTE: i64 = 60_000;

fn event(i: usize, ts_ms: i64) -> Event {
    Event {
        event_id: format!("ev-{i:08}"),
        ts_ms,
        tenant: format!("tenant{}", i % 10),
        api_name: format!("api{}", i % 37),
        api_version: "v1".into(),
        resource: Some(format!("/resource/{i}")),
        method: Some("GET".into()),
        response_code: Some(200),
        response_time_ms: Some(12),
        response_size: Some(512),
        ..Event::default()
    }
}

/// The best of `runs` timings of `f` (the least disturbed by the other work on the machine).
fn best<R>(runs: usize, mut f: impl FnMut() -> R) -> (Duration, R) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        let out = f();
        best = best.min(start.elapsed());
        last = Some(out);
    }
    (best, last.expect("at least one run"))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

#[test]
#[ignore = "a measurement: run with --release --ignored --nocapture"]
fn lock_hold_of_snapshots_and_digests() {
    // 100,000 distinct keys over the 48 hours of minutes, with the default caps: ≈ 200,000
    // rows (minute ≈ 100,000, hour ≈ 100,000, day ≈ 6,600: the caps fold the rest),
    // 100,000 remembered ids and 100,000 pending events.
    let caps = KeyCaps::default();
    let mut state = State::new();
    let keys = 100_000;
    let ingest = T + 48 * 60 * MINUTE;
    for (n, chunk) in (0..keys).collect::<Vec<_>>().chunks(5_000).enumerate() {
        let events = chunk
            .iter()
            .map(|&i| event(i, T + (i as i64 % 2_880) * MINUTE))
            .collect();
        let batch = IngestBatch {
            ingest_ms: ingest,
            requests: vec![events],
        };
        state.apply_capped(1 + n as u64, &batch, &caps);
    }
    let stats = state.stats();
    let rows = stats.buckets_minute + stats.buckets_hour + stats.buckets_day;
    println!(
        "state: {rows} rows (minute {}, hour {}, day {}), {} dedup ids, {} pending events",
        stats.buckets_minute,
        stats.buckets_hour,
        stats.buckets_day,
        stats.dedup_ids,
        state.pending_status().pending_events
    );

    let (encode, bytes) = best(5, || state.encode_snapshot());
    let (digest, _) = best(5, || state.digest());
    let (freeze, frozen) = best(20, || state.freeze());
    let (encode_copy, copy_bytes) = best(5, || frozen.encode_snapshot());
    assert_eq!(copy_bytes, bytes, "the copy encodes to the same bytes");

    // One more entry of 1,000 events into the newest minutes: once with no copy alive, once
    // right after a freeze (it then copies the buckets and chunks it writes).
    let entry = |k: usize| IngestBatch {
        ingest_ms: ingest,
        requests: vec![(0..1_000)
            .map(|i| event(keys + k * 1_000 + i, ingest - (i as i64 % 5) * MINUTE))
            .collect()],
    };
    let mut plain = Duration::MAX;
    let mut after_freeze = Duration::MAX;
    for k in 0..5 {
        let start = Instant::now();
        state.apply_capped(100 + 2 * k as u64, &entry(2 * k), &caps);
        plain = plain.min(start.elapsed());
        let held = state.freeze();
        let start = Instant::now();
        state.apply_capped(101 + 2 * k as u64, &entry(2 * k + 1), &caps);
        after_freeze = after_freeze.min(start.elapsed());
        drop(held);
    }

    println!("snapshot body: {} bytes", bytes.len());
    println!(
        "before: lock held for a snapshot (encode the state): {}",
        ms(encode)
    );
    println!(
        "before: lock held for a digest (hash the state):     {}",
        ms(digest)
    );
    println!(
        "after:  lock held for either (freeze the state):      {}",
        ms(freeze)
    );
    println!(
        "after:  encoding the frozen copy, outside the lock:   {}",
        ms(encode_copy)
    );
    println!(
        "apply of 1,000 events: {} alone, {} right after a freeze",
        ms(plain),
        ms(after_freeze)
    );
}
