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
//! - `serve`: slow and over-long clients of the metrics endpoint, an
//!   `--output` someone else prepared (a 0666 file, a FIFO), and liveness
//!   while the drain is wedged on a pipe nobody reads.

mod serve;
