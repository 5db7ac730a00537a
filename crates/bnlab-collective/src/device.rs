//! The device transport ([`DeviceGroup`]): K workers on K accelerators of one process, talking
//! through Burn's device `all_reduce` (NCCL on CUDA devices, opt-in `cuda` feature).
//!
//! Burn offers only a sum all-reduce, so the one primitive every bnlab collective rests on,
//! [`Collective::all_gather`], is built from it ([`gather_by_sum`]): each rank writes its bytes
//! into its own slot of a zero vector, three bytes per f32 value (integers below 2²⁴ are
//! exact in f32, and adding zeros to them is exact), and the sum is every rank's bytes. The
//! rank-order sums above it then stay bit-identical across ranks, as on the other transports.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use burn::tensor::distributed::{
    DistributedConfig, DistributedContext, ReduceOperation, all_reduce,
};
use burn::tensor::{Device, Tensor, TensorData};

use crate::{Collective, CollectiveError};

/// Bytes carried by one f32 value of the summed vector.
const BYTES_PER_VALUE: usize = 3;
/// Values that carry one length (a u64, 8 bytes).
const LENGTH_VALUES: usize = 8usize.div_ceil(BYTES_PER_VALUE);

/// `bytes` as f32 values, three little-endian bytes each (the last one zero-padded).
fn pack(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks(BYTES_PER_VALUE)
        .map(|c| {
            let v = c
                .iter()
                .rev()
                .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
            v as f32
        })
        .collect()
}

/// The first `len` bytes that [`pack`] stored in `values`, or an error for a value that is
/// not a whole number below 2²⁴ (a transport that did not sum exactly).
fn unpack(values: &[f32], len: usize) -> Result<Vec<u8>, CollectiveError> {
    let mut out = Vec::with_capacity(values.len() * BYTES_PER_VALUE);
    for &v in values {
        if !(0.0..16_777_216.0).contains(&v) || v.fract() != 0.0 {
            return Err(CollectiveError::Transport(format!(
                "the device all-reduce returned {v}, not a packed byte triple"
            )));
        }
        let v = v as u32;
        out.extend_from_slice(&v.to_le_bytes()[..BYTES_PER_VALUE]);
    }
    if out.len() < len {
        return Err(CollectiveError::Transport(format!(
            "{len} bytes expected, {} arrived",
            out.len()
        )));
    }
    out.truncate(len);
    Ok(out)
}

/// An all-gather built from a sum all-reduce: every rank's `local` bytes, in rank order.
///
/// `sum` must return, on every rank, the element-wise sum over all `size` ranks of the vectors
/// they passed (each rank calls it twice: the lengths, then the bytes).
pub fn gather_by_sum(
    rank: usize,
    size: usize,
    local: &[u8],
    sum: &mut dyn FnMut(Vec<f32>) -> Result<Vec<f32>, CollectiveError>,
) -> Result<Vec<Vec<u8>>, CollectiveError> {
    let mut lengths = vec![0.0f32; size * LENGTH_VALUES];
    let own = pack(&(local.len() as u64).to_le_bytes());
    lengths[rank * LENGTH_VALUES..(rank + 1) * LENGTH_VALUES].copy_from_slice(&own);
    let lengths = sum(lengths)?;
    if lengths.len() != size * LENGTH_VALUES {
        return Err(CollectiveError::Transport(
            "length vector changed size".into(),
        ));
    }
    let lengths = lengths
        .chunks(LENGTH_VALUES)
        .map(|c| {
            let b = unpack(c, 8)?;
            let n = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            usize::try_from(n).map_err(|_| CollectiveError::Transport(format!("length {n}")))
        })
        .collect::<Result<Vec<usize>, _>>()?;
    if lengths.get(rank) != Some(&local.len()) {
        return Err(CollectiveError::Transport(
            "this rank's own length came back changed".into(),
        ));
    }
    let slots: Vec<usize> = lengths
        .iter()
        .map(|n| n.div_ceil(BYTES_PER_VALUE))
        .collect();
    let starts: Vec<usize> = slots
        .iter()
        .scan(0, |at, n| {
            let s = *at;
            *at += n;
            Some(s)
        })
        .collect();
    let mut data = vec![0.0f32; slots.iter().sum()];
    data[starts[rank]..starts[rank] + slots[rank]].copy_from_slice(&pack(local));
    let data = sum(data)?;
    if data.len() != slots.iter().sum::<usize>() {
        return Err(CollectiveError::Transport(
            "data vector changed size".into(),
        ));
    }
    (0..size)
        .map(|r| unpack(&data[starts[r]..starts[r] + slots[r]], lengths[r]))
        .collect()
}

/// Keeps Burn's communication server up while any handle of the group lives.
#[derive(Debug)]
struct Context {
    _context: Mutex<DistributedContext>,
    broken: AtomicBool,
    why: Mutex<String>,
}

/// K workers on K devices of this process: [`DeviceGroup::new`] returns one handle per device,
/// each to be moved into the thread that trains on [`DeviceGroup::device`].
///
/// Burn implements the device all-reduce for CUDA devices (NCCL, the opt-in `cuda` feature,
/// whose build downloads an LLVM bundle: see the README's Backends); on a backend without it, the
/// first collective returns [`CollectiveError::Transport`]. NCCL has no timeout: a worker that
/// hangs hangs the group. One that fails calls [`Collective::abort`]: the others stop at
/// their next collective, but one already waiting inside NCCL for the failed worker waits
/// for good (the thread and MPI transports do not have this gap).
#[derive(Debug)]
pub struct DeviceGroup {
    rank: usize,
    devices: Vec<Device>,
    context: Arc<Context>,
}

impl DeviceGroup {
    /// One handle per device of `devices` (its rank is its position), with Burn's
    /// communication server started for them.
    pub fn new(devices: Vec<Device>) -> Result<Vec<DeviceGroup>, CollectiveError> {
        if devices.is_empty() {
            return Err(CollectiveError::Mismatch("a group of no devices".into()));
        }
        if let Some(i) = (1..devices.len()).find(|&i| devices[..i].contains(&devices[i])) {
            return Err(CollectiveError::Mismatch(format!(
                "device {i} ({:?}) is listed twice",
                devices[i]
            )));
        }
        let config = DistributedConfig {
            all_reduce_op: ReduceOperation::Sum,
        };
        let context = catch_unwind(AssertUnwindSafe(|| {
            DistributedContext::init(devices.clone(), config)
        }))
        .map_err(|_| not_supported(&devices[0]))?;
        let context = Arc::new(Context {
            _context: Mutex::new(context),
            broken: AtomicBool::new(false),
            why: Mutex::new(String::new()),
        });
        Ok((0..devices.len())
            .map(|rank| DeviceGroup {
                rank,
                devices: devices.clone(),
                context: context.clone(),
            })
            .collect())
    }

    /// The device this rank computes on.
    pub fn device(&self) -> &Device {
        &self.devices[self.rank]
    }

    /// The element-wise sum of every rank's `values`, through Burn's device all-reduce.
    fn device_sum(&self, values: Vec<f32>) -> Result<Vec<f32>, CollectiveError> {
        if self.context.broken.load(Ordering::SeqCst) {
            let why = self
                .context
                .why
                .lock()
                .map(|w| w.clone())
                .unwrap_or_default();
            return Err(CollectiveError::Lost {
                rank: self.rank,
                why,
            });
        }
        let n = values.len();
        let device = self.device().clone();
        let devices = self.devices.clone();
        catch_unwind(AssertUnwindSafe(move || {
            let t = Tensor::<1>::from_data(TensorData::new(values, [n]), &device);
            all_reduce(t, ReduceOperation::Sum, devices)
                .resolve()
                .try_into_data()
                .map_err(|e| CollectiveError::Transport(format!("device all-reduce: {e:?}")))
                .and_then(|d| {
                    d.try_to_vec::<f32>()
                        .map_err(|e| CollectiveError::Transport(format!("{e:?}")))
                })
        }))
        .map_err(|_| not_supported(self.device()))?
    }
}

/// The error for a device whose backend has no all-reduce.
fn not_supported(device: &Device) -> CollectiveError {
    CollectiveError::Transport(format!(
        "{device:?} has no device all-reduce (Burn implements it for CUDA devices, feature `cuda`)"
    ))
}

impl Collective for DeviceGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.devices.len()
    }

    fn all_gather(&self, local: &[u8]) -> Result<Vec<Vec<u8>>, CollectiveError> {
        gather_by_sum(self.rank, self.size(), local, &mut |v| self.device_sum(v))
    }

    fn abort(&self, why: &str) {
        if let Ok(mut w) = self.context.why.lock() {
            *w = format!("rank {} stopped: {why}", self.rank);
        }
        self.context.broken.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ThreadGroup, all_gather_f64};
    use proptest::prelude::*;
    use std::time::Duration;

    /// A sum all-reduce over the thread transport, summing in f32 as a device would.
    fn thread_sum(h: &ThreadGroup, v: Vec<f32>) -> Result<Vec<f32>, CollectiveError> {
        let wide: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
        let all = all_gather_f64(h, &wide)?;
        let mut out = vec![0.0f32; v.len()];
        for theirs in all {
            for (o, x) in out.iter_mut().zip(theirs) {
                *o += x as f32;
            }
        }
        Ok(out)
    }

    proptest! {
        #[test]
        fn pack_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let packed = pack(&bytes);
            prop_assert_eq!(packed.len(), bytes.len().div_ceil(3));
            prop_assert_eq!(unpack(&packed, bytes.len()).unwrap(), bytes);
        }
    }

    #[test]
    fn gather_by_sum_equals_a_direct_all_gather() {
        // ragged lengths: empty, not a multiple of three, every byte value
        let locals: Vec<Vec<u8>> = vec![
            (0..=255).collect(),
            vec![],
            vec![7, 0, 255, 1],
            (0..1000u32).map(|i| (i * 37 % 256) as u8).collect(),
        ];
        let handles = ThreadGroup::new(locals.len(), Duration::from_secs(30));
        let got: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
            let joins: Vec<_> = handles
                .into_iter()
                .zip(&locals)
                .map(|(h, local)| {
                    s.spawn(move || {
                        gather_by_sum(h.rank(), h.size(), local, &mut |v| thread_sum(&h, v))
                    })
                })
                .collect();
            joins
                .into_iter()
                .map(|j| j.join().unwrap().unwrap())
                .collect()
        });
        for g in got {
            assert_eq!(g, locals);
        }
    }

    #[test]
    fn an_inexact_sum_is_an_error() {
        assert!(unpack(&[1.5], 1).is_err());
        assert!(unpack(&[16_777_216.0], 1).is_err());
        assert!(unpack(&[-1.0], 1).is_err());
        assert!(unpack(&[1.0], 4).is_err());
    }

    #[test]
    fn flex_devices_are_refused_with_an_error() {
        let devices = vec![Device::flex()];
        let err = DeviceGroup::new(devices)
            .and_then(|g| g[0].all_gather(&[1, 2, 3]))
            .unwrap_err();
        assert!(matches!(err, CollectiveError::Transport(m) if m.contains("all-reduce")));
    }

    #[test]
    fn a_device_listed_twice_is_refused() {
        let err = DeviceGroup::new(vec![Device::flex(), Device::flex()]).unwrap_err();
        assert!(matches!(err, CollectiveError::Mismatch(m) if m.contains("twice")));
    }
}
