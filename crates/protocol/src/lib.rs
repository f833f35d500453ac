//! The PostgreSQL frontend/backend and replication protocols, spoken natively.
//!
//! This crate owns everything between pgincr and a server socket: connection settings as libpq
//! understands them ([`Config`], `~/.pgpass`), transports (TCP, Unix sockets, TLS via rustls),
//! authentication (trust, cleartext, md5, SCRAM-SHA-256 and SCRAM-SHA-256-PLUS), simple queries,
//! and the walsender commands a backup tool needs: `IDENTIFY_SYSTEM`, `SHOW`,
//! `TIMELINE_HISTORY`, slots, `UPLOAD_MANIFEST`, `BASE_BACKUP` as a typed event stream and
//! `START_REPLICATION` with status updates.
//!
//! Message framing is our own (over `bytes`), so CopyData payloads are handed out as slices of
//! the receive buffer; `postgres-protocol` supplies the frontend encoders and SCRAM.
//! Passwords are held in [`Secret`], which never prints.

mod base_backup;
mod connection;
pub mod conninfo;
mod error;
mod message;
pub mod pgpass;
mod replication;
mod tls;
mod transport;
mod walstream;

pub use base_backup::{
    BackupEvent, BaseBackupOptions, BaseBackupStream, Checkpoint, TablespaceInfo,
};
pub use connection::{CancelToken, Connection, NoticeHandler, ResultSet};
pub use conninfo::{Config, Resolved, Secret, SslMode};
pub use error::{DbError, Error, Result};
pub use message::Column;
pub use replication::{parse_wal_segment_size, replication_config, SystemInfo};
pub use walstream::{WalEvent, WalStream};

/// The decoders of bytes received from a server, without a connection, for the fuzz targets
/// in `fuzz/`. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::base_backup::{BackupDecoder, Step};
    pub use crate::message::{decode, split_message, AuthRequest, Backend, Split, MAX_MESSAGE_LEN};
    pub use crate::walstream::parse_copy_data;

    /// Decodes the fields of an ErrorResponse/NoticeResponse body.
    pub fn parse_db_error(body: &[u8]) -> crate::DbError {
        crate::DbError::parse(body)
    }

    /// The password a `.pgpass` text gives for `host:port:dbname:user`.
    pub fn pgpass_find(
        text: &str,
        host: &str,
        port: u16,
        dbname: &str,
        user: &str,
    ) -> Option<crate::Secret> {
        crate::pgpass::find(text, host, port, dbname, user)
    }
}

/// Resolves `cfg` (environment included) and connects.
pub async fn connect(cfg: &Config) -> Result<Connection> {
    let mut c = cfg.clone();
    c.apply_process_env();
    let resolved = c.resolve()?;
    Connection::connect(&resolved).await
}
