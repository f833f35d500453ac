//! Values that must never reach a log, an error message or a `Debug` dump: webhook URLs (their
//! path and query carry access tokens) and signing keys.

use std::fmt;

use serde::Deserialize;

/// A secret string read from the configuration or a file. `Debug` and `Display` print
/// `<redacted>`; only [`Secret::expose`] gives the value, at the point of use.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: for signing or sending only, never for formatting into a message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A webhook URL. Robot URLs carry their token in the path (Slack) or the query (DingTalk), so
/// `Display`/`Debug` show scheme and host only, e.g. `https://oapi.dingtalk.com`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(Secret);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(Secret::new(url))
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// `scheme://host[:port]`, without user info, path, query or fragment.
    pub fn redacted(&self) -> Redacted<'_> {
        Redacted(self.expose())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.redacted().fmt(f)
    }
}

/// Display adaptor of [`SecretUrl::redacted`].
pub struct Redacted<'a>(&'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match scheme_and_host(self.0) {
            Some((scheme, host)) => write!(f, "{scheme}://{host}"),
            None => f.write_str("<unparsable url>"),
        }
    }
}

/// Splits `scheme://[user@]host/...` into scheme and host. Anything that does not look like that
/// yields `None`, so a malformed URL is never echoed back.
fn scheme_and_host(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // User info (`user:password@`) is as secret as the token.
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.is_empty() {
        return None;
    }
    Some((scheme, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_url_keeps_scheme_and_host_only() {
        let cases = [
            (
                "https://oapi.dingtalk.com/robot/send?access_token=abc123",
                "https://oapi.dingtalk.com",
            ),
            (
                "https://hooks.slack.com/services/T0/B0/XYZ",
                "https://hooks.slack.com",
            ),
            (
                "http://user:pw@127.0.0.1:8080/x#frag",
                "http://127.0.0.1:8080",
            ),
            ("http://host?token=1", "http://host"),
            ("not a url token=1", "<unparsable url>"),
            ("https:///path-only", "<unparsable url>"),
        ];
        for (url, shown) in cases {
            let url = SecretUrl::new(url);
            assert_eq!(url.to_string(), shown);
            assert_eq!(format!("{url:?}"), format!("SecretUrl({shown})"));
        }
    }

    #[test]
    fn secret_never_formats() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
    }
}
