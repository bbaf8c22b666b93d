//! The token key file: `<data-dir>/secret/token.key`, 32 raw bytes, mode 0600, generated on
//! first use and reused afterwards. Anyone who can read it can mint device tokens.

use std::path::{Path, PathBuf};

use ingest::auth::{TOKEN_KEY_LEN, TokenKey};

use crate::tls::{TlsError, write_atomic};

/// The key file could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// Reading or writing the file failed.
    #[error(transparent)]
    Io(#[from] TlsError),
    /// The file exists but is not a key.
    #[error("{path}: expected {expected} bytes, found {actual}")]
    WrongLength {
        /// File.
        path: PathBuf,
        /// Required length.
        expected: usize,
        /// Found length.
        actual: usize,
    },
    /// The random generator failed.
    #[error("cannot generate a key: {0}")]
    Generate(#[from] ingest::auth::KeyError),
}

/// Path of the key file inside a data directory.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("secret").join("token.key")
}

/// Loads the key at `path`, generating it first if it does not exist.
/// Returns the key and whether it was generated now.
///
/// # Errors
/// [`SecretError`] naming the file.
pub fn load_or_generate(path: &Path) -> Result<(TokenKey, bool), SecretError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok((load_bytes(path, &bytes)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
                    path: dir.into(),
                    source,
                })?;
            }
            let bytes = TokenKey::generate_bytes()?;
            write_atomic(path, &bytes, true)?;
            Ok((load_bytes(path, &bytes)?, true))
        }
        Err(source) => Err(TlsError::Io {
            path: path.into(),
            source,
        }
        .into()),
    }
}

/// Loads an existing key file.
///
/// # Errors
/// [`SecretError`] naming the file.
pub fn load(path: &Path) -> Result<TokenKey, SecretError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.into(),
        source,
    })?;
    load_bytes(path, &bytes)
}

fn load_bytes(path: &Path, bytes: &[u8]) -> Result<TokenKey, SecretError> {
    TokenKey::from_bytes(bytes).map_err(|_| SecretError::WrongLength {
        path: path.into(),
        expected: TOKEN_KEY_LEN,
        actual: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let p = key_path(dir.path());
        let (k1, new1) = load_or_generate(&p).unwrap();
        let (k2, new2) = load_or_generate(&p).unwrap();
        assert!(new1 && !new2);
        let token = k1.mint(fix::DeviceId::try_from(77).unwrap());
        assert_eq!(k2.verify(&token), Ok(fix::DeviceId::try_from(77).unwrap()));
        std::fs::write(&p, b"short").unwrap();
        assert!(matches!(
            load(&p),
            Err(SecretError::WrongLength { actual: 5, .. })
        ));
    }
}
