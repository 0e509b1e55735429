//! Identifier rules shared by every route: ids are 1..=128 bytes of ASCII
//! letters, digits and `. _ - : @`, so they are safe in paths, keys and logs.

pub const MAX_ID_BYTES: usize = 128;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{field} must not be empty")]
    Empty { field: String },
    #[error("{field} is {len} bytes; at most {MAX_ID_BYTES} are allowed")]
    TooLong { field: String, len: usize },
    #[error("{field} may hold only letters, digits and . _ - : @")]
    BadChar { field: String },
}

/// Checks `id`, named `field` in the error (the API's name: `userId`, …).
pub fn check_id(field: &str, id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty {
            field: field.into(),
        });
    }
    if id.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong {
            field: field.into(),
            len: id.len(),
        });
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@'))
    {
        return Err(IdError::BadChar {
            field: field.into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        assert!(check_id("userId", "user-1@shop.example").is_ok());
        assert_eq!(
            check_id("userId", ""),
            Err(IdError::Empty {
                field: "userId".into()
            })
        );
        assert!(matches!(
            check_id("userId", &"x".repeat(129)),
            Err(IdError::TooLong { len: 129, .. })
        ));
        assert!(check_id("userId", &"x".repeat(128)).is_ok());
        assert!(check_id("userId", "a/b").is_err());
        assert!(check_id("userId", "a b").is_err());
    }
}
