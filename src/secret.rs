//! The token key file: `<data-dir>/secret/token.key`, 32 raw bytes, mode 0600 in a 0700
//! directory, generated on first use and reused afterwards, written through `sys::fs`.
//! Anyone who can read it can mint device tokens.

use std::path::{Path, PathBuf};

use ingest::auth::{TOKEN_KEY_LEN, TokenKey};
use sys::fs::{Fs, create_dir_durable, read_optional, write_atomic};

/// The key file could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
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
    /// The file does not exist.
    #[error("{path}: no token key (start the server once to generate it)")]
    Missing {
        /// File.
        path: PathBuf,
    },
    /// The random generator failed.
    #[error("cannot generate a key: {0}")]
    Generate(#[from] ingest::auth::KeyError),
}

/// Path of the key file inside a data directory.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("secret").join("token.key")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretError + '_ {
    move |source| SecretError::Io {
        path: path.into(),
        source,
    }
}

/// Loads the key at `path`, generating it first if it does not exist (its directory is
/// created durably under the existing parent of that directory). Returns the key and
/// whether it was generated now.
///
/// # Errors
/// [`SecretError`] naming the file.
pub fn load_or_generate(fs: &dyn Fs, path: &Path) -> Result<(TokenKey, bool), SecretError> {
    if let Some(bytes) = read_optional(fs, path).map_err(io(path))? {
        return Ok((load_bytes(path, &bytes)?, false));
    }
    if let Some(dir) = path.parent() {
        match (dir.parent(), dir.file_name()) {
            (Some(root), Some(name)) => {
                create_dir_durable(fs, root, Path::new(name)).map_err(io(dir))?;
            }
            _ => fs.create_dir_all(dir).map_err(io(dir))?,
        }
    }
    let bytes = TokenKey::generate_bytes()?;
    write_atomic(fs, path, &bytes).map_err(io(path))?;
    Ok((load_bytes(path, &bytes)?, true))
}

/// Loads an existing key file.
///
/// # Errors
/// [`SecretError`] naming the file.
pub fn load(fs: &dyn Fs, path: &Path) -> Result<TokenKey, SecretError> {
    let bytes = read_optional(fs, path)
        .map_err(io(path))?
        .ok_or_else(|| SecretError::Missing { path: path.into() })?;
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
    use sys::fs::RealFs;
    use sys::sim::SimFs;

    #[test]
    fn generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let p = key_path(dir.path());
        let (k1, new1) = load_or_generate(&RealFs, &p).unwrap();
        let (k2, new2) = load_or_generate(&RealFs, &p).unwrap();
        assert!(new1 && !new2);
        let token = k1.mint(fix::DeviceId::try_from(77).unwrap());
        assert_eq!(k2.verify(&token), Ok(fix::DeviceId::try_from(77).unwrap()));
        std::fs::write(&p, b"short").unwrap();
        assert!(matches!(
            load(&RealFs, &p),
            Err(SecretError::WrongLength { actual: 5, .. })
        ));
        assert!(matches!(
            load(&RealFs, &dir.path().join("none")),
            Err(SecretError::Missing { .. })
        ));
    }

    #[test]
    fn a_crash_while_generating_leaves_no_key_or_the_whole_key() {
        let p = key_path(Path::new("/data"));
        for crash_at in 0..8 {
            for seed in 0..4 {
                let fs = SimFs::new();
                fs.create_dir_all(Path::new("/data")).unwrap();
                fs.crash_at_op(fs.ops() + crash_at);
                let generated = load_or_generate(&fs, &p).ok().map(|(k, _)| k);
                let image = fs.crash_image(seed);
                match load(&image, &p) {
                    // A key that survived is the whole key that was generated.
                    Ok(k) => {
                        let id = fix::DeviceId::try_from(5).unwrap();
                        if let Some(g) = &generated {
                            assert_eq!(k.verify(&g.mint(id)), Ok(id));
                        }
                    }
                    Err(SecretError::Missing { .. }) => {
                        assert!(
                            generated.is_none(),
                            "acknowledged key lost at op {crash_at}"
                        );
                    }
                    Err(e) => panic!("crash at op {crash_at}, seed {seed}: {e}"),
                }
            }
        }
    }
}
