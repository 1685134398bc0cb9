//! A throwaway certificate authority for TLS tests: a CA and the certificates it issues,
//! made with `rcgen` and written as PEM files a node's `[tls]` section (or a client) reads.
//! ECDSA P-256 keys, rcgen's default validity (1975 to 4096).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A CA that can issue certificates.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Where [`Issued::write`] put the files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Result<TestCa> {
        let key = KeyPair::generate().context("CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).context("CA certificate")?;
        Ok(TestCa { cert, key })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes the CA certificate to `path`.
    pub fn write_cert(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.cert_pem()).with_context(|| format!("writing {}", path.display()))
    }

    /// A certificate for `name` valid for server and client authentication, with `sans` as
    /// subject alternative names (IP addresses become IP SANs, anything else DNS names).
    pub fn issue(&self, name: &str, sans: &[&str]) -> Result<Issued> {
        let key = KeyPair::generate().context("key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        for san in sans {
            params.subject_alt_names.push(match san.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*san).try_into()?),
            });
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .with_context(|| format!("certificate for {name}"))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Issued {
    /// Writes `<stem>.crt` and `<stem>.key` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<CertFiles> {
        let files = CertFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, &self.cert_pem)
            .with_context(|| format!("writing {}", files.cert.display()))?;
        std::fs::write(&files.key, &self.key_pem)
            .with_context(|| format!("writing {}", files.key.display()))?;
        Ok(files)
    }

    /// Key and certificate in one PEM, as `reqwest::Identity::from_pem` takes them.
    pub fn identity_pem(&self) -> String {
        format!("{}\n{}", self.key_pem, self.cert_pem)
    }
}
