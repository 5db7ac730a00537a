//! bnlab-collective: how K workers talk. The [`Collective`] trait that synchronized
//! normalization (SyncBN) and data-parallel training talk through, and its transports:
//! - [`ThreadGroup`]: K replicas on threads of one process;
//! - `MpiGroup` (feature `mpi`): one process per worker, started by `mpirun`;
//! - [`DeviceGroup`]: K accelerators of one process, through Burn's device all-reduce.
//!
//! Every collective is built on one primitive, [`Collective::all_gather`]: each rank
//! contributes bytes and receives every rank's bytes in rank order. Sums are then formed by
//! each rank in rank order, so every rank holds bit-identical results whatever the transport.

#![warn(missing_docs)]

use std::fmt;

use thiserror::Error;

mod device;
#[cfg(feature = "mpi")]
mod mpi;
mod thread;

pub use device::{DeviceGroup, gather_by_sum};
#[cfg(feature = "mpi")]
pub use mpi::MpiGroup;
pub use thread::ThreadGroup;

/// Why a collective call failed.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CollectiveError {
    /// A rank left the group (it returned, failed or panicked) while others needed it.
    #[error("worker {rank} left the group: {why}")]
    Lost {
        /// The rank that left.
        rank: usize,
        /// What it said.
        why: String,
    },
    /// A rank waited longer than the group's timeout.
    #[error("worker {rank} waited {secs} s for workers {missing:?}; stopping the group")]
    Timeout {
        /// The rank that gave up.
        rank: usize,
        /// The timeout.
        secs: u64,
        /// Ranks that had not arrived.
        missing: Vec<usize>,
    },
    /// The ranks disagree on what they are doing (shapes, configurations).
    #[error("workers disagree: {0}")]
    Mismatch(String),
    /// The transport itself failed.
    #[error("transport: {0}")]
    Transport(String),
}

/// How the workers of a data-parallel job talk: K ranks, each calling the same collectives in
/// the same order.
pub trait Collective: Send + Sync + fmt::Debug {
    /// This worker's rank, `0..size`.
    fn rank(&self) -> usize;
    /// The number of workers.
    fn size(&self) -> usize;
    /// Every rank's `local` bytes, in rank order (this rank's own included).
    fn all_gather(&self, local: &[u8]) -> Result<Vec<Vec<u8>>, CollectiveError>;
    /// Marks the group as failed with `why`, so that every other rank's next (or current) call
    /// returns an error instead of waiting.
    fn abort(&self, why: &str);
}

/// Encodes f64 values as little-endian bytes.
pub fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Decodes little-endian f64 values, or says that the byte count is not a multiple of 8.
pub fn bytes_f64(bytes: &[u8]) -> Result<Vec<f64>, CollectiveError> {
    if !bytes.len().is_multiple_of(8) {
        return Err(CollectiveError::Transport(format!(
            "{} bytes is not a whole number of f64 values",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

/// Every rank's f64 values, in rank order.
pub fn all_gather_f64(c: &dyn Collective, local: &[f64]) -> Result<Vec<Vec<f64>>, CollectiveError> {
    c.all_gather(&f64_bytes(local))?
        .iter()
        .map(|b| bytes_f64(b))
        .collect()
}

/// Replaces `values` by their sum over the ranks in `members` (in rank order, so every
/// member gets the same bits). Every rank of the group must call it, members or not.
pub fn all_reduce_sum(
    c: &dyn Collective,
    members: &[usize],
    values: &mut [f64],
) -> Result<(), CollectiveError> {
    let all = all_gather_f64(c, values)?;
    let mut out = vec![0.0f64; values.len()];
    for &r in members {
        let theirs = all.get(r).ok_or_else(|| {
            CollectiveError::Mismatch(format!("rank {r} is not in a group of {}", all.len()))
        })?;
        if theirs.len() != values.len() {
            return Err(CollectiveError::Mismatch(format!(
                "rank {r} sent {} values where rank {} sent {}",
                theirs.len(),
                c.rank(),
                values.len()
            )));
        }
        for (o, v) in out.iter_mut().zip(theirs) {
            *o += v;
        }
    }
    values.copy_from_slice(&out);
    Ok(())
}

/// Checks that every rank passed the same `fingerprint` (configuration, data, resumed state),
/// naming what differs otherwise.
pub fn check_same(
    c: &dyn Collective,
    what: &str,
    fingerprint: &str,
) -> Result<(), CollectiveError> {
    let all = c.all_gather(fingerprint.as_bytes())?;
    match all.iter().position(|f| f.as_slice() != all[0].as_slice()) {
        None => Ok(()),
        Some(r) => Err(CollectiveError::Mismatch(format!(
            "{what} of rank {r} differs from rank 0's: {:?} vs {:?}",
            String::from_utf8_lossy(&all[r]),
            String::from_utf8_lossy(&all[0])
        ))),
    }
}
