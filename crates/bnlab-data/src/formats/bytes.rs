//! Reading a whole file, gunzipping it when it starts with the gzip magic.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::DataError;
use crate::error::io_at;

/// The contents of `path`, decompressed if it is gzip.
pub fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(io_at(path))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Truncated {
                file: path.to_path_buf(),
                offset: out.len() as u64,
                why: format!(
                    "gzip stream broken after {} decompressed bytes: {e}",
                    out.len()
                ),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}
