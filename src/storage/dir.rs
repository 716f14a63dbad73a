//! Directories of numbered files: the one lister and name parser that segments
//! (`{seq:020}-{first_index:020}.wal`) and snapshots (`snap-{index:020}-{term:020}.snap`) share,
//! and the directory fsync that makes renames and deletions durable. All through the
//! file-system seam (`fs`).

use std::path::{Path, PathBuf};

use super::error::StorageError;
use super::fs::FileSystem;

/// How the files of one kind are named: `{prefix}{a:020}-{b:020}{suffix}`, and files being
/// written end with `temp_suffix` (never part of the store).
#[derive(Clone, Copy, Debug)]
pub struct Naming {
    pub prefix: &'static str,
    pub suffix: &'static str,
    pub temp_suffix: &'static str,
}

/// One numbered file found in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Numbered {
    pub a: u64,
    pub b: u64,
    pub path: PathBuf,
}

impl Naming {
    pub fn name(&self, a: u64, b: u64) -> String {
        format!("{}{a:020}-{b:020}{}", self.prefix, self.suffix)
    }

    /// Parses a file name back into its two numbers.
    pub fn parse(&self, name: &str) -> Option<(u64, u64)> {
        parse_number_pair(name.strip_prefix(self.prefix)?.strip_suffix(self.suffix)?)
    }

    /// The numbered files of `dir`, sorted by (a, b), and the leftover temporary files, sorted.
    pub fn list(&self, fs: &dyn FileSystem, dir: &Path) -> Result<(Vec<Numbered>, Vec<PathBuf>), StorageError> {
        let mut files = Vec::new();
        let mut temps = Vec::new();
        let names = fs.list_dir(dir).map_err(|e| StorageError::io("read directory", dir, e))?;
        for name in names {
            if name.ends_with(self.temp_suffix) {
                temps.push(dir.join(&name));
            } else if let Some((a, b)) = self.parse(&name) {
                files.push(Numbered { a, b, path: dir.join(&name) });
            }
        }
        files.sort_by_key(|f| (f.a, f.b));
        temps.sort();
        Ok((files, temps))
    }
}

/// Parses `{a:020}-{b:020}`.
fn parse_number_pair(stem: &str) -> Option<(u64, u64)> {
    let (a, b) = stem.split_once('-')?;
    if a.len() != 20 || b.len() != 20 {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Fsyncs a directory so that renames and deletions in it are durable.
pub fn sync_dir(fs: &dyn FileSystem, dir: &Path) -> Result<(), StorageError> {
    fs.sync_dir(dir).map_err(|e| StorageError::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        let naming = Naming { prefix: "snap-", suffix: ".snap", temp_suffix: ".snap.tmp" };
        let name = naming.name(7, 3);
        assert_eq!(name, "snap-00000000000000000007-00000000000000000003.snap");
        assert_eq!(naming.parse(&name), Some((7, 3)));
        assert_eq!(naming.parse("snap-7-3.snap"), None);
        assert_eq!(naming.parse(&format!("{name}.tmp")), None);
        let dir = tempfile::tempdir().expect("dir");
        for file in [naming.name(9, 1), naming.name(2, 5), format!("{}.tmp", naming.name(1, 1)), "README".into()] {
            std::fs::write(dir.path().join(file), b"x").expect("write");
        }
        let (files, temps) = naming.list(&super::super::fs::RealFs::new(), dir.path()).expect("list");
        assert_eq!(files.iter().map(|f| (f.a, f.b)).collect::<Vec<_>>(), vec![(2, 5), (9, 1)]);
        assert_eq!(temps.len(), 1);
    }
}
