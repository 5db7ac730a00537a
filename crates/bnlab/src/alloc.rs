//! glibc malloc settings for training: activations of tens of MB are allocated and freed every
//! step, and glibc by default serves each from a fresh `mmap` (anything over 32 MB always is),
//! so every step pays a page fault and a kernel zero-fill per 4 KiB. Keeping freed memory in
//! the heap instead makes the fused normalization 2–3× faster (BENCHMARKS.md).

/// Serves large allocations from the heap, never trims it, grows it 64 MiB past each request,
/// and keeps one arena for all threads, unless the user set `GLIBC_TUNABLES` or `MALLOC_*`
/// variables, which are left to apply as given.
///
/// Why one arena: an allocation made on a worker thread comes from that thread's arena, whose
/// heaps hold at most 64 MiB, and glibc serves a larger one with `mmap` whatever `M_MMAP_MAX`
/// says, so tensors over 64 MiB paid fresh pages on every use: BN at (512, 64, 32, 32) ran at
/// 6 GB/s, half its speed in the main arena, and a ResNet-18 step at batch 256 at 78 img/s
/// against 101–108 (BENCHMARKS.md, "glibc malloc").
///
/// Why the padding: without it a ResNet-20 step at batch 128 still touched about 50 MB of
/// fresh pages (12,500 page faults a step, steady over 20 steps, although the heap is never
/// trimmed: why is not established); with it the faults stop after the first step, and the
/// peak resident memory fell from 500 to 310 MB (BENCHMARKS.md).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_tuned = std::env::vars_os().any(|(k, _)| {
            let k = k.to_string_lossy();
            k == "GLIBC_TUNABLES" || k.starts_with("MALLOC_")
        });
        if !user_tuned {
            // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
            unsafe {
                libc::mallopt(libc::M_MMAP_MAX, 0);
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
                libc::mallopt(libc::M_TOP_PAD, 64 << 20);
                libc::mallopt(libc::M_ARENA_MAX, 1);
            }
        }
    }
}
