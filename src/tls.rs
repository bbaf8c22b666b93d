//! TLS material for the QUIC endpoint: configured PEM files, or a development CA and server
//! certificate generated on first start and reused afterwards.
//!
//! Layout of the generated material (all under `<data-dir>/tls/`, every file mode 0600, the
//! directory 0700, written through `sys::fs`):
//!
//! | file | what | who needs it |
//! |---|---|---|
//! | `ca.pem` | self-signed development CA certificate | devices: the file they trust |
//! | `server.pem` | server certificate signed by the CA, SANs from `tls.server_names` | the server |
//! | `server.key` | the server's private key | the server |
//!
//! The CA's private key is never written anywhere: it signs the server certificate once and
//! is dropped, so nothing at rest can issue further certificates devices would trust. To
//! re-issue, delete the directory (a new CA is made; devices must trust the new `ca.pem`).
//!
//! Files are written atomically ([`sys::fs::write_atomic`]) and `server.pem` last, so a crash
//! during first start leaves either complete material or none that is used: a directory
//! without `server.pem` is generated afresh.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sys::fs::{Fs, create_dir_durable, read_optional, write_atomic};

/// TLS material ready for [`ingest::endpoint::server_config`].
#[derive(Debug)]
pub struct TlsMaterial {
    /// Server certificate chain (leaf first).
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// Server private key.
    pub key: PrivateKeyDer<'static>,
    /// The CA file devices should trust (generated mode), if known.
    pub ca_path: Option<PathBuf>,
    /// Whether the material was generated during this start.
    pub generated: bool,
}

/// TLS material could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// A PEM file held no usable certificate or key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Generating a certificate failed.
    #[error("generating the development certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// Only one of `tls.cert_path` / `tls.key_path` was set.
    #[error("tls.cert_path and tls.key_path must be set together")]
    HalfConfigured,
}

/// Loads a configured certificate chain and key.
///
/// # Errors
/// [`TlsError`] naming the file that could not be read or parsed.
pub fn load(fs: &dyn Fs, cert_path: &Path, key_path: &Path) -> Result<TlsMaterial, TlsError> {
    let cert_pem = read(fs, cert_path)?;
    let cert_chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path.into(),
            reason: e.to_string(),
        })?;
    if cert_chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert_path.into(),
            reason: "no certificate found".into(),
        });
    }
    let key_pem = read(fs, key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: key_path.into(),
        reason: e.to_string(),
    })?;
    Ok(TlsMaterial {
        cert_chain,
        key,
        ca_path: None,
        generated: false,
    })
}

/// Loads the development material from `dir`, generating it on first use.
///
/// # Errors
/// [`TlsError`] when files cannot be read, written or parsed.
pub fn load_or_generate_dev(
    fs: &dyn Fs,
    dir: &Path,
    server_names: &[String],
) -> Result<TlsMaterial, TlsError> {
    let ca_pem = dir.join("ca.pem");
    let server_pem = dir.join("server.pem");
    let server_key = dir.join("server.key");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    // server.pem is written last: its presence marks the material complete.
    if read_optional(fs, &server_pem)
        .map_err(io(&server_pem))?
        .is_some()
    {
        let mut m = load(fs, &server_pem, &server_key)?;
        m.ca_path = Some(ca_pem);
        return Ok(m);
    }
    let (parent, name) = match (dir.parent(), dir.file_name()) {
        (Some(p), Some(n)) => (p, Path::new(n)),
        _ => (Path::new("."), dir),
    };
    create_dir_durable(fs, parent, name).map_err(io(dir))?;

    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hexflow development CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);

    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(server_names.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hexflow server");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;

    // The CA key goes out of scope here, unwritten (see the module doc).
    write_atomic(fs, &ca_pem, ca_cert.pem().as_bytes()).map_err(io(&ca_pem))?;
    write_atomic(fs, &server_key, key.serialize_pem().as_bytes()).map_err(io(&server_key))?;
    // Written last: its presence marks the material complete.
    write_atomic(fs, &server_pem, cert.pem().as_bytes()).map_err(io(&server_pem))?;
    let mut m = load(fs, &server_pem, &server_key)?;
    m.ca_path = Some(ca_pem);
    m.generated = true;
    Ok(m)
}

fn read(fs: &dyn Fs, path: &Path) -> Result<Vec<u8>, TlsError> {
    fs.read(path).map_err(|source| TlsError::Io {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let fs = sys::fs::RealFs;
        std::fs::create_dir_all(dir.path()).unwrap();
        let first = load_or_generate_dev(&fs, &tls, &["localhost".into()]).unwrap();
        assert!(first.generated);
        assert!(tls.join("ca.pem").exists());
        assert!(!tls.join("ca.key").exists(), "the CA key is never stored");
        let second = load_or_generate_dev(&fs, &tls, &["localhost".into()]).unwrap();
        assert!(!second.generated);
        assert_eq!(first.cert_chain, second.cert_chain, "reused, not re-issued");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tls.join("server.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn unreadable_pem_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, b"not a pem").unwrap();
        let err = load(&sys::fs::RealFs, &cert, &cert).unwrap_err();
        assert!(err.to_string().contains("c.pem"), "{err}");
    }

    #[test]
    fn a_crash_at_any_operation_of_first_start_never_leaves_unusable_material() {
        use sys::fs::Fs as _;
        use sys::sim::SimFs;
        let names = ["localhost".to_string()];
        let dir = Path::new("/data/tls");
        let probe = SimFs::new();
        probe.create_dir_all(Path::new("/data")).unwrap();
        probe.sync_dir(Path::new("/")).unwrap();
        let base = probe.ops();
        load_or_generate_dev(&probe, dir, &names).unwrap();
        let total = probe.ops() - base;
        assert!(
            total >= 9,
            "three atomic writes and a directory: {total} ops"
        );
        for crash_at in 0..total {
            for seed in 0..4 {
                let fs = SimFs::new();
                fs.create_dir_all(Path::new("/data")).unwrap();
                fs.sync_dir(Path::new("/")).unwrap();
                fs.crash_at_op(fs.ops() + crash_at);
                assert!(load_or_generate_dev(&fs, dir, &names).is_err());
                let image = fs.crash_image(seed);
                // Whatever survived, the next start gets a certificate and a key that match.
                let m = load_or_generate_dev(&image, dir, &names)
                    .unwrap_or_else(|e| panic!("crash at op {crash_at}, seed {seed}: {e}"));
                let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
                rustls::ServerConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(m.cert_chain, m.key)
                    .unwrap_or_else(|e| panic!("crash at op {crash_at}, seed {seed}: {e}"));
            }
        }
    }
}
