//! `INCREMENTAL.*` files: the header parser and size formula live in
//! [`pgincr_types::incremental`], shared with the size estimate; this module re-exports what
//! the combine engine uses and lets a [`Source`] feed [`IncrementalHeader::read_head`]. (Tests
//! that build `INCREMENTAL.*` files use [`pgincr_types::incremental::build`].)

use crate::copy::Source;
use crate::error::CombineError;

pub(crate) use pgincr_types::incremental::{
    IncrementalError, IncrementalHeader, IncrementalSource, INCREMENTAL_PREFIX,
};

impl IncrementalSource for Source {
    type Error = CombineError;

    fn source_len(&self) -> u64 {
        self.len()
    }

    fn read_prefix(&self, n: u64) -> Result<Vec<u8>, CombineError> {
        Source::read_prefix(self, n)
    }
}
