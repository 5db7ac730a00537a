//! A reader for the numeric arrays of MATLAB v5 `.mat` files (level 5 MAT-file format:
//! 128-byte header, then tagged data elements, `miMATRIX` arrays possibly inside zlib
//! `miCOMPRESSED` elements). Enough for SVHN; cell arrays, structs and sparse arrays are skipped.

use std::io::Read;
use std::path::Path;

use flate2::read::ZlibDecoder;

use crate::DataError;

const MI_INT8: u32 = 1;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// A numeric array of a `.mat` file: name, dimensions (MATLAB order) and values as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MatArray {
    /// The variable name.
    pub name: String,
    /// Dimensions; values are column-major (first dimension fastest).
    pub dims: Vec<usize>,
    /// The real part, converted to f64.
    pub values: Vec<f64>,
    /// The real part as bytes, when stored as `miUINT8` (no conversion, no copy to f64 needed).
    pub bytes: Option<Vec<u8>>,
}

/// A cursor over one byte buffer that reports offsets within the file.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` in the file (0 inside decompressed data: reported as such).
    base: u64,
    file: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, why: impl Into<String>) -> DataError {
        DataError::Format {
            file: self.file.to_path_buf(),
            offset: self.base + self.pos as u64,
            why: why.into(),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DataError> {
        if self.buf.len() - self.pos < n {
            return Err(DataError::Truncated {
                file: self.file.to_path_buf(),
                offset: self.base + self.buf.len() as u64,
                why: format!(
                    "{what} needs {n} bytes at byte {}",
                    self.base + self.pos as u64
                ),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32, DataError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// One data element: (type, data). Small elements pack both in 8 bytes.
    fn element(&mut self) -> Result<(u32, &'a [u8]), DataError> {
        let ty = self.u32("an element tag")?;
        if ty >> 16 != 0 {
            let n = (ty >> 16) as usize;
            let data = self.take(4, "a small element")?;
            if n > 4 {
                return Err(self.err(format!("small element of {n} bytes (at most 4)")));
            }
            return Ok((ty & 0xffff, &data[..n]));
        }
        let n = self.u32("an element size")? as usize;
        let data = self.take(n, "element data")?;
        if ty != MI_COMPRESSED {
            let pad = (8 - n % 8) % 8;
            let pad = pad.min(self.buf.len() - self.pos);
            self.pos += pad;
        }
        Ok((ty, data))
    }
}

/// Converts numeric element data of MAT type `ty` to f64.
fn numbers(ty: u32, data: &[u8]) -> Option<Vec<f64>> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            data.chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or([0; $n])) as f64)
                .collect()
        };
    }
    Some(match ty {
        1 => data.iter().map(|&b| b as i8 as f64).collect(),
        2 => data.iter().map(|&b| b as f64).collect(),
        3 => conv!(i16, 2),
        4 => conv!(u16, 2),
        5 => conv!(i32, 4),
        6 => conv!(u32, 4),
        7 => conv!(f32, 4),
        9 => conv!(f64, 8),
        12 => conv!(i64, 8),
        13 => conv!(u64, 8),
        _ => return None,
    })
}

/// Reads the numeric arrays of a `.mat` file.
pub fn read_mat_arrays(path: &Path) -> Result<Vec<MatArray>, DataError> {
    let raw = std::fs::read(path).map_err(crate::error::io_at(path))?;
    if raw.len() < 128 {
        return Err(DataError::Truncated {
            file: path.to_path_buf(),
            offset: raw.len() as u64,
            why: "the 128-byte MAT-file header".into(),
        });
    }
    if !raw.starts_with(b"MATLAB 5.0 MAT-file") || &raw[126..128] != b"IM" {
        return Err(DataError::BadMagic {
            file: path.to_path_buf(),
            found: format!("{:?}", String::from_utf8_lossy(&raw[..raw.len().min(19)])),
            expected: "\"MATLAB 5.0 MAT-file\" with little-endian indicator \"IM\"".into(),
        });
    }
    let mut out = Vec::new();
    let mut top = Cursor {
        buf: &raw,
        pos: 128,
        base: 0,
        file: path,
    };
    while top.pos < raw.len() {
        let at = top.pos as u64;
        let (ty, data) = top.element()?;
        match ty {
            MI_MATRIX => out.extend(matrix(data, at + 8, path)?),
            MI_COMPRESSED => {
                let mut inflated = Vec::new();
                ZlibDecoder::new(data)
                    .read_to_end(&mut inflated)
                    .map_err(|e| DataError::Truncated {
                        file: path.to_path_buf(),
                        offset: at,
                        why: format!(
                            "compressed element broken after {} bytes: {e}",
                            inflated.len()
                        ),
                    })?;
                let mut inner = Cursor {
                    buf: &inflated,
                    pos: 0,
                    base: at,
                    file: path,
                };
                while inner.pos < inflated.len() {
                    let (ty, data) = inner.element()?;
                    if ty == MI_MATRIX {
                        out.extend(matrix(data, at, path)?);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Parses the contents of an `miMATRIX` element; `None` for non-numeric classes.
fn matrix(data: &[u8], base: u64, file: &Path) -> Result<Option<MatArray>, DataError> {
    let mut c = Cursor {
        buf: data,
        pos: 0,
        base,
        file,
    };
    let (ty, flags) = c.element()?;
    if ty != MI_UINT32 || flags.len() < 8 {
        return Err(c.err("array flags must be 8 bytes of miUINT32"));
    }
    let class = flags[0];
    // 1 cell, 2 struct, 3 object, 4 char, 5 sparse: not numeric arrays
    if class <= 5 {
        return Ok(None);
    }
    let (ty, dims) = c.element()?;
    if ty != MI_INT32 {
        return Err(c.err("dimensions must be miINT32"));
    }
    let dims: Vec<usize> = dims
        .chunks_exact(4)
        .map(|d| i32::from_le_bytes([d[0], d[1], d[2], d[3]]).max(0) as usize)
        .collect();
    let (ty, name) = c.element()?;
    if ty != MI_INT8 {
        return Err(c.err("array name must be miINT8"));
    }
    let name = String::from_utf8_lossy(name).into_owned();
    let (ty, real) = c.element()?;
    let values =
        numbers(ty, real).ok_or_else(|| c.err(format!("array `{name}` has data type {ty}")))?;
    if values.len() != dims.iter().product::<usize>() {
        return Err(c.err(format!(
            "array `{name}` of dimensions {dims:?} holds {} values",
            values.len()
        )));
    }
    let bytes = (ty == 2).then(|| real.to_vec());
    Ok(Some(MatArray {
        name,
        dims,
        values,
        bytes,
    }))
}
