//! `tracer` binary: parse arguments, run, map errors to exit codes.
//! Everything else lives in the library (`tracer_user`).

use std::process::ExitCode;

use clap::Parser;
use tracer_user::{
    cli::{Cli, Command},
    preflight, top, trace,
};

fn main() -> ExitCode {
    // clap exits with status 2 and the usage on a bad flag.
    let cli = Cli::parse();
    tracer_user::diag::init();
    match cli.command {
        // Neither needs eBPF, the async runtime or SCHED_BATCH.
        Command::Doctor(args) => tracer_user::doctor::command(&args).into(),
        Command::Diff(args) => tracer_user::diff::command(&args).into(),
        Command::Trace(args) => {
            yield_to_workloads();
            match block_on(trace::run(args)) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => report(&e),
                Err(code) => code,
            }
        }
        Command::Top(args) => {
            // Live, the drain thread inherits SCHED_BATCH like `trace`.
            if args.from.is_none() {
                yield_to_workloads();
            }
            match top::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => report(&e),
            }
        }
        Command::Preflight(args) => match block_on(preflight::run(&args)) {
            Ok(Ok(found)) => match preflight::print(&found, args.format) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => report(&e),
            },
            Ok(Err(e)) => report(&e),
            Err(code) => code,
        },
        Command::Completions(args) => {
            match tracer_user::cli::manual::completions(args.shell, &mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => report(&e),
            }
        }
        Command::Manual(args) => match tracer_user::cli::manual::write(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report(&e),
        },
    }
}

/// Run a future on a single-threaded runtime (the tracer drains its rings
/// on one thread).
fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, ExitCode> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Ok(rt.block_on(future)),
        Err(e) => {
            eprintln!("tracer: error: cannot start the async runtime: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// An error and its causes on stderr; exit 1.
fn report(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("tracer: error: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        eprintln!("  caused by: {s}");
        source = s.source();
    }
    ExitCode::FAILURE
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
