//! The in-process transport ([`ThreadGroup`]): K replicas on threads of one process.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::{Collective, CollectiveError};

/// One round of an in-process all-gather.
#[derive(Debug, Default)]
struct Round {
    /// Completed rounds.
    generation: u64,
    /// Contributions to the current round.
    slots: Vec<Option<Vec<u8>>>,
    /// The last completed round's contributions.
    result: Arc<Vec<Vec<u8>>>,
    /// Why the group failed, once it has.
    broken: Option<CollectiveError>,
}

#[derive(Debug)]
struct Shared {
    round: Mutex<Round>,
    ready: Condvar,
    timeout: Duration,
}

/// K workers as threads of one process: [`ThreadGroup::new`] returns one handle per rank, to
/// be moved into that rank's thread.
///
/// A handle dropped before the others (its thread returned early or panicked) breaks the
/// group, and a rank that waits longer than the timeout breaks it too: the other ranks' calls
/// then return [`CollectiveError`] instead of waiting forever.
#[derive(Debug)]
pub struct ThreadGroup {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

impl ThreadGroup {
    /// Handles for `size` ranks that give up waiting after `timeout`.
    pub fn new(size: usize, timeout: Duration) -> Vec<ThreadGroup> {
        let shared = Arc::new(Shared {
            round: Mutex::new(Round {
                slots: vec![None; size],
                ..Round::default()
            }),
            ready: Condvar::new(),
            timeout,
        });
        (0..size)
            .map(|rank| ThreadGroup {
                rank,
                size,
                shared: shared.clone(),
            })
            .collect()
    }

    fn break_group(&self, round: &mut Round, why: CollectiveError) {
        if round.broken.is_none() {
            round.broken = Some(why);
        }
        self.shared.ready.notify_all();
    }
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_gather(&self, local: &[u8]) -> Result<Vec<Vec<u8>>, CollectiveError> {
        let lock_err = || CollectiveError::Transport("group lock poisoned".into());
        let mut round = self.shared.round.lock().map_err(|_| lock_err())?;
        if let Some(e) = &round.broken {
            return Err(e.clone());
        }
        round.slots[self.rank] = Some(local.to_vec());
        let generation = round.generation;
        if round.slots.iter().all(Option::is_some) {
            let all: Vec<Vec<u8>> = round.slots.iter_mut().filter_map(Option::take).collect();
            round.result = Arc::new(all);
            round.generation += 1;
            self.shared.ready.notify_all();
            return Ok(round.result.to_vec());
        }
        loop {
            let (next, wait) = self
                .shared
                .ready
                .wait_timeout(round, self.shared.timeout)
                .map_err(|_| lock_err())?;
            round = next;
            if round.generation != generation {
                return Ok(round.result.to_vec());
            }
            if let Some(e) = &round.broken {
                return Err(e.clone());
            }
            if wait.timed_out() {
                let missing = (0..self.size)
                    .filter(|&r| round.slots[r].is_none())
                    .collect();
                let e = CollectiveError::Timeout {
                    rank: self.rank,
                    secs: self.shared.timeout.as_secs(),
                    missing,
                };
                self.break_group(&mut round, e.clone());
                return Err(e);
            }
        }
    }

    fn abort(&self, why: &str) {
        if let Ok(mut round) = self.shared.round.lock() {
            let e = CollectiveError::Lost {
                rank: self.rank,
                why: why.to_string(),
            };
            self.break_group(&mut round, e);
        }
    }
}

impl Drop for ThreadGroup {
    fn drop(&mut self) {
        let why = if std::thread::panicking() {
            "it panicked"
        } else {
            "it stopped calling collectives"
        };
        self.abort(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{all_gather_f64, all_reduce_sum, bytes_f64, check_same, f64_bytes};

    #[test]
    fn all_reduce_sums_members_in_rank_order() {
        let handles = ThreadGroup::new(4, Duration::from_secs(10));
        let out: Vec<Vec<f64>> = std::thread::scope(|s| {
            let joins: Vec<_> = handles
                .into_iter()
                .map(|h| {
                    s.spawn(move || {
                        let r = h.rank() as f64;
                        let mut v = vec![r, 10.0 * r];
                        // groups {0, 1} and {2, 3}
                        let members = if h.rank() < 2 { [0, 1] } else { [2, 3] };
                        all_reduce_sum(&h, &members, &mut v).map(|_| v)
                    })
                })
                .collect();
            joins
                .into_iter()
                .map(|j| j.join().unwrap().unwrap())
                .collect()
        });
        assert_eq!(
            out,
            vec![
                vec![1.0, 10.0],
                vec![1.0, 10.0],
                vec![5.0, 50.0],
                vec![5.0, 50.0]
            ]
        );
    }

    #[test]
    fn a_worker_that_leaves_stops_the_others() {
        let mut handles = ThreadGroup::new(3, Duration::from_secs(60));
        let leaver = handles.pop();
        let err = std::thread::scope(|s| {
            let joins: Vec<_> = handles
                .into_iter()
                .map(|h| s.spawn(move || all_gather_f64(&h, &[1.0]).err()))
                .collect();
            drop(leaver);
            joins
                .into_iter()
                .map(|j| j.join().unwrap())
                .collect::<Vec<_>>()
        });
        for e in err {
            assert!(
                matches!(e, Some(CollectiveError::Lost { rank: 2, .. })),
                "{e:?}"
            );
        }
    }

    #[test]
    fn a_worker_that_never_comes_times_out() {
        let mut handles = ThreadGroup::new(2, Duration::from_millis(50));
        let absent = handles.pop();
        let e = all_gather_f64(&handles[0], &[1.0]).unwrap_err();
        assert!(matches!(e, CollectiveError::Timeout { missing, .. } if missing == vec![1]));
        drop(absent);
    }

    #[test]
    fn differing_fingerprints_are_named() {
        let handles = ThreadGroup::new(2, Duration::from_secs(10));
        let res: Vec<_> = std::thread::scope(|s| {
            let joins: Vec<_> = handles
                .into_iter()
                .map(|h| s.spawn(move || check_same(&h, "config", &format!("lr={}", h.rank()))))
                .collect();
            joins.into_iter().map(|j| j.join().unwrap()).collect()
        });
        for r in res {
            assert!(matches!(r, Err(CollectiveError::Mismatch(m)) if m.contains("rank 1")));
        }
    }

    #[test]
    fn bytes_round_trip_and_refuse_ragged_input() {
        let v = vec![1.5, -0.0, f64::MAX, 3e-300];
        assert_eq!(bytes_f64(&f64_bytes(&v)).unwrap(), v);
        assert!(bytes_f64(&[0u8; 7]).is_err());
    }
}
