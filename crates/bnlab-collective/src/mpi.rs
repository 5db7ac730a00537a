//! The MPI transport ([`MpiGroup`], feature `mpi`): one process per worker, started by
//! `mpirun -np K …`, talking through Open MPI.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Collective, CollectiveError};
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::request::{Request, Scope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives};

/// This process's place in `MPI_COMM_WORLD`, as a [`Collective`].
///
/// A rank that dies is stopped by `mpirun`; one that fails calls [`Collective::abort`]
/// (`MPI_Abort`, which ends the whole job); one that waits in a collective longer than the
/// timeout (another rank hangs or went elsewhere) ends the job with a timeout message.
pub struct MpiGroup {
    world: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
    timeout: Duration,
}

impl std::fmt::Debug for MpiGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MpiGroup(rank {} of {})", self.rank, self.size)
    }
}

impl MpiGroup {
    /// Starts MPI and joins `MPI_COMM_WORLD`; a collective that waits longer than `timeout`
    /// for the other ranks stops the job. The universe must outlive every collective call
    /// (dropping it finalizes MPI).
    pub fn start(timeout: Duration) -> Result<(Universe, Arc<MpiGroup>), CollectiveError> {
        let universe = mpi::initialize().ok_or_else(|| {
            CollectiveError::Transport("MPI was already initialized in this process".into())
        })?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let group = MpiGroup {
            world: Mutex::new(world),
            rank,
            size,
            timeout,
        };
        Ok((universe, Arc::new(group)))
    }

    /// Waits for `request`; past the timeout, says which rank gave up and stops the job
    /// (`MPI_Abort`: an outstanding collective cannot be cancelled, so no rank could go on).
    fn finish<'a, D: ?Sized, S: Scope<'a>>(
        &self,
        world: &SimpleCommunicator,
        mut request: Request<'a, D, S>,
    ) {
        let start = Instant::now();
        loop {
            match request.test() {
                Ok(_) => return,
                Err(pending) => request = pending,
            }
            if start.elapsed() > self.timeout {
                eprintln!(
                    "error: worker {} waited {} s for the other MPI processes in a collective; stopping the job",
                    self.rank,
                    self.timeout.as_secs()
                );
                world.abort(1);
            }
            // MPI_Test also drives the collective's rounds: poll without pause for the first
            // second (a training step's collectives are quick), then back off
            if start.elapsed() < Duration::from_secs(1) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

// SAFETY: every use of the communicator goes through the mutex, so MPI is only ever called
// from one thread at a time (MPI_THREAD_SERIALIZED use of a MPI_THREAD_FUNNELED-or-better
// library; Open MPI provides it).
unsafe impl Send for MpiGroup {}
unsafe impl Sync for MpiGroup {}

impl Collective for MpiGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_gather(&self, local: &[u8]) -> Result<Vec<Vec<u8>>, CollectiveError> {
        let world = self
            .world
            .lock()
            .map_err(|_| CollectiveError::Transport("MPI lock poisoned".into()))?;
        let len = i32::try_from(local.len())
            .map_err(|_| CollectiveError::Transport("message over 2 GiB".into()))?;
        let mut counts = vec![0i32; self.size];
        mpi::request::scope(|scope| {
            let request = world.immediate_all_gather_into(scope, &len, &mut counts[..]);
            self.finish(&world, request);
        });
        let displs: Vec<i32> = counts
            .iter()
            .scan(0i32, |at, &c| {
                let d = *at;
                *at += c;
                Some(d)
            })
            .collect();
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        let mut buf = vec![0u8; total];
        {
            let mut partition = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
            mpi::request::scope(|scope| {
                let request =
                    world.immediate_all_gather_varcount_into(scope, local, &mut partition);
                self.finish(&world, request);
            });
        }
        Ok(counts
            .iter()
            .zip(&displs)
            .map(|(&c, &d)| buf[d as usize..(d + c) as usize].to_vec())
            .collect())
    }

    fn abort(&self, why: &str) {
        eprintln!("error: worker {} stops the MPI job: {why}", self.rank);
        if let Ok(world) = self.world.lock() {
            world.abort(1);
        }
    }
}
