//! A zero-initialised heap buffer whose address is aligned for direct I/O.

use std::ops::{Deref, DerefMut};

/// Alignment of buffers, offsets and lengths used for direct I/O. 4 KiB satisfies every
/// logical block size Linux file systems ask for (512 or 4096 bytes).
pub const ALIGN: usize = 4096;

/// A fixed-size, zero-filled buffer aligned to [`ALIGN`].
///
/// An ordinary vector one alignment unit longer than asked, of which the buffer is the
/// aligned window: no allocator calls of our own and no `unsafe`, for at most 4 KiB more
/// memory per buffer (the combine keeps one 1 MiB buffer per worker).
pub struct AlignedBuf {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A buffer of `len` bytes (rounded up to a multiple of [`ALIGN`], at least one).
    pub fn new(len: usize) -> AlignedBuf {
        let len = len.max(1).div_ceil(ALIGN) * ALIGN;
        let bytes = vec![0u8; len + ALIGN];
        // `align_offset` of a byte pointer is always below ALIGN; the fallback is unreachable
        // but keeps the window inside the vector whatever it returns.
        let start = bytes.as_ptr().align_offset(ALIGN).min(ALIGN);
        AlignedBuf { bytes, start, len }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes
            .get(self.start..self.start + self.len)
            .unwrap_or_default()
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.start, self.start + self.len);
        self.bytes.get_mut(start..end).unwrap_or_default()
    }
}

/// Whether `data` may be handed to a direct-I/O call as it is.
pub(crate) fn is_aligned(data: &[u8]) -> bool {
    (data.as_ptr() as usize | data.len()) & (ALIGN - 1) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        for n in [0, 1, 4095, 4096, 4097, 1 << 20] {
            let b = AlignedBuf::new(n);
            assert!(is_aligned(&b));
            assert!(b.len() >= n);
            assert!(b.iter().all(|&x| x == 0));
        }
    }
}
