//! Where training computes: on a thread of rayon's pool.

/// Runs `f` on a thread of the current rayon pool (the global one outside any pool), so that
/// the parallel loops of the kernels it calls start on that pool. Called from a thread outside
/// the pool, every loop is handed to the pool and back (two wake-ups per operation), which on
/// a 2-core VM cost about a quarter of a ResNet-20 step at batch 2 and a few percent at batch 8
/// (`BENCHMARKS.md`).
///
/// `f` must not wait on work that needs a thread of the same pool to progress without
/// helping with it (rayon's own joins and scopes do help).
pub fn on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closure_runs_on_a_thread_of_the_pool_and_returns_its_value() {
        assert_eq!(
            rayon::current_thread_index(),
            None,
            "the test thread is outside the pool"
        );
        let (inside, value) = on_compute_pool(|| (rayon::current_thread_index(), 6 * 7));
        assert!(inside.is_some(), "f ran outside the pool");
        assert_eq!(value, 42);
        // inside a pool of its own it stays there (a --jobs worker)
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let threads = pool.install(|| on_compute_pool(rayon::current_num_threads));
        assert_eq!(threads, 1);
    }
}
