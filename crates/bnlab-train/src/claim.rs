//! Claims on runs, so that any number of `bnlab run` processes, on one machine or many, can
//! share one output directory and train each run once.
//!
//! A worker claims run R by creating `runs/R/claim-N` atomically (a hard link of a complete
//! temp file, which fails if the name exists), where N is one more than the highest claim
//! there. While it trains, a thread rewrites the file every quarter lease. A claim whose
//! last renewal is older than the lease belongs to a dead worker: the next worker claims
//! N + 1 and resumes from the checkpoint. A worker that sees a claim above its own has lost
//! the run and stops after its epoch. Claim files go when the result is written.
//!
//! Leases compare wall clocks, so machines sharing a directory must keep their clocks within
//! a fraction of the lease (NTP does).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::TrainError;

const PREFIX: &str = "claim-";

/// What a claim file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimFile {
    /// The worker: `host:pid`.
    pub owner: String,
    /// When it claimed the run, in milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// When it last renewed the claim.
    pub renewed_ms: u64,
}

impl ClaimFile {
    /// Whether the lease still holds at `now_ms` and its owner may be alive.
    pub fn live(&self, now_ms: u64, lease: Duration) -> bool {
        now_ms.saturating_sub(self.renewed_ms) < lease.as_millis() as u64 && !self.owner_gone()
    }

    /// Whether the owner is a process of this machine that has exited. A worker killed and
    /// started again on one machine takes its run back at once instead of waiting out the
    /// lease. Only where `/proc` lists processes; a reused pid only makes the claim wait for
    /// its lease.
    fn owner_gone(&self) -> bool {
        let Some((host, pid)) = self.owner.rsplit_once(':') else {
            return false;
        };
        let proc = Path::new("/proc");
        host == host_name()
            && pid.parse::<u32>().is_ok()
            && proc.join("self").exists()
            && !proc.join(pid).exists()
    }
}

/// The current time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// This machine's name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// This process as a claim owner: `host:pid`.
pub fn worker_name() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

/// The highest claim in `dir` and what it says, if any. A claim file that cannot be parsed
/// (written by something else) counts as live until it is a lease old by its mtime.
pub fn latest_claim(dir: &Path) -> Result<Option<(u64, ClaimFile)>, TrainError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut best: Option<(u64, PathBuf)> = None;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if best.as_ref().is_none_or(|(m, _)| n > *m) {
            best = Some((n, e.path()));
        }
    }
    let Some((n, path)) = best else {
        return Ok(None);
    };
    let file = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).ok(),
        // renewed away or removed between listing and reading: look again
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return latest_claim(dir),
        Err(e) => return Err(TrainError::Io { path, source: e }),
    };
    let file = match file {
        Some(f) => f,
        None => {
            let mtime = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64);
            ClaimFile {
                owner: format!("unreadable {}", path.display()),
                since_ms: mtime,
                renewed_ms: mtime,
            }
        }
    };
    Ok(Some((n, file)))
}

/// A held claim; renewed by a thread until dropped or released.
pub struct Claim {
    dir: PathBuf,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
    renewer: Option<JoinHandle<()>>,
}

/// Why a run could not be claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Busy {
    /// Another worker holds it.
    Held(ClaimFile),
}

impl Claim {
    /// Claims the run whose work directory is `dir` for `owner`, or says who holds it.
    pub fn try_take(
        dir: &Path,
        owner: &str,
        lease: Duration,
    ) -> Result<Result<Self, Busy>, TrainError> {
        std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
        let next = match latest_claim(dir)? {
            Some((_, file)) if file.live(now_ms(), lease) => return Ok(Err(Busy::Held(file))),
            Some((n, _)) => n + 1,
            None => 1,
        };
        let path = dir.join(format!("{PREFIX}{next:06}"));
        let now = now_ms();
        let file = ClaimFile {
            owner: owner.to_string(),
            since_ms: now,
            renewed_ms: now,
        };
        let tmp = bnlab_data::temp_path(&path);
        write_claim(&tmp, &file)?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // another worker claimed the same number first
                return Ok(match latest_claim(dir)? {
                    Some((_, f)) => Err(Busy::Held(f)),
                    None => Err(Busy::Held(file)),
                });
            }
            Err(e) => return Err(TrainError::Io { path, source: e }),
        }
        let stop = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = {
            let (dir, path, stop, lost) =
                (dir.to_path_buf(), path.clone(), stop.clone(), lost.clone());
            let period = (lease / 4).max(Duration::from_millis(50));
            std::thread::spawn(move || renew(&dir, &path, next, file, period, &stop, &lost))
        };
        Ok(Ok(Self {
            dir: dir.to_path_buf(),
            path,
            stop,
            lost,
            renewer: Some(renewer),
        }))
    }

    /// Set once another worker has claimed the run over this one.
    pub fn lost(&self) -> &AtomicBool {
        &self.lost
    }

    /// Whether this claim is still the run's latest.
    pub fn holds(&self) -> Result<bool, TrainError> {
        if self.lost.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let mine = self.number();
        Ok(latest_claim(&self.dir)?.is_none_or(|(n, _)| n <= mine))
    }

    fn number(&self) -> u64 {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Stops renewing and removes this worker's claim file (the run is done, or free for
    /// another worker to continue).
    pub fn release(mut self) -> Result<(), TrainError> {
        self.stop_renewing();
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(TrainError::Io {
                path: self.path.clone(),
                source: e,
            }),
        }
    }

    /// Stops renewing and removes every claim file of the run (its result is written).
    pub fn finish(mut self) -> Result<(), TrainError> {
        self.stop_renewing();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(PREFIX) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    fn stop_renewing(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.renewer.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.stop_renewing();
    }
}

fn write_claim(path: &Path, file: &ClaimFile) -> Result<(), TrainError> {
    let json = serde_json::to_vec(file).map_err(|e| TrainError::Corrupt {
        path: path.into(),
        why: e.to_string(),
    })?;
    std::fs::write(path, json).map_err(TrainError::io(path))
}

/// The renewal thread: every `period`, checks that no later claim exists and rewrites the
/// claim file with a fresh time (temp file, then rename).
fn renew(
    dir: &Path,
    path: &Path,
    mine: u64,
    mut file: ClaimFile,
    period: Duration,
    stop: &AtomicBool,
    lost: &AtomicBool,
) {
    loop {
        std::thread::park_timeout(period);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match latest_claim(dir) {
            Ok(Some((n, _))) if n > mine => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Ok(_) => {}
            // a passing I/O problem: try again at the next period
            Err(_) => continue,
        }
        file.renewed_ms = now_ms();
        let tmp = bnlab_data::temp_path(path);
        if write_claim(&tmp, &file).is_ok() && std::fs::rename(&tmp, path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_at_a_time_and_an_expired_one_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("r");
        let lease = Duration::from_millis(400);
        let a = Claim::try_take(&run, "a", lease).unwrap().ok().unwrap();
        // a live claim refuses the next worker, and names its owner
        match Claim::try_take(&run, "b", lease).unwrap() {
            Err(Busy::Held(f)) => assert_eq!(f.owner, "a"),
            Ok(_) => panic!("claimed twice"),
        }
        // renewal keeps it live past one lease
        std::thread::sleep(lease * 2);
        assert!(Claim::try_take(&run, "b", lease).unwrap().is_err());
        assert!(a.holds().unwrap());
        // a dead worker (its claim no longer renewed) loses the run after a lease
        std::mem::forget(a.renewer_stopped());
        std::thread::sleep(lease + Duration::from_millis(100));
        let b = Claim::try_take(&run, "b", lease).unwrap().ok().unwrap();
        assert_eq!(latest_claim(&run).unwrap().unwrap().0, 2);
        b.finish().unwrap();
        assert!(latest_claim(&run).unwrap().is_none());
    }

    #[test]
    fn a_claim_of_an_exited_process_here_is_taken_at_once_but_not_one_of_another_host() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let now = now_ms();
        let claim = |owner: String| ClaimFile {
            owner,
            since_ms: now,
            renewed_ms: now,
        };
        let hour = Duration::from_secs(3600);
        if Path::new("/proc/self").exists() {
            assert!(!claim(format!("{}:{pid}", host_name())).live(now, hour));
        }
        assert!(claim(format!("{}:{}", host_name(), std::process::id())).live(now, hour));
        assert!(claim(format!("elsewhere-{}:{pid}", host_name())).live(now, hour));
        assert!(claim("a".into()).live(now, hour));
    }

    #[test]
    fn a_worker_whose_claim_was_taken_over_learns_it() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("r");
        let lease = Duration::from_millis(200);
        let a = Claim::try_take(&run, "a", lease).unwrap().ok().unwrap();
        // as if `a` had stalled for longer than a lease: a later claim appears
        std::fs::write(
            run.join("claim-000002"),
            serde_json::to_vec(&ClaimFile {
                owner: "b".into(),
                since_ms: now_ms(),
                renewed_ms: now_ms(),
            })
            .unwrap(),
        )
        .unwrap();
        assert!(!a.holds().unwrap());
        std::thread::sleep(lease);
        assert!(a.lost().load(Ordering::SeqCst));
        a.release().unwrap();
        assert_eq!(latest_claim(&run).unwrap().unwrap().1.owner, "b");
    }

    #[test]
    fn racing_workers_claim_a_run_once() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("r");
        let lease = Duration::from_secs(30);
        let won: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let run = run.clone();
                    s.spawn(move || {
                        Claim::try_take(&run, &format!("w{i}"), lease)
                            .unwrap()
                            .map(std::mem::forget)
                            .is_ok()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    }

    impl Claim {
        /// Stops the renewal thread but keeps the file, as a killed worker would.
        fn renewer_stopped(mut self) -> Self {
            self.stop_renewing();
            self
        }
    }
}
