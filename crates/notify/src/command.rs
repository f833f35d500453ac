//! The command notifier: runs a program with the JSON report on standard input.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Notification, SendError};

/// How often a running hook is checked for exit.
const POLL: Duration = Duration::from_millis(20);

/// Runs `program args...` with the report on stdin and `PGINCR_NOTIFY_STATUS` /
/// `PGINCR_NOTIFY_TITLE` in its environment; kills it after `timeout`. Its stdout is
/// discarded; its stderr goes to ours, so a hook's complaint reaches the operator.
pub(crate) fn run(
    program: &Path,
    args: &[String],
    n: &Notification,
    timeout: Duration,
) -> Result<(), SendError> {
    let body = serde_json::to_vec(&n.report)?;
    let mut child = Command::new(program)
        .args(args)
        .env("PGINCR_NOTIFY_STATUS", n.status.as_str())
        .env("PGINCR_NOTIFY_TITLE", &n.title)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| SendError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    // Written from a thread: a hook that never reads would otherwise block us on a full pipe
    // and defeat the timeout. A hook that exits without reading is not an error.
    let writer = child.stdin.take().map(|mut stdin| {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&body);
        })
    });
    let result = wait(&mut child, program, timeout);
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    result
}

fn wait(
    child: &mut std::process::Child,
    program: &Path,
    timeout: Duration,
) -> Result<(), SendError> {
    let start = Instant::now();
    loop {
        let polled = child.try_wait().map_err(|source| SendError::Wait {
            program: program.to_owned(),
            source,
        })?;
        if let Some(status) = polled {
            return if status.success() {
                Ok(())
            } else {
                Err(SendError::Exit {
                    program: program.to_owned(),
                    status: status.to_string(),
                })
            };
        }
        if start.elapsed() >= timeout {
            // Killing closes the stdin pipe, so the writer thread ends too.
            let _ = child.kill();
            let _ = child.wait();
            return Err(SendError::Timeout {
                program: program.to_owned(),
                secs: timeout.as_secs(),
            });
        }
        std::thread::sleep(POLL);
    }
}
