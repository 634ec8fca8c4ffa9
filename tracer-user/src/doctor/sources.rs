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
        proxy_env::{ProxyEnv, ProxyVar},
        systemd::{load_unit_environment, read_environment_file, EnvSource, SourceKind},
    },
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

/// Read the configuration of a daemon `name` running in `unit`.
pub fn configured(
    host_root: &Path,
    unit: Option<&str>,
    name: &str,
    parent: Option<&str>,
    started: Option<SystemTime>,
) -> Configured {
    let mut out = Configured::default();
    let Some(unit) = unit.filter(|u| u.ends_with(".service")) else {
        return out;
    };
    out.managed = true;
    let k3s = k3s_stem(unit);
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
    match load_unit_environment(host_root, unit) {
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
    let modified = std::fs::metadata(on_host(host_root, &src.file))
        .and_then(|m| m.modified())
        .ok();
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

/// A host path under the host root.
pub fn on_host(host_root: &Path, host_path: &Path) -> PathBuf {
    host_root.join(host_path.strip_prefix("/").unwrap_or(host_path))
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

/// The cluster's ranges from the kubelet's configuration file (`--config`,
/// default /var/lib/kubelet/config.yaml): `podCIDR` and `clusterDNS`.
/// A line-based read of the two keys, not a YAML parser: the file is
/// machine-written and both keys are top-level.
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
    std::fs::read_to_string(on_host(host_root, &config))
        .map(|text| parse_kubelet_ranges(&text))
        .unwrap_or_default()
}

fn parse_kubelet_ranges(text: &str) -> Vec<IpNet> {
    let mut out = Vec::new();
    let mut in_dns = false;
    for line in text.lines() {
        let unquote = |s: &str| s.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
        if let Some(v) = line.strip_prefix("podCIDR:") {
            out.extend(parse_net(&unquote(v)));
            in_dns = false;
        } else if let Some(v) = line.strip_prefix("clusterDNS:") {
            in_dns = true;
            // Flow style: clusterDNS: [10.96.0.10]
            let v = v.trim().trim_start_matches('[').trim_end_matches(']');
            for item in v.split(',') {
                out.extend(parse_net(&unquote(item)));
            }
        } else if in_dns && line.trim_start().starts_with('-') {
            out.extend(parse_net(&unquote(
                line.trim_start().trim_start_matches('-'),
            )));
        } else if !line.starts_with(' ') && !line.starts_with('-') {
            in_dns = false;
        }
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
        let text = "apiVersion: kubelet.config.k8s.io/v1beta1\nclusterDNS:\n- 10.96.0.10\nclusterDomain: cluster.local\npodCIDR: \"10.244.0.0/24\"\n";
        assert_eq!(
            parse_kubelet_ranges(text),
            vec![
                parse_net("10.96.0.10").unwrap(),
                parse_net("10.244.0.0/24").unwrap()
            ]
        );
        assert_eq!(
            parse_kubelet_ranges("clusterDNS: [10.43.0.10]\n"),
            vec![parse_net("10.43.0.10").unwrap()]
        );
    }
}
