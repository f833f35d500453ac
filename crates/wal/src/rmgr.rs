//! Resource manager IDs and the names `pg_waldump` prints (`rmgrlist.h`, identical in 17/18).

/// `RM_XLOG_ID`.
pub const RM_XLOG_ID: u8 = 0;
/// `RM_XACT_ID`.
pub const RM_XACT_ID: u8 = 1;
/// `RM_MAX_BUILTIN_ID`.
pub const RM_MAX_BUILTIN_ID: u8 = 21;
/// `RM_MIN_CUSTOM_ID`.
pub const RM_MIN_CUSTOM_ID: u8 = 128;

const NAMES: [&str; 22] = [
    "XLOG",
    "Transaction",
    "Storage",
    "CLOG",
    "Database",
    "Tablespace",
    "MultiXact",
    "RelMap",
    "Standby",
    "Heap2",
    "Heap",
    "Btree",
    "Hash",
    "Gin",
    "Gist",
    "Sequence",
    "SPGist",
    "BRIN",
    "CommitTs",
    "ReplicationOrigin",
    "Generic",
    "LogicalMessage",
];

/// `RmgrIdIsValid`: built-in 0..=21 or custom 128..=255.
pub fn is_valid(rmid: u8) -> bool {
    rmid <= RM_MAX_BUILTIN_ID || rmid >= RM_MIN_CUSTOM_ID
}

/// The name `pg_waldump` prints; custom managers it does not know as `custom###`.
pub fn name(rmid: u8) -> std::borrow::Cow<'static, str> {
    match NAMES.get(usize::from(rmid)) {
        Some(n) => std::borrow::Cow::Borrowed(n),
        None => std::borrow::Cow::Owned(format!("custom{rmid:03}")),
    }
}
