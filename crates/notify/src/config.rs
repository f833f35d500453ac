//! The `[notify]` configuration table, as the CLI's TOML file spells it.

use std::path::PathBuf;

use serde::Deserialize;

use crate::secret::Secret;

/// `[notify]`: each kind is an array of tables, so several of one kind may be configured:
///
/// ```toml
/// [notify]
/// attempts = 4
/// [[notify.webhook]]
/// url_file = "/etc/pgincr/webhook-url"
/// secret_file = "/etc/pgincr/webhook-secret"
/// on = "failure"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    #[serde(default, deserialize_with = "one_or_many")]
    pub webhook: Vec<WebhookConfig>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub dingtalk: Vec<DingTalkConfig>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub slack: Vec<SlackConfig>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub command: Vec<CommandConfig>,
    /// Tries per notifier, the first included.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Delay before the first retry; each later retry waits twice as long.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Per HTTP request, and the limit on a command hook's run time.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            webhook: Vec::new(),
            dingtalk: Vec::new(),
            slack: Vec::new(),
            command: Vec::new(),
            attempts: default_attempts(),
            backoff_ms: default_backoff_ms(),
            timeout_secs: default_timeout_secs(),
        }
    }
}

/// A kind may be one inline table (`webhook = { url = ... }`, as the issue's example writes
/// it) or an array of tables (`[[notify.webhook]]`) when there are several.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => v,
        OneOrMany::One(t) => vec![t],
    })
}

fn default_attempts() -> u32 {
    3
}

fn default_backoff_ms() -> u64 {
    1000
}

fn default_timeout_secs() -> u64 {
    10
}

/// When a notifier fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum On {
    #[default]
    Always,
    Failure,
    Success,
}

/// `[[notify.webhook]]`: POSTs the JSON report.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint, inline; prefer `url_file`, which keeps the token out of the config.
    #[serde(default)]
    pub url: Option<Secret>,
    /// A file whose first line is the endpoint.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// File holding the HMAC-SHA256 key for `X-Pgincr-Signature`.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub on: On,
}

/// `[[notify.dingtalk]]`: a DingTalk custom robot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DingTalkConfig {
    /// The endpoint, inline; prefer `url_file`, which keeps the token out of the config.
    #[serde(default)]
    pub url: Option<Secret>,
    /// A file whose first line is the endpoint.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// File holding the robot's signing secret (`SEC...`), for robots with "additional signature".
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub at_mobiles: Vec<String>,
    #[serde(default)]
    pub on: On,
}

/// `[[notify.slack]]`: a Slack-compatible incoming webhook (also Mattermost, Rocket.Chat).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The endpoint, inline; prefer `url_file`, which keeps the token out of the config.
    #[serde(default)]
    pub url: Option<Secret>,
    /// A file whose first line is the endpoint.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    #[serde(default)]
    pub on: On,
}

/// `[[notify.command]]`: runs a program with the JSON report on its standard input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    pub command: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub on: On,
}
