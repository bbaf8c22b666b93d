//! Device identity in the binary: the `[auth]` section, the token key ring on disk and the
//! revocation file.
//!
//! Contract:
//! * Key files live in `<data-dir>/secret/` (0600 in a 0700 directory, 32 raw bytes,
//!   written through `sys::fs`): `token.key` is key id 0, the legacy key of version-1
//!   tokens (`hf1.…`, accepted while `auth.accept_v1`); `token-<id>.key` (`id` 1..=65535)
//!   are the keys of version-2 tokens (`hf2.…`: key id, issue time, expiry). The highest id
//!   signs new tokens; every key in the directory verifies, so a rotation
//!   ([`rotate`]) has an overlap: old tokens stay valid until their key file is removed.
//!   The server creates `token-1.key` on first start.
//! * The revocation file (`auth.revocations_path`) is text, one device per line:
//!   `<device_id>` (every token of the device is refused) or `<device_id> <unix_s>` (tokens
//!   issued before that second are refused; v1 tokens carry no issue time and are refused
//!   either way); `#` starts a comment. [`parse_revocations`] is pure and names the line of
//!   an error. The server reads it at start (an invalid file refuses the start) and every
//!   `auth.revocations_reload_ms` (an invalid file then keeps the previous list and is
//!   logged); an open session of a revoked device ends at its next frame.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ingest::auth::{Keyring, Revocations, TokenKey};
use serde::{Deserialize, Serialize};
use sys::fs::Fs;

use crate::secret::SecretError;

/// `[auth]`: which tokens the server accepts and how long `hexflow token` makes them last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accept version-1 tokens (`hf1.…`, no expiry, minted from `token.key`). Default true,
    /// so devices provisioned before version 2 keep working; set false once every device
    /// holds a version-2 token.
    pub accept_v1: bool,
    /// Validity of a token minted by `hexflow token`, s. `60..=315_360_000` (10 years),
    /// default 7,776,000 (90 days).
    pub token_ttl_s: u64,
    /// The revocation file; empty: none.
    pub revocations_path: PathBuf,
    /// How often the revocation file is read again, ms. `100..=3_600_000`, default 10,000.
    pub revocations_reload_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            accept_v1: true,
            token_ttl_s: 90 * 86_400,
            revocations_path: PathBuf::new(),
            revocations_reload_ms: 10_000,
        }
    }
}

impl AuthConfig {
    /// Checks the bounds documented on the fields.
    ///
    /// # Errors
    /// The first key out of range, named `auth.<key>`.
    pub fn validate(&self) -> Result<(), sys::bounds::OutOfRange> {
        sys::bounds::check_all(&[
            ("auth.token_ttl_s", self.token_ttl_s.into(), 60, 315_360_000),
            (
                "auth.revocations_reload_ms",
                self.revocations_reload_ms.into(),
                100,
                3_600_000,
            ),
        ])
    }
}

/// Why the key ring or the revocation file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A key file could not be read, created or parsed.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The secret directory could not be listed.
    #[error("{path}: {source}")]
    List {
        /// The directory.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The keys make no usable ring.
    #[error("token keys: {0}")]
    Ring(#[from] ingest::auth::KeyringError),
    /// Every key id up to 65535 is taken.
    #[error("no key id left to rotate to (65535 is the last)")]
    KeyIdsExhausted,
    /// The revocation file could not be read.
    #[error("auth.revocations_path {path}: {source}")]
    ReadRevocations {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// A line of the revocation file is invalid.
    #[error("auth.revocations_path {path}:{line}: {reason}")]
    Revocations {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// Path of the version-2 key with id `key_id`.
pub fn ring_key_path(data_dir: &Path, key_id: u16) -> PathBuf {
    data_dir.join("secret").join(format!("token-{key_id}.key"))
}

/// The ids of the version-2 key files present, ascending.
fn ring_key_ids(fs: &dyn Fs, data_dir: &Path) -> Result<Vec<u16>, IdentityError> {
    let dir = data_dir.join("secret");
    let entries = match fs.list_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(IdentityError::List { path: dir, source }),
    };
    let mut ids: Vec<u16> = entries
        .iter()
        .filter(|e| !e.is_dir)
        .filter_map(|e| {
            e.name
                .strip_prefix("token-")?
                .strip_suffix(".key")?
                .parse()
                .ok()
        })
        .filter(|&id| id != 0)
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// The key ring of `data_dir`: the legacy key (id 0, created if missing) and every
/// version-2 key; `token-1.key` is created when there is none. Also the paths created now.
///
/// # Errors
/// [`IdentityError`] naming the file.
pub fn load_ring(
    fs: &dyn Fs,
    data_dir: &Path,
    accept_v1: bool,
) -> Result<(Keyring, Vec<PathBuf>), IdentityError> {
    let mut created = Vec::new();
    let legacy_path = crate::secret::key_path(data_dir);
    let (legacy, new) = crate::secret::load_or_generate(fs, &legacy_path)?;
    if new {
        created.push(legacy_path);
    }
    let mut keys: Vec<(u16, TokenKey)> = vec![(0, legacy)];
    let ids = ring_key_ids(fs, data_dir)?;
    if ids.is_empty() {
        let path = ring_key_path(data_dir, 1);
        let (key, _) = crate::secret::load_or_generate(fs, &path)?;
        keys.push((1, key));
        created.push(path);
    }
    for id in ids {
        let path = ring_key_path(data_dir, id);
        keys.push((id, crate::secret::load(fs, &path)?));
    }
    Ok((Keyring::new(keys, accept_v1)?, created))
}

/// Creates the next version-2 key (highest id + 1), which signs tokens from now on; the
/// older keys keep verifying until their files are removed. Returns the new id.
///
/// # Errors
/// [`IdentityError`].
pub fn rotate(fs: &dyn Fs, data_dir: &Path) -> Result<u16, IdentityError> {
    let next = match ring_key_ids(fs, data_dir)?.last() {
        None => 1,
        Some(&id) => id.checked_add(1).ok_or(IdentityError::KeyIdsExhausted)?,
    };
    crate::secret::load_or_generate(fs, &ring_key_path(data_dir, next))?;
    Ok(next)
}

/// Parses a revocation file (see the module contract). Errors are `(line, reason)`.
///
/// # Errors
/// The first invalid line.
pub fn parse_revocations(text: &str) -> Result<Revocations, (usize, String)> {
    let mut devices = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let id = parts.next().unwrap_or("");
        let device = id
            .parse::<u64>()
            .ok()
            .and_then(|v| fix::DeviceId::try_from(v).ok())
            .ok_or_else(|| (i + 1, format!("{id:?} is not a device id")))?;
        let before_s = match parts.next() {
            None => u64::MAX,
            Some(s) => s
                .parse::<u64>()
                .map_err(|_| (i + 1, format!("{s:?} is not a Unix time in seconds")))?,
        };
        if let Some(extra) = parts.next() {
            return Err((i + 1, format!("unexpected {extra:?}")));
        }
        devices.insert(device, before_s);
    }
    Ok(Revocations { devices })
}

/// Reads and parses the revocation file at `path`.
///
/// # Errors
/// [`IdentityError::ReadRevocations`] or [`IdentityError::Revocations`].
pub fn load_revocations(path: &Path) -> Result<Revocations, IdentityError> {
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::ReadRevocations {
        path: path.into(),
        source,
    })?;
    parse_revocations(&text).map_err(|(line, reason)| IdentityError::Revocations {
        path: path.into(),
        line,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sys::fs::RealFs;

    #[test]
    fn ring_is_created_rotated_and_reloaded_with_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let (ring, created) = load_ring(&RealFs, dir.path(), true).unwrap();
        assert_eq!(created.len(), 2, "token.key and token-1.key");
        assert_eq!(ring.key_ids(), vec![0, 1]);
        assert_eq!(ring.signing_key_id(), Some(1));
        let device = fix::DeviceId::try_from(7).unwrap();
        let old = ring.mint(device, 1_000, 2_000).unwrap();
        assert_eq!(rotate(&RealFs, dir.path()).unwrap(), 2);
        let (ring, created) = load_ring(&RealFs, dir.path(), false).unwrap();
        assert!(created.is_empty());
        assert_eq!(ring.signing_key_id(), Some(2));
        let none = Revocations::default();
        assert_eq!(ring.verify(&old, 1_500, &none).unwrap().device_id, device);
        let new = ring.mint(device, 1_000, 2_000).unwrap();
        assert_ne!(new, old);
        assert!(ring.verify(&new, 1_500, &none).is_ok());
        assert!(ring.verify(&new, 2_001, &none).is_err(), "expired");
        std::fs::remove_file(ring_key_path(dir.path(), 1)).unwrap();
        let (ring, _) = load_ring(&RealFs, dir.path(), false).unwrap();
        assert!(ring.verify(&old, 1_500, &none).is_err(), "key 1 retired");
    }

    #[test]
    fn revocation_lines_and_their_errors() {
        let r = parse_revocations("# lost phones\n42\n7 1700000000  # reissued\n\n").unwrap();
        assert_eq!(r.devices.len(), 2);
        let id = |v| fix::DeviceId::try_from(v).unwrap();
        assert_eq!(r.devices[&id(42)], u64::MAX);
        assert_eq!(r.devices[&id(7)], 1_700_000_000);
        assert_eq!(parse_revocations("1\n0\n").unwrap_err().0, 2);
        assert_eq!(parse_revocations("x").unwrap_err().0, 1);
        assert!(
            parse_revocations("1 2 3")
                .unwrap_err()
                .1
                .contains("unexpected")
        );
        assert!(
            parse_revocations("1 -5")
                .unwrap_err()
                .1
                .contains("Unix time")
        );
    }

    #[test]
    fn bounds() {
        assert_eq!(AuthConfig::default().validate(), Ok(()));
        let c = AuthConfig {
            revocations_reload_ms: 99,
            ..AuthConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "auth.revocations_reload_ms");
    }
}
