//! What a run read: the name, size and MD5 of each data file, so a result can say which bytes
//! it was trained and tested on.

use std::io::Read;
use std::path::Path;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::error::io_at;

/// One file's identity: its name, size and MD5.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileDigest {
    /// The file name inside its data folder.
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its MD5, in lowercase hex.
    pub md5: String,
}

impl FileDigest {
    /// Reads `path` through once and digests it.
    pub fn of(path: &Path) -> Result<Self, DataError> {
        let mut file = std::fs::File::open(path).map_err(io_at(path))?;
        let mut hasher = Md5::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io_at(path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bytes += n as u64;
        }
        let md5 = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        Ok(Self { name, bytes, md5 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_a_file_matches_rfc_1321() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc.bin");
        std::fs::write(&path, b"abc").unwrap();
        let d = FileDigest::of(&path).unwrap();
        assert_eq!(d.name, "abc.bin");
        assert_eq!(d.bytes, 3);
        // RFC 1321, appendix A.5
        assert_eq!(d.md5, "900150983cd24fb0d6963f7d28e17f72");
        let missing = FileDigest::of(&dir.path().join("none")).unwrap_err();
        assert!(missing.to_string().contains("none"), "{missing}");
    }
}
