//! File-system helpers of the fuzz cases: a snapshot of a folder that never fails (digests of
//! files, link targets, folders, anything else), the difference of two snapshots, and the
//! damage a case does to one entry of a run or data folder.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::Rng;
use sha2::{Digest, Sha256};

/// One entry of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    File { len: u64, sha256: [u8; 32] },
    Dir,
    Link(PathBuf),
    Other,
    Unreadable(String),
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::File { len, sha256 } => {
                let hex: String = sha256[..6].iter().map(|b| format!("{b:02x}")).collect();
                write!(f, "a file of {len} bytes, sha256 {hex}…")
            }
            Entry::Dir => write!(f, "a folder"),
            Entry::Link(to) => write!(f, "a link to {}", to.display()),
            Entry::Other => write!(f, "not a file, folder or link"),
            Entry::Unreadable(e) => write!(f, "unreadable ({e})"),
        }
    }
}

/// Every entry under `dir` (links not followed) by path relative to `dir`; `dir` itself as "".
pub type Snapshot = BTreeMap<PathBuf, Entry>;

/// Snapshots `dir` (which may be missing, a file or a link: then that is its one entry).
pub fn snapshot(dir: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    walk(dir, Path::new(""), &mut out);
    out
}

fn walk(path: &Path, rel: &Path, out: &mut Snapshot) {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel.as_os_str().is_empty() => {
            return;
        }
        Err(e) => {
            out.insert(rel.to_path_buf(), Entry::Unreadable(e.to_string()));
            return;
        }
    };
    let entry = if meta.file_type().is_symlink() {
        fs::read_link(path).map_or_else(|e| Entry::Unreadable(e.to_string()), Entry::Link)
    } else if meta.is_dir() {
        match fs::read_dir(path) {
            Ok(entries) => {
                for e in entries.flatten() {
                    walk(&e.path(), &rel.join(e.file_name()), out);
                }
                Entry::Dir
            }
            Err(e) => Entry::Unreadable(e.to_string()),
        }
    } else if meta.is_file() {
        match fs::read(path) {
            Ok(bytes) => Entry::File {
                len: bytes.len() as u64,
                sha256: Sha256::digest(&bytes).as_slice().try_into().unwrap(),
            },
            Err(e) => Entry::Unreadable(e.to_string()),
        }
    } else {
        Entry::Other
    };
    out.insert(rel.to_path_buf(), entry);
}

/// The paths that differ between two snapshots, in words ("" when none).
pub fn diff(before: &Snapshot, after: &Snapshot) -> String {
    let mut changes = Vec::new();
    for (p, e) in before {
        match after.get(p) {
            None => changes.push(format!("removed {}", p.display())),
            Some(a) if a != e => changes.push(format!("changed {} ({e} -> {a})", p.display())),
            _ => {}
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        changes.push(format!("added {}", p.display()));
    }
    changes.join("; ")
}

/// The same, only for what existed before (new files are allowed).
pub fn diff_existing(before: &Snapshot, after: &Snapshot) -> String {
    let kept: Snapshot = after
        .iter()
        .filter(|(p, _)| before.contains_key(*p))
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect();
    diff(before, &kept)
}

/// Copies a folder (links as links).
pub fn copy_dir(from: &Path, to: &Path) {
    super::report::copy_tree(from, to);
}

/// Removes whatever is at `path` (file, link, folder), if anything.
pub fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).unwrap(),
        Ok(_) => fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
}

/// Every entry under `dir` (files and folders, not `dir` itself), relative, sorted.
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir)
        .into_keys()
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}

/// Damages `path` one random way; returns what it did. `header`: a fixed-size binary header
/// of this many bytes whose fields may be set to extremes (IDX files).
pub fn damage(rng: &mut StdRng, path: &Path, header: Option<usize>) -> String {
    let is_file = fs::symlink_metadata(path).is_ok_and(|m| m.is_file());
    let choices = if is_file { 10 } else { 6 };
    let which = if header.is_some() && rng.gen_range(0..3) == 0 {
        10
    } else {
        rng.gen_range(0..choices)
    };
    match which {
        0 => {
            remove_any(path);
            "deleted".into()
        }
        1 => {
            remove_any(path);
            fs::create_dir(path).unwrap();
            "replaced with an empty folder".into()
        }
        2 => {
            remove_any(path);
            symlink(path.with_file_name("gone"), path).unwrap();
            "replaced with a dangling link".into()
        }
        3 => {
            remove_any(path);
            symlink(path, path).unwrap();
            "replaced with a link to itself".into()
        }
        4 => {
            let n = *super::gen::pick(rng, &[0usize, 1, 7, 100, 5000]);
            let junk: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            remove_any(path);
            fs::write(path, junk).unwrap();
            format!("replaced with {n} random bytes")
        }
        5 => {
            // Still whole, through a link: this one should work.
            let moved = path.with_extension("moved");
            fs::rename(path, &moved).unwrap();
            symlink(&moved, path).unwrap();
            "moved aside and linked to".into()
        }
        6 | 7 => {
            let bytes = fs::read(path).unwrap();
            let at = rng.gen_range(0..=bytes.len());
            fs::write(path, &bytes[..at]).unwrap();
            format!("truncated from {} to {at} bytes", bytes.len())
        }
        8 | 9 => {
            let mut bytes = fs::read(path).unwrap();
            if bytes.is_empty() {
                return "left as is (empty)".into();
            }
            let flips = if which == 8 { 1 } else { rng.gen_range(2..20) };
            let mut at = Vec::new();
            for _ in 0..flips {
                let (i, bit) = (rng.gen_range(0..bytes.len()), rng.gen_range(0..8));
                bytes[i] ^= 1 << bit;
                at.push(format!("{i}.{bit}"));
            }
            fs::write(path, bytes).unwrap();
            format!("flipped bits (byte.bit) {}", at.join(" "))
        }
        _ => {
            let mut bytes = fs::read(path).unwrap();
            let len = header.unwrap_or(4).min(bytes.len()) / 4;
            if len == 0 {
                return "left as is (no header)".into();
            }
            let field = rng.gen_range(0..len);
            let value: u32 = *super::gen::pick(
                rng,
                &[
                    0,
                    1,
                    2,
                    3,
                    255,
                    0x0803,
                    0x0D03,
                    0x0801,
                    0x08FF,
                    65_536,
                    0x7FFF_FFFF,
                    u32::MAX,
                ],
            );
            bytes[field * 4..field * 4 + 4].copy_from_slice(&value.to_be_bytes());
            fs::write(path, bytes).unwrap();
            format!("header field {field} set to {value:#x}")
        }
    }
}
