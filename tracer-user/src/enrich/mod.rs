//! Enrich: what the kernel record does not carry, read from /proc and the
//! host's unit files.

pub mod cgroup;
pub mod cgroupns;
pub mod dns;
pub mod pod;
pub mod pod_cri;
pub mod proc;
pub mod proxy_env;
pub mod systemd;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use cgroup::{CgroupInfo, UnitManager};
use systemd::{load_unit_environment, load_user_unit_environment, SystemdError, UnitEnvironment};

/// The configured environment of the unit a process runs in, from the
/// files of that unit's own manager: the host's system units under
/// `host_root`, a user manager's through that user's search path, a
/// container's systemd through the process's own root
/// (`/proc/<pid>/root`), never the host's. `None` when it runs in no unit.
pub fn load_unit_of(
    host_root: &Path,
    proc_root: &Path,
    pid: u32,
    cgroup: &CgroupInfo,
) -> Option<Result<UnitEnvironment, SystemdError>> {
    let unit = cgroup.unit.as_deref()?;
    Some(match cgroup.manager? {
        UnitManager::System => load_unit_environment(host_root, unit),
        UnitManager::User { uid } => load_user_unit_environment(host_root, uid, unit),
        UnitManager::Container => {
            load_unit_environment(&proc_root.join(pid.to_string()).join("root"), unit)
        }
    })
}

/// How long a unit's parsed files are trusted. Short, so an edit made while
/// tracing (the drift case) shows up within seconds.
const UNIT_TTL: Duration = Duration::from_secs(2);

type UnitEntry = (Instant, Option<Arc<UnitEnvironment>>);

/// (the unit's manager, unit name) -> its configured environment, re-read
/// after `UNIT_TTL`. The manager is keyed by the cgroup it owns
/// ([`CgroupInfo::manager_cgroup`]), so the host's `containerd.service`, a
/// user's and a container's are three entries; both levels are looked up
/// by `&str`, so a warm lookup does not allocate.
pub struct UnitCache {
    host_root: PathBuf,
    proc_root: PathBuf,
    entries: HashMap<String, HashMap<String, UnitEntry>>,
    len: usize,
}

impl UnitCache {
    pub fn new(host_root: PathBuf) -> Self {
        Self {
            host_root,
            proc_root: PathBuf::from("/proc"),
            entries: HashMap::new(),
            len: 0,
        }
    }

    /// The configured environment of the unit process `pid` runs in; None
    /// for no unit, or one whose files cannot be read.
    pub fn get(&mut self, pid: u32, cgroup: &CgroupInfo) -> Option<Arc<UnitEnvironment>> {
        let unit = cgroup.unit.as_deref()?;
        let manager = cgroup.manager_cgroup.as_str();
        if let Some((at, env)) = self.entries.get(manager).and_then(|m| m.get(unit)) {
            if at.elapsed() < UNIT_TTL {
                return env.clone();
            }
        }
        let env = load_unit_of(&self.host_root, &self.proc_root, pid, cgroup)
            .and_then(Result::ok)
            .map(Arc::new);
        if self.len > 4096 {
            self.entries.clear();
            self.len = 0;
        }
        let units = self.entries.entry(manager.to_string()).or_default();
        if units
            .insert(unit.to_string(), (Instant::now(), env.clone()))
            .is_none()
        {
            self.len += 1;
        }
        env
    }
}
