//! Slow clients cannot starve the node: 2,000 connections to the leader that send half a
//! request head or nothing at all (and reconnect when the server closes them) while a writer
//! posts events for 10 s, against a leader with `http.max_connections = 200` and a 1 s
//! header read timeout.
//!
//! Writes of a keep-alive client continue (each answered 200, or 503 with `Retry-After`,
//! within its deadline), no
//! election happens (the term stays), the leader's open descriptors stay under its
//! connection limit plus its reserve, the server itself closes the slow connections
//! (eviction at the limit, then the header timeout), and once the flood stops every slow
//! connection still open is closed by the header timeout. Then a body that stops halfway
//! gets 408 at the body deadline, and a served keep-alive connection lives past the header
//! timeout until the idle timeout closes it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{now_ms, simple_event, Cluster, ClusterOpts, Format};

const SLOW_CLIENTS: usize = 2_000;
const MAX_CONNECTIONS: u64 = 200;
const HEADER_READ_TIMEOUT_MS: u64 = 1_000;
const IDLE_TIMEOUT_MS: u64 = 3_000;
const BODY_READ_TIMEOUT_MS: u64 = 1_500;
const FLOOD: Duration = Duration::from_secs(10);
/// A slow client waits this long before it reconnects after the server closed it.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);
/// The node's descriptors beyond its connections (`FD_RESERVE` in src/fds.rs).
const NODE_FD_RESERVE: u64 = 256;

/// Raises this process's soft RLIMIT_NOFILE to its hard limit; the test needs a descriptor
/// per slow client.
fn raise_own_fd_limit(needed: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= needed,
        "this test opens {needed} descriptors, but RLIMIT_NOFILE's hard limit is {}",
        lim.rlim_cur
    );
}

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// Whether the server closed `stream` (EOF or reset) before `deadline`.
async fn closed_before(stream: &mut TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut buf = [0u8; 256];
    // Bounded: each read either ends the loop or returns bytes, at most a few times.
    for _ in 0..16 {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
    false
}

#[derive(Default)]
struct FloodReport {
    connects: AtomicU64,
    connect_errors: AtomicU64,
    /// Connections the server closed while the flood ran.
    closed_by_server: AtomicU64,
}

/// One slow client: connects, sends half a head (or nothing), waits for the server to
/// close it, pauses, reconnects; until the flood stops. Returns the connection open then.
async fn slow_client(
    addr: String,
    half_a_head: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
    report: Arc<FloodReport>,
) -> Option<TcpStream> {
    // Bounded by the stop (sent after FLOOD) and by the iteration count.
    for _ in 0..1_000 {
        if *stop.borrow() {
            return None;
        }
        let mut stream = match TcpStream::connect(&addr).await {
            Ok(s) => s,
            Err(_) => {
                report.connect_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        report.connects.fetch_add(1, Ordering::Relaxed);
        if half_a_head {
            let _ = stream
                .write_all(b"POST /v1/events HTTP/1.1\r\nHost: tally\r\nContent-Ty")
                .await;
        }
        // Hold it until the server closes it or the flood ends.
        let mut buf = [0u8; 256];
        tokio::select! {
            _ = stream.read(&mut buf) => {
                report.closed_by_server.fetch_add(1, Ordering::Relaxed);
            }
            _ = stop.wait_for(|s| *s) => return Some(stream),
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
    None
}

/// `e` and its sources, joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(&format!(": {s}"));
        next = s.source();
    }
    out
}

/// CPU time (user + system) of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    n(11) + n(12)
}

#[derive(Default, Debug)]
struct WriterReport {
    acked: u64,
    unavailable: u64,
    /// Anything else: other statuses, 503 without Retry-After, transport errors, timeouts.
    unexpected: Vec<String>,
}

async fn writer(
    cluster_api: crate::common::Api,
    leader: u64,
    stop: Arc<AtomicBool>,
) -> WriterReport {
    let mut report = WriterReport::default();
    let ts = now_ms();
    // Bounded by `stop` and by the count.
    for seq in 0..10_000u64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let events: Vec<Value> = (0..5)
            .map(|k| simple_event(&format!("slow-{seq}-{k}"), ts, "SlowClients", "/r"))
            .collect();
        let started = Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            cluster_api.post_events(leader, Format::Array, &events),
        )
        .await;
        match answer {
            Ok(Ok(r)) if r.status == 200 => report.acked += 1,
            Ok(Ok(r)) if r.status == 503 && r.retry_after.is_some() => report.unavailable += 1,
            Ok(Ok(r)) => report.unexpected.push(format!("batch {seq}: {r:?}")),
            Ok(Err(e)) => report
                .unexpected
                .push(format!("batch {seq}: {}", error_chain(&e))),
            Err(_) => report.unexpected.push(format!(
                "batch {seq}: no answer within {:?}",
                started.elapsed()
            )),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_starve_writes_or_raft() {
    raise_own_fd_limit(SLOW_CLIENTS as u64 + 500);
    let opts = ClusterOpts {
        http: vec![
            ("max_connections", MAX_CONNECTIONS),
            ("header_read_timeout_ms", HEADER_READ_TIMEOUT_MS),
            ("idle_timeout_ms", IDLE_TIMEOUT_MS),
            ("body_read_timeout_ms", BODY_READ_TIMEOUT_MS),
        ],
        ..Default::default()
    };
    let (cluster, leader) = Cluster::start_formed(opts).await;
    let pid = cluster.harness().pid(leader).expect("leader pid");
    let before = cluster.status(leader).await.unwrap();
    let fds_before = open_fds(pid);

    let (stop_flood, flood_stopped) = tokio::sync::watch::channel(false);
    let stop_writer = Arc::new(AtomicBool::new(false));
    // The writer is a keep-alive client, like a gateway: its connection is open and has been
    // served before the flood begins.
    let warm_up = [simple_event("warm-up", now_ms(), "SlowClients", "/r")];
    let r = cluster
        .api()
        .post_events(leader, Format::Object, &warm_up)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let flood = Arc::new(FloodReport::default());
    let writer = tokio::spawn(writer(cluster.api(), leader, stop_writer.clone()));
    let clients: Vec<_> = (0..SLOW_CLIENTS)
        .map(|i| {
            tokio::spawn(slow_client(
                cluster.addr(leader).to_string(),
                i % 2 == 0,
                flood_stopped.clone(),
                flood.clone(),
            ))
        })
        .collect();

    // While the flood runs: the leader's descriptors stay bounded.
    let started = Instant::now();
    let (leader_cpu, own_cpu) = (cpu_ticks(pid), cpu_ticks(std::process::id()));
    let mut max_fds = 0;
    while started.elapsed() < FLOOD {
        max_fds = max_fds.max(open_fds(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_writer.store(true, Ordering::Relaxed);
    let writes = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the writer stops")
        .expect("writer task");
    // The flood stops; the connections open at that moment are held, silent.
    stop_flood.send_replace(true);
    let mut held = Vec::new();
    for c in clients {
        if let Some(s) = tokio::time::timeout(Duration::from_secs(30), c)
            .await
            .expect("a slow client stops")
            .expect("slow client task")
        {
            held.push(s);
        }
    }
    let after = cluster.status(leader).await.unwrap();
    eprintln!(
        "CPU ticks during the flood: leader {}, test process {}",
        cpu_ticks(pid) - leader_cpu,
        cpu_ticks(std::process::id()) - own_cpu
    );
    eprintln!(
        "flood: {} connects ({} failed), {} closed by the server; {} held at the end; \
         leader fds {fds_before} before, at most {max_fds} during; writer {writes:?}",
        flood.connects.load(Ordering::Relaxed),
        flood.connect_errors.load(Ordering::Relaxed),
        flood.closed_by_server.load(Ordering::Relaxed),
        held.len(),
    );

    assert!(
        writes.unexpected.is_empty(),
        "writes: {:#?}",
        writes.unexpected
    );
    assert!(
        writes.acked >= 20 && writes.acked >= 4 * writes.unavailable,
        "writes did not continue: {writes:?}"
    );
    assert_eq!(
        after.term, before.term,
        "an election happened during the flood"
    );
    assert_eq!(after.leader_id, Some(leader));
    assert!(
        max_fds <= MAX_CONNECTIONS + NODE_FD_RESERVE,
        "the leader held {max_fds} descriptors (limit {MAX_CONNECTIONS} connections + {NODE_FD_RESERVE})"
    );
    let connects = flood.connects.load(Ordering::Relaxed);
    assert!(
        connects >= SLOW_CLIENTS as u64,
        "the flood connected only {connects} times"
    );
    // Every slow connection but those held at the end was closed by the server (a slow
    // client never gives up on its own).
    assert_eq!(
        flood.closed_by_server.load(Ordering::Relaxed),
        connects - held.len() as u64,
        "slow connections ended otherwise than by the server closing them"
    );
    // The connections still open when the flood stopped are closed by the header timeout.
    let within = Duration::from_millis(HEADER_READ_TIMEOUT_MS) + Duration::from_secs(3);
    let deadline = tokio::time::Instant::now() + within;
    let mut still_open = 0;
    for s in held.iter_mut() {
        if !closed_before(s, deadline).await {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "slow connections the server did not close within {within:?}"
    );

    // A body that stops halfway gets a 408 once the body deadline passes, then the close.
    let addr = cluster.addr(leader).to_string();
    let mut slow_body = TcpStream::connect(&addr).await.unwrap();
    slow_body
        .write_all(
            b"POST /v1/events HTTP/1.1\r\nHost: tally\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n[{\"event_id\": ",
        )
        .await
        .unwrap();
    let sent = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(
        Duration::from_millis(BODY_READ_TIMEOUT_MS) + Duration::from_secs(5),
        slow_body.read_to_end(&mut answer),
    )
    .await
    .expect("the slow body got no answer and no close")
    .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("body_timeout"),
        "{answer}"
    );
    assert!(sent.elapsed() >= Duration::from_millis(BODY_READ_TIMEOUT_MS - 100));

    // A served keep-alive connection outlives the header timeout while idle, and is closed
    // by the idle timeout.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: tally\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("healthz answers")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let served = tokio::time::Instant::now();
    let early = served + Duration::from_millis(IDLE_TIMEOUT_MS - 500);
    assert!(
        !closed_before(&mut idle, early).await,
        "an idle keep-alive connection was closed before the idle timeout"
    );
    let late = served + Duration::from_millis(IDLE_TIMEOUT_MS) + Duration::from_secs(3);
    assert!(
        closed_before(&mut idle, late).await,
        "an idle keep-alive connection outlived the idle timeout"
    );

    // And the node is fine.
    let r = cluster
        .api()
        .post_events(
            leader,
            Format::Object,
            &[simple_event("after-flood", now_ms(), "SlowClients", "/r")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
}
