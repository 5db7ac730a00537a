//! Writing a file through a temp file and a rename, so a reader never sees half of it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::DataError;
use crate::error::io_at;

/// Distinguishes the temp files of threads of one process.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A temp file name beside `path`, unique within the process and among processes:
/// `path.tmp-<pid>-<n>`.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    PathBuf::from(tmp)
}

/// Writes `bytes` to `path` via `path.tmp-<pid>-<n>` and a rename (`n` is unique within the
/// process, so two threads writing one path never share a temp file).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    }
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes).map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_at(path))
}
