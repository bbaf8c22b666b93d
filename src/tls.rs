//! TLS material for the QUIC endpoint: configured PEM files, or a development CA and server
//! certificate generated on first start and reused afterwards.
//!
//! Layout of the generated material (all under `<data-dir>/tls/`):
//!
//! | file | what | who needs it |
//! |---|---|---|
//! | `ca.pem` | self-signed development CA certificate | devices: the file they trust |
//! | `ca.key` | the CA's private key (mode 0600) | nobody but a re-issue |
//! | `server.pem` | server certificate signed by the CA, SANs from `tls.server_names` | the server |
//! | `server.key` | the server's private key (mode 0600) | the server |
//!
//! Files are written atomically (temporary name, fsync, rename) so a crash during first
//! start never leaves half a key behind. If `server.pem` exists it is reused as is; delete
//! the directory to re-issue.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
pub fn load(cert_path: &Path, key_path: &Path) -> Result<TlsMaterial, TlsError> {
    let cert_pem = read(cert_path)?;
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
    let key_pem = read(key_path)?;
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
pub fn load_or_generate_dev(dir: &Path, server_names: &[String]) -> Result<TlsMaterial, TlsError> {
    let ca_pem = dir.join("ca.pem");
    let server_pem = dir.join("server.pem");
    let server_key = dir.join("server.key");
    if server_pem.exists() && server_key.exists() {
        let mut m = load(&server_pem, &server_key)?;
        m.ca_path = Some(ca_pem);
        return Ok(m);
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.into(),
        source,
    })?;

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

    write_atomic(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes(), true)?;
    write_atomic(&ca_pem, ca_cert.pem().as_bytes(), false)?;
    write_atomic(&server_key, key.serialize_pem().as_bytes(), true)?;
    // Written last: its presence marks the material complete.
    write_atomic(&server_pem, cert.pem().as_bytes(), false)?;
    sync_dir(dir)?;
    let mut m = load(&server_pem, &server_key)?;
    m.ca_path = Some(ca_pem);
    m.generated = true;
    Ok(m)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.into(),
        source,
    })
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename. `secret` files get
/// mode 0600.
///
/// # Errors
/// [`TlsError::Io`] naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8], secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let io = |source| TlsError::Io {
        path: path.into(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| TlsError::Io {
            path: dir.into(),
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
        let first = load_or_generate_dev(&tls, &["localhost".into()]).unwrap();
        assert!(first.generated);
        assert!(tls.join("ca.pem").exists());
        let second = load_or_generate_dev(&tls, &["localhost".into()]).unwrap();
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
        let err = load(&cert, &cert).unwrap_err();
        assert!(err.to_string().contains("c.pem"), "{err}");
    }
}
