//! Block and segment sizes of the cluster being combined, taken from `pg_control`.

use pgincr_types::ControlFile;

/// `BLCKSZ` and `RELSEG_SIZE` of a cluster. Both are compile-time constants of the server, so
/// they are read from the final backup's `pg_control` rather than assumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub blcksz: u32,
    pub relseg_size: u32,
}

impl Geometry {
    pub fn from_control(c: &ControlFile) -> Geometry {
        Geometry {
            blcksz: c.blcksz,
            relseg_size: c.relseg_size,
        }
    }

    pub fn block_bytes(self) -> u64 {
        u64::from(self.blcksz)
    }
}
