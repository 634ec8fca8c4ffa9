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
    let Command::Trace(args) = cli.command;
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
