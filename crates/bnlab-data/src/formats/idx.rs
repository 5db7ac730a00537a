//! IDX files (MNIST, Fashion-MNIST), gzipped or raw: big-endian magic `00 00 08 D`, D
//! big-endian u32 dimensions, then unsigned bytes.

use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::bytes::read_file;
use crate::error::io_at;
use crate::{DataError, ImageSet};

/// An IDX array of unsigned bytes: its dimensions and values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<u8>,
}

/// Reads an unsigned-byte IDX file with `rank` dimensions (gzip detected by its magic).
pub fn read_idx(path: &Path, rank: usize) -> Result<IdxArray, DataError> {
    let bytes = read_file(path)?;
    let file = || path.to_path_buf();
    if bytes.len() < 4 {
        return Err(DataError::Truncated {
            file: file(),
            offset: bytes.len() as u64,
            why: "the 4-byte magic number".into(),
        });
    }
    if bytes[0..3] != [0, 0, 0x08] || bytes[3] as usize != rank {
        return Err(DataError::BadMagic {
            file: file(),
            found: format!(
                "{:02x}{:02x}{:02x}{:02x}",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
            expected: format!("000008{rank:02x} (unsigned bytes, {rank} dimensions)"),
        });
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(DataError::Truncated {
            file: file(),
            offset: bytes.len() as u64,
            why: format!("{rank} dimension sizes"),
        });
    }
    let dims: Vec<usize> = (0..rank)
        .map(|d| {
            let b = &bytes[4 + 4 * d..8 + 4 * d];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let Some(expected) = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) else {
        return Err(DataError::Format {
            file: file(),
            offset: 4,
            why: format!("dimensions {dims:?} hold more values than any file can"),
        });
    };
    let have = bytes.len() - header;
    if have < expected {
        return Err(DataError::Truncated {
            file: file(),
            offset: bytes.len() as u64,
            why: format!("dimensions {dims:?} need {expected} data bytes, found {have}"),
        });
    }
    if have > expected {
        return Err(DataError::Format {
            file: file(),
            offset: (header + expected) as u64,
            why: format!("{} bytes after the {expected} data bytes", have - expected),
        });
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Reads an IDX image file (N × H × W) and its label file (N) into a 1-channel set.
pub fn read_idx_pair(images: &Path, labels: &Path, classes: usize) -> Result<ImageSet, DataError> {
    let img = read_idx(images, 3)?;
    let lab = read_idx(labels, 1)?;
    if img.dims[0] != lab.dims[0] {
        return Err(DataError::Format {
            file: labels.to_path_buf(),
            offset: 4,
            why: format!(
                "{} labels for {} images in {}",
                lab.dims[0],
                img.dims[0],
                images.display()
            ),
        });
    }
    if let Some((record, &label)) = lab
        .data
        .iter()
        .enumerate()
        .find(|(_, l)| **l as usize >= classes)
    {
        return Err(DataError::LabelOutOfRange {
            file: labels.to_path_buf(),
            record,
            label: label as i64,
            classes,
        });
    }
    ImageSet::new(
        img.data,
        lab.data.iter().map(|&l| l as u16).collect(),
        [1, img.dims[1], img.dims[2]],
        classes,
    )
}

/// Writes an unsigned-byte IDX file, gzipped when `gzip` is true, through a temp file and a
/// rename.
pub fn write_idx(path: &Path, dims: &[usize], data: &[u8], gzip: bool) -> Result<(), DataError> {
    if dims.iter().product::<usize>() != data.len() || dims.is_empty() || dims.len() > 255 {
        return Err(DataError::Invalid(format!(
            "IDX dimensions {dims:?} do not hold {} values",
            data.len()
        )));
    }
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        let d = u32::try_from(d)
            .map_err(|_| DataError::Invalid(format!("IDX dimension {d} too large")))?;
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    let bytes = if gzip {
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        enc.write_all(&bytes).map_err(io_at(path))?;
        enc.finish().map_err(io_at(path))?
    } else {
        bytes
    };
    crate::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IDX file built by hand from the format description, not by `write_idx`.
    fn idx_bytes(rank: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, rank];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn raw_and_gzipped_files_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..3 * 2 * 4).map(|i| (i * 7 % 256) as u8).collect();
        let labels = [2u8, 0, 9];
        for gzip in [false, true] {
            let (ip, lp) = (
                dir.path().join(format!("i{gzip}")),
                dir.path().join(format!("l{gzip}")),
            );
            let (ib, lb) = (
                idx_bytes(3, &[3, 2, 4], &pixels),
                idx_bytes(1, &[3], &labels),
            );
            std::fs::write(&ip, if gzip { gz(&ib) } else { ib }).unwrap();
            std::fs::write(&lp, if gzip { gz(&lb) } else { lb }).unwrap();
            let set = read_idx_pair(&ip, &lp, 10).unwrap();
            assert_eq!(set.shape, [1, 2, 4]);
            assert_eq!(set.pixels, pixels);
            assert_eq!(set.labels, [2, 0, 9]);
        }
        // the writer produces what the reader reads
        let out = dir.path().join("w.gz");
        write_idx(&out, &[3, 2, 4], &pixels, true).unwrap();
        assert_eq!(
            read_idx(&out, 3).unwrap(),
            IdxArray {
                dims: vec![3, 2, 4],
                data: pixels
            }
        );
    }

    #[test]
    fn corrupted_files_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad");
        let check = |bytes: Vec<u8>, rank: usize, want: &str| {
            std::fs::write(&path, bytes).unwrap();
            let err = read_idx(&path, rank).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("bad") && msg.contains(want), "{msg}");
        };
        check(vec![0, 0, 8], 1, "truncated at byte 3");
        check(idx_bytes(1, &[2], &[1, 2]), 3, "wrong magic 00000801");
        check(vec![0x89, b'P', b'N', b'G'], 1, "wrong magic 89504e47");
        check(vec![0, 0, 8, 3, 0, 0], 3, "truncated at byte 6");
        check(
            idx_bytes(3, &[2, 2, 2], &[0; 7]),
            3,
            "need 8 data bytes, found 7",
        );
        check(idx_bytes(1, &[2], &[1, 2, 3]), 1, "1 bytes after");
        // sizes whose product overflows 64 bits (2^32 · 2^32 · 2^32 wraps to 0 = the data
        // length) are refused before any allocation
        check(
            idx_bytes(3, &[u32::MAX, u32::MAX, u32::MAX], &[]),
            3,
            "hold more values than any file can",
        );
        check(idx_bytes(3, &[1 << 31, 1 << 31, 4], &[]), 3, "more values");
        let whole = gz(&idx_bytes(1, &[100], &[1; 100]));
        check(whole[..whole.len() / 2].to_vec(), 1, "gzip stream broken");
        // labels out of range and mismatched counts
        let (ip, lp) = (dir.path().join("i"), dir.path().join("l"));
        std::fs::write(&ip, idx_bytes(3, &[2, 1, 1], &[0, 0])).unwrap();
        std::fs::write(&lp, idx_bytes(1, &[2], &[3, 10])).unwrap();
        let err = read_idx_pair(&ip, &lp, 10).unwrap_err().to_string();
        assert!(err.contains("record 1 has label 10"), "{err}");
        std::fs::write(&lp, idx_bytes(1, &[1], &[3])).unwrap();
        assert!(
            read_idx_pair(&ip, &lp, 10)
                .unwrap_err()
                .to_string()
                .contains("1 labels for 2 images")
        );
    }
}
