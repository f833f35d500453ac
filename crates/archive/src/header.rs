//! ustar headers: parsed as the server writes them (section 13.4 of the format reference) and
//! built as the server's `tarCreateHeader` writes them, for the archives this client writes
//! itself (`pg_wal.tar` of a backup, every archive of `combine -F t`).

/// One tar block.
pub const BLOCK: usize = 512;

/// Member types the server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other(u8),
}

/// A parsed header; the name is a `String` ([`parse`]) or the raw bytes ([`parse_raw`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header<N = String> {
    /// Normalised: no leading `./`, no trailing `/`; empty for the archive's root.
    pub name: N,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub mtime: u64,
    pub link: String,
}

fn cstr(field: &[u8]) -> &[u8] {
    field.split(|&b| b == 0).next().unwrap_or(field)
}

/// Octal terminated by space or NUL, or GNU base-256 (first byte 0x80).
fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        let (&first, rest) = field.split_first()?;
        let mut v: u64 = u64::from(first & 0x7f);
        for &b in rest {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| (b'0'..=b'7').contains(&b))
        .collect();
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&digits).ok()?, 8).ok()
}

fn checksum(block: &[u8]) -> u64 {
    block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(b)
            }
        })
        .sum()
}

/// Parses one header block. `Ok(None)` is an all-zero (end-of-archive) block. A name that is
/// not UTF-8 is refused.
pub fn parse(block: &[u8; BLOCK]) -> Result<Option<Header>, String> {
    let Some(h) = parse_raw(block)? else {
        return Ok(None);
    };
    let name = String::from_utf8(h.name).map_err(|_| "member name is not UTF-8".to_string())?;
    Ok(Some(Header {
        name,
        kind: h.kind,
        size: h.size,
        mode: h.mode,
        mtime: h.mtime,
        link: h.link,
    }))
}

/// Like [`parse`], with the name as the bytes the archive holds (normalised and checked by
/// [`normalise_bytes`]).
pub fn parse_raw(block: &[u8; BLOCK]) -> Result<Option<Header<Vec<u8>>>, String> {
    if block.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let stored = number(&block[148..156]).ok_or("unreadable header checksum")?;
    if stored != checksum(block) {
        return Err("tar header checksum mismatch".into());
    }
    let mut raw = cstr(&block[0..100]).to_vec();
    if &block[257..262] == b"ustar" {
        let prefix = cstr(&block[345..500]);
        if !prefix.is_empty() {
            let mut p = prefix.to_vec();
            p.push(b'/');
            p.extend_from_slice(&raw);
            raw = p;
        }
    }
    let name = normalise_bytes(&raw)?;
    let kind = match block[156] {
        b'0' | 0 => Kind::File,
        b'5' => Kind::Dir,
        b'2' => Kind::Symlink,
        t => Kind::Other(t),
    };
    let size = number(&block[124..136]).ok_or("unreadable member size")?;
    let mode = number(&block[100..108]).unwrap_or(0o600) as u32;
    let mtime = number(&block[136..148]).unwrap_or(0);
    let link = String::from_utf8_lossy(cstr(&block[157..257])).into_owned();
    Ok(Some(Header::<Vec<u8>> {
        name,
        kind,
        size,
        mode,
        mtime,
        link,
    }))
}

/// Strips `./` prefixes and a trailing `/`; refuses absolute names and `..` components, which
/// would write outside the backup.
pub fn normalise(name: &str) -> Result<String, String> {
    let n = normalise_bytes(name.as_bytes())?;
    // Only ASCII was removed from a valid string.
    String::from_utf8(n).map_err(|_| format!("refusing unsafe member name \"{name}\""))
}

/// [`normalise`] on the bytes of a name.
pub fn normalise_bytes(name: &[u8]) -> Result<Vec<u8>, String> {
    let mut n = name;
    while let Some(rest) = n.strip_prefix(b"./") {
        n = rest;
    }
    while let Some(rest) = n.strip_suffix(b"/") {
        n = rest;
    }
    if n.is_empty() || n == b"." {
        return Ok(Vec::new());
    }
    if n.starts_with(b"/") || n.split(|&b| b == b'/').any(|c| c == b".." || c.is_empty()) {
        return Err(format!(
            "refusing unsafe member name \"{}\"",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(n.to_vec())
}

fn put_octal(field: &mut [u8], v: u64) {
    let Some((last, digits)) = field.split_last_mut() else {
        return;
    };
    let s = format!("{v:0width$o}", width = digits.len());
    // The last `width` digits (the callers' values always fit).
    let skip = s.len().saturating_sub(digits.len());
    for (d, &c) in digits
        .iter_mut()
        .zip(s.as_bytes().get(skip..).unwrap_or_default())
    {
        *d = c;
    }
    *last = b' ';
}

/// A header like the server's `tarCreateHeader` for a regular file (mode 0600).
pub fn file_header(name: &str, size: u64, mtime: u64) -> Result<[u8; BLOCK], String> {
    header(name.as_bytes(), Kind::File, size, 0o600, mtime)
}

/// The longest name the name field holds (NUL-terminated, as `tarCreateHeader` requires).
const NAME_MAX: usize = 99;
/// The longest ustar prefix (directories before the name field's part).
const PREFIX_MAX: usize = 155;

/// Splits a name too long for the name field at a `/` into a ustar prefix and the rest.
fn split_long_name(name: &[u8]) -> Option<(&[u8], &[u8])> {
    name.iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'/' && i <= PREFIX_MAX)
        .filter_map(|(i, _)| Some((name.get(..i)?, name.get(i + 1..)?)))
        .find(|(_, rest)| !rest.is_empty() && rest.len() <= NAME_MAX)
}

/// A header like the server's `tarCreateHeader` for a member of `kind` (a directory's name
/// gets its trailing `/`). Names longer than 99 bytes are split into the ustar prefix field
/// (the server refuses them; a reader of ustar joins them again).
pub fn header(
    name: &[u8],
    kind: Kind,
    size: u64,
    mode: u32,
    mtime: u64,
) -> Result<[u8; BLOCK], String> {
    let owned;
    let name = if kind == Kind::Dir && !name.ends_with(b"/") {
        owned = [name, b"/"].concat();
        owned.as_slice()
    } else {
        name
    };
    let (prefix, rest) = if name.len() <= NAME_MAX {
        (&b""[..], name)
    } else {
        split_long_name(name).ok_or_else(|| {
            format!(
                "file name too long for tar format: \"{}\"",
                String::from_utf8_lossy(name)
            )
        })?
    };
    let mut h = [0u8; BLOCK];
    for (d, &c) in h.iter_mut().zip(rest) {
        *d = c;
    }
    for (d, &c) in h[345..500].iter_mut().zip(prefix) {
        *d = c;
    }
    put_octal(&mut h[100..108], u64::from(mode & 0o7777));
    put_octal(&mut h[108..116], 0);
    put_octal(&mut h[116..124], 0);
    if size < 0o77777777777 {
        put_octal(&mut h[124..136], size);
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    put_octal(&mut h[136..148], mtime);
    h[156] = match kind {
        Kind::File => b'0',
        Kind::Dir => b'5',
        Kind::Symlink => b'2',
        Kind::Other(t) => t,
    };
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..273].copy_from_slice(b"postgres");
    h[297..305].copy_from_slice(b"postgres");
    put_octal(&mut h[329..337], 0);
    put_octal(&mut h[337..345], 0);
    let sum = checksum(&h);
    put_octal(&mut h[148..156], sum);
    Ok(h)
}

/// Zero bytes needed after `size` bytes of data to reach a block boundary.
pub fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let h = file_header("000000010000000000000002", 16 << 20, 1_700_000_000).unwrap();
        let p = parse(&h).unwrap().unwrap();
        assert_eq!(p.name, "000000010000000000000002");
        assert_eq!(p.size, 16 << 20);
        assert_eq!(p.kind, Kind::File);
        let mut bad = h;
        bad[0] ^= 1;
        assert!(parse(&bad).is_err());
        assert_eq!(
            normalise("./pg_wal/summaries/").unwrap(),
            "pg_wal/summaries"
        );
        assert!(normalise("../etc/passwd").is_err());
        assert!(normalise("/abs").is_err());
        assert!(parse(&[0u8; BLOCK]).unwrap().is_none());
        assert_eq!(
            number(&[0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]),
            Some(2 << 32)
        );
        assert_eq!(padding(512), 0);
        assert_eq!(padding(1), 511);
    }

    #[test]
    fn directories_and_long_names() {
        let h = header(b"base/5", Kind::Dir, 0, 0o700, 7).unwrap();
        let p = parse(&h).unwrap().unwrap();
        assert_eq!(
            (p.name.as_str(), p.kind, p.mode, p.mtime),
            ("base/5", Kind::Dir, 0o700, 7)
        );
        assert_eq!(&h[..7], b"base/5/");
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let p = parse(&header(long.as_bytes(), Kind::File, 3, 0o600, 0).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(p.name, long);
        assert!(header("x".repeat(120).as_bytes(), Kind::File, 0, 0o600, 0).is_err());
        let big = parse(&file_header("big", 1 << 40, 0).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(big.size, 1 << 40);
    }
}
