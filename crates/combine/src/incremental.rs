//! `INCREMENTAL.*` files: the header parser and size formula live in
//! [`pgincr_types::incremental`], shared with the size estimate; this module re-exports them
//! under the names the combine engine has always used and lets a [`Source`] feed
//! [`IncrementalHeader::read_head`].

use crate::copy::Source;
use crate::error::CombineError;

pub use pgincr_types::incremental::{
    build, clamp_truncation_length, file_size, header_len, IncrementalError, IncrementalHeader,
    IncrementalSource, INCREMENTAL_MAGIC, INCREMENTAL_PREFIX, MAX_BLOCK_NUMBER,
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
