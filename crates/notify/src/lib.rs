//! Sends a backup run's report to people: a generic JSON webhook (optionally HMAC-signed), a
//! DingTalk robot, a Slack-compatible incoming webhook, or a local command.
//!
//! The crate knows nothing of backups: the caller hands it a [`Notification`] (status, title,
//! human markdown summary, machine JSON report). [`Notifiers::from_config`] resolves a
//! [`NotifyConfig`] (reading `url_file`/`secret_file` up front, so a bad path fails at startup,
//! not after a backup); [`Notifiers::send`] delivers to every notifier whose `on` matches,
//! retrying each with exponential backoff, and returns one [`Outcome`] per notifier. Sending
//! never returns an error: a notification failure must not fail the backup it reports.
//!
//! URLs and secrets are held in [`SecretUrl`]/[`Secret`], whose `Display`/`Debug` redact them;
//! errors ([`SendError`]) carry a status code or error kind, never the URL.

mod command;
mod config;
mod http;
mod secret;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use config::{CommandConfig, DingTalkConfig, NotifyConfig, On, SlackConfig, WebhookConfig};
pub use secret::{Redacted, Secret, SecretUrl};

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Failure,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
        }
    }
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Notification {
    pub status: Status,
    /// One line, e.g. `pgincr backup main: failure`.
    pub title: String,
    /// Human summary (markdown) for chat notifiers.
    pub markdown: String,
    /// Machine report: the webhook's body and the command's standard input.
    pub report: serde_json::Value,
}

/// Time and waiting, injectable so tests neither sleep nor depend on the wall clock.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch (DingTalk signs it).
    fn now_ms(&self) -> u64;
    /// Waits between retries.
    fn sleep(&self, duration: Duration);
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// A configuration that cannot be turned into notifiers.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("notify.{kind}[{index}]: give exactly one of `url` and `url_file`")]
    UrlChoice { kind: &'static str, index: usize },
    #[error("notify.{kind}[{index}]: cannot read {}: {source}; check the path and its permissions", path.display())]
    ReadFile {
        kind: &'static str,
        index: usize,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("notify.{kind}[{index}]: {} is empty; it must hold the value on its first line", path.display())]
    EmptyFile {
        kind: &'static str,
        index: usize,
        path: PathBuf,
    },
    #[error("notify.{kind}[{index}]: the URL must start with http:// or https:// (shown redacted: {shown})")]
    BadUrl {
        kind: &'static str,
        index: usize,
        shown: String,
    },
    #[error("notify.attempts must be at least 1")]
    ZeroAttempts,
}

/// A delivery that failed. Never holds a URL, token or secret.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("endpoint answered HTTP {status}")]
    Status { status: u16 },
    #[error("could not reach endpoint: {kind}")]
    Transport { kind: String },
    #[error("endpoint accepted the request but rejected the message: {reason}")]
    Rejected { reason: String },
    #[error("could not encode the message: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("could not compute the signature: {0}")]
    Sign(String),
    #[error("could not start {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("{} failed while running: {source}", program.display())]
    Wait {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("{} exited with {status}", program.display())]
    Exit { program: PathBuf, status: String },
    #[error("{} did not finish within {secs} s and was killed", program.display())]
    Timeout { program: PathBuf, secs: u64 },
}

impl SendError {
    /// Client errors (bad token, bad payload) and a robot's rejection will not heal by
    /// retrying; server errors, rate limits, network trouble and hook failures might.
    fn is_retryable(&self) -> bool {
        match self {
            SendError::Status { status } => *status >= 500 || *status == 429 || *status == 408,
            SendError::Rejected { .. } | SendError::Encode(_) | SendError::Sign(_) => false,
            SendError::Spawn { .. } => false,
            SendError::Transport { .. }
            | SendError::Wait { .. }
            | SendError::Exit { .. }
            | SendError::Timeout { .. } => true,
        }
    }
}

/// What happened to one notifier.
#[derive(Debug)]
pub enum Delivery {
    Sent {
        attempts: u32,
    },
    /// Its `on` did not match the status.
    Skipped,
    Failed {
        attempts: u32,
        error: SendError,
    },
}

/// One notifier's result. `notifier` is a redacted label such as
/// `dingtalk[0] https://oapi.dingtalk.com`.
#[derive(Debug)]
pub struct Outcome {
    pub notifier: String,
    pub delivery: Delivery,
}

impl Outcome {
    pub fn is_failed(&self) -> bool {
        matches!(self.delivery, Delivery::Failed { .. })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.delivery {
            Delivery::Sent { attempts } => {
                write!(f, "{}: sent (attempts: {attempts})", self.notifier)
            }
            Delivery::Skipped => write!(f, "{}: skipped", self.notifier),
            Delivery::Failed { attempts, error } => {
                write!(
                    f,
                    "{}: failed after {attempts} attempts: {error}",
                    self.notifier
                )
            }
        }
    }
}

/// A resolved notifier.
#[derive(Debug)]
pub enum Notifier {
    Webhook {
        url: SecretUrl,
        secret: Option<Secret>,
        on: On,
    },
    DingTalk {
        url: SecretUrl,
        secret: Option<Secret>,
        at_mobiles: Vec<String>,
        on: On,
    },
    Slack {
        url: SecretUrl,
        on: On,
    },
    Command {
        program: PathBuf,
        args: Vec<String>,
        on: On,
    },
}

impl Notifier {
    fn on(&self) -> On {
        match self {
            Notifier::Webhook { on, .. }
            | Notifier::DingTalk { on, .. }
            | Notifier::Slack { on, .. }
            | Notifier::Command { on, .. } => *on,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Notifier::Webhook { .. } => "webhook",
            Notifier::DingTalk { .. } => "dingtalk",
            Notifier::Slack { .. } => "slack",
            Notifier::Command { .. } => "command",
        }
    }

    fn target(&self) -> String {
        match self {
            Notifier::Webhook { url, .. }
            | Notifier::DingTalk { url, .. }
            | Notifier::Slack { url, .. } => url.redacted().to_string(),
            Notifier::Command { program, .. } => program.display().to_string(),
        }
    }

    fn wants(&self, status: Status) -> bool {
        match self.on() {
            On::Always => true,
            On::Failure => status == Status::Failure,
            On::Success => status == Status::Success,
        }
    }

    fn send_once(&self, n: &Notification, ctx: &Context) -> Result<(), SendError> {
        match self {
            Notifier::Webhook { url, secret, .. } => {
                http::webhook(&ctx.agent, url, secret.as_ref(), n)
            }
            Notifier::DingTalk {
                url,
                secret,
                at_mobiles,
                ..
            } => http::dingtalk(
                &ctx.agent,
                url,
                secret.as_ref(),
                at_mobiles,
                ctx.clock.now_ms(),
                n,
            ),
            Notifier::Slack { url, .. } => http::slack(&ctx.agent, url, n),
            Notifier::Command { program, args, .. } => command::run(program, args, n, ctx.timeout),
        }
    }
}

struct Context {
    agent: ureq::Agent,
    clock: Arc<dyn Clock>,
    timeout: Duration,
}

/// The configured notifiers, ready to send.
pub struct Notifiers {
    notifiers: Vec<(String, Notifier)>,
    attempts: u32,
    backoff: Duration,
    ctx: Context,
}

impl fmt::Debug for Notifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifiers")
            .field("notifiers", &self.notifiers)
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Notifiers {
    /// Resolves the configuration, reading every `url_file` and `secret_file` now.
    pub fn from_config(config: &NotifyConfig) -> Result<Self, ConfigError> {
        if config.attempts == 0 {
            return Err(ConfigError::ZeroAttempts);
        }
        let mut list = Vec::new();
        for (index, c) in config.webhook.iter().enumerate() {
            let kind = "webhook";
            list.push(Notifier::Webhook {
                url: resolve_url(kind, index, c.url.as_ref(), c.url_file.as_deref())?,
                secret: resolve_secret(kind, index, c.secret_file.as_deref())?,
                on: c.on,
            });
        }
        for (index, c) in config.dingtalk.iter().enumerate() {
            let kind = "dingtalk";
            list.push(Notifier::DingTalk {
                url: resolve_url(kind, index, c.url.as_ref(), c.url_file.as_deref())?,
                secret: resolve_secret(kind, index, c.secret_file.as_deref())?,
                at_mobiles: c.at_mobiles.clone(),
                on: c.on,
            });
        }
        for (index, c) in config.slack.iter().enumerate() {
            list.push(Notifier::Slack {
                url: resolve_url("slack", index, c.url.as_ref(), c.url_file.as_deref())?,
                on: c.on,
            });
        }
        for c in &config.command {
            list.push(Notifier::Command {
                program: c.command.clone(),
                args: c.args.clone(),
                on: c.on,
            });
        }
        Ok(Self::new(
            list,
            config.attempts,
            Duration::from_millis(config.backoff_ms),
            Duration::from_secs(config.timeout_secs),
        ))
    }

    /// Notifiers built directly (tests, or a caller with its own configuration).
    pub fn new(
        notifiers: Vec<Notifier>,
        attempts: u32,
        backoff: Duration,
        timeout: Duration,
    ) -> Self {
        let mut counts = std::collections::HashMap::<&'static str, usize>::new();
        let notifiers = notifiers
            .into_iter()
            .map(|n| {
                let index = counts.entry(n.kind()).or_insert(0);
                let label = format!("{}[{index}] {}", n.kind(), n.target());
                *index += 1;
                (label, n)
            })
            .collect();
        Self {
            notifiers,
            attempts: attempts.max(1),
            backoff,
            ctx: Context {
                agent: http::agent(timeout),
                clock: Arc::new(SystemClock),
                timeout,
            },
        }
    }

    /// Replaces the clock (timestamps and retry sleeps).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.ctx.clock = clock;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.notifiers.is_empty()
    }

    pub fn len(&self) -> usize {
        self.notifiers.len()
    }

    /// Delivers `n` to every notifier whose `on` matches, one after another. Never fails:
    /// failures are logged (warn) and returned as [`Delivery::Failed`].
    pub fn send(&self, n: &Notification) -> Vec<Outcome> {
        self.notifiers
            .iter()
            .map(|(label, notifier)| Outcome {
                notifier: label.clone(),
                delivery: self.deliver(label, notifier, n),
            })
            .collect()
    }

    fn deliver(&self, label: &str, notifier: &Notifier, n: &Notification) -> Delivery {
        if !notifier.wants(n.status) {
            tracing::debug!(
                notifier = label,
                status = n.status.as_str(),
                "notification skipped"
            );
            return Delivery::Skipped;
        }
        let mut attempt = 1;
        loop {
            match notifier.send_once(n, &self.ctx) {
                Ok(()) => {
                    tracing::info!(notifier = label, attempts = attempt, "notification sent");
                    return Delivery::Sent { attempts: attempt };
                }
                Err(error) if attempt < self.attempts && error.is_retryable() => {
                    let delay = backoff_delay(self.backoff, attempt);
                    tracing::debug!(notifier = label, attempt, %error, ?delay, "notification failed; retrying");
                    self.ctx.clock.sleep(delay);
                    attempt += 1;
                }
                Err(error) => {
                    tracing::warn!(notifier = label, attempts = attempt, %error, "notification failed");
                    return Delivery::Failed {
                        attempts: attempt,
                        error,
                    };
                }
            }
        }
    }
}

/// `first * 2^(attempt-1)`, capped at five minutes so a large `attempts` cannot stall a run.
fn backoff_delay(first: Duration, attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    first
        .checked_mul(factor)
        .unwrap_or(Duration::MAX)
        .min(Duration::from_secs(300))
}

fn resolve_url(
    kind: &'static str,
    index: usize,
    url: Option<&Secret>,
    url_file: Option<&Path>,
) -> Result<SecretUrl, ConfigError> {
    let url = match (url, url_file) {
        (Some(url), None) => url.expose().trim().to_owned(),
        (None, Some(path)) => read_first_line(kind, index, path)?,
        _ => return Err(ConfigError::UrlChoice { kind, index }),
    };
    let url = SecretUrl::new(url);
    let lower = url.expose().to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(ConfigError::BadUrl {
            kind,
            index,
            shown: url.redacted().to_string(),
        });
    }
    Ok(url)
}

fn resolve_secret(
    kind: &'static str,
    index: usize,
    path: Option<&Path>,
) -> Result<Option<Secret>, ConfigError> {
    path.map(|path| read_first_line(kind, index, path).map(Secret::new))
        .transpose()
}

/// The trimmed first line of a secret file. The file is small by nature; a larger one is
/// read only up to its first 64 KiB.
fn read_first_line(kind: &'static str, index: usize, path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let read_err = |source| ConfigError::ReadFile {
        kind,
        index,
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    file.take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    let line = text.lines().next().unwrap_or_default().trim();
    if line.is_empty() {
        return Err(ConfigError::EmptyFile {
            kind,
            index,
            path: path.to_owned(),
        });
    }
    Ok(line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let first = Duration::from_millis(100);
        assert_eq!(backoff_delay(first, 1), Duration::from_millis(100));
        assert_eq!(backoff_delay(first, 2), Duration::from_millis(200));
        assert_eq!(backoff_delay(first, 3), Duration::from_millis(400));
        assert_eq!(backoff_delay(first, 40), Duration::from_secs(300));
    }

    #[test]
    fn config_from_toml_resolves_files() {
        let dir = tempfile::tempdir().unwrap();
        let url_file = dir.path().join("url");
        std::fs::write(
            &url_file,
            "https://oapi.dingtalk.com/robot/send?access_token=TOKEN\n",
        )
        .unwrap();
        let text = format!(
            r#"
attempts = 2
[[webhook]]
url = "https://example.com/hook"
on = "failure"
[[dingtalk]]
url_file = "{}"
at_mobiles = ["1370000000"]
[[command]]
command = "/bin/true"
"#,
            url_file.display()
        );
        let config: NotifyConfig = toml::from_str(&text).unwrap();
        let n = Notifiers::from_config(&config).unwrap();
        assert_eq!(n.len(), 3);
        let debug = format!("{n:?}");
        assert!(!debug.contains("TOKEN"), "{debug}");
        assert!(
            debug.contains("dingtalk[0] https://oapi.dingtalk.com"),
            "{debug}"
        );
    }

    #[test]
    fn config_errors() {
        let both: NotifyConfig =
            toml::from_str("[[slack]]\nurl = \"https://a\"\nurl_file = \"/x\"\n").unwrap();
        assert!(matches!(
            Notifiers::from_config(&both),
            Err(ConfigError::UrlChoice {
                kind: "slack",
                index: 0
            })
        ));
        let bad: NotifyConfig = toml::from_str("[[slack]]\nurl = \"ftp://a/SECRET\"\n").unwrap();
        let err = Notifiers::from_config(&bad).unwrap_err().to_string();
        assert!(!err.contains("SECRET"), "{err}");
        let missing: NotifyConfig =
            toml::from_str("[[webhook]]\nurl_file = \"/nonexistent/u\"\n").unwrap();
        let err = Notifiers::from_config(&missing).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/u"), "{err}");
        assert!(toml::from_str::<NotifyConfig>("[[slack]]\nurll = \"x\"\n").is_err());
    }

    #[test]
    fn a_single_inline_table_is_one_notifier() {
        let c: NotifyConfig = toml::from_str(
            "webhook = { url = \"https://h/x\" }\ndingtalk = { url = \"https://d/r\", at_mobiles = [\"1370000000\"] }\n",
        )
        .unwrap();
        assert_eq!(c.webhook.len(), 1);
        assert_eq!(c.dingtalk.len(), 1);
        assert_eq!(c.dingtalk[0].at_mobiles, ["1370000000"]);
    }
}
