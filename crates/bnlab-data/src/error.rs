//! Errors of reading, locating, fetching and batching data.

use std::path::PathBuf;

use thiserror::Error;

/// Why data could not be read, found or batched.
#[derive(Debug, Error)]
pub enum DataError {
    /// A dataset is in none of the places searched.
    #[error("dataset `{dataset}` not found; looked in: {looked}. {hint}")]
    NotFound {
        /// The dataset's name.
        dataset: String,
        /// Every path tried, comma-separated.
        looked: String,
        /// How to get it.
        hint: String,
    },
    /// A file could not be opened or read (the I/O error is the source, printed once by
    /// whoever prints the chain).
    #[error("{}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file ends before its header or records say it should.
    #[error("{}: truncated at byte {offset}: {why}", file.display())]
    Truncated {
        /// The file.
        file: PathBuf,
        /// Where the data ran out.
        offset: u64,
        /// What was expected there.
        why: String,
    },
    /// A file starts with the wrong magic number.
    #[error("{}: wrong magic {found} at byte 0, expected {expected}", file.display())]
    BadMagic {
        /// The file.
        file: PathBuf,
        /// The bytes found, in hex.
        found: String,
        /// What the format requires.
        expected: String,
    },
    /// A file's structure is invalid.
    #[error("{}: {why} (at byte {offset})", file.display())]
    Format {
        /// The file.
        file: PathBuf,
        /// Where the problem is.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// A label is not below the number of classes.
    #[error("{}: record {record} has label {label}, outside 0..{classes}", file.display())]
    LabelOutOfRange {
        /// The file.
        file: PathBuf,
        /// The record's index.
        record: usize,
        /// The label found.
        label: i64,
        /// The number of classes.
        classes: usize,
    },
    /// An image file could not be decoded.
    #[error("{}: cannot decode image", file.display())]
    Image {
        /// The file.
        file: PathBuf,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },
    /// A class folder holds no JPEG or PNG image.
    #[error("{}: class folder has no .jpg, .jpeg or .png image", dir.display())]
    EmptyClass {
        /// The folder.
        dir: PathBuf,
    },
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// A loader thread died before it delivered every batch of its epoch.
    #[error("the data loader failed after {delivered} of {planned} batches: {why}")]
    LoaderDied {
        /// Batches delivered before it failed.
        delivered: usize,
        /// Batches the epoch planned.
        planned: usize,
        /// Its panic message, or what is known.
        why: String,
    },
    /// A download failed.
    #[error("download of {url} failed: {why}")]
    Fetch {
        /// The address.
        url: String,
        /// What went wrong.
        why: String,
    },
    /// A downloaded file does not have the published checksum.
    #[error("{}: MD5 {got} does not match the published {expected}", file.display())]
    Checksum {
        /// The file.
        file: PathBuf,
        /// The MD5 computed.
        got: String,
        /// The MD5 published.
        expected: String,
    },
}

/// Wraps an I/O error with the file it happened on.
pub(crate) fn io_at(file: &std::path::Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        file: file.to_path_buf(),
        source,
    }
}
