//! Readers of the real file formats: IDX, CIFAR binary, SVHN MATLAB v5, image folders.

mod bytes;
mod cifar;
mod folder;
mod idx;
mod mat;
mod svhn;

pub use bytes::read_file;
pub use cifar::*;
pub use folder::*;
pub use idx::*;
pub use mat::{MatArray, read_mat_arrays};
pub use svhn::*;
