//! tracer: an eBPF connect() tracer that explains proxy redirection.
//!
//! The pipeline, one module per stage, data flowing one way:
//! `probe` (load + attach the eBPF programs) -> ring buffer (`trace`) ->
//! `decode` (bytes to `Attempt`) -> `enrich` (/proc, cgroup, systemd unit) ->
//! `verdict` (proxy rules) -> `sink` (ECS JSON lines or text).

pub mod cli;
pub mod cri;
pub mod decode;
pub mod diag;
pub mod diff;
pub mod doctor;
pub mod enrich;
pub mod exchange;
pub mod metrics;
pub mod nodefs;
pub mod preflight;
pub mod probe;
pub mod redact;
pub mod sink;
pub mod top;
pub mod trace;
pub mod verdict;

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The stages a module may not import: later stages, and the wiring.
    const FORBIDDEN: &[(&str, &[&str])] = &[
        ("decode.rs", &["enrich", "verdict", "sink", "trace"]),
        ("exchange.rs", &["enrich", "verdict", "sink", "trace"]),
        ("enrich", &["verdict", "sink", "trace"]),
        ("verdict", &["sink", "trace"]),
        ("sink", &["trace"]),
        ("redact.rs", &["enrich", "verdict", "sink", "trace"]),
        (
            "nodefs.rs",
            &["decode", "enrich", "verdict", "sink", "trace", "doctor"],
        ),
        ("doctor", &["sink", "trace", "diff"]),
        ("diff.rs", &["sink", "trace"]),
        ("metrics", &["sink", "trace"]),
    ];

    fn sources(path: &Path, out: &mut Vec<std::path::PathBuf>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).expect("read_dir").flatten() {
                sources(&entry.path(), out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.to_path_buf());
        }
    }

    /// Arrows go from sink to verdict, and from verdict to enrich and
    /// decode, never back (ARCHITECTURE.md).
    #[test]
    fn imports_run_one_way() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut backwards = Vec::new();
        for (stage, later) in FORBIDDEN {
            let mut files = Vec::new();
            sources(&src.join(stage), &mut files);
            assert!(!files.is_empty(), "no sources for {stage}");
            for file in files {
                let text = std::fs::read_to_string(&file).expect("read source");
                for module in *later {
                    for pattern in [format!("crate::{module}"), format!("crate::{{{module}")] {
                        if text.contains(&pattern) {
                            backwards.push(format!("{} uses {pattern}", file.display()));
                        }
                    }
                }
                // Nested `use crate::{ ..., verdict::... }` lists.
                if let Some(list) = text.split("use crate::{").nth(1) {
                    let list = list.split("};").next().unwrap_or_default();
                    for module in *later {
                        if list.contains(&format!("{module}::"))
                            || list.contains(&format!("{module},"))
                        {
                            backwards.push(format!("{} imports {module}", file.display()));
                        }
                    }
                }
            }
        }
        assert!(
            backwards.is_empty(),
            "imports running backwards: {backwards:#?}"
        );
    }
}
