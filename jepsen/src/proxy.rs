//! Network partitions without root: every node is reached by its peers through a TCP proxy
//! the harness owns, and every node makes its outbound peer connections from its own
//! loopback address (`tally serve --source-ip`). The proxy in front of node `d` therefore
//! knows, for each connection, which node `s` it comes from, and can cut the link `s → d`.
//!
//! A cut link behaves like a real partition, not like a refused port: new connections are
//! accepted and then get no answer (the caller times out), and connections already open
//! stop moving bytes. When the link heals, the stalled connections are closed so callers
//! reconnect. Clients of the workload talk to the nodes directly and are never cut.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A stalled connection on a cut link is closed after this long even if the link stays cut.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// The loopback address node `id` connects to its peers from.
pub fn source_ip(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 77, 0, id as u8))
}

fn node_of(ip: IpAddr, ids: &BTreeSet<u64>) -> Option<u64> {
    ids.iter().copied().find(|id| source_ip(*id) == ip)
}

/// The set of cut links, `(from, to)`.
#[derive(Default)]
struct Cuts {
    links: BTreeSet<(u64, u64)>,
}

pub struct Proxies {
    cuts: Arc<Mutex<Cuts>>,
    generation: watch::Sender<u64>,
    tasks: Vec<JoinHandle<()>>,
    /// Proxy address per node (what the cluster knows it by).
    addrs: BTreeMap<u64, String>,
}

impl Proxies {
    /// Starts one proxy per node: `targets` maps node id → the address it really listens
    /// on; the result maps node id → the proxy address peers must use.
    pub async fn start(targets: &BTreeMap<u64, String>) -> Result<Proxies> {
        let cuts = Arc::new(Mutex::new(Cuts::default()));
        let (generation, _) = watch::channel(0u64);
        let ids: BTreeSet<u64> = targets.keys().copied().collect();
        let mut tasks = Vec::new();
        let mut addrs = BTreeMap::new();
        for (&dst, target) in targets {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding a proxy port on 127.0.0.1")?;
            let local = listener.local_addr()?;
            addrs.insert(dst, local.to_string());
            let target: SocketAddr = target
                .parse()
                .with_context(|| format!("node address {target:?}"))?;
            let cuts = cuts.clone();
            let rx = generation.subscribe();
            let ids = ids.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((inbound, peer)) = listener.accept().await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let src = node_of(peer.ip(), &ids);
                    let link = src.map(|s| (s, dst));
                    tokio::spawn(relay(inbound, target, link, cuts.clone(), rx.clone()));
                }
            }));
        }
        Ok(Proxies {
            cuts,
            generation,
            tasks,
            addrs,
        })
    }

    pub fn addrs(&self) -> &BTreeMap<u64, String> {
        &self.addrs
    }

    /// Cuts both directions between every node in `a` and every node in `b`.
    pub fn cut_between(&self, a: &[u64], b: &[u64]) {
        {
            let mut cuts = self.cuts.lock().unwrap_or_else(|e| e.into_inner());
            for &x in a {
                for &y in b {
                    if x != y {
                        cuts.links.insert((x, y));
                        cuts.links.insert((y, x));
                    }
                }
            }
        }
        self.generation.send_modify(|g| *g += 1);
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.cuts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .links
            .clear();
        self.generation.send_modify(|g| *g += 1);
    }

    /// The links currently cut.
    pub fn cut_links(&self) -> Vec<(u64, u64)> {
        let cuts = self.cuts.lock().unwrap_or_else(|e| e.into_inner());
        cuts.links.iter().copied().collect()
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn is_cut(cuts: &Mutex<Cuts>, link: Option<(u64, u64)>) -> bool {
    link.is_some_and(|l| {
        cuts.lock()
            .unwrap_or_else(|e| e.into_inner())
            .links
            .contains(&l)
    })
}

/// Holds `conns` silent until the link is no longer cut, [`STALL_LIMIT`] passes, or a peer
/// closes its end. Bytes that arrive meanwhile are dropped, as a partition drops packets.
async fn stall_while_cut(
    cuts: &Mutex<Cuts>,
    link: Option<(u64, u64)>,
    rx: &mut watch::Receiver<u64>,
    conns: &mut [&mut TcpStream],
) {
    let healed = async {
        while is_cut(cuts, link) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    let closed = futures::future::select_all(conns.iter_mut().map(|c| Box::pin(drain(c))));
    tokio::select! {
        _ = tokio::time::timeout(STALL_LIMIT, healed) => {}
        _ = closed => {}
    }
}

/// Reads and discards until the peer closes or errs.
async fn drain(conn: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = tokio::io::AsyncReadExt::read(conn, &mut buf).await {
        if n == 0 {
            return;
        }
    }
}

async fn relay(
    mut inbound: TcpStream,
    target: SocketAddr,
    link: Option<(u64, u64)>,
    cuts: Arc<Mutex<Cuts>>,
    mut rx: watch::Receiver<u64>,
) {
    rx.mark_unchanged();
    if is_cut(&cuts, link) {
        // Accepted, never answered: the caller sees a timeout, as across a real partition.
        stall_while_cut(&cuts, link, &mut rx, &mut [&mut inbound]).await;
        return;
    }
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let cut_now = async {
        loop {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if is_cut(&cuts, link) {
                return;
            }
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = cut_now => {
            // Hold both ends silent until the link heals, then drop them.
            stall_while_cut(&cuts, link, &mut rx, &mut [&mut inbound, &mut outbound]).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(from: u64, to: &str) -> bool {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(source_ip(from), 0)).unwrap();
        let Ok(mut s) = sock.connect(to.parse().unwrap()).await else {
            return false;
        };
        if s.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        matches!(
            tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) && &buf == b"ping"
    }

    #[tokio::test]
    async fn cuts_only_the_chosen_links_and_heals() {
        let mut targets = BTreeMap::new();
        for id in 1..=3 {
            targets.insert(id, echo_server().await);
        }
        let proxies = Proxies::start(&targets).await.unwrap();
        let to2 = proxies.addrs()[&2].clone();
        let to3 = proxies.addrs()[&3].clone();
        assert!(roundtrip(1, &to2).await);
        proxies.cut_between(&[1], &[2]);
        assert!(!roundtrip(1, &to2).await, "1 → 2 must be cut");
        assert!(roundtrip(1, &to3).await, "1 → 3 must still work");
        assert!(roundtrip(3, &to2).await, "3 → 2 must still work");
        assert_eq!(proxies.cut_links(), vec![(1, 2), (2, 1)]);
        proxies.heal();
        assert!(roundtrip(1, &to2).await, "healed");
    }

    #[tokio::test]
    async fn an_open_connection_stalls_when_its_link_is_cut() {
        let mut targets = BTreeMap::new();
        targets.insert(1, echo_server().await);
        targets.insert(2, echo_server().await);
        let proxies = Proxies::start(&targets).await.unwrap();
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(source_ip(1), 0)).unwrap();
        let mut s = sock
            .connect(proxies.addrs()[&2].parse().unwrap())
            .await
            .unwrap();
        let mut buf = [0u8; 2];
        s.write_all(b"a1").await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        proxies.cut_between(&[2], &[1]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.write_all(b"a2").await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut buf)).await;
        assert!(r.is_err(), "bytes crossed a cut link: {r:?}");
    }
}
