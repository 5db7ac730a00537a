//! CIFAR-10 and CIFAR-100 binary versions: fixed-size records of label byte(s) and 3072
//! pixel bytes (1024 red, 1024 green, 1024 blue, row-major 32×32).

use std::path::Path;

use super::bytes::read_file;
use crate::{DataError, ImageSet};

/// Pixels per CIFAR image.
const PIXELS: usize = 3 * 32 * 32;

/// Which CIFAR-100 label to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Cifar100Label {
    /// The 20 superclasses (first label byte).
    Coarse,
    /// The 100 classes (second label byte).
    Fine,
}

/// Reads CIFAR-10 binary batch files (`data_batch_1.bin` …, `test_batch.bin`) into one set.
pub fn read_cifar10(files: &[&Path]) -> Result<ImageSet, DataError> {
    read_records(files, 1, 0, 10)
}

/// Reads CIFAR-100 binary files (`train.bin`, `test.bin`) with the chosen label.
pub fn read_cifar100(files: &[&Path], label: Cifar100Label) -> Result<ImageSet, DataError> {
    match label {
        Cifar100Label::Coarse => read_records(files, 2, 0, 20),
        Cifar100Label::Fine => read_records(files, 2, 1, 100),
    }
}

fn read_records(
    files: &[&Path],
    label_bytes: usize,
    which: usize,
    classes: usize,
) -> Result<ImageSet, DataError> {
    let record = label_bytes + PIXELS;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for &file in files {
        let bytes = read_file(file)?;
        if bytes.is_empty() || bytes.len() % record != 0 {
            let whole = bytes.len() / record;
            return Err(DataError::Truncated {
                file: file.to_path_buf(),
                offset: (whole * record) as u64,
                why: format!(
                    "record {whole} is incomplete: {} bytes is not a multiple of the {record}-byte record",
                    bytes.len()
                ),
            });
        }
        for (i, rec) in bytes.chunks_exact(record).enumerate() {
            let label = rec[which] as usize;
            if label >= classes {
                return Err(DataError::LabelOutOfRange {
                    file: file.to_path_buf(),
                    record: i,
                    label: label as i64,
                    classes,
                });
            }
            labels.push(label as u16);
            pixels.extend_from_slice(&rec[label_bytes..]);
        }
    }
    ImageSet::new(pixels, labels, [3, 32, 32], classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record: label byte(s) then 3072 pixel bytes derived from (image, position).
    fn record(labels: &[u8], image: usize) -> Vec<u8> {
        let mut r = labels.to_vec();
        r.extend((0..PIXELS).map(|p| ((p * 31 + image * 17) % 256) as u8));
        r
    }

    #[test]
    fn cifar10_and_100_records_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            dir.path().join("data_batch_1.bin"),
            dir.path().join("data_batch_2.bin"),
        );
        std::fs::write(&a, [record(&[3], 0), record(&[9], 1)].concat()).unwrap();
        std::fs::write(&b, record(&[0], 2)).unwrap();
        let set = read_cifar10(&[&a, &b]).unwrap();
        assert_eq!(set.labels, [3, 9, 0]);
        assert_eq!(set.shape, [3, 32, 32]);
        for i in 0..3 {
            assert_eq!(set.image(i), &record(&[0], i)[1..]);
        }
        let c = dir.path().join("train.bin");
        std::fs::write(&c, [record(&[4, 77], 5), record(&[19, 99], 6)].concat()).unwrap();
        assert_eq!(
            read_cifar100(&[&c], Cifar100Label::Coarse).unwrap().labels,
            [4, 19]
        );
        let fine = read_cifar100(&[&c], Cifar100Label::Fine).unwrap();
        assert_eq!((fine.labels.clone(), fine.classes), (vec![77, 99], 100));
        assert_eq!(fine.image(1), &record(&[0, 0], 6)[2..]);
    }

    #[test]
    fn bad_records_are_errors_with_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("test_batch.bin");
        let mut bytes = [record(&[1], 0), record(&[2], 1)].concat();
        bytes.truncate(3073 + 100);
        std::fs::write(&f, &bytes).unwrap();
        let msg = read_cifar10(&[&f]).unwrap_err().to_string();
        assert!(
            msg.contains("test_batch.bin: truncated at byte 3073") && msg.contains("record 1"),
            "{msg}"
        );
        std::fs::write(&f, record(&[10], 0)).unwrap();
        let msg = read_cifar10(&[&f]).unwrap_err().to_string();
        assert!(
            msg.contains("record 0 has label 10, outside 0..10"),
            "{msg}"
        );
        assert!(
            read_cifar10(&[&dir.path().join("missing.bin")])
                .unwrap_err()
                .to_string()
                .contains("missing.bin")
        );
    }
}
