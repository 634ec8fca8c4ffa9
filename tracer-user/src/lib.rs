//! tracer: an eBPF connect() tracer that explains proxy redirection.
//!
//! The pipeline, one module per stage, data flowing one way:
//! `probe` (load + attach the eBPF programs) -> ring buffer (`trace`) ->
//! `decode` (bytes to `Attempt`) -> `enrich` (/proc, cgroup, systemd unit) ->
//! `verdict` (proxy rules) -> `sink` (ECS JSON lines or text).

pub mod cli;
pub mod decode;
pub mod diag;
pub mod enrich;
pub mod probe;
pub mod redact;
pub mod sink;
pub mod trace;
pub mod verdict;
