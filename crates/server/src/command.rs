//! Running PostgreSQL's programs and reporting their failures.

use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// `cmd` as a person would type it: program and arguments, never its environment.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        s.push(' ');
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=./:,@%+".contains(c))
        {
            s.push_str(&a);
        } else {
            s.push('\'');
            s.push_str(&a.replace('\'', r"'\''"));
            s.push('\'');
        }
    }
    s
}

/// Runs `cmd` to completion with no input and returns its stdout; a failure carries `shown`
/// (see [`describe`]), the exit status and stderr.
pub(crate) fn run(cmd: &mut Command, shown: String) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: shown.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: shown,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_argv_not_environment() {
        let mut c = Command::new("/usr/bin/psql");
        c.args(["-X", "-d", "my db", "it's"])
            .env("PGPASSWORD", "secret");
        let d = describe(&c);
        assert_eq!(d, r"/usr/bin/psql -X -d 'my db' 'it'\''s'");
        assert!(!d.contains("secret"));
    }

    #[test]
    fn failures_carry_status_and_stderr() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo oops >&2; exit 3"]);
        let shown = describe(&c);
        match run(&mut c, shown) {
            Err(Error::Command { status, stderr, .. }) => {
                assert_eq!(status.code(), Some(3));
                assert_eq!(stderr, "oops\n");
            }
            other => panic!("{other:?}"),
        }
        let mut c = Command::new("/nonexistent/pgincr-tool");
        assert!(matches!(
            run(&mut c, "pgincr-tool".into()),
            Err(Error::Spawn { .. })
        ));
    }
}
