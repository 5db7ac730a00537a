//! Downloads from the canonical addresses, verified against the published MD5 checksums.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};

use crate::error::io_at;
use crate::{DataError, DatasetId, write_atomic};

/// One file of a dataset: address, published MD5, and whether it is a .tar.gz to unpack.
#[derive(Debug, Clone, Copy)]
pub struct Remote {
    /// Download address.
    pub url: &'static str,
    /// Published MD5 (as torchvision checks it).
    pub md5: &'static str,
    /// Unpack this .tar.gz into the data root.
    pub untar: bool,
}

/// The files `bnlab data fetch` downloads for `id`.
pub fn remotes(id: DatasetId) -> &'static [Remote] {
    match id {
        DatasetId::Cifar10 => &[Remote {
            url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            md5: "c32a1d4ab5d03f1284b67883e8d87530",
            untar: true,
        }],
        DatasetId::Cifar100 | DatasetId::Cifar100Coarse => &[Remote {
            url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
            md5: "03b5dce01913d631647c71ecec9e9cb8",
            untar: true,
        }],
        DatasetId::Svhn => &[
            Remote {
                url: "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                md5: "e26dedcc434d2e4c54c9b2d4a06d8373",
                untar: false,
            },
            Remote {
                url: "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                md5: "eb5a983be6a315427106f1b164d9cef3",
                untar: false,
            },
            Remote {
                url: "http://ufldl.stanford.edu/housenumbers/extra_32x32.mat",
                md5: "a93ce644f1a588dc4d68dda5feec44a7",
                untar: false,
            },
        ],
        DatasetId::Mnist => &[
            Remote {
                url: "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
                md5: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                untar: false,
            },
            Remote {
                url: "https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz",
                md5: "d53e105ee54ea40749a09fcbcd1e9432",
                untar: false,
            },
            Remote {
                url: "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
                md5: "9fb629c4189551a2d022fa330f9573f3",
                untar: false,
            },
            Remote {
                url: "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
                md5: "ec29112dd5afa0611ce80d1b7f02629c",
                untar: false,
            },
        ],
        DatasetId::FashionMnist => &[
            Remote {
                url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz",
                md5: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                untar: false,
            },
            Remote {
                url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-labels-idx1-ubyte.gz",
                md5: "25c81989df183df01b3e8a0aad5dffbe",
                untar: false,
            },
            Remote {
                url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-images-idx3-ubyte.gz",
                md5: "bef4ecab320f06d8554ea6380940ec79",
                untar: false,
            },
            Remote {
                url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz",
                md5: "bb300cfdad3c16e7a12a480ee83cd310",
                untar: false,
            },
        ],
        DatasetId::FashionMnistSubset => &[],
    }
}

/// The MD5 of `bytes`, in lowercase hex.
pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Downloads `id` into `root` (the dataset's folder under it), verifying every checksum.
/// Returns the dataset's folder. Fails fast, naming the address, where there is no network.
pub fn fetch(id: DatasetId, root: &Path) -> Result<PathBuf, DataError> {
    let dir = root.join(id.folder());
    if remotes(id).is_empty() {
        return Err(DataError::Invalid(format!(
            "{} is not downloaded: {}",
            id.name(),
            id.hint()
        )));
    }
    let agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(Duration::from_secs(3600)))
        .build()
        .new_agent();
    for remote in remotes(id) {
        let name = remote.url.rsplit('/').next().unwrap_or("download");
        let fail = |why: String| DataError::Fetch {
            url: remote.url.into(),
            why,
        };
        let mut response = agent.get(remote.url).call().map_err(|e| {
            fail(format!(
                "{e} (no internet here? see `bnlab data list` for where to put the files)"
            ))
        })?;
        let mut bytes = Vec::new();
        response
            .body_mut()
            .as_reader()
            .read_to_end(&mut bytes)
            .map_err(|e| fail(e.to_string()))?;
        let got = md5_hex(&bytes);
        let target = if remote.untar {
            root.join(name)
        } else {
            dir.join(name)
        };
        if got != remote.md5 {
            return Err(DataError::Checksum {
                file: target,
                got,
                expected: remote.md5.into(),
            });
        }
        if remote.untar {
            let gz = flate2::read::GzDecoder::new(&bytes[..]);
            std::fs::create_dir_all(root).map_err(io_at(root))?;
            tar::Archive::new(gz).unpack(root).map_err(io_at(root))?;
        } else {
            write_atomic(&target, &bytes)?;
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_rfc_1321_vectors() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn fetch_fails_fast_and_clearly_without_network() {
        let dir = tempfile::tempdir().unwrap();
        let start = std::time::Instant::now();
        match fetch(DatasetId::FashionMnist, dir.path()) {
            // with internet the files arrive verified
            Ok(found) => assert!(found.join("t10k-labels-idx1-ubyte.gz").is_file()),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("fashion-mnist.s3") && msg.contains("failed"),
                    "{msg}"
                );
                assert!(start.elapsed().as_secs() < 60);
            }
        }
        assert!(fetch(DatasetId::FashionMnistSubset, dir.path()).is_err());
    }
}
