//! Builds the eBPF object (tracer-ebpf) with aya-build, for the BPF target,
//! with the nightly toolchain and bpf-linker that `cargo xtask setup`
//! installs. The object is embedded into the `tracer` binary.
//!
//! With this crate's `floor` feature, the object is built with
//! tracer-ebpf's `floor` feature: every program loaded and attached as
//! usual but returning at once, the floor the kernel-cost bench compares
//! with (`cargo xtask bench --only kernel --floor`).
use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "tracer-ebpf")
        .ok_or_else(|| anyhow!("tracer-ebpf package not found"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("tracer-ebpf has no directory"))?;
    // This crate's bench-only features, passed on to the eBPF build.
    let features: Vec<&str> = [
        ("CARGO_FEATURE_FLOOR", "floor"),
        ("CARGO_FEATURE_SKS", "sks"),
        ("CARGO_FEATURE_SKS_KEEP", "sks-keep"),
        ("CARGO_FEATURE_SKS_CONNS", "sks-conns"),
    ]
    .into_iter()
    .filter(|(var, _)| std::env::var_os(var).is_some())
    .map(|(_, feature)| feature)
    .collect();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root.as_str(),
            features: &features,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
