//! The bounds of every ingest setting, stated and checked once.
//!
//! Contract: [`wire::Limits::validate`](crate::wire::Limits::validate),
//! `proto::server::SessionConfig::validate` and `endpoint::EndpointConfig::validate` are
//! pure and return the first value out of bounds as a [`ConfigError`] that names its key
//! as it is written in `config/hexflow.toml` (`limits.…`, `session.…`, `endpoint.…`: the
//! binary mounts each struct as the section of that name). A configuration that passes
//! them cannot make the endpoint or a session misbehave.

/// Why a setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value outside its documented range.
    #[error("{key} = {value} is outside [{min}, {max}]")]
    OutOfRange {
        /// The key, as `section.key`.
        key: &'static str,
        /// The value given.
        value: i128,
        /// Smallest allowed.
        min: i128,
        /// Largest allowed.
        max: i128,
    },
}

/// `Ok` when `min <= value <= max`, else [`ConfigError::OutOfRange`] for `key`.
pub(crate) fn check(
    key: &'static str,
    value: impl Into<i128>,
    min: impl Into<i128>,
    max: impl Into<i128>,
) -> Result<(), ConfigError> {
    let (value, min, max) = (value.into(), min.into(), max.into());
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            key,
            value,
            min,
            max,
        })
    }
}

/// Longest deadline any timeout key accepts: one day, ms.
pub const TIMEOUT_MS_LIMIT: u64 = 86_400_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_is_inclusive_and_names_the_key() {
        assert_eq!(check("a.b", 1u8, 1u8, 2u8), Ok(()));
        assert_eq!(check("a.b", 2u8, 1u8, 2u8), Ok(()));
        let err = check("a.b", 3u8, 1u8, 2u8).unwrap_err();
        assert_eq!(err.to_string(), "a.b = 3 is outside [1, 2]");
    }
}
