//! Small tensor helpers of the layer: the accumulation dtype, membership matrices, row
//! gathers, and reads back to the host that fail loudly (a failed read is an error with the
//! backend's message, never an empty vector).

use burn::tensor::{DType, Device, Int, Tensor, TensorCreationOptions, TensorData};

use crate::NormError;

thread_local! {
    /// Reads back to the host on this thread (see [`host_reads`]).
    static HOST_READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many times the normalization layers waited for the device to read values back to the
/// host on the calling thread (forward, backward and running-statistics updates alike; a
/// transaction of several tensors is one read). On a GPU each read is a pipeline stall; the
/// difference over one training step is what `bnlab bench norm` reports.
pub fn host_reads() -> u64 {
    HOST_READS.with(|c| c.get())
}

/// Counts one read back to the host.
pub(crate) fn count_host_read() {
    HOST_READS.with(|c| c.set(c.get() + 1));
}

/// Whether `x` lives on an autodiff device.
pub(crate) fn is_autodiff(x: &Tensor<3>) -> bool {
    matches!(
        x.device().as_dispatch(),
        burn::backend::DispatchDevice::Autodiff(_)
    )
}

/// The dtype reductions accumulate in: f64 where the device has it, else the input's own.
pub(crate) fn accumulation_dtype(device: &Device) -> Option<DType> {
    device.supports_dtype(DType::F64).then_some(DType::F64)
}

/// `t` cast to the accumulation dtype `acc` (unchanged when it already is, or without one).
pub(crate) fn widen<const D: usize>(t: Tensor<D>, acc: Option<DType>) -> Tensor<D> {
    match acc {
        Some(dtype) if t.dtype() != dtype => t.cast(dtype),
        _ => t,
    }
}

/// A 0/1 membership matrix [rows, n] in `dtype`: entry (r, i) is 1 when example i is in row r.
pub(crate) fn membership(
    rows: usize,
    n: usize,
    row_of: impl Fn(usize) -> usize,
    device: &Device,
    dtype: DType,
) -> Tensor<2> {
    let mut m = vec![0.0f64; rows * n];
    for i in 0..n {
        m[row_of(i) * n + i] = 1.0;
    }
    Tensor::from_data(
        TensorData::new(m, [rows, n]),
        TensorCreationOptions::new(device.clone()).with_dtype(dtype),
    )
}

/// Σ over examples of `values` ([n, K]) into rows ([R, K]) by a 0/1 `membership` ([R, n]).
///
/// A matmul, except on CubeCL devices, where it is a broadcast product summed over the
/// examples: CubeCL 0.11's matmul crashes Mesa's lavapipe (BENCHMARKS.md, "Vulkan on a CPU"),
/// and at these sizes both are one small kernel or two.
pub(crate) fn member_sums(membership: Tensor<2>, values: Tensor<2>) -> Tensor<2> {
    if !crate::fused::is_cube(&values.device()) {
        return membership.matmul(values);
    }
    let [r, n] = membership.dims();
    let k = values.dims()[1];
    let product = membership.reshape([r, n, 1]) * values.reshape([1, n, k]);
    product.sum_dim(1).reshape([r, k])
}

/// `idx` as an index tensor.
pub(crate) fn index_tensor(idx: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(v, [idx.len()]), device)
}

/// Rows `rows[i]` of `t` for every example i ([len, K]); no gather when all rows are 0 and `t`
/// has one row (broadcast instead).
pub(crate) fn rows_for(t: Tensor<2>, rows: &[usize]) -> Tensor<2> {
    let [r, _] = t.dims();
    if r == 1 {
        return t;
    }
    let device = t.device();
    t.select(0, index_tensor(rows, &device))
}

/// The error of a failed read of `what`, with the backend's message as its source.
fn read_error(what: &str, cause: impl std::fmt::Display) -> NormError {
    NormError::DeviceRead {
        what: what.to_string(),
        source: crate::ReadError(cause.to_string()),
    }
}

/// The values of one read tensor as f64.
fn data_f64(data: burn::tensor::TensorData, what: &str) -> Result<Vec<f64>, NormError> {
    data.convert::<f64>()
        .try_into_vec::<f64>()
        .map_err(|e| read_error(what, e))
}

/// Reads a tensor (`what`, for the error) as f64 values; a failed read is an error.
pub(crate) fn to_f64<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f64>, NormError> {
    count_host_read();
    let data = t.try_into_data().map_err(|e| read_error(what, e))?;
    data_f64(data, what)
}

/// The values of two tensors as f64, read in one transaction (one wait for the device).
pub(crate) fn to_f64_pair<const D: usize>(
    a: Tensor<D>,
    b: Tensor<D>,
    what: &str,
) -> Result<(Vec<f64>, Vec<f64>), NormError> {
    count_host_read();
    let data = burn::tensor::Transaction::default()
        .register(a)
        .register(b)
        .try_execute()
        .map_err(|e| read_error(what, e))?;
    let mut values = data.into_iter().map(|d| data_f64(d, what));
    match (values.next(), values.next()) {
        (Some(a), Some(b)) => Ok((a?, b?)),
        _ => Err(read_error(
            what,
            "the transaction returned fewer than 2 tensors",
        )),
    }
}
