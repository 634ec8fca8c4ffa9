//! Where each proxy variable of a daemon is configured, and whether the
//! running process still agrees.
//!
//! systemd builds a service's environment at start from its unit files
//! (`enrich::systemd` re-implements that read-only); k3s and rke2 also read
//! `/etc/default/<name>` and hand `CONTAINERD_*` variables to their
//! embedded containerd with the prefix removed. The process's own
//! `/proc/<pid>/environ` is the truth about what it uses; this module
//! explains it and says where the two part.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use ipnet::IpNet;

use super::{Drift, Origin, Source, Variable, PROXY_VARS};
use crate::{
    enrich::{
        cgroup::{CgroupInfo, UnitManager},
        load_unit_of,
        proxy_env::{ProxyEnv, ProxyVar},
        systemd::{
            load_unit_environment, read_environment_file, EnvSource, SourceKind, SystemdError,
            UnitEnvironment,
        },
    },
    nodefs::{NodeRoot, HOST_CONFIG, NAMED_BY_PROCESS},
    redact::{redact, redact_value},
    verdict::proxy::{parse_proxy_url, Rules},
};

/// A configured value (raw: it may hold credentials) and where it is set.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfiguredVar {
    pub value: String,
    pub source: Source,
}

/// A daemon's configured proxy environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Configured {
    /// Proxy variables only, by exact name.
    pub vars: BTreeMap<String, ConfiguredVar>,
    /// Files the configuration was read from (host paths).
    pub files: Vec<String>,
    pub warnings: Vec<String>,
    /// A systemd service started the process, so every variable it has was
    /// configured somewhere when it started: a live value no file sets now
    /// is stale, not inherited from a shell.
    pub managed: bool,
    /// k3s/rke2 append the cluster's ranges to NO_PROXY before passing it on.
    pub appends_no_proxy: bool,
}

/// The unit's stem (`k3s` of `k3s.service`) when it is k3s or rke2.
fn k3s_stem(unit: &str) -> Option<&str> {
    let stem = unit.strip_suffix(".service")?;
    super::discover::is_k3s_like(stem).then_some(stem)
}

/// Read the configuration of a daemon `name` (process `pid`) from the
/// files of the manager of the unit it runs in: the host's system units, a
/// user's search path, or a container's own root (see
/// [`crate::enrich::load_unit_of`]); k3s's `/etc/default` only for the
/// host's units.
pub fn configured_for(
    host_root: &Path,
    proc_root: &Path,
    pid: u32,
    cgroup: Option<&CgroupInfo>,
    name: &str,
    parent: Option<&str>,
    started: Option<SystemTime>,
) -> Configured {
    let Some(cgroup) = cgroup else {
        return Configured::default();
    };
    match cgroup.manager {
        Some(UnitManager::System) | None => {
            configured(host_root, cgroup.unit.as_deref(), name, parent, started)
        }
        Some(manager) => {
            let Some(unit) = cgroup.unit.as_deref().filter(|u| u.ends_with(".service")) else {
                return Configured::default();
            };
            let loaded = load_unit_of(host_root, proc_root, pid, cgroup);
            // A container's files (and their times) are in its own root.
            let files_root = match manager {
                UnitManager::Container => proc_root.join(pid.to_string()).join("root"),
                _ => host_root.to_path_buf(),
            };
            configured_from(&files_root, unit, loaded, false, name, parent, started)
        }
    }
}

/// Read the configuration of a daemon `name` running in the host's system
/// unit `unit`.
pub fn configured(
    host_root: &Path,
    unit: Option<&str>,
    name: &str,
    parent: Option<&str>,
    started: Option<SystemTime>,
) -> Configured {
    let Some(unit) = unit.filter(|u| u.ends_with(".service")) else {
        return Configured::default();
    };
    let loaded = Some(load_unit_environment(host_root, unit));
    configured_from(host_root, unit, loaded, true, name, parent, started)
}

/// [`configured`] from the unit's loaded files; `host_unit`: the unit is
/// the host's, so k3s's `/etc/default` file on the host applies to it.
fn configured_from(
    host_root: &Path,
    unit: &str,
    loaded: Option<Result<UnitEnvironment, SystemdError>>,
    host_unit: bool,
    name: &str,
    parent: Option<&str>,
    started: Option<SystemTime>,
) -> Configured {
    let mut out = Configured {
        managed: true,
        ..Configured::default()
    };
    let k3s = k3s_stem(unit).filter(|_| host_unit);
    // k3s's embedded containerd runs in k3s.service's cgroup with k3s as
    // its parent.
    let embedded = name == "containerd" && (k3s.is_some() || parent.is_some());
    out.appends_no_proxy = k3s.is_some();
    let mut prefixed: Vec<(String, ConfiguredVar)> = Vec::new();
    let mut add = |out: &mut Configured, src: &EnvSource, origin: Origin| {
        let var = ConfiguredVar {
            value: src.value.clone(),
            source: source_of(host_root, src, origin, started),
        };
        if let Some(bare) = src.variable.strip_prefix("CONTAINERD_") {
            if embedded && ProxyVar::from_name(bare).is_some() {
                let mut var = var;
                var.source.origin = Origin::ContainerdPrefix;
                prefixed.push((bare.to_string(), var));
            }
        } else if ProxyVar::from_name(&src.variable).is_some() {
            out.vars.entry(src.variable.clone()).or_insert(var);
        }
    };
    match loaded.unwrap_or_else(|| Ok(UnitEnvironment::default())) {
        Ok(env) => {
            out.files
                .extend(env.fragment.iter().map(|p| p.display().to_string()));
            out.files
                .extend(env.dropins.iter().map(|p| p.display().to_string()));
            out.warnings.extend(env.warnings.iter().cloned());
            for src in &env.vars {
                let origin = match &src.via {
                    SourceKind::Environment => Origin::Environment,
                    SourceKind::EnvironmentFile { .. } if is_etc_default(&src.file) => {
                        Origin::EtcDefault
                    }
                    SourceKind::EnvironmentFile { .. } => Origin::EnvironmentFile,
                    SourceKind::DefaultEnvironment => Origin::DefaultEnvironment,
                };
                add(&mut out, src, origin);
            }
        }
        Err(e) => out.warnings.push(format!("{unit}: {e}")),
    }
    // k3s's installer writes /etc/default/k3s (or /etc/sysconfig/k3s) and
    // its unit reads it with EnvironmentFile=-; when the unit file is not
    // under the host root the file still says what k3s was started with.
    if let Some(stem) = k3s {
        for dir in ["/etc/default", "/etc/sysconfig"] {
            let path = PathBuf::from(dir).join(stem);
            let shown = path.display().to_string();
            if out.files.contains(&shown) {
                continue;
            }
            match read_environment_file(host_root, &path) {
                Ok(Some(entries)) => {
                    out.files.push(shown);
                    for src in &entries {
                        add(&mut out, src, Origin::EtcDefault);
                    }
                }
                Ok(None) => {}
                Err(e) => out.warnings.push(e.to_string()),
            }
        }
    }
    // CONTAINERD_<NAME> overrides <NAME> for the embedded containerd.
    for (name, var) in prefixed {
        out.vars.insert(name, var);
    }
    out
}

fn is_etc_default(file: &Path) -> bool {
    file.starts_with("/etc/default") || file.starts_with("/etc/sysconfig")
}

fn source_of(
    host_root: &Path,
    src: &EnvSource,
    origin: Origin,
    started: Option<SystemTime>,
) -> Source {
    let (unit_file, unit_line) = match &src.via {
        SourceKind::EnvironmentFile {
            unit_file,
            unit_line,
            ..
        } => (Some(unit_file.display().to_string()), Some(*unit_line)),
        _ => (None, None),
    };
    let modified = host_file_info(host_root, &src.file).and_then(|info| info.modified);
    Source {
        origin,
        file: src.file.display().to_string(),
        line: src.line,
        unit_file,
        unit_line,
        modified_after_start: match (modified, started) {
            (Some(m), Some(s)) => Some(m > s),
            _ => None,
        },
    }
}

/// `stat` of a host file, inside the host root (symlinks followed there);
/// None when it cannot be had.
pub fn host_file_info(host_root: &Path, host_path: &Path) -> Option<crate::nodefs::FileInfo> {
    NodeRoot::open(host_root, &HOST_CONFIG)
        .and_then(|root| root.stat(host_path))
        .ok()
}

/// When a process started, from its start time in clock ticks since boot.
pub fn start_time(ticks: u64) -> Option<SystemTime> {
    let boot = procfs::boot_time_secs().ok()?;
    let tps = procfs::ticks_per_second().max(1);
    let secs = boot.checked_add(ticks / tps)?;
    let nanos = (ticks % tps) * 1_000_000_000 / tps;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, u32::try_from(nanos).ok()?))
}

/// Every proxy variable that is live or configured, values redacted, with
/// drift in both directions.
pub fn variables(env: &ProxyEnv, configured: &Configured) -> Vec<Variable> {
    let mut out = Vec::new();
    for var in PROXY_VARS {
        let name = var.name();
        let live = env.get_var(var);
        let conf = configured.vars.get(name);
        if live.is_none() && conf.is_none() {
            continue;
        }
        let live_set = live.filter(|v| !v.is_empty());
        let conf_set = conf.map(|c| c.value.as_str()).filter(|v| !v.is_empty());
        let drift = match (live_set, conf_set) {
            (Some(l), Some(c)) if l == c => None,
            // k3s appends the cluster's ranges to what it was given.
            (Some(l), Some(c))
                if configured.appends_no_proxy
                    && matches!(var, ProxyVar::NoUpper | ProxyVar::NoLower)
                    && l.starts_with(c) =>
            {
                None
            }
            (Some(_), Some(_)) => Some(Drift::Changed),
            (None, Some(_)) => Some(Drift::NotLive),
            (Some(_), None) if configured.managed => Some(Drift::NotConfigured),
            _ => None,
        };
        let error = live_set
            .filter(|_| !matches!(var, ProxyVar::NoUpper | ProxyVar::NoLower))
            .and_then(|value| match parse_proxy_url(value, Rules::Go) {
                Err(e) => Some(redact(&e.to_string())),
                Ok(url) if url.misparsed => Some(format!(
                    "does not parse as a URL; Go retries it as http:// + value and dials host {:?}",
                    url.host
                )),
                Ok(_) => None,
            });
        out.push(Variable {
            name: name.to_string(),
            live: live.map(redact_value),
            configured: conf.map(|c| redact_value(&c.value)),
            source: conf.map(|c| c.source.clone()),
            drift,
            error,
        });
    }
    out
}

/// The kubelet's configuration is a few KB; more is not a kubelet config.
const MAX_KUBELET_CONFIG_BYTES: u64 = 1024 * 1024;

/// The cluster's ranges from the kubelet's configuration file (`--config`,
/// default /var/lib/kubelet/config.yaml): `podCIDR` and `clusterDNS`.
///
/// The path comes from the arguments of a process that calls itself
/// `kubelet`, so it is hostile input: it is read inside the host root (a
/// relative path starts at the host's `/`, never at the process's working
/// directory, and `..` stops at the root), only if it is a regular file of
/// at most 1 MiB, within the time budget of files named by processes, and
/// nothing of it but the two keys' addresses is used: a file that is not a
/// kubelet configuration (`/etc/shadow`) yields nothing, and no message
/// quotes it.
pub fn kubelet_ranges(host_root: &Path, proc_root: &Path, pid: u32) -> Vec<IpNet> {
    let args = super::discover::args_of(proc_root, pid);
    let mut config = PathBuf::from("/var/lib/kubelet/config.yaml");
    for (i, arg) in args.iter().enumerate() {
        if let Some(v) = arg.strip_prefix("--config=") {
            config = PathBuf::from(v);
        } else if arg == "--config" {
            if let Some(v) = args.get(i + 1) {
                config = PathBuf::from(v);
            }
        }
    }
    let text = NodeRoot::open(host_root, &NAMED_BY_PROCESS)
        .and_then(|root| root.read(&config, MAX_KUBELET_CONFIG_BYTES));
    match text {
        Ok(text) => parse_kubelet_ranges(&text),
        Err(e) => {
            // The reason only (path, type, size, time): never content.
            log::debug!("kubelet {pid}: configuration not used: {e}");
            Vec::new()
        }
    }
}

/// `clusterDNS` then `podCIDR` of a KubeletConfiguration (YAML or JSON);
/// anything else in the file, or a file that is no such mapping, yields
/// nothing. The parser's own errors are dropped: they may quote the text.
fn parse_kubelet_ranges(text: &[u8]) -> Vec<IpNet> {
    use serde_yaml_ng::Value;
    let Ok(doc) = serde_yaml_ng::from_slice::<Value>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let addresses = |v: &Value| -> Vec<IpNet> {
        v.as_str()
            .map(|s| s.split(',').filter_map(|a| parse_net(a.trim())).collect())
            .unwrap_or_default()
    };
    if let Some(dns) = doc.get("clusterDNS") {
        match dns.as_sequence() {
            Some(items) => items.iter().for_each(|v| out.extend(addresses(v))),
            None => out.extend(addresses(dns)),
        }
    }
    if let Some(cidr) = doc.get("podCIDR") {
        out.extend(addresses(cidr));
    }
    out
}

/// A CIDR, or one address as a host route.
pub fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> ProxyEnv {
        let mut raw = Vec::new();
        for (k, v) in pairs {
            raw.extend_from_slice(format!("{k}={v}\0").as_bytes());
        }
        ProxyEnv::from_environ(&raw)
    }

    fn conf(pairs: &[(&str, &str, u32)], managed: bool) -> Configured {
        let mut c = Configured {
            managed,
            ..Default::default()
        };
        for (k, v, line) in pairs {
            c.vars.insert(
                k.to_string(),
                ConfiguredVar {
                    value: v.to_string(),
                    source: Source {
                        origin: Origin::Environment,
                        file: "/etc/x.conf".into(),
                        line: *line,
                        unit_file: None,
                        unit_line: None,
                        modified_after_start: None,
                    },
                },
            );
        }
        c
    }

    #[test]
    fn drift_in_both_directions() {
        let live = env(&[
            ("HTTPS_PROXY", "http://a:1"),
            ("HTTP_PROXY", "http://gone:1"),
        ]);
        let c = conf(
            &[
                ("HTTPS_PROXY", "http://b:1", 2),
                ("NO_PROXY", "localhost", 3),
            ],
            true,
        );
        let vars = variables(&live, &c);
        let get = |n: &str| vars.iter().find(|v| v.name == n).unwrap();
        assert_eq!(get("HTTPS_PROXY").drift, Some(Drift::Changed));
        assert_eq!(get("NO_PROXY").drift, Some(Drift::NotLive));
        assert_eq!(get("HTTP_PROXY").drift, Some(Drift::NotConfigured));
        // Not started by systemd: a value without configuration is just
        // inherited, not drift.
        let vars = variables(&live, &conf(&[], false));
        assert!(vars.iter().all(|v| v.drift.is_none()));
    }

    #[test]
    fn values_are_redacted_and_errors_reported() {
        let live = env(&[
            ("HTTPS_PROXY", "http://u:s3cret@p:1"),
            ("HTTP_PROXY", "http://p:notaport"),
        ]);
        let vars = variables(
            &live,
            &conf(&[("HTTPS_PROXY", "http://u:s3cret@p:1", 1)], true),
        );
        let text = format!("{vars:?}");
        assert!(!text.contains("s3cret"), "{text}");
        let http = vars.iter().find(|v| v.name == "HTTP_PROXY").unwrap();
        assert!(http.error.is_some());
        assert!(vars
            .iter()
            .find(|v| v.name == "HTTPS_PROXY")
            .unwrap()
            .drift
            .is_none());
    }

    /// A password holding `://` (which the free-text redactor would take
    /// for a scheme) leaks no part of itself through drift values.
    #[test]
    fn drift_values_with_a_scheme_in_the_password_are_redacted() {
        let live = env(&[("HTTPS_PROXY", "http://ops:pa55://live@p:1")]);
        let vars = variables(
            &live,
            &conf(&[("HTTPS_PROXY", "http://ops:pa55://conf@p:1", 1)], true),
        );
        let v = &vars[0];
        assert!(v.drift.is_some());
        assert_eq!(v.live.as_deref(), Some("http://REDACTED@p:1"));
        assert_eq!(v.configured.as_deref(), Some("http://REDACTED@p:1"));
    }

    #[test]
    fn k3s_no_proxy_append_is_not_drift() {
        let live = env(&[("NO_PROXY", "localhost,10.42.0.0/16,10.43.0.0/16")]);
        let mut c = conf(&[("NO_PROXY", "localhost", 1)], true);
        c.appends_no_proxy = true;
        assert!(variables(&live, &c)[0].drift.is_none());
    }

    #[test]
    fn k3s_etc_default_and_containerd_prefix() {
        let root = std::env::temp_dir().join(format!("doctor-k3s-{}", std::process::id()));
        let file = root.join("etc/default/k3s");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(
            &file,
            "HTTPS_PROXY=http://k3s:1\nCONTAINERD_HTTPS_PROXY=http://ctrd:2\nNO_PROXY=localhost\n",
        )
        .unwrap();
        let k3s = configured(&root, Some("k3s.service"), "k3s", None, None);
        assert_eq!(k3s.vars["HTTPS_PROXY"].value, "http://k3s:1");
        assert_eq!(k3s.vars["HTTPS_PROXY"].source.origin, Origin::EtcDefault);
        assert_eq!(k3s.vars["HTTPS_PROXY"].source.line, 1);
        let ctrd = configured(
            &root,
            Some("k3s.service"),
            "containerd",
            Some("k3s-server"),
            None,
        );
        assert_eq!(ctrd.vars["HTTPS_PROXY"].value, "http://ctrd:2");
        assert_eq!(
            ctrd.vars["HTTPS_PROXY"].source.origin,
            Origin::ContainerdPrefix
        );
        assert_eq!(ctrd.vars["HTTPS_PROXY"].source.line, 2);
        assert_eq!(ctrd.vars["NO_PROXY"].value, "localhost");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn kubelet_config_ranges() {
        let text = b"apiVersion: kubelet.config.k8s.io/v1beta1\nclusterDNS:\n- 10.96.0.10\nclusterDomain: cluster.local\npodCIDR: \"10.244.0.0/24\"\n";
        assert_eq!(
            parse_kubelet_ranges(text),
            vec![
                parse_net("10.96.0.10").unwrap(),
                parse_net("10.244.0.0/24").unwrap()
            ]
        );
        assert_eq!(
            parse_kubelet_ranges(b"clusterDNS: [10.43.0.10]\n"),
            vec![parse_net("10.43.0.10").unwrap()]
        );
        // JSON is YAML too; indentation and quoting as any writer likes.
        assert_eq!(
            parse_kubelet_ranges(br#"{"podCIDR": "10.1.0.0/16", "clusterDNS": ["10.2.0.10"]}"#),
            vec![
                parse_net("10.2.0.10").unwrap(),
                parse_net("10.1.0.0/16").unwrap()
            ]
        );
        assert_eq!(
            parse_kubelet_ranges(b"kind: KubeletConfiguration\nclusterDNS:\n    -   '10.3.0.10'\n"),
            vec![parse_net("10.3.0.10").unwrap()]
        );
        // Not a kubelet configuration: nothing, and no panic.
        for junk in [
            &b"root:$6$s3cr3t:19000:0:99999:7:::\n"[..],
            b"\0\xff\xfe",
            b"podCIDR: [1, 2",
            b"a: &a [*a, *a]",
            b"- 1\n- 2\n",
            b"",
        ] {
            assert!(parse_kubelet_ranges(junk).is_empty(), "{junk:?}");
        }
    }

    #[test]
    fn kubelet_config_outside_the_host_root_is_never_read() {
        // host root four levels deep; the escape target holds a config
        // whose ranges would show if it were read.
        let base = std::env::temp_dir().join(format!("doctor-kubelet-{}", std::process::id()));
        let root = base.join("a/b/c/root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::fs::write(base.join("etc/kubelet.yaml"), "podCIDR: 10.66.0.0/16\n").unwrap();
        std::fs::write(root.join("etc/kubelet.yaml"), "podCIDR: 10.77.0.0/16\n").unwrap();
        // A /proc of our own holding the "kubelet" and its arguments.
        let proc_root = base.join("proc");
        let args = |pid: u32, cmdline: &[u8]| {
            std::fs::create_dir_all(proc_root.join(pid.to_string())).unwrap();
            std::fs::write(proc_root.join(format!("{pid}/cmdline")), cmdline).unwrap();
        };
        args(7, b"kubelet\0--config=../../../../etc/kubelet.yaml\0");
        args(8, b"kubelet\0--config\0/../../../../etc/kubelet.yaml\0");
        for pid in [7, 8] {
            assert_eq!(
                kubelet_ranges(&root, &proc_root, pid),
                vec![parse_net("10.77.0.0/16").unwrap()],
                "pid {pid}"
            );
        }
        // A FIFO or a device as --config: nothing, at once.
        let fifo = root.join("etc/fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        args(9, b"kubelet\0--config=/etc/fifo\0");
        args(10, b"kubelet\0--config=/dev/zero\0");
        assert!(kubelet_ranges(&root, &proc_root, 9).is_empty());
        assert!(kubelet_ranges(Path::new("/"), &proc_root, 10).is_empty());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
