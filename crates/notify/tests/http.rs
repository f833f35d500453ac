//! Delivery against a real HTTP server on 127.0.0.1 started by each test, and a real command.
// Test helpers outside #[test] functions are not covered by clippy.toml's allow-*-in-tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use pgincr_notify::{
    Clock, Delivery, Notification, Notifier, Notifiers, On, Secret, SecretUrl, SendError, Status,
};
use sha2::Sha256;

const PATH_TOKEN: &str = "PATHTOKEN7f3a";
const QUERY_TOKEN: &str = "QUERYTOKEN9c1e";
const SECRET: &str = "SECsecret5b2d";

struct Request {
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn query(&self, key: &str) -> Option<String> {
        let (_, query) = self.target.split_once('?')?;
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| percent_decode(v))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Answers one connection per entry of `replies` (status, body), in order, then stops.
fn serve(replies: Vec<(u16, &'static str)>) -> (String, mpsc::Receiver<Request>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        for (status, reply) in replies {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let target = line.split(' ').nth(1).unwrap().to_owned();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap();
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            tx.send(Request {
                target,
                headers,
                body,
            })
            .unwrap();
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            )
            .unwrap();
        }
    });
    (base, rx, handle)
}

/// A clock at a fixed instant that records sleeps instead of sleeping.
#[derive(Default)]
struct FakeClock {
    sleeps: Mutex<Vec<Duration>>,
}

const NOW_MS: u64 = 1_700_000_000_123;

impl Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        NOW_MS
    }
    fn sleep(&self, duration: Duration) {
        self.sleeps.lock().unwrap().push(duration);
    }
}

fn notification(status: Status) -> Notification {
    Notification {
        status,
        title: "pgincr backup main: failure".into(),
        markdown: "**backup failed**: disk full".into(),
        report: serde_json::json!({"status": status.as_str(), "backup": "20261202T2100", "bytes": 123}),
    }
}

fn notifiers(list: Vec<Notifier>, attempts: u32) -> (Notifiers, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock::default());
    let n = Notifiers::new(
        list,
        attempts,
        Duration::from_millis(100),
        Duration::from_secs(5),
    )
    .with_clock(clock.clone());
    (n, clock)
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

fn secret_url(base: &str) -> SecretUrl {
    SecretUrl::new(format!(
        "{base}/robot/{PATH_TOKEN}?access_token={QUERY_TOKEN}"
    ))
}

fn assert_no_secret(text: &str) {
    for s in [PATH_TOKEN, QUERY_TOKEN, SECRET, "access_token"] {
        assert!(!text.contains(s), "{s} leaked in: {text}");
    }
}

#[test]
fn webhook_posts_report_with_verifiable_signature() {
    let (base, rx, server) = serve(vec![(200, "")]);
    let (n, _) = notifiers(
        vec![Notifier::Webhook {
            url: secret_url(&base),
            secret: Some(Secret::new(SECRET)),
            on: On::Always,
        }],
        3,
    );
    let note = notification(Status::Success);
    let outcomes = n.send(&note);
    server.join().unwrap();
    assert!(
        matches!(outcomes[0].delivery, Delivery::Sent { attempts: 1 }),
        "{outcomes:?}"
    );
    let req = rx.recv().unwrap();
    assert_eq!(
        req.target,
        format!("/robot/{PATH_TOKEN}?access_token={QUERY_TOKEN}")
    );
    assert_eq!(req.json(), note.report);
    assert_eq!(req.header("content-type"), Some("application/json"));
    let sig = req.header("x-pgincr-signature").unwrap();
    let expected: String = hmac(SECRET.as_bytes(), &req.body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sig, format!("sha256={expected}"));
    assert_no_secret(&format!("{} {:?}", outcomes[0], outcomes[0]));
}

#[test]
fn dingtalk_markdown_with_mentions_and_signature() {
    let (base, rx, server) = serve(vec![(200, r#"{"errcode":0,"errmsg":"ok"}"#)]);
    let (n, _) = notifiers(
        vec![Notifier::DingTalk {
            url: secret_url(&base),
            secret: Some(Secret::new(SECRET)),
            at_mobiles: vec!["1370000000".into(), "1380000000".into()],
            on: On::Failure,
        }],
        3,
    );
    let note = notification(Status::Failure);
    let outcomes = n.send(&note);
    server.join().unwrap();
    assert!(
        matches!(outcomes[0].delivery, Delivery::Sent { attempts: 1 }),
        "{outcomes:?}"
    );
    let req = rx.recv().unwrap();
    let body = req.json();
    assert_eq!(body["msgtype"], "markdown");
    assert_eq!(body["markdown"]["title"], note.title);
    let text = body["markdown"]["text"].as_str().unwrap();
    assert!(text.contains(&note.markdown), "{text}");
    assert!(
        text.contains("@1370000000") && text.contains("@1380000000"),
        "{text}"
    );
    assert_eq!(
        body["at"]["atMobiles"],
        serde_json::json!(["1370000000", "1380000000"])
    );
    assert_eq!(body["at"]["isAtAll"], false);
    // The original token stays, timestamp and sign are appended.
    assert_eq!(req.query("access_token").as_deref(), Some(QUERY_TOKEN));
    let timestamp = req.query("timestamp").unwrap();
    assert_eq!(timestamp, NOW_MS.to_string());
    let sign = req.query("sign").unwrap();
    let expected = base64::engine::general_purpose::STANDARD.encode(hmac(
        SECRET.as_bytes(),
        format!("{timestamp}\n{SECRET}").as_bytes(),
    ));
    assert_eq!(sign, expected);
}

#[test]
fn dingtalk_errcode_is_a_failure_without_retry() {
    let (base, _rx, server) = serve(vec![(
        200,
        r#"{"errcode":310000,"errmsg":"sign not match"}"#,
    )]);
    let (n, clock) = notifiers(
        vec![Notifier::DingTalk {
            url: secret_url(&base),
            secret: None,
            at_mobiles: vec![],
            on: On::Always,
        }],
        3,
    );
    let outcomes = n.send(&notification(Status::Failure));
    server.join().unwrap();
    assert!(
        matches!(
            &outcomes[0].delivery,
            Delivery::Failed {
                attempts: 1,
                error: SendError::Rejected { .. }
            }
        ),
        "{outcomes:?}"
    );
    assert!(clock.sleeps.lock().unwrap().is_empty());
}

#[test]
fn slack_text() {
    let (base, rx, server) = serve(vec![(200, "ok")]);
    let (n, _) = notifiers(
        vec![Notifier::Slack {
            url: secret_url(&base),
            on: On::Always,
        }],
        3,
    );
    let note = notification(Status::Failure);
    let outcomes = n.send(&note);
    server.join().unwrap();
    assert!(
        matches!(outcomes[0].delivery, Delivery::Sent { .. }),
        "{outcomes:?}"
    );
    let body = rx.recv().unwrap().json();
    assert_eq!(
        body,
        serde_json::json!({"text": format!("*{}*\n{}", note.title, note.markdown)})
    );
}

#[test]
fn on_failure_skips_success() {
    let (n, _) = notifiers(
        vec![Notifier::Slack {
            url: SecretUrl::new("http://127.0.0.1:9/never"),
            on: On::Failure,
        }],
        3,
    );
    let outcomes = n.send(&notification(Status::Success));
    assert!(
        matches!(outcomes[0].delivery, Delivery::Skipped),
        "{outcomes:?}"
    );
}

#[test]
fn server_error_is_retried_with_backoff_then_reported_and_logged_redacted() {
    let (base, rx, server) = serve(vec![(500, ""), (500, ""), (500, "")]);
    let (n, clock) = notifiers(
        vec![Notifier::Webhook {
            url: secret_url(&base),
            secret: Some(Secret::new(SECRET)),
            on: On::Always,
        }],
        3,
    );
    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || LogWriter(writer.clone()))
        .finish();
    let outcomes =
        tracing::subscriber::with_default(subscriber, || n.send(&notification(Status::Failure)));
    server.join().unwrap();
    assert_eq!(rx.try_iter().count(), 3);
    let outcome = &outcomes[0];
    assert!(
        matches!(
            &outcome.delivery,
            Delivery::Failed {
                attempts: 3,
                error: SendError::Status { status: 500 }
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(
        *clock.sleeps.lock().unwrap(),
        [Duration::from_millis(100), Duration::from_millis(200)]
    );
    let shown = format!("{outcome} {outcome:?} {n:?}");
    assert!(shown.contains("webhook[0] http://127.0.0.1:"), "{shown}");
    assert_no_secret(&shown);
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("notification failed"), "{logs}");
    assert!(logs.contains("HTTP 500"), "{logs}");
    assert_no_secret(&logs);
}

#[test]
fn unreachable_endpoint_is_a_transport_failure_without_the_url() {
    // Bind then drop, so the port is (almost certainly) closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (n, clock) = notifiers(
        vec![Notifier::Slack {
            url: secret_url(&format!("http://127.0.0.1:{port}")),
            on: On::Always,
        }],
        2,
    );
    let outcomes = n.send(&notification(Status::Failure));
    assert!(
        matches!(
            &outcomes[0].delivery,
            Delivery::Failed {
                attempts: 2,
                error: SendError::Transport { .. }
            }
        ),
        "{outcomes:?}"
    );
    assert_eq!(clock.sleeps.lock().unwrap().len(), 1);
    assert_no_secret(&format!("{} {:?}", outcomes[0], outcomes[0]));
}

#[test]
fn command_receives_report_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stdin.json");
    let env = dir.path().join("status");
    let (n, _) = notifiers(
        vec![Notifier::Command {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                format!(
                    "cat > '{}'; printf %s \"$PGINCR_NOTIFY_STATUS\" > '{}'",
                    out.display(),
                    env.display()
                ),
            ],
            on: On::Always,
        }],
        1,
    );
    let note = notification(Status::Failure);
    let outcomes = n.send(&note);
    assert!(
        matches!(outcomes[0].delivery, Delivery::Sent { attempts: 1 }),
        "{outcomes:?}"
    );
    let got: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(got, note.report);
    assert_eq!(std::fs::read_to_string(&env).unwrap(), "failure");
}

#[test]
fn command_failure_and_timeout_are_reported() {
    let clock = Arc::new(FakeClock::default());
    let n = Notifiers::new(
        vec![
            Notifier::Command {
                program: "/bin/false".into(),
                args: vec![],
                on: On::Always,
            },
            Notifier::Command {
                program: "/bin/sleep".into(),
                args: vec!["30".into()],
                on: On::Always,
            },
            Notifier::Command {
                program: "/nonexistent/hook".into(),
                args: vec![],
                on: On::Always,
            },
        ],
        2,
        Duration::from_millis(10),
        Duration::from_millis(300),
    )
    .with_clock(clock);
    let start = std::time::Instant::now();
    let outcomes = n.send(&notification(Status::Failure));
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(
        matches!(
            &outcomes[0].delivery,
            Delivery::Failed {
                attempts: 2,
                error: SendError::Exit { .. }
            }
        ),
        "{outcomes:?}"
    );
    assert!(
        matches!(
            &outcomes[1].delivery,
            Delivery::Failed {
                attempts: 2,
                error: SendError::Timeout { .. }
            }
        ),
        "{outcomes:?}"
    );
    assert!(
        matches!(
            &outcomes[2].delivery,
            Delivery::Failed {
                attempts: 1,
                error: SendError::Spawn { .. }
            }
        ),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1].notifier, "command[1] /bin/sleep");
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
