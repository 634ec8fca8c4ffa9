//! `tracer` binary: parse arguments, run, map errors to exit codes.
//! Everything else lives in the library (`tracer_user`).

use clap::Parser;
use tracer_user::{
    cli::{Cli, Command},
    trace,
};

fn main() -> std::process::ExitCode {
    // clap exits with status 2 and the usage on a bad flag.
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Trace(args) => args,
        // Neither needs eBPF, the async runtime or SCHED_BATCH.
        Command::Doctor(args) => return tracer_user::doctor::command(&args).into(),
        Command::Diff(args) => return tracer_user::diff::command(&args).into(),
    };
    tracer_user::diag::init();
    yield_to_workloads();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tracer: error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(trace::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracer: error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// Run as SCHED_BATCH: the tracer wakes every 20 ms to drain a batch, and
/// as a batch task its wakeups do not preempt the node's running work; it
/// still gets its fair share of CPU, and the ring buffer holds 1.3 s of a
/// storm, so nothing is lost by waiting a few milliseconds. Called before
/// any thread exists, so every thread inherits it. Best effort: any user
/// may select SCHED_BATCH, and a failure only costs that courtesy.
fn yield_to_workloads() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread with a valid parameter.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        log::warn!(
            "cannot switch to SCHED_BATCH: {}",
            std::io::Error::last_os_error()
        );
    }
}
