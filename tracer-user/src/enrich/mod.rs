//! Enrich: what the kernel record does not carry, read from /proc and the
//! host's unit files.

pub mod cgroup;
pub mod dns;
pub mod pod;
pub mod pod_cri;
pub mod proc;
pub mod proxy_env;
pub mod systemd;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use systemd::{load_unit_environment, UnitEnvironment};

/// How long a unit's parsed files are trusted. Short, so an edit made while
/// tracing (the drift case) shows up within seconds.
const UNIT_TTL: Duration = Duration::from_secs(2);

/// unit name -> its configured environment, re-read after `UNIT_TTL`.
pub struct UnitCache {
    host_root: PathBuf,
    entries: HashMap<String, (Instant, Option<Arc<UnitEnvironment>>)>,
}

impl UnitCache {
    pub fn new(host_root: PathBuf) -> Self {
        Self {
            host_root,
            entries: HashMap::new(),
        }
    }

    /// The unit's configured environment; None for units whose files
    /// cannot be read.
    pub fn get(&mut self, unit: &str) -> Option<Arc<UnitEnvironment>> {
        if let Some((at, env)) = self.entries.get(unit) {
            if at.elapsed() < UNIT_TTL {
                return env.clone();
            }
        }
        let env = load_unit_environment(&self.host_root, unit)
            .ok()
            .map(Arc::new);
        if self.entries.len() > 4096 {
            self.entries.clear();
        }
        self.entries
            .insert(unit.to_string(), (Instant::now(), env.clone()));
        env
    }
}
