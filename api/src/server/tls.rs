//! The node's TLS identity, read once at start: the server side (rustls, ring provider) and
//! the peer side ([`PeerTls`]) from the same files. Certificates are not reloaded: replacing
//! them takes a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tally_raft::PeerTls;

/// The `[tls]` section: PEM files and whether peers must show a client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate (then any intermediates), PEM.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key: PathBuf,
    /// The CA (one or more certificates) that peers' certificates chain to, PEM.
    pub ca: PathBuf,
    /// `/raft/*` and forwarded requests need a client certificate that chains to `ca`.
    pub peer_client_auth: bool,
}

/// What a node serves TLS with.
#[derive(Clone)]
pub struct TlsServer {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    pub(crate) peer_client_auth: bool,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("peer_client_auth", &self.peer_client_auth)
            .finish_non_exhaustive()
    }
}

/// Why the TLS files cannot make a server (the message names the file and the fix).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.{key} = {path}: cannot read it: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tls.{key} = {path}: {why}")]
    Invalid {
        key: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("tls: {0}")]
    Config(String),
}

/// The crypto provider of every TLS config Tally builds (reqwest's rustls uses ring too).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(
    key: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |why: String| TlsError::Invalid {
        key,
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

impl TlsFiles {
    /// Reads and checks the files: the certificate and key parse and match, the CA parses,
    /// and with `peer_client_auth` the node's own certificate is one its peers accept as a
    /// client certificate (it chains to `ca` and allows client authentication).
    pub fn load(&self) -> Result<(TlsServer, PeerTls), TlsError> {
        let cert_pem = read("cert", &self.cert)?;
        let key_pem = read("key", &self.key)?;
        let ca_pem = read("ca", &self.ca)?;
        let chain = certificates("cert", &self.cert, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Invalid {
            key: "key",
            path: self.key.clone(),
            why: format!("not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        })?;
        let mut roots = RootCertStore::empty();
        for ca in certificates("ca", &self.ca, &ca_pem)? {
            roots.add(ca).map_err(|e| TlsError::Invalid {
                key: "ca",
                path: self.ca.clone(),
                why: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let roots = Arc::new(roots);
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = if self.peer_client_auth {
            // Other clients need no certificate; a presented one must chain to the CA. The
            // accept loop then requires one on peer routes.
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
            verifier
                .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
                .map_err(|e| TlsError::Invalid {
                    key: "cert",
                    path: self.cert.clone(),
                    why: format!(
                        "peers would refuse it as this node's client certificate ({e}): with \
                         peer_client_auth it must chain to tls.ca, be valid now and allow \
                         client authentication (extendedKeyUsage serverAuth, clientAuth)"
                    ),
                })?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Invalid {
                key: "key",
                path: self.key.clone(),
                why: format!("does not go with tls.cert {}: {e}", self.cert.display()),
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let peer = PeerTls::from_pem(&ca_pem, &cert_pem, &key_pem).map_err(|e| {
            TlsError::Config(format!(
                "peer client identity from tls.cert and tls.key: {e}"
            ))
        })?;
        Ok((
            TlsServer {
                acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
                peer_client_auth: self.peer_client_auth,
            },
            peer,
        ))
    }
}
