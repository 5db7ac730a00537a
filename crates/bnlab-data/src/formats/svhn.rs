//! SVHN cropped digits (`train_32x32.mat`, `test_32x32.mat`, `extra_32x32.mat`): `X` is a
//! 32×32×3×N uint8 array (MATLAB column-major), `y` holds labels 1–10 with 10 for the digit 0.

use std::path::Path;

use super::mat::read_mat_arrays;
use crate::{DataError, ImageSet};

/// Reads an SVHN `.mat` file; label 10 becomes 0.
pub fn read_svhn(path: &Path) -> Result<ImageSet, DataError> {
    let arrays = read_mat_arrays(path)?;
    let find = |name: &str| {
        arrays
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| DataError::Format {
                file: path.to_path_buf(),
                offset: 128,
                why: format!("no array `{name}`"),
            })
    };
    let x = find("X")?;
    let y = find("y")?;
    let bad = |why: String| DataError::Format {
        file: path.to_path_buf(),
        offset: 128,
        why,
    };
    let (h, w, c, n) = match x.dims[..] {
        [h, w, c, n] => (h, w, c, n),
        [h, w, c] => (h, w, c, 1),
        _ => {
            return Err(bad(format!(
                "`X` has dimensions {:?}, expected H×W×3×N",
                x.dims
            )));
        }
    };
    let Some(xb) = &x.bytes else {
        return Err(bad("`X` is not stored as uint8".into()));
    };
    if y.values.len() != n {
        return Err(bad(format!("{} labels for {n} images", y.values.len())));
    }
    let mut labels = Vec::with_capacity(n);
    for (record, &v) in y.values.iter().enumerate() {
        if v.fract() != 0.0 || !(0.0..=10.0).contains(&v) {
            return Err(DataError::LabelOutOfRange {
                file: path.to_path_buf(),
                record,
                label: v as i64,
                classes: 10,
            });
        }
        labels.push(if v == 10.0 { 0 } else { v as u16 });
    }
    // column-major (h, w, c, n) → CHW per image
    let mut pixels = vec![0u8; n * c * h * w];
    for i in 0..n {
        for ch in 0..c {
            for col in 0..w {
                for row in 0..h {
                    pixels[((i * c + ch) * h + row) * w + col] =
                        xb[row + h * (col + w * (ch + c * i))];
                }
            }
        }
    }
    ImageSet::new(pixels, labels, [c, h, w], 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A MAT v5 data element: tag, data, zero padding to 8 bytes.
    fn element(ty: u32, data: &[u8]) -> Vec<u8> {
        let mut e = ty.to_le_bytes().to_vec();
        e.extend_from_slice(&(data.len() as u32).to_le_bytes());
        e.extend_from_slice(data);
        e.resize(e.len().div_ceil(8) * 8, 0);
        e
    }

    /// A small data element (≤ 4 bytes packed into the tag), as MATLAB writes short names.
    fn small(ty: u32, data: &[u8]) -> Vec<u8> {
        let mut e = (((data.len() as u32) << 16) | ty).to_le_bytes().to_vec();
        let mut d = data.to_vec();
        d.resize(4, 0);
        e.extend(d);
        e
    }

    fn matrix(name: &str, class: u8, dims: &[i32], real_ty: u32, real: &[u8]) -> Vec<u8> {
        let mut body = element(6, &[class, 0, 0, 0, 0, 0, 0, 0]);
        body.extend(element(
            5,
            &dims
                .iter()
                .flat_map(|d| d.to_le_bytes())
                .collect::<Vec<_>>(),
        ));
        body.extend(small(1, name.as_bytes()));
        body.extend(element(real_ty, real));
        element(14, &body)
    }

    fn header() -> Vec<u8> {
        let mut h = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: test".to_vec();
        h.resize(116, b' ');
        h.extend([0u8; 8]);
        h.extend([0x00, 0x01]);
        h.extend(b"IM");
        h
    }

    fn compressed(element_bytes: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(element_bytes).unwrap();
        let z = z.finish().unwrap();
        let mut e = 15u32.to_le_bytes().to_vec();
        e.extend_from_slice(&(z.len() as u32).to_le_bytes());
        e.extend(z);
        e
    }

    /// n images of h×w×3 in MATLAB column-major order: value = f(row, col, ch, image).
    fn pixel(row: usize, col: usize, ch: usize, i: usize) -> u8 {
        (row * 3 + col * 11 + ch * 50 + i * 7) as u8
    }

    fn svhn_file(compress: bool, labels_as_double: bool, labels: &[u8]) -> Vec<u8> {
        let (h, w, n) = (4usize, 5usize, labels.len());
        let mut x = Vec::new();
        for i in 0..n {
            for ch in 0..3 {
                for col in 0..w {
                    for row in 0..h {
                        x.push(pixel(row, col, ch, i));
                    }
                }
            }
        }
        let xm = matrix("X", 9, &[h as i32, w as i32, 3, n as i32], 2, &x);
        let ym = if labels_as_double {
            let y: Vec<u8> = labels
                .iter()
                .flat_map(|&l| (l as f64).to_le_bytes())
                .collect();
            matrix("y", 6, &[n as i32, 1], 9, &y)
        } else {
            matrix("y", 6, &[n as i32, 1], 2, labels)
        };
        let mut f = header();
        if compress {
            f.extend(compressed(&xm));
            f.extend(compressed(&ym));
        } else {
            f.extend(xm);
            f.extend(ym);
        }
        f
    }

    #[test]
    fn mat_files_read_back_exactly_with_label_10_as_0() {
        let dir = tempfile::tempdir().unwrap();
        for (compress, double) in [(false, false), (true, true), (true, false), (false, true)] {
            let path = dir
                .path()
                .join(format!("train_32x32_{compress}_{double}.mat"));
            std::fs::write(&path, svhn_file(compress, double, &[10, 3, 1])).unwrap();
            let set = read_svhn(&path).unwrap();
            assert_eq!(set.labels, [0, 3, 1]);
            assert_eq!(set.shape, [3, 4, 5]);
            for i in 0..3 {
                for ch in 0..3 {
                    for row in 0..4 {
                        for col in 0..5 {
                            assert_eq!(
                                set.image(i)[(ch * 4 + row) * 5 + col],
                                pixel(row, col, ch, i)
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn corrupted_mat_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test_32x32.mat");
        let check = |bytes: &[u8], want: &str| {
            std::fs::write(&path, bytes).unwrap();
            let msg = read_svhn(&path).unwrap_err().to_string();
            assert!(
                msg.contains("test_32x32.mat") && msg.contains(want),
                "{msg}"
            );
        };
        let good = svhn_file(false, false, &[1, 2]);
        check(&good[..100], "truncated at byte 100");
        let mut bad = good.clone();
        bad[0] = b'X';
        check(&bad, "wrong magic");
        check(&good[..good.len() - 20], "truncated");
        check(&svhn_file(false, true, &[1, 11]), "record 1 has label 11");
        let zipped = svhn_file(true, false, &[1, 2]);
        check(&zipped[..zipped.len() - 10], "truncated");
        let mut garbled = zipped.clone();
        let n = garbled.len();
        garbled[n - 6..].fill(0); // the zlib Adler-32 trailer no longer matches
        check(&garbled, "compressed element broken");
        check(&header(), "no array `X`");
    }
}
