//! Known datasets and where to find them: `$BNLAB_DATA`, then `./data`, then (Fashion-MNIST)
//! Debian's `/usr/share/datasets/fashion-mnist/`, then the subset bundled with bnlab.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    Cifar100Label, DataError, ImageSet, read_cifar10, read_cifar100, read_idx_pair, read_svhn,
};

/// Where Debian's `dataset-fashion-mnist` package puts the real Fashion-MNIST.
pub const DEBIAN_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// The `data/` folder of the bnlab source tree, which holds the bundled subset.
pub fn bundled_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data")
}

/// A dataset bnlab can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DatasetId {
    /// CIFAR-10, binary version.
    Cifar10,
    /// CIFAR-100, binary version, fine labels.
    Cifar100,
    /// CIFAR-100, binary version, the 20 coarse labels.
    Cifar100Coarse,
    /// SVHN cropped digits (`.mat`).
    Svhn,
    /// MNIST (IDX).
    Mnist,
    /// Fashion-MNIST (IDX).
    FashionMnist,
    /// The class-balanced Fashion-MNIST subset bundled with bnlab (600 + 100 per class).
    FashionMnistSubset,
}

/// Which part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Part {
    /// The training set.
    Train,
    /// The test set.
    Test,
    /// SVHN's extra set.
    Extra,
}

impl DatasetId {
    /// Every dataset, in listing order.
    pub const ALL: [DatasetId; 7] = [
        DatasetId::Cifar10,
        DatasetId::Cifar100,
        DatasetId::Cifar100Coarse,
        DatasetId::Svhn,
        DatasetId::Mnist,
        DatasetId::FashionMnist,
        DatasetId::FashionMnistSubset,
    ];

    /// The name used by specs and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            DatasetId::Cifar10 => "cifar10",
            DatasetId::Cifar100 => "cifar100",
            DatasetId::Cifar100Coarse => "cifar100-coarse",
            DatasetId::Svhn => "svhn",
            DatasetId::Mnist => "mnist",
            DatasetId::FashionMnist => "fashion-mnist",
            DatasetId::FashionMnistSubset => "fashion-mnist-subset",
        }
    }

    /// The dataset called `name`; an unknown name lists the known ones.
    pub fn from_name(name: &str) -> Result<Self, DataError> {
        Self::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|d| d.name()).collect();
                DataError::Invalid(format!(
                    "unknown dataset `{name}`; known: {}",
                    known.join(", ")
                ))
            })
    }

    /// The folder name under a data root.
    pub fn folder(self) -> &'static str {
        match self {
            DatasetId::Cifar10 => "cifar-10-batches-bin",
            DatasetId::Cifar100 | DatasetId::Cifar100Coarse => "cifar-100-binary",
            DatasetId::Svhn => "svhn",
            DatasetId::Mnist => "mnist",
            DatasetId::FashionMnist => "fashion-mnist",
            DatasetId::FashionMnistSubset => "fashion-mnist-subset",
        }
    }

    /// The file that shows the dataset is present in a folder.
    fn marker(self) -> &'static [&'static str] {
        match self {
            DatasetId::Cifar10 => &["test_batch.bin"],
            DatasetId::Cifar100 | DatasetId::Cifar100Coarse => &["test.bin"],
            DatasetId::Svhn => &["test_32x32.mat"],
            _ => &["t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte"],
        }
    }

    /// Number of classes.
    pub fn classes(self) -> usize {
        match self {
            DatasetId::Cifar100 => 100,
            DatasetId::Cifar100Coarse => 20,
            _ => 10,
        }
    }

    /// Channels of every image: 3 for CIFAR and SVHN, 1 for the MNISTs.
    pub fn channels(self) -> usize {
        match self {
            DatasetId::Cifar10
            | DatasetId::Cifar100
            | DatasetId::Cifar100Coarse
            | DatasetId::Svhn => 3,
            DatasetId::Mnist | DatasetId::FashionMnist | DatasetId::FashionMnistSubset => 1,
        }
    }

    /// How to get the data.
    pub fn hint(self) -> String {
        match self {
            DatasetId::FashionMnist => format!(
                "Install Debian's package (`apt-get install dataset-fashion-mnist`, into {DEBIAN_FASHION_MNIST}), run `bnlab data fetch fashion-mnist`, or put the IDX files in $BNLAB_DATA/fashion-mnist/"
            ),
            DatasetId::FashionMnistSubset => format!(
                "It ships with bnlab in data/fashion-mnist-subset/; rebuild it with `bnlab data subset` from the full Fashion-MNIST ({DEBIAN_FASHION_MNIST})"
            ),
            d => format!(
                "Run `bnlab data fetch {}` (needs internet) or put the files in $BNLAB_DATA/{}/",
                d.name(),
                d.folder()
            ),
        }
    }

    /// The folders searched, in order.
    pub fn candidates(self) -> Vec<PathBuf> {
        let mut roots = Vec::new();
        if let Some(root) = std::env::var_os("BNLAB_DATA") {
            roots.push(PathBuf::from(root).join(self.folder()));
        }
        roots.push(PathBuf::from("data").join(self.folder()));
        if self == DatasetId::FashionMnist {
            roots.push(PathBuf::from(DEBIAN_FASHION_MNIST));
        }
        if self == DatasetId::FashionMnistSubset {
            roots.push(bundled_root().join(self.folder()));
        }
        roots
    }

    /// The first candidate folder that holds the dataset.
    pub fn locate(self) -> Result<PathBuf, DataError> {
        let candidates = self.candidates();
        candidates
            .iter()
            .find(|dir| self.marker().iter().any(|m| dir.join(m).is_file()))
            .cloned()
            .ok_or_else(|| DataError::NotFound {
                dataset: self.name().into(),
                looked: candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                hint: self.hint(),
            })
    }

    /// Reads `part` of the dataset from wherever it is found.
    pub fn load(self, part: Part) -> Result<ImageSet, DataError> {
        self.load_from(&self.locate()?, part)
    }

    /// The files `part` of the dataset is read from in folder `dir` (the one place that
    /// names them: the readers and the provenance of a run both ask here).
    pub fn files(self, dir: &Path, part: Part) -> Result<Vec<PathBuf>, DataError> {
        let no_part = || DataError::Invalid(format!("{} has no {part:?} part", self.name()));
        Ok(match self {
            DatasetId::Cifar10 => match part {
                Part::Train => (1..=5)
                    .map(|i| dir.join(format!("data_batch_{i}.bin")))
                    .collect(),
                Part::Test => vec![dir.join("test_batch.bin")],
                Part::Extra => return Err(no_part()),
            },
            DatasetId::Cifar100 | DatasetId::Cifar100Coarse => vec![match part {
                Part::Train => dir.join("train.bin"),
                Part::Test => dir.join("test.bin"),
                Part::Extra => return Err(no_part()),
            }],
            DatasetId::Svhn => vec![dir.join(match part {
                Part::Train => "train_32x32.mat",
                Part::Test => "test_32x32.mat",
                Part::Extra => "extra_32x32.mat",
            })],
            _ => {
                let prefix = match part {
                    Part::Train => "train",
                    Part::Test => "t10k",
                    Part::Extra => return Err(no_part()),
                };
                let pick = |stem: String| {
                    let gz = dir.join(format!("{stem}.gz"));
                    if gz.is_file() { gz } else { dir.join(stem) }
                };
                vec![
                    pick(format!("{prefix}-images-idx3-ubyte")),
                    pick(format!("{prefix}-labels-idx1-ubyte")),
                ]
            }
        })
    }

    /// Reads `part` of the dataset from folder `dir`.
    pub fn load_from(self, dir: &Path, part: Part) -> Result<ImageSet, DataError> {
        let files = self.files(dir, part)?;
        let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        match self {
            DatasetId::Cifar10 => read_cifar10(&paths),
            DatasetId::Cifar100 | DatasetId::Cifar100Coarse => {
                let label = if self == DatasetId::Cifar100 {
                    Cifar100Label::Fine
                } else {
                    Cifar100Label::Coarse
                };
                read_cifar100(&paths, label)
            }
            DatasetId::Svhn => read_svhn(paths[0]),
            _ => read_idx_pair(paths[0], paths[1], 10),
        }
    }
}

/// Where a dataset was found, or where bnlab looked.
#[derive(Debug, Clone)]
pub struct DatasetStatus {
    /// The dataset.
    pub id: DatasetId,
    /// The folder it was found in.
    pub found: Option<PathBuf>,
    /// Every folder searched.
    pub looked: Vec<PathBuf>,
}

/// The status of every known dataset (`bnlab data list`).
pub fn list() -> Vec<DatasetStatus> {
    DatasetId::ALL
        .into_iter()
        .map(|id| DatasetStatus {
            id,
            found: id.locate().ok(),
            looked: id.candidates(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_fashion_mnist_is_read_whole_when_installed() {
        let dir = Path::new(DEBIAN_FASHION_MNIST);
        if !dir.join("t10k-labels-idx1-ubyte.gz").is_file() {
            eprintln!(
                "skipped: {DEBIAN_FASHION_MNIST} is absent (apt-get install dataset-fashion-mnist)"
            );
            return;
        }
        let train = DatasetId::FashionMnist.load_from(dir, Part::Train).unwrap();
        let test = DatasetId::FashionMnist.load_from(dir, Part::Test).unwrap();
        assert_eq!((train.labels.len(), test.labels.len()), (60_000, 10_000));
        assert_eq!(train.shape, [1, 28, 28]);
        assert_eq!(train.class_counts(), vec![6_000; 10]);
        assert_eq!(test.class_counts(), vec![1_000; 10]);
        // the bundled subset is the first 600 / 100 images of each class of the real data
        let bundled = bundled_root().join("fashion-mnist-subset");
        let sub = DatasetId::FashionMnistSubset
            .load_from(&bundled, Part::Train)
            .unwrap();
        assert_eq!(sub, crate::class_balanced_subset(&train, 600).unwrap());
        let sub = DatasetId::FashionMnistSubset
            .load_from(&bundled, Part::Test)
            .unwrap();
        assert_eq!(sub, crate::class_balanced_subset(&test, 100).unwrap());
    }

    #[test]
    fn the_bundled_subset_is_balanced() {
        let train = DatasetId::FashionMnistSubset.load(Part::Train).unwrap();
        let test = DatasetId::FashionMnistSubset.load(Part::Test).unwrap();
        assert_eq!(train.class_counts(), vec![600; 10]);
        assert_eq!(test.class_counts(), vec![100; 10]);
        assert!(
            bundled_root()
                .join("fashion-mnist-subset")
                .join("LICENSE")
                .is_file()
        );
    }

    #[test]
    fn a_missing_dataset_says_where_it_looked_and_how_to_get_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = DatasetId::Cifar10
            .load_from(dir.path(), Part::Train)
            .unwrap_err()
            .to_string();
        assert!(err.contains("data_batch_1.bin"), "{err}");
        if DatasetId::Cifar10.locate().is_err() {
            let err = DatasetId::Cifar10
                .load(Part::Train)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("data/cifar-10-batches-bin")
                    && err.contains("bnlab data fetch cifar10"),
                "{err}"
            );
        }
        assert!(
            DatasetId::from_name("imagenet")
                .unwrap_err()
                .to_string()
                .contains("fashion-mnist")
        );
        assert_eq!(list().len(), DatasetId::ALL.len());
    }

    #[test]
    fn cifar_folders_load_by_part() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |l: u8| [vec![l], vec![l; 3072]].concat();
        for (i, name) in [
            "data_batch_1",
            "data_batch_2",
            "data_batch_3",
            "data_batch_4",
            "data_batch_5",
            "test_batch",
        ]
        .iter()
        .enumerate()
        {
            std::fs::write(dir.path().join(format!("{name}.bin")), rec(i as u8)).unwrap();
        }
        let train = DatasetId::Cifar10
            .load_from(dir.path(), Part::Train)
            .unwrap();
        assert_eq!(train.labels, [0, 1, 2, 3, 4]);
        assert_eq!(
            DatasetId::Cifar10
                .load_from(dir.path(), Part::Test)
                .unwrap()
                .labels,
            [5]
        );
        assert!(
            DatasetId::Cifar10
                .load_from(dir.path(), Part::Extra)
                .is_err()
        );
    }
}
