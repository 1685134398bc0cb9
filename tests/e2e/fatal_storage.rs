//! A node whose fsync fails does not linger as a zombie: it exits with status 74, its
//! cluster fails over, and once restarted it rejoins with nothing acknowledged lost.
//!
//! The failure is real, not simulated in the product: `strace` attaches to the running
//! leader and makes every `fsync`/`fdatasync` return EIO (`-e inject`). The test script
//! installs strace; ptrace needs root or CAP_SYS_PTRACE, as the test command has.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{now_ms, simple_event, Cluster, ClusterOpts, Format, DATA_NODES};

/// What `tally serve` exits with when Raft stops on a fatal storage error.
const EXIT_FATAL: i32 = 74;

/// Posts batch `n` (its ids are `f-<n>-<i>`, each also its `resource`) to `node`.
async fn post_batch(cluster: &Cluster, node: u64, n: u64, ts: i64) -> (Vec<String>, bool) {
    let ids: Vec<String> = (0..5).map(|i| format!("f-{n}-{i}")).collect();
    let events: Vec<Value> = ids
        .iter()
        .map(|id| simple_event(id, ts, "Disk", id))
        .collect();
    let acked = matches!(
        cluster.api().post_events(node, Format::Array, &events).await,
        Ok(r) if r.status == 200
    );
    (ids, acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_makes_the_node_exit_and_it_rejoins_after_a_restart() {
    assert!(
        Command::new("strace").arg("-V").output().is_ok(),
        "strace is needed (scripts/test.sh installs it)"
    );
    let (mut cluster, leader) = Cluster::start_formed(ClusterOpts::key_per_event()).await;
    let follower = DATA_NODES.into_iter().find(|&n| n != leader).unwrap();
    let ts = now_ms();
    let mut attempted = BTreeSet::new();
    let mut acked = BTreeSet::new();
    let mut batch = 0;
    for _ in 0..10 {
        batch += 1;
        let (ids, ok) = post_batch(&cluster, leader, batch, ts).await;
        assert!(ok, "batch {batch} before the fault");
        attempted.extend(ids.iter().cloned());
        acked.extend(ids);
    }

    // From now on, every fsync of the leader fails.
    let pid = cluster.pid(leader).expect("leader pid");
    let mut strace = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e", "trace=fsync,fdatasync"])
        .args(["-e", "inject=fsync,fdatasync:error=EIO", "-p"])
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strace");
    // strace reports each thread it attached to; once it reports one, the process is held.
    let stderr = strace.stderr.take().unwrap();
    let (attached_tx, attached_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut told = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !told && line.contains("attached") {
                told = attached_tx.send(()).is_ok();
            }
        }
    });
    attached_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("strace did not attach within 10 s");
    eprintln!("[test] every fsync of leader {leader} (pid {pid}) now fails with EIO");

    // Writes go on through the follower, which forwards to whoever leads; the leader's
    // next fsync fails and it must exit on its own.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut exit = None;
    while Instant::now() < deadline {
        batch += 1;
        let (ids, ok) = post_batch(&cluster, follower, batch, ts).await;
        attempted.extend(ids.iter().cloned());
        if ok {
            acked.extend(ids);
        }
        if exit.is_none() {
            exit = cluster.try_reap(leader);
            if let Some(status) = exit {
                eprintln!("[test] leader {leader} exited: {status}");
            }
        }
        // Go on until the cluster acknowledges again without the old leader.
        if exit.is_some() && ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = strace.kill();
    let _ = strace.wait();
    let status = exit.unwrap_or_else(|| {
        panic!(
            "leader {leader} did not exit within 60 s after its fsyncs failed:\n{}",
            cluster.log_tail(leader, 40)
        )
    });
    assert_eq!(
        status.code(),
        Some(EXIT_FATAL),
        "exit status {status}:\n{}",
        cluster.log_tail(leader, 40)
    );
    let log = cluster.log_text(leader);
    assert!(
        log.contains("raft stopped on a fatal error"),
        "the node says why it exits:\n{}",
        cluster.log_tail(leader, 40)
    );
    let new_leader = cluster.wait_leader().await;
    assert_eq!(new_leader, follower);

    // Restarted, the node rejoins and catches up; every acknowledged event is counted
    // exactly once on both data nodes.
    cluster.restart(leader).await;
    for _ in 0..5 {
        batch += 1;
        let (ids, ok) = post_batch(&cluster, leader, batch, ts).await;
        attempted.extend(ids.iter().cloned());
        if ok {
            acked.extend(ids);
        }
    }
    cluster.assert_same_state().await;
    for node in DATA_NODES {
        let (_, rows) = cluster
            .aggregate_rows(node, "granularity=day&group_by=resource")
            .await;
        let counted: BTreeMap<String, u64> = rows
            .iter()
            .map(|r| {
                (
                    r["resource"].as_str().unwrap().to_string(),
                    r["requests"].as_u64().unwrap(),
                )
            })
            .collect();
        for id in &acked {
            assert_eq!(counted.get(id), Some(&1), "node {node}: acknowledged {id}");
        }
        for (id, n) in &counted {
            assert!(
                attempted.contains(id) && *n == 1,
                "node {node}: {id} counted {n}"
            );
        }
    }
    eprintln!(
        "[test] {} events acknowledged, {} attempted, all counted once",
        acked.len(),
        attempted.len()
    );
}
