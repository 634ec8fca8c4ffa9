//! Fixtures shared by the unit tests of the systemd modules: a throw-away
//! host root to lay unit files out in, and the unit files of the incident
//! the module was written for.

use super::{load_unit_environment, UnitEnvironment};
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A throw-away host root under the system temp dir.
pub(super) struct TempRoot {
    pub(super) path: PathBuf,
}

impl TempRoot {
    pub(super) fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "enrich-systemd-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).expect("create temp root");
        TempRoot { path }
    }

    pub(super) fn disk(&self, host_path: &str) -> PathBuf {
        self.path.join(host_path.trim_start_matches('/'))
    }

    pub(super) fn write(&self, host_path: &str, content: &str) {
        let p = self.disk(host_path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, content).expect("write");
    }

    pub(super) fn symlink(&self, host_path: &str, target: &str) {
        let p = self.disk(host_path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, &p).expect("symlink");
    }

    pub(super) fn load(&self, unit: &str) -> UnitEnvironment {
        load_unit_environment(&self.path, unit).expect("load_unit_environment")
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

pub(super) const CONTAINERD_UNIT: &str = "[Unit]\n\
    Description=containerd container runtime\n\
    After=network.target\n\
    \n\
    [Service]\n\
    ExecStartPre=-/sbin/modprobe overlay\n\
    ExecStart=/usr/bin/containerd\n\
    Restart=always\n\
    \n\
    [Install]\n\
    WantedBy=multi-user.target\n";

pub(super) const INCIDENT_DROPIN: &str = "[Service]\n\
    Environment=\"HTTP_PROXY=http://10.0.0.1:7897\"\n\
    Environment=\"HTTPS_PROXY=http://10.0.0.1:7897\"\n\
    Environment=\"NO_PROXY=localhost,127.0.0.1,...\"\n";

pub(super) fn value<'a>(env: &'a UnitEnvironment, name: &str) -> Option<&'a str> {
    env.get(name).map(|v| v.value.as_str())
}
