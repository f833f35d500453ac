//! Choosing a TCP port for a throwaway server.
//!
//! The usual trick, binding port 0 and closing the socket, draws from the kernel's ephemeral
//! range, which outgoing connections use too, and may hand the same port to two threads one
//! after the other, since nothing holds it between the probe and the postmaster's bind. So the
//! ports come from a range below Linux's ephemeral one (32768-60999 by default), walked by a
//! process-wide cursor that starts at a random point: threads of one process never get the same
//! port, and processes started together rarely start near each other. What remains (another
//! program binding the port between our probe and postgres's) shows up as a failed start,
//! which [`crate::Installation::start`] retries on another port.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The ports [`free_port`] hands out.
const PORT_RANGE: (u16, u16) = (20000, 32767);

/// A port of [`PORT_RANGE`] on which nothing listens on 127.0.0.1 (nor on ::1, where IPv6 is
/// there) and that this process has not handed out recently.
pub(crate) fn free_port() -> Result<u16> {
    static CURSOR: OnceLock<AtomicU32> = OnceLock::new();
    let cursor = CURSOR.get_or_init(|| AtomicU32::new(random_u32()));
    pick(
        PORT_RANGE.0,
        PORT_RANGE.1,
        || cursor.fetch_add(1, Ordering::Relaxed),
        is_free,
    )
}

/// The first port from `next()` (reduced into `first..=last`) that `free` accepts, trying as
/// many as the range holds.
fn pick(
    first: u16,
    last: u16,
    mut next: impl FnMut() -> u32,
    mut free: impl FnMut(u16) -> bool,
) -> Result<u16> {
    let span = u32::from(last - first) + 1;
    for _ in 0..span {
        // span <= 65536 and the remainder is below it, so the sum fits in a u16.
        let port = first + (next() % span) as u16;
        if free(port) {
            return Ok(port);
        }
    }
    Err(Error::NoFreePort { first, last })
}

/// Whether postgres could bind `port` on the loopback addresses now. The probe sets
/// SO_REUSEADDR (the standard library does on Unix) as postgres does, so connections of an
/// earlier server lingering in TIME_WAIT do not make a port look taken.
fn is_free(port: u16) -> bool {
    if TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_err() {
        return false;
    }
    // A machine without IPv6 cannot bind ::1 at all; only "in use" counts against the port.
    match TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port))) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::AddrInUse,
    }
}

/// A random number without a dependency: the standard library seeds every `RandomState` from
/// the operating system's random source.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_the_range_from_the_cursor_and_wraps() {
        let mut n = 8u32;
        let mut seen = Vec::new();
        let port = pick(
            100,
            109,
            || {
                n += 1;
                n
            },
            |p| {
                seen.push(p);
                p == 101
            },
        )
        .unwrap();
        assert_eq!(port, 101);
        assert_eq!(seen, [109, 100, 101]);
    }

    #[test]
    fn a_full_range_is_an_error() {
        let mut n = 0u32;
        let mut tries = 0;
        let r = pick(
            100,
            104,
            || {
                n += 1;
                n
            },
            |_| {
                tries += 1;
                false
            },
        );
        assert!(matches!(
            r,
            Err(Error::NoFreePort {
                first: 100,
                last: 104
            })
        ));
        assert_eq!(tries, 5);
    }

    #[test]
    fn whole_port_space() {
        let p = pick(0, u16::MAX, || u32::MAX, |_| true).unwrap();
        assert_eq!(p, (u32::MAX % 65536) as u16);
    }

    #[test]
    fn free_ports_are_distinct_and_free() {
        let a = free_port().unwrap();
        let b = free_port().unwrap();
        assert_ne!(a, b);
        assert!((PORT_RANGE.0..=PORT_RANGE.1).contains(&a));
        // A port someone listens on is not free.
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, a)).unwrap();
        assert!(!is_free(a));
        drop(l);
        assert!(is_free(a));
    }
}
