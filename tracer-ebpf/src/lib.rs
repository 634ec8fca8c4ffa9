// Empty on purpose: tracer-user depends on this crate so that cargo rebuilds
// the eBPF object (built by aya-build from tracer-user's build.rs) whenever a
// probe changes. The programs themselves live in the `tracer` binary target.
#![no_std]
