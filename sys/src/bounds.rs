//! The one bound check of every config struct.
//!
//! Contract: each library states its settings' ranges next to its config struct and checks
//! them with [`check`] / [`check_all`]; a value out of range is one [`OutOfRange`] that names
//! the key as it is written in `config/hexflow.toml` (`section.key`). Pure: no IO.

/// A setting outside its documented range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value} is outside [{min}, {max}]")]
pub struct OutOfRange {
    /// The key, as `section.key`.
    pub key: &'static str,
    /// The value given.
    pub value: i128,
    /// Smallest allowed.
    pub min: i128,
    /// Largest allowed.
    pub max: i128,
}

/// `Ok` when `min <= value <= max` (inclusive), else [`OutOfRange`] for `key`.
///
/// # Errors
/// [`OutOfRange`].
pub fn check(
    key: &'static str,
    value: impl Into<i128>,
    min: impl Into<i128>,
    max: impl Into<i128>,
) -> Result<(), OutOfRange> {
    let (value, min, max) = (value.into(), min.into(), max.into());
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(OutOfRange {
            key,
            value,
            min,
            max,
        })
    }
}

/// [`check`] on each `(key, value, min, max)` row in order; the first failure.
///
/// # Errors
/// [`OutOfRange`] for the first row out of range.
pub fn check_all(rows: &[(&'static str, i128, i128, i128)]) -> Result<(), OutOfRange> {
    rows.iter()
        .try_for_each(|&(key, value, min, max)| check(key, value, min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inclusive_and_named() {
        assert_eq!(check("a.b", 1u8, 1u8, 2u8), Ok(()));
        assert_eq!(check("a.b", 2u8, 1u8, 2u8), Ok(()));
        let err = check("a.b", 3u8, 1u8, 2u8).unwrap_err();
        assert_eq!(err.to_string(), "a.b = 3 is outside [1, 2]");
        let rows = [
            ("x.ok", 1, 0, 1),
            ("x.first", 5, 0, 1),
            ("x.second", 5, 0, 1),
        ];
        assert_eq!(check_all(&rows).unwrap_err().key, "x.first");
    }
}
