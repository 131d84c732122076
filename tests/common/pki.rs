//! Certificates made inside a test: root CA -> intermediate CA -> leaf for `localhost` and
//! `127.0.0.1`.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::scratch_dir;

pub struct TestPki {
    /// The root CA a client (or `--backend-ca`) trusts.
    pub root_pem: String,
    /// The leaf, then the intermediate: what a server presents.
    pub chain_pem: String,
    /// The leaf's private key.
    pub key_pem: String,
}

/// [`TestPki`] written to files, for `--cert`, `--key` and `--backend-ca`.
pub struct PkiFiles {
    pub chain: PathBuf,
    pub key: PathBuf,
    pub root: PathBuf,
}

impl TestPki {
    pub fn new() -> TestPki {
        let ca_params = || {
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p
        };
        let root = CertifiedIssuer::self_signed(ca_params(), key_pair()).expect("root CA");
        let intermediate =
            CertifiedIssuer::signed_by(ca_params(), key_pair(), &root).expect("intermediate CA");
        let leaf_key = key_pair();
        let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf params")
            .signed_by(&leaf_key, &intermediate)
            .expect("leaf");
        TestPki {
            root_pem: root.pem(),
            chain_pem: format!("{}{}", leaf.pem(), intermediate.pem()),
            key_pem: leaf_key.serialize_pem(),
        }
    }

    /// The chain, for a rustls server.
    pub fn chain_der(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain PEM")
    }

    /// The leaf's key, for a rustls server.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key PEM")
    }

    /// The root, for a rustls client.
    pub fn root_der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.root_pem.as_bytes()).expect("root PEM")
    }

    /// Writes chain, key and root to a fresh scratch directory named after `name`.
    pub fn write(&self, name: &str) -> PkiFiles {
        let dir = scratch_dir(name);
        let files = PkiFiles {
            chain: dir.join("chain.pem"),
            key: dir.join("key.pem"),
            root: dir.join("root.pem"),
        };
        std::fs::write(&files.chain, &self.chain_pem).expect("write chain.pem");
        std::fs::write(&files.key, &self.key_pem).expect("write key.pem");
        std::fs::write(&files.root, &self.root_pem).expect("write root.pem");
        files
    }
}

impl PkiFiles {
    /// `--cert {chain} --key {key}`, for a bridge serving TLS.
    pub fn tls_flags(&self) -> [&str; 4] {
        [
            "--cert",
            self.chain.to_str().expect("UTF-8 path"),
            "--key",
            self.key.to_str().expect("UTF-8 path"),
        ]
    }
}

fn key_pair() -> KeyPair {
    KeyPair::generate().expect("key pair")
}
