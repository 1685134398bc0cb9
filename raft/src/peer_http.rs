//! How a node reaches its peers: plain HTTP, or HTTPS verified against the cluster's CA with
//! the node's own certificate as client identity. The one place that builds "the peer HTTP
//! client" (Raft RPC, forwarded requests, the membership probe, the start-up voter check),
//! so every path to a peer speaks the same scheme and trusts the same roots.
//!
//! Member addresses stay `host:port`: the scheme comes from here, and the peer's
//! certificate must name that host (an IP SAN for an IP address, a DNS SAN for a name).

use std::net::IpAddr;
use std::time::Duration;

/// The TLS side of peer connections: whom to trust, and who this node is.
#[derive(Clone)]
pub struct PeerTls {
    roots: Vec<reqwest::Certificate>,
    identity: reqwest::Identity,
}

impl std::fmt::Debug for PeerTls {
    // The identity holds the private key: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl PeerTls {
    /// `ca_pem`: the certificates peers must chain to; `cert_pem` and `key_pem`: this node's
    /// certificate (chain) and private key, presented to peers that ask for a client
    /// certificate.
    pub fn from_pem(
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<PeerTls, reqwest::Error> {
        let roots = reqwest::Certificate::from_pem_bundle(ca_pem)?;
        let mut identity_pem = Vec::with_capacity(cert_pem.len() + key_pem.len() + 1);
        identity_pem.extend_from_slice(key_pem);
        identity_pem.push(b'\n');
        identity_pem.extend_from_slice(cert_pem);
        let identity = reqwest::Identity::from_pem(&identity_pem)?;
        Ok(PeerTls { roots, identity })
    }
}

/// Scheme, TLS material and source address of every connection to a peer.
#[derive(Clone, Debug, Default)]
pub struct PeerHttp {
    tls: Option<PeerTls>,
    source_ip: Option<IpAddr>,
}

impl PeerHttp {
    /// `tls`: `None` for plain HTTP. `source_ip`: the local address connections are made
    /// from (`None`: the OS picks).
    pub fn new(tls: Option<PeerTls>, source_ip: Option<IpAddr>) -> PeerHttp {
        PeerHttp { tls, source_ip }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `"https"` with TLS, else `"http"`.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// The URL of `path` (with its query) on the peer at `host:port` `addr`.
    pub fn url(&self, addr: &str, path: &str) -> String {
        format!("{}://{addr}{path}", self.scheme())
    }

    /// A client builder for peers: no proxy, the source address, `connect_timeout`, and
    /// with TLS only the cluster's CA as roots, the node's identity, and HTTPS only.
    /// Callers add their own timeouts and pool settings.
    pub fn client(&self, connect_timeout: Duration) -> reqwest::ClientBuilder {
        // Never follow a redirect: the request carries the cluster secret in a header that
        // reqwest would send on to whatever host the `Location` names.
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .local_address(self.source_ip)
            .connect_timeout(connect_timeout);
        if let Some(tls) = &self.tls {
            builder = builder
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .https_only(true)
                .identity(tls.identity.clone());
            for root in &tls.roots {
                builder = builder.add_root_certificate(root.clone());
            }
        }
        builder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_peers_use_http_and_tls_peers_https() {
        let plain = PeerHttp::default();
        assert_eq!(
            plain.url("127.0.0.1:7101", "/raft/vote"),
            "http://127.0.0.1:7101/raft/vote"
        );
        assert!(plain.client(Duration::from_millis(500)).build().is_ok());
    }

    #[test]
    fn garbage_pem_is_an_error() {
        assert!(PeerTls::from_pem(b"not a pem", b"nor this", b"nor that").is_err());
    }
}
