//! [`DeviceId`]: a device identity that cannot be invalid.

use std::num::NonZeroU64;

/// A device id in `1..=i64::MAX` (stored as Parquet `Int64`, so the top bit is never set).
///
/// ```
/// use fix::DeviceId;
/// let id = DeviceId::try_from(42).unwrap();
/// assert_eq!(id.get(), 42);
/// assert!(DeviceId::try_from(0).is_err());
/// assert!(DeviceId::try_from(1 << 63).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(NonZeroU64);

/// A number that is not a device id; carries the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("device id {value} outside 1..={}", DeviceId::MAX)]
pub struct InvalidDeviceId {
    /// The refused value.
    pub value: u64,
}

impl DeviceId {
    /// The largest device id, `i64::MAX`.
    pub const MAX: u64 = i64::MAX as u64;

    /// The id as a number.
    pub const fn get(self) -> u64 {
        self.0.get()
    }

    /// The id as Parquet stores it (always positive).
    pub const fn as_i64(self) -> i64 {
        // In 1..=i64::MAX by construction.
        self.0.get() as i64
    }
}

impl TryFrom<u64> for DeviceId {
    type Error = InvalidDeviceId;

    fn try_from(value: u64) -> Result<Self, Self::Error> {
        match NonZeroU64::new(value) {
            Some(v) if value <= Self::MAX => Ok(Self(v)),
            _ => Err(InvalidDeviceId { value }),
        }
    }
}

impl From<DeviceId> for u64 {
    fn from(id: DeviceId) -> u64 {
        id.get()
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for DeviceId {
    type Err = InvalidDeviceId;

    /// Parses a decimal id; anything unparsable is reported as value 0.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v: u64 = s.parse().map_err(|_| InvalidDeviceId { value: 0 })?;
        Self::try_from(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges() {
        assert_eq!(DeviceId::try_from(1).map(DeviceId::get), Ok(1));
        assert_eq!(
            DeviceId::try_from(DeviceId::MAX).map(DeviceId::as_i64),
            Ok(i64::MAX)
        );
        assert_eq!(
            DeviceId::try_from(DeviceId::MAX + 1),
            Err(InvalidDeviceId {
                value: DeviceId::MAX + 1
            })
        );
        assert!(DeviceId::try_from(0).is_err());
        assert_eq!("42".parse::<DeviceId>().map(u64::from), Ok(42));
        assert!("x".parse::<DeviceId>().is_err());
        assert_eq!(
            InvalidDeviceId { value: 0 }.to_string(),
            "device id 0 outside 1..=9223372036854775807"
        );
    }
}
