//! The kernel's own accounting of eBPF programs (`kernel.bpf_stats_enabled`):
//! with it on, the kernel times each run of each program (`run_time_ns`,
//! `run_cnt`, kernel/bpf/syscall.c, shown in `/proc/<pid>/fdinfo/<fd>` of
//! a bpf-prog descriptor). Used by the bench (the cost per connect) and
//! the scale bench (what a parent attachment costs unrelated traffic).

use std::{collections::BTreeMap, process::Command};

use serde_json::Value;

/// Run time and run count of one program.
#[derive(Clone, Copy, Default)]
pub struct Run {
    pub ns: u64,
    pub cnt: u64,
}

/// The programs a process holds: prog id -> run statistics, from the
/// fdinfo of each of its bpf-prog descriptors (a program held twice is
/// counted once). The tracer runs as the bench's child, so its
/// descriptors name exactly the programs it loaded, whatever else is
/// loaded on the node.
pub fn held_programs(pid: u32) -> BTreeMap<u32, Run> {
    let mut progs = BTreeMap::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return progs;
    };
    for fd in fds.flatten() {
        let is_prog = std::fs::read_link(fd.path())
            .is_ok_and(|l| l.to_string_lossy() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(id) = field("prog_id:") {
            progs.insert(
                id as u32,
                Run {
                    ns: field("run_time_ns:").unwrap_or(0),
                    cnt: field("run_cnt:").unwrap_or(0),
                },
            );
        }
    }
    progs
}

/// Program names by id (`bpftool prog show -j`; bpftool prints the full
/// name from BTF where the kernel's copy is cut at 15 bytes).
pub fn program_names() -> BTreeMap<u32, String> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let progs: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
    progs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["id"].as_u64()? as u32,
                p["name"].as_str().unwrap_or("?").to_string(),
            ))
        })
        .collect()
}

/// Turn `kernel.bpf_stats_enabled` on for the life of the guard, and back
/// to what it was after.
pub struct StatsOn {
    before: String,
}

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl StatsOn {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let before = std::fs::read_to_string(STATS).unwrap_or_default();
        let stats = StatsOn { before };
        stats.on();
        stats
    }

    /// Turn it on (again: another tool on the node may have turned it off).
    pub fn on(&self) {
        if let Err(e) = std::fs::write(STATS, "1") {
            eprintln!("bench: cannot enable {STATS}: {e}; kernel costs will read 0");
        }
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        if !self.before.trim().is_empty() {
            let _ = std::fs::write(STATS, self.before.trim());
        }
    }
}
