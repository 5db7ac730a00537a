//! The `bnlab` command line.

mod alloc;
mod args;
mod commands;

use std::process::ExitCode;

use clap::Parser;

use args::{Args, BenchCommand, Command};
use bnlab_norm::DeviceName;

/// Restores the default SIGPIPE action, which Rust's runtime ignores: `bnlab … | head` then ends
/// quietly when the reader closes the pipe, like other command-line tools, instead of
/// panicking in `println!`.
fn default_sigpipe() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing in `main`, before any thread starts; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    default_sigpipe();
    alloc::keep_freed_memory();
    let args = Args::parse();
    let result = match args.command {
        Command::Data(c) => commands::data::run(c),
        Command::Models => commands::models::run(),
        Command::Run(a) => commands::run::run(&a).map(|_| ()),
        Command::Status { out } => commands::status::run(&out),
        Command::Check { spec, no_timing } => commands::check::run(&spec, !no_timing),
        // (on the pool's thread, as training runs: the kernels' parallel loops then run on
        // it and the other pool threads instead of being handed over from outside)
        Command::Eval(a) => bnlab_train::on_compute_pool(|| commands::eval::eval(&a)),
        Command::PreciseBn(a) => bnlab_train::on_compute_pool(|| commands::eval::precise(&a)),
        Command::Import(a) => commands::interop::import(&a),
        Command::Export(a) => commands::interop::export(&a),
        Command::Report(a) => commands::report::run(&a),
        // (thread workers of a distributed benchmark keep threads of their own)
        Command::Bench(BenchCommand::Train(a)) if a.distributed.is_none() => {
            bnlab_train::on_compute_pool(|| commands::bench::train::train(&a))
        }
        Command::Bench(BenchCommand::Train(a)) => commands::bench::train::train(&a),
        Command::Bench(BenchCommand::Conv { batch, reps, only }) => {
            // (on the pool's thread, as training runs)
            bnlab_train::on_compute_pool(|| {
                commands::bench::conv::conv(batch, reps, only.as_deref())
            })
        }
        Command::Bench(BenchCommand::Norm {
            device,
            quick,
            reps,
            only,
            shape,
        }) => {
            let which = device.or(DeviceName::Flex);
            // (on the pool's thread, as training runs)
            bnlab_train::on_compute_pool(|| {
                commands::bench::norm::norm(which, quick, shape, reps, only.as_deref())
            })
        }
        Command::Quickstart {
            out,
            quiet,
            jobs,
            device,
        } => commands::quickstart::run(&out, quiet, jobs, device.device),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
