//! The SyncBN layer checks of `tests/sync.rs`, over the MPI transport: `mpirun -np 2` starts
//! this test binary twice (the ignored `rank` test is each process's body); every rank checks
//! every rank's outcome against one worker with the concatenated batch, and distributed
//! PreciseBN leaves bit-identical statistics on both ranks; a rank that never arrives stops the
//! job after the timeout instead of hanging it.
#![cfg(feature = "mpi")]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bnlab_collective::{Collective, MpiGroup, all_gather_f64};
use bnlab_norm::{NormMode, SyncGroups, SyncWeighting};
use common::sync_checks::*;
use common::*;

/// Every rank's outcome of `case`, gathered over MPI.
fn run_case(case: &Case, world: &Arc<MpiGroup>) -> Vec<Outcome> {
    let mine = case
        .run_worker(world.rank(), world.clone())
        .unwrap_or_else(|e| panic!("{}: {e}", case.what));
    all_gather_f64(world.as_ref(), &mine.encode())
        .expect("gather outcomes")
        .iter()
        .map(|v| Outcome::decode(v))
        .collect()
}

#[test]
#[ignore = "the body of one MPI rank: run by `syncbn_over_mpi_equals_one_worker` under mpirun"]
fn rank() {
    let (_universe, world) = MpiGroup::start(Duration::from_secs(120)).expect("MPI");
    assert_eq!(world.size(), 2, "run with mpirun -np 2");
    let mut cases = layer_cases(2);
    for sizes in [[3, 5], [0, 6], [5, 0]] {
        cases.extend(unequal_cases(&sizes));
    }
    for case in &cases {
        case.check(&run_case(case, &world));
        println!("rank {} ok: {}", world.rank(), case.what);
    }
    // distributed PreciseBN: per-worker batch statistics, one accumulator over both ranks
    let (c, s) = (SHAPE[0], SHAPE[1]);
    let sizes = [4, 6];
    let parts = random_parts(&mut Rng(13), &sizes, c * s);
    let k = world.rank();
    let sync: Option<SyncWith> = Some((world.clone(), SyncGroups::PerWorker, SyncWeighting::Count));
    let config = train_config(c);
    let zeros = vec![0.0; parts[k][0].len()];
    let mine = step(
        &config,
        sync,
        &parts[k][0],
        &zeros,
        [sizes[k], c, s],
        NormMode::Collect,
        7,
    )
    .expect("collect");
    let all = all_gather_f64(world.as_ref(), &mine.running).expect("gather statistics");
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&all[0]), bits(&all[1]), "bit-identical across ranks");
    let x: Vec<f64> = parts.iter().flat_map(|p| p[0].clone()).collect();
    let single = step(
        &config,
        None,
        &x,
        &vec![0.0; x.len()],
        [10, c, s],
        NormMode::Collect,
        7,
    )
    .expect("single worker");
    assert!(max_abs_diff(&mine.running, &single.running) < TOL);
    println!("rank {k} ok: distributed PreciseBN");
}

/// `mpirun -np 2` of this test binary's ignored test `body`: whether it succeeded, and its
/// output and errors.
fn mpirun(body: &str) -> (bool, String) {
    let me = std::env::current_exe().expect("test binary");
    let out = Command::new("timeout")
        .args([
            "300",
            "mpirun",
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            "2",
        ])
        .arg(me)
        .args([
            body,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .output()
        .expect("mpirun (apt-get install openmpi-bin)");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn syncbn_over_mpi_equals_one_worker() {
    let (ok, text) = mpirun("rank");
    assert!(ok, "mpirun failed:\n{text}");
    // both ranks ran every case (a rank that ran no test would also exit 0)
    let cases = layer_cases(2).len() + 3 * 3 + 1;
    for r in 0..2 {
        let ok = text.matches(&format!("rank {r} ok: ")).count();
        assert_eq!(ok, cases, "rank {r} passed {ok} of {cases} checks:\n{text}");
    }
}

#[test]
#[ignore = "the body of one MPI rank: run by `a_rank_that_never_arrives_stops_the_job` under mpirun"]
fn late_rank() {
    let (_universe, world) = MpiGroup::start(Duration::from_secs(1)).expect("MPI");
    if world.rank() == 1 {
        // hangs, as far as rank 0 can tell
        std::thread::sleep(Duration::from_secs(100));
    }
    let _ = all_gather_f64(world.as_ref(), &[1.0]);
    println!("rank {} returned from a collective", world.rank());
}

#[test]
fn a_rank_that_never_arrives_stops_the_job() {
    let start = Instant::now();
    let (ok, text) = mpirun("late_rank");
    assert!(!ok, "the job should fail:\n{text}");
    assert!(text.contains("worker 0 waited 1 s"), "{text}");
    assert!(!text.contains("returned from a collective"), "{text}");
    // rank 1 sleeps 100 s: the job ends long before
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
}
