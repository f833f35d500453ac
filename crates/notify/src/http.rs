//! The HTTP notifiers: generic webhook, DingTalk robot, Slack-compatible incoming webhook.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::{Secret, SecretUrl};
use crate::{Notification, SendError};

/// Header carrying `sha256=<hex HMAC-SHA256 of the body>` on a signed webhook.
pub const SIGNATURE_HEADER: &str = "X-Pgincr-Signature";

/// A robot's reply is a short JSON object; more than this is not read.
const MAX_REPLY: u64 = 64 * 1024;

pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(timeout)
        // A redirect would re-send the report somewhere not configured.
        .redirects(0)
        .build()
}

pub(crate) fn webhook(
    agent: &ureq::Agent,
    url: &SecretUrl,
    secret: Option<&Secret>,
    n: &Notification,
) -> Result<(), SendError> {
    let body = serde_json::to_vec(&n.report)?;
    let mut request = agent
        .post(url.expose())
        .set("Content-Type", "application/json")
        .set("X-Pgincr-Status", n.status.as_str());
    if let Some(secret) = secret {
        let mac = hmac_sha256(secret.expose().as_bytes(), &body)?;
        request = request.set(SIGNATURE_HEADER, &format!("sha256={}", hex(&mac)));
    }
    post(request, &body).map(drop)
}

pub(crate) fn dingtalk(
    agent: &ureq::Agent,
    url: &SecretUrl,
    secret: Option<&Secret>,
    at_mobiles: &[String],
    now_ms: u64,
    n: &Notification,
) -> Result<(), SendError> {
    let body = serde_json::to_vec(&dingtalk_body(n, at_mobiles))?;
    let target = match secret {
        Some(secret) => dingtalk_signed_url(url.expose(), secret, now_ms)?,
        None => url.expose().to_owned(),
    };
    let request = agent.post(&target).set("Content-Type", "application/json");
    let reply = post(request, &body)?;
    check_dingtalk_reply(&reply)
}

pub(crate) fn slack(
    agent: &ureq::Agent,
    url: &SecretUrl,
    n: &Notification,
) -> Result<(), SendError> {
    let text = format!("*{}*\n{}", n.title, n.markdown);
    let body = serde_json::to_vec(&serde_json::json!({ "text": text }))?;
    let request = agent
        .post(url.expose())
        .set("Content-Type", "application/json");
    post(request, &body).map(drop)
}

/// `{"msgtype":"markdown",...}`; mentioned mobiles must also appear as `@<mobile>` in the text
/// for DingTalk to highlight them.
fn dingtalk_body(n: &Notification, at_mobiles: &[String]) -> serde_json::Value {
    let mut text = format!("### {}\n\n{}", n.title, n.markdown);
    if !at_mobiles.is_empty() {
        let mentions: Vec<String> = at_mobiles.iter().map(|m| format!("@{m}")).collect();
        text.push_str("\n\n");
        text.push_str(&mentions.join(" "));
    }
    serde_json::json!({
        "msgtype": "markdown",
        "markdown": { "title": n.title, "text": text },
        "at": { "atMobiles": at_mobiles, "isAtAll": false },
    })
}

/// DingTalk's "additional signature": sign `timestamp + "\n" + secret` with the secret as
/// HMAC-SHA256 key, base64 it, URL-encode it, append `timestamp` and `sign` to the URL.
fn dingtalk_signed_url(url: &str, secret: &Secret, now_ms: u64) -> Result<String, SendError> {
    let sign = dingtalk_sign(secret.expose(), now_ms)?;
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok(format!(
        "{url}{sep}timestamp={now_ms}&sign={}",
        percent_encode(&sign)
    ))
}

/// The base64 signature (before URL encoding).
pub(crate) fn dingtalk_sign(secret: &str, now_ms: u64) -> Result<String, SendError> {
    let to_sign = format!("{now_ms}\n{secret}");
    let mac = hmac_sha256(secret.as_bytes(), to_sign.as_bytes())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(mac))
}

/// DingTalk answers HTTP 200 with `{"errcode":310000,"errmsg":"sign not match"}` on a bad
/// signature or keyword; only `errcode` 0 is a delivery.
fn check_dingtalk_reply(reply: &str) -> Result<(), SendError> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(reply) else {
        return Ok(());
    };
    match value.get("errcode").and_then(serde_json::Value::as_i64) {
        None | Some(0) => Ok(()),
        Some(code) => {
            let msg = value
                .get("errmsg")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            let msg: String = msg.chars().take(200).collect();
            Err(SendError::Rejected {
                reason: format!("errcode {code}: {msg}"),
            })
        }
    }
}

/// Sends the body and returns the reply text. ureq's own errors name the URL, so only the
/// status code or the error kind is kept.
fn post(request: ureq::Request, body: &[u8]) -> Result<String, SendError> {
    match request.send_bytes(body) {
        Ok(response) => {
            let mut reply = String::new();
            // The reply matters only to DingTalk's errcode check; an unreadable one is not a
            // failed delivery.
            let _ = std::io::Read::read_to_string(
                &mut std::io::Read::take(response.into_reader(), MAX_REPLY),
                &mut reply,
            );
            Ok(reply)
        }
        Err(ureq::Error::Status(status, _)) => Err(SendError::Status { status }),
        Err(ureq::Error::Transport(t)) => {
            let io_kind = std::error::Error::source(&t)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .map(|e| format!(" ({})", e.kind()))
                .unwrap_or_default();
            Err(SendError::Transport {
                kind: format!("{}{io_kind}", t.kind()),
            })
        }
    }
}

pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> Result<[u8; 32], SendError> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key).map_err(|e| SendError::Sign(e.to_string()))?;
    mac.update(message);
    Ok(mac.finalize().into_bytes().into())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// RFC 3986 percent-encoding of everything but unreserved characters (base64's `+/=` included).
fn percent_encode(s: &str) -> String {
    use std::fmt::Write;
    s.bytes()
        .fold(String::with_capacity(s.len() * 3), |mut out, b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?").unwrap();
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn percent_encoding_of_base64() {
        assert_eq!(percent_encode("a+b/c=="), "a%2Bb%2Fc%3D%3D");
    }

    #[test]
    fn dingtalk_body_mentions_mobiles() {
        let n = Notification {
            status: Status::Failure,
            title: "t".into(),
            markdown: "m".into(),
            report: serde_json::json!({}),
        };
        let body = dingtalk_body(&n, &["1370000000".into()]);
        assert_eq!(body["markdown"]["text"], "### t\n\nm\n\n@1370000000");
        assert_eq!(body["at"]["atMobiles"][0], "1370000000");
        assert_eq!(body["at"]["isAtAll"], false);
    }

    #[test]
    fn dingtalk_reply_errcode() {
        assert!(check_dingtalk_reply(r#"{"errcode":0,"errmsg":"ok"}"#).is_ok());
        assert!(check_dingtalk_reply("ok").is_ok());
        assert!(matches!(
            check_dingtalk_reply(r#"{"errcode":310000,"errmsg":"sign not match"}"#),
            Err(SendError::Rejected { .. })
        ));
    }
}
