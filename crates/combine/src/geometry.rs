//! Block and segment sizes of the cluster being combined, taken from `pg_control`.
//!
//! The values come from [`pgincr_types::RelGeometry`], which `pgincr-types` validates when it
//! parses `pg_control`, so combine and the summary estimate share one definition and neither
//! can be handed a zero block size or an impossible segment size. A `Geometry` can only be
//! made from a validated one (its `rel` field is private); `blcksz` and `relseg_size` are
//! plain copies for the engine's arithmetic.

use pgincr_types::{ControlFile, RelGeometry};

/// `BLCKSZ` and `RELSEG_SIZE` of a cluster. Both are compile-time constants of the server, so
/// they are read from the final backup's `pg_control` rather than assumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// `BLCKSZ`, 1 to 32 KiB.
    pub blcksz: u32,
    /// `RELSEG_SIZE` in blocks, 1 to `INT_MAX`.
    pub relseg_size: u32,
    rel: RelGeometry,
}

impl Geometry {
    pub fn new(rel: RelGeometry) -> Geometry {
        Geometry {
            blcksz: rel.blcksz.get(),
            relseg_size: rel.relseg_size.get(),
            rel,
        }
    }

    pub fn from_control(c: &ControlFile) -> Geometry {
        Geometry::new(c.geometry())
    }

    /// The validated form, for the parsers in `pgincr-types`.
    pub fn rel(self) -> RelGeometry {
        self.rel
    }

    pub fn block_bytes(self) -> u64 {
        self.rel.block_bytes()
    }
}

impl From<Geometry> for RelGeometry {
    fn from(g: Geometry) -> RelGeometry {
        g.rel
    }
}

impl From<RelGeometry> for Geometry {
    fn from(rel: RelGeometry) -> Geometry {
        Geometry::new(rel)
    }
}
