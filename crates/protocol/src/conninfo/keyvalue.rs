//! `key = value` connection strings.

use crate::error::{Error, Result};

/// Splits `key = value` pairs; values may be single-quoted with `\'` and `\\` escapes.
pub(super) fn parse_keyvalue(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = it.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            it.next();
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.next() != Some('=') {
            return Err(Error::Config(format!(
                "missing \"=\" after \"{key}\" in connection string"
            )));
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let mut value = String::new();
        if it.peek() == Some(&'\'') {
            it.next();
            loop {
                match it.next() {
                    None => {
                        return Err(Error::Config(
                            "unterminated quoted string in connection string".into(),
                        ))
                    }
                    Some('\\') => match it.next() {
                        Some(c) => value.push(c),
                        None => {
                            return Err(Error::Config(
                                "unterminated quoted string in connection string".into(),
                            ))
                        }
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                it.next();
                if c == '\\' {
                    if let Some(n) = it.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use crate::conninfo::Config;

    #[test]
    fn keyvalue() {
        let c = Config::parse("host=db port = 5433 user='a b' password='it\\'s' dbname=x").unwrap();
        assert_eq!(c.host.as_deref(), Some("db"));
        assert_eq!(c.port.as_deref(), Some("5433"));
        assert_eq!(c.user.as_deref(), Some("a b"));
        assert_eq!(c.password.as_ref().unwrap().expose(), "it's");
        assert!(!format!("{c:?}").contains("it's"));
        assert!(Config::parse("host").unwrap().dbname.is_some());
        assert!(Config::parse("bogus=1").is_err());
        assert!(Config::parse("host='x").is_err());
    }
}
