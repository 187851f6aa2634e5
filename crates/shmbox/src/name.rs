//! Validation of region and participant names.

/// Longest region name in bytes.
pub const MAX_REGION_NAME: usize = 64;

/// Why a name is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("name is empty; use 1 to {max} characters from A-Z a-z 0-9 _ - .")]
    Empty {
        /// Longest allowed length.
        max: usize,
    },
    /// The name is too long.
    #[error("name is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// Its length.
        len: usize,
        /// Longest allowed length.
        max: usize,
    },
    /// A character outside the allowed set.
    #[error("name contains {ch:?} at byte {index}; only A-Z a-z 0-9 _ - . are allowed (no '/')")]
    BadChar {
        /// The character.
        ch: char,
        /// Its byte position.
        index: usize,
    },
    /// A leading dot or a `..` sequence.
    #[error("name must not start with '.' or contain '..'")]
    Dots,
}

fn validate(name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { max });
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            len: name.len(),
            max,
        });
    }
    if let Some((index, ch)) = name
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(NameError::BadChar { ch, index });
    }
    if name.starts_with('.') || name.contains("..") {
        return Err(NameError::Dots);
    }
    Ok(())
}

/// Checks a region name: 1 to 64 bytes of `A-Z a-z 0-9 _ - .`, not starting
/// with `.` and without `..`.
pub fn validate_region(name: &str) -> Result<(), NameError> {
    validate(name, MAX_REGION_NAME)
}

/// Checks a participant name: like a region name, at most 32 bytes.
pub fn validate_participant(name: &str) -> Result<(), NameError> {
    validate(name, crate::registry::MAX_PARTICIPANT_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_region("bus-1.main_A").is_ok());
        assert_eq!(validate_region(""), Err(NameError::Empty { max: 64 }));
        assert_eq!(
            validate_region(&"a".repeat(65)),
            Err(NameError::TooLong { len: 65, max: 64 })
        );
        assert_eq!(
            validate_region("a/b"),
            Err(NameError::BadChar { ch: '/', index: 1 })
        );
        assert_eq!(
            validate_region("é"),
            Err(NameError::BadChar { ch: 'é', index: 0 })
        );
        assert_eq!(validate_region("..x"), Err(NameError::Dots));
        assert_eq!(validate_region("a..b"), Err(NameError::Dots));
        assert_eq!(validate_region(".hidden"), Err(NameError::Dots));
        assert!(validate_participant(&"p".repeat(32)).is_ok());
        assert!(validate_participant(&"p".repeat(33)).is_err());
        let msg = validate_region("a b").unwrap_err().to_string();
        assert!(msg.contains("only A-Z a-z 0-9 _ - . are allowed"), "{msg}");
    }
}
