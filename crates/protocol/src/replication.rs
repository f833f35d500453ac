//! Walsender commands that answer with plain result sets, and `UPLOAD_MANIFEST`.

use bytes::Bytes;
use pgincr_types::{Lsn, TimeLineId};
use postgres_protocol::message::frontend;

use crate::connection::{Connection, ResultSet};
use crate::conninfo::Config;
use crate::error::{Error, Result};
use crate::message::Backend;

/// The answer to `IDENTIFY_SYSTEM`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemInfo {
    pub system_identifier: u64,
    pub timeline: TimeLineId,
    pub xlogpos: Lsn,
    pub dbname: Option<String>,
}

/// Sets what a physical replication connection needs, as `pg_basebackup` does:
/// `replication=true`, `dbname=replication` (for `pg_hba.conf` and `~/.pgpass` matching) and a
/// fallback application name.
pub fn replication_config(base: &Config, app: &str) -> Config {
    let mut c = base.clone();
    c.replication = Some("true".into());
    c.dbname = Some("replication".into());
    if c.fallback_application_name.is_none() {
        c.fallback_application_name = Some(app.into());
    }
    c
}

/// Quotes a slot name as a replication-grammar identifier. The replication scanner has no
/// escape for `"`, so such names are refused.
pub(crate) fn quote_ident(name: &str) -> Result<String> {
    if name.is_empty() || name.contains('"') || name.contains('\0') {
        return Err(Error::Config(format!(
            "invalid replication slot name \"{name}\": it must be non-empty and contain no double quote"
        )));
    }
    Ok(format!("\"{name}\""))
}

/// Quotes a string for the replication grammar: `'` doubled, no backslash processing.
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Parses `SHOW wal_segment_size` output (`16MB`, `1GB`) into bytes, checking it is a power of
/// two between 1 MB and 1 GB.
pub fn parse_wal_segment_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("GB") {
        (n, 1u64 << 30)
    } else if let Some(n) = t.strip_suffix("MB") {
        (n, 1u64 << 20)
    } else if let Some(n) = t.strip_suffix("kB") {
        (n, 1u64 << 10)
    } else {
        (t, 1)
    };
    let v = num
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|v| v.is_power_of_two() && (1 << 20..=1 << 30).contains(v))
        .ok_or_else(|| Error::protocol(format!("unexpected wal_segment_size \"{text}\"")))?;
    Ok(v)
}

fn one_row<'a>(sets: &'a [ResultSet], what: &str, cols: usize) -> Result<&'a ResultSet> {
    match sets.first() {
        Some(s) if s.rows.len() == 1 && s.columns.len() >= cols => Ok(s),
        Some(s) => Err(Error::protocol(format!(
            "{what}: expected 1 row with {cols} columns, got {} rows and {} columns",
            s.rows.len(),
            s.columns.len()
        ))),
        None => Err(Error::protocol(format!("{what}: no result"))),
    }
}

fn parse_field<T: std::str::FromStr>(set: &ResultSet, col: usize, what: &str) -> Result<T> {
    let text = set.text(0, col).unwrap_or("");
    text.parse().map_err(|_| {
        Error::protocol(format!(
            "{what}: could not parse \"{text}\" in column {col}"
        ))
    })
}

impl Connection {
    /// `IDENTIFY_SYSTEM`.
    pub async fn identify_system(&mut self) -> Result<SystemInfo> {
        let sets = self.simple_query("IDENTIFY_SYSTEM").await?;
        let s = one_row(&sets, "IDENTIFY_SYSTEM", 3)?;
        Ok(SystemInfo {
            system_identifier: parse_field(s, 0, "IDENTIFY_SYSTEM")?,
            timeline: TimeLineId(parse_field(s, 1, "IDENTIFY_SYSTEM")?),
            xlogpos: parse_field(s, 2, "IDENTIFY_SYSTEM")?,
            dbname: s.text(0, 3).map(str::to_string),
        })
    }

    /// `SHOW name` (on a walsender or a normal session).
    pub async fn show(&mut self, name: &str) -> Result<String> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            return Err(Error::Config(format!("invalid setting name \"{name}\"")));
        }
        let sets = self.simple_query(&format!("SHOW {name}")).await?;
        let s = one_row(&sets, "SHOW", 1)?;
        Ok(s.text(0, 0).unwrap_or("").to_string())
    }

    /// `TIMELINE_HISTORY tli`: the history file's name and its bytes, verbatim.
    pub async fn timeline_history(&mut self, tli: TimeLineId) -> Result<(String, Bytes)> {
        if tli.0 == 0 {
            return Err(Error::Config("timeline 0 does not exist".into()));
        }
        let sets = self
            .simple_query(&format!("TIMELINE_HISTORY {}", tli.0))
            .await?;
        let s = one_row(&sets, "TIMELINE_HISTORY", 2)?;
        let name = s.text(0, 0).unwrap_or("").to_string();
        let expected = pgincr_types::walfile::history_file_name(tli);
        if name != expected {
            return Err(Error::protocol(format!(
                "TIMELINE_HISTORY {} returned file \"{name}\", expected \"{expected}\"",
                tli.0
            )));
        }
        let content = s
            .rows
            .first()
            .and_then(|row| row.get(1))
            .cloned()
            .flatten()
            .unwrap_or_default();
        Ok((name, content))
    }

    /// `CREATE_REPLICATION_SLOT name [TEMPORARY] PHYSICAL (RESERVE_WAL)`; returns the slot's
    /// consistent point when the server reports one.
    pub async fn create_physical_slot(
        &mut self,
        name: &str,
        temporary: bool,
    ) -> Result<Option<Lsn>> {
        let q = format!(
            "CREATE_REPLICATION_SLOT {} {}PHYSICAL (RESERVE_WAL)",
            quote_ident(name)?,
            if temporary { "TEMPORARY " } else { "" }
        );
        let sets = self.simple_query(&q).await?;
        Ok(sets
            .first()
            .and_then(|s| s.text(0, 1))
            .and_then(|t| t.parse().ok()))
    }

    /// `DROP_REPLICATION_SLOT name WAIT`.
    pub async fn drop_slot(&mut self, name: &str) -> Result<()> {
        self.simple_query(&format!(
            "DROP_REPLICATION_SLOT {} WAIT",
            quote_ident(name)?
        ))
        .await
        .map(|_| ())
    }

    /// `UPLOAD_MANIFEST`: sends a prior backup's `backup_manifest` verbatim. The server
    /// validates it (checksum, version, system identifier) and answers after CopyDone.
    pub async fn upload_manifest(&mut self, manifest: &[u8]) -> Result<()> {
        frontend::query("UPLOAD_MANIFEST", &mut self.wbuf)?;
        self.flush().await?;
        match self.recv().await? {
            Backend::CopyInResponse => {}
            Backend::Error(e) => {
                self.drain_to_ready().await?;
                return Err(Error::Db(e));
            }
            m => {
                return Err(Error::protocol(format!(
                    "UPLOAD_MANIFEST: expected CopyInResponse, got {}",
                    m.name()
                )))
            }
        }
        for chunk in manifest.chunks(64 * 1024) {
            // CopyData header, then the chunk itself without copying it into the buffer.
            self.wbuf.extend_from_slice(b"d");
            self.wbuf
                .extend_from_slice(&((chunk.len() + 4) as u32).to_be_bytes());
            self.write_raw(chunk).await?;
        }
        frontend::copy_done(&mut self.wbuf);
        self.flush().await?;
        match self.drain_to_ready().await? {
            Some(e) => Err(Error::Db(e)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_sizes() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_ident("Slot").unwrap(), "\"Slot\"");
        assert!(quote_ident("a\"b").is_err());
        assert_eq!(parse_wal_segment_size("16MB").unwrap(), 16 << 20);
        assert_eq!(parse_wal_segment_size("1GB").unwrap(), 1 << 30);
        assert!(parse_wal_segment_size("3MB").is_err());
        assert!(parse_wal_segment_size("lots").is_err());
    }
}
