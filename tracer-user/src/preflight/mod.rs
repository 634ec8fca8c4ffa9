//! `tracer preflight` (being assembled; see the commit that adds the subcommand).

pub mod explain;
pub mod watch;
