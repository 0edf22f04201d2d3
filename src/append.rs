//! A file that a training session appends to and that keeps only what a checkpoint covers:
//! writes count once [`CommittedFile::commit`]ted (right after the checkpoint is saved), and a
//! writer dropped before that cuts the file back to its last commit, or removes a file it
//! created and never committed. So a session that fails (a full disk at the checkpoint, a
//! numerical error) leaves the run's logs (`metrics.jsonl`, TensorBoard's event files) as its
//! checkpoint has them. Cutting a file back never needs space, so this works on a full disk.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An append-only file whose writes count once committed (see the module docs).
pub struct CommittedFile {
    out: Option<BufWriter<File>>,
    path: PathBuf,
    /// The length of the file at the last commit; `None`: created here and never committed.
    committed: Option<u64>,
}

impl CommittedFile {
    /// Opens `path` (created if missing) to append to it; what it holds now counts as
    /// committed.
    pub fn append(path: &Path) -> Result<Self> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let committed = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Ok(Self {
            out: Some(BufWriter::new(file)),
            path: path.to_path_buf(),
            committed: Some(committed),
        })
    }

    /// A file this session just created at `path` (`file`, empty): removed when dropped before
    /// its first commit.
    pub fn created(path: PathBuf, file: File) -> Self {
        Self {
            out: Some(BufWriter::new(file)),
            path,
            committed: None,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes` (buffered).
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self.out.as_mut().expect("open until dropped");
        out.write_all(bytes).map_err(|e| Error::io(&self.path, e))
    }

    /// Pushes buffered writes to the file (before the checkpoint that covers them).
    pub fn flush(&mut self) -> Result<()> {
        let out = self.out.as_mut().expect("open until dropped");
        out.flush().map_err(|e| Error::io(&self.path, e))
    }

    /// Makes the writes so far permanent (once their checkpoint is saved).
    pub fn commit(&mut self) -> Result<()> {
        self.flush()?;
        let out = self.out.as_ref().expect("open until dropped");
        let len = (out.get_ref().metadata())
            .map_err(|e| Error::io(&self.path, e))?
            .len();
        self.committed = Some(len);
        Ok(())
    }
}

impl Drop for CommittedFile {
    fn drop(&mut self) {
        if let Some(out) = self.out.take() {
            // Uncommitted writes are discarded, buffered or written.
            let (file, _unwritten) = out.into_parts();
            match self.committed {
                Some(len) => {
                    if file.metadata().is_ok_and(|m| m.len() != len) {
                        let _ = file.set_len(len);
                    }
                }
                None => {
                    drop(file);
                    let _ = fs::remove_file(&self.path);
                }
            }
        }
    }
}
