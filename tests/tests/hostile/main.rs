//! The hostile node: what the node's processes choose (a name, an argument,
//! a file in a container, a slow client) must not crash, hang, mislead or
//! make the root tracer leak. Privileged (root), one at a time:
//! `cargo test --release -p tracer-tests --test hostile -- --test-threads=1`.
//!
//! Every scenario asserts three things: the tracer keeps writing other
//! processes' events on time with its memory bounded, the doctor returns
//! within a bound, and no planted secret appears anywhere (stdout, stderr,
//! metrics, the doctor's text and JSON). One module per kind of hostile
//! input:
//! - `files`: a kubelet `--config` that is `/dev/zero`, a FIFO or an escaping
//!   path; container hosts files that are FIFOs or absolute symlinks.
//! - `identity`: a process named like a runtime daemon, a user manager's
//!   unit named like the host's (impersonation, unit attribution).
//! - `secrets`: secret-bearing arguments (curl's forms, a database
//!   client's `-p`, generic flags and assignments), a query string in a
//!   proxied request line, terminal escapes in `comm`, a proxy password
//!   holding `://` in drift values.
//! - `serve`: slow and over-long clients of the metrics endpoint, an
//!   `--output` someone else prepared (a 0666 file, a FIFO), and liveness
//!   while the drain is wedged on a pipe nobody reads.

mod files;
mod identity;
mod secrets;
mod serve;
