//! The plain-format extractor fed by `BASE_BACKUP`: archive bytes as the server would send
//! them, extracted into a fresh scratch directory. Never a panic, and never a write outside
//! the extraction root: after each input every regular file the extractor says it created is
//! found below the root without following symlinks, and nothing appears beside the root.
//!
//! Input: the first byte chooses the mode. Even: the rest is raw archive bytes, fed in chunks
//! of `data[1] + 1` bytes. Odd: the rest is a list of members `[type][name len][name][link
//! len][link][size][data]` built into an archive with valid header checksums, so that the
//! fuzzer reaches names and links (absolute or `..` link targets are redirected to
//! `<scratch>/outside`, which must stay empty).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgincr_backup::fuzzing::{file_header, padding, Extractor, BLOCK};
use std::path::Path;

fn take<'a>(d: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(d.len());
    let (a, b) = d.split_at(n);
    *d = b;
    a
}

fn byte(d: &mut &[u8]) -> u8 {
    take(d, 1).first().copied().unwrap_or(0)
}

/// A ustar header like the server's, with a valid checksum.
fn header(name: &[u8], kind: u8, link: &[u8], size: u64) -> [u8; BLOCK] {
    let mut h = file_header("x", size, 0).expect("header");
    h[..100].fill(0);
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    h[156] = kind;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn structured(mut d: &[u8], outside: &Path) -> Vec<u8> {
    let mut t = Vec::new();
    while !d.is_empty() {
        let kind = match byte(&mut d) % 5 {
            0 => b'0',
            1 => b'5',
            2 => b'2',
            3 => 0,
            _ => b'1', // a hard link: skipped with a warning
        };
        let n = usize::from(byte(&mut d) % 64);
        let name = take(&mut d, n).to_vec();
        let n = usize::from(byte(&mut d) % 64);
        let mut link = take(&mut d, n).to_vec();
        if link.first() == Some(&b'/') || link.windows(2).any(|w| w == b"..") {
            let mut l = outside.as_os_str().as_encoded_bytes().to_vec();
            l.push(b'/');
            l.extend(link.iter().map(|&b| if b == b'/' { b'_' } else { b }));
            link = l;
        }
        let size = if kind == b'0' || kind == 0 || kind == b'1' {
            u64::from(byte(&mut d))
        } else {
            0
        };
        t.extend_from_slice(&header(&name, kind, &link, size));
        t.extend_from_slice(take(&mut d, size as usize));
        t.resize(t.len() + padding(size) as usize, 0);
    }
    t.resize(t.len() + 2 * BLOCK, 0);
    t
}

/// Regular files below `dir`, symlinks not followed.
fn count_files(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("dir entry");
        let t = e.file_type().expect("file type");
        if t.is_dir() {
            n += count_files(&e.path());
        } else if t.is_file() {
            n += 1;
        }
    }
    n
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let scratch = tempfile::Builder::new()
        .prefix("pgincr-fuzz-tar")
        .tempdir()
        .expect("scratch directory");
    let root = scratch.path().join("root");
    let outside = scratch.path().join("outside");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let (archive, chunk) = if mode & 1 == 0 {
        let (chunk, raw) = rest.split_first().map_or((1, rest), |(&c, r)| (c, r));
        (raw.to_vec(), usize::from(chunk) + 1)
    } else {
        (structured(rest, &outside), 4096)
    };
    let mut x = Extractor::new(root.clone(), "base.tar".into(), Vec::new(), false);
    let mut ok = true;
    for c in archive.chunks(chunk) {
        if x.feed(c).is_err() {
            ok = false;
            break;
        }
    }
    if ok {
        let _ = x.finish();
    }
    let files = x.files;
    drop(x);
    let beside: Vec<_> = std::fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        beside.len(),
        2,
        "something appeared beside the root: {beside:?}"
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "written through a symlink"
    );
    assert_eq!(
        count_files(&root),
        files,
        "a file was created outside the root"
    );
});
