//! [`filled`]: a vector written chunk by chunk in parallel, without zeroing it first.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// A vector of `len` values (a multiple of `chunk`), every one written by `fill(index, chunk)`
/// over chunks of `chunk` values, at least `min_chunks` chunks a rayon task, without zeroing
/// the memory first; with what `fill` returned per chunk, in order. (The kernels overwrite
/// their whole output, so a zero-fill would be a pass over memory for nothing.)
pub fn filled<R: Send>(
    len: usize,
    chunk: usize,
    min_chunks: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) -> R + Sync + Send,
) -> (Vec<f32>, Vec<R>) {
    let mut out = Vec::with_capacity(len);
    if chunk == 0 {
        return (out, Vec::new());
    }
    assert!(
        len.is_multiple_of(chunk),
        "filled: {len} values in chunks of {chunk}"
    );
    let results = out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk)
        .with_min_len(min_chunks.max(1))
        .enumerate()
        .map(|(i, part)| fill(i, part))
        .collect();
    // SAFETY: the chunks cover the first `len` slots (len is a multiple of chunk, asserted
    // above) and `fill` writes every slot of its chunk (the caller's contract).
    unsafe { out.set_len(len) };
    (out, results)
}
