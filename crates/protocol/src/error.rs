//! Errors: the server's own (with SQLSTATE), and everything that can go wrong around it.

use std::fmt;

/// An ErrorResponse or NoticeResponse from the server, field by field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbError {
    /// Non-localized severity (`V`), else the localized one (`S`): `ERROR`, `FATAL`, `WARNING`, ...
    pub severity: String,
    /// SQLSTATE (`C`), e.g. `28P01` for a wrong password.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl DbError {
    /// Decodes the fields of an ErrorResponse/NoticeResponse body.
    pub(crate) fn parse(body: &[u8]) -> DbError {
        let mut e = DbError::default();
        let mut localized = None;
        let mut rest = body;
        while let Some((&code, tail)) = rest.split_first() {
            if code == 0 {
                break;
            }
            let mut parts = tail.splitn(2, |&b| b == 0);
            let value = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            rest = parts.next().unwrap_or_default();
            match code {
                b'V' => e.severity = value,
                b'S' => localized = Some(value),
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                _ => {}
            }
        }
        if e.severity.is_empty() {
            e.severity = localized.unwrap_or_else(|| "ERROR".into());
        }
        e
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity, self.message)?;
        if !self.code.is_empty() {
            write!(f, " (SQLSTATE {})", self.code)?;
        }
        if let Some(d) = &self.detail {
            write!(f, "\nDETAIL: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\nHINT: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DbError {}

/// Everything a protocol operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused: it sent an ErrorResponse.
    #[error("server said {0}")]
    Db(Box<DbError>),
    /// Connection string or environment problem; the text says which setting.
    #[error("invalid connection settings: {0}")]
    Config(String),
    #[error("could not connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to {0} timed out (connect_timeout)")]
    Timeout(String),
    #[error("I/O error on the server connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection unexpectedly (was it stopped or restarted?)")]
    Closed,
    /// The server sent something this client does not expect at this point.
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("TLS: {0}")]
    Tls(String),
}

impl Error {
    pub(crate) fn protocol(msg: impl Into<String>) -> Error {
        Error::Protocol(msg.into())
    }

    /// The server error, if this is one.
    pub fn db(&self) -> Option<&DbError> {
        match self {
            Error::Db(e) => Some(e),
            _ => None,
        }
    }

    /// The SQLSTATE of a server error.
    pub fn code(&self) -> Option<&str> {
        self.db().map(|e| e.code.as_str())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields() {
        let body = b"SERROR\0VERROR\0C28P01\0Mpassword authentication failed for user \"x\"\0Dsome detail\0Hsome hint\0\0";
        let e = DbError::parse(body);
        assert_eq!(e.code, "28P01");
        assert_eq!(e.severity, "ERROR");
        assert_eq!(e.detail.as_deref(), Some("some detail"));
        let s = e.to_string();
        assert!(
            s.contains("SQLSTATE 28P01") && s.contains("HINT: some hint"),
            "{s}"
        );
        // Truncated input is not a panic.
        let e = DbError::parse(b"Mhalf");
        assert_eq!(e.message, "half");
    }
}
