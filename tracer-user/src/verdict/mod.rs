//! Verdict: was this attempt a dial to the process's proxy, which variable
//! made it so, which file set that variable, and does the running process
//! still agree with its unit's configuration?
//!
//! Go's rules (net/http ProxyFromEnvironment) are applied: the daemons that
//! matter on a node (containerd, kubelet, dockerd, cri-o) are Go programs.

pub mod proxy;
pub mod resolve;

use std::{net::IpAddr, sync::Arc};

use serde::Serialize;

use crate::{
    enrich::{
        proc::{PidMap, ProcInfo},
        proxy_env::ProxyEnv,
        systemd::{EnvSource, SourceKind, UnitEnvironment},
    },
    redact::redact_value,
};
use proxy::{proxy_endpoints, ProxyChoice, RequestScheme, Rules};
use resolve::{Answer, Resolver, Root, Unresolved};

/// Process snapshots whose proxies are remembered; beyond this the cache
/// starts over, like the enrichment's own process cache.
const MAX_ENDPOINT_ENTRIES: usize = 16384;

/// What the tracer concluded about proxies for one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyVerdict {
    /// The variable that names the proxy, e.g. "HTTPS_PROXY".
    pub variable: &'static str,
    /// The proxy URL, credentials redacted (shared with the choice it came
    /// from: no allocation per event).
    #[serde(serialize_with = "as_str")]
    pub url: Arc<str>,
    /// true: the attempt's destination is this proxy; null: not known,
    /// because the proxy's host name has no answer yet (`unresolved` says
    /// why). Events are never held back for a lookup.
    pub via: Option<bool>,
    /// Why `via` is null: "proxy.corp:3128: its host name is still being
    /// resolved".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<String>,
    /// The proxy endpoint as host:port (shared, like `url`).
    #[serde(skip)]
    pub endpoint: Arc<str>,
    /// The request scheme the variable serves ("its HTTPS proxy").
    #[serde(skip)]
    pub scheme: RequestScheme,
    pub rules: Rules,
    /// Where the variable was set, when a unit file says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef>,
    /// The live value differs from what the unit's files configure now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<Drift>,
}

/// A shared string as a JSON string (serde's `rc` feature would do the
/// same for every crate in the tree).
fn as_str<S: serde::Serializer>(s: &Arc<str>, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceRef {
    pub file: String,
    pub line: u32,
    /// "environment", "environment_file" or "default_environment".
    pub directive: &'static str,
    /// For EnvironmentFile=: the unit file and line that name the env file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_line: Option<u32>,
    /// EnvironmentFile=-/path: a missing file is silently ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

impl SourceRef {
    fn from_source(src: &EnvSource) -> Self {
        let (directive, unit_file, unit_line, optional) = match &src.via {
            SourceKind::Environment => ("environment", None, None, None),
            SourceKind::EnvironmentFile {
                unit_file,
                unit_line,
                optional,
            } => (
                "environment_file",
                Some(unit_file.display().to_string()),
                Some(*unit_line),
                Some(*optional),
            ),
            SourceKind::DefaultEnvironment => ("default_environment", None, None, None),
        };
        Self {
            file: src.file.display().to_string(),
            line: src.line,
            directive,
            unit_file,
            unit_line,
            optional,
        }
    }

    /// "/etc/.../http-proxy.conf:3"
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// What the unit's files say now (redacted), or None when no file sets
    /// the variable any more.
    pub configured: Option<String>,
    /// What the running process has (redacted).
    pub live: String,
}

/// The proxies a process with `env` would use, by the rules of the daemons
/// that matter on a node (Go). Depends only on the environment, so it is
/// worked out once per process snapshot (see [`EndpointCache`]), not per
/// attempt.
pub fn endpoints_of(env: &ProxyEnv) -> Vec<ProxyChoice> {
    proxy_endpoints(env, Rules::Go)
}

/// The proxies each process snapshot's environment selects.
///
/// Enrichment describes a process (its `ProxyEnv`); which proxies that
/// environment selects is a judgement, so it is made here rather than
/// stored in `ProcInfo`. A snapshot is an `Arc<ProcInfo>` from the process
/// cache, replaced by a new `Arc` after exec or pid reuse, so pointer
/// identity says whether an entry is current. The entry holds its `Arc`,
/// which keeps the address from being reused by a later snapshot.
#[derive(Default)]
pub struct EndpointCache {
    entries: PidMap<(Arc<ProcInfo>, Vec<ProxyChoice>)>,
}

impl EndpointCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget `pid` if its entry is for this (evicted) snapshot.
    pub fn forget(&mut self, pid: u32, proc: &Arc<ProcInfo>) {
        if self
            .entries
            .get(&pid)
            .is_some_and(|(seen, _)| Arc::ptr_eq(seen, proc))
        {
            self.entries.remove(&pid);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The proxies `proc` (the snapshot of `pid`) would use; empty when its
    /// environment is unknown or names none. Runs for every event, so it
    /// allocates only the first time a snapshot with proxy variables is
    /// seen.
    pub fn of(&mut self, pid: u32, proc: &Arc<ProcInfo>) -> &[ProxyChoice] {
        let Some(env) = proc.proxy_env() else {
            return &[];
        };
        // Most processes have no proxy variable at all: nothing to work out
        // and nothing worth remembering.
        if env.is_empty() {
            return &[];
        }
        let current = self
            .entries
            .get(&pid)
            .is_some_and(|(seen, _)| Arc::ptr_eq(seen, proc));
        if !current {
            if self.entries.len() >= MAX_ENDPOINT_ENTRIES {
                self.entries.clear();
            }
            self.entries
                .insert(pid, (Arc::clone(proc), endpoints_of(env)));
        }
        self.entries
            .get(&pid)
            .map_or(&[], |(_, endpoints)| endpoints.as_slice())
    }
}

/// Decide the proxy verdict for a dial to `dest` by a process with `env`,
/// whose proxies are `endpoints` (from [`EndpointCache::of`] or
/// [`endpoints_of`]), resolving names as seen from `root`. Returns None
/// when the process has no proxy at all.
pub fn judge(
    dest: Option<(IpAddr, u16)>,
    env: &ProxyEnv,
    endpoints: &[ProxyChoice],
    unit_env: Option<&UnitEnvironment>,
    resolver: &mut Resolver,
    root: Root,
) -> Option<ProxyVerdict> {
    // The first proxy this attempt dials; else the first whose name has no
    // answer yet (then whether it was dialled is unknown).
    let mut hit = None;
    let mut unknown = None;
    if let Some((ip, port)) = dest {
        for ep in endpoints.iter().filter(|ep| ep.url.port == port) {
            match dials(ep, ip, resolver, root) {
                Dial::Yes => {
                    hit = Some(ep);
                    break;
                }
                Dial::No => {}
                Dial::Unknown(why) => {
                    unknown = unknown.or(Some((ep, why)));
                }
            }
        }
    }
    let (chosen, via, unresolved) = match (hit, unknown) {
        (Some(ep), _) => (ep, Some(true), None),
        (None, Some((ep, why))) => (
            ep,
            None,
            Some(format!("{}: {}", ep.url.host_port(), why.describe())),
        ),
        (None, None) => (endpoints.first()?, Some(false), None),
    };
    let variable = chosen.variable;
    let live = env.get(variable).unwrap_or_default();
    let (source, drift) = match unit_env {
        Some(unit) => match unit.get(variable) {
            Some(src) => {
                let drift = (src.value != live).then(|| Drift {
                    configured: Some(redact_value(&src.value)),
                    live: redact_value(live),
                });
                (Some(SourceRef::from_source(src)), drift)
            }
            None => (
                None,
                Some(Drift {
                    configured: None,
                    live: redact_value(live),
                }),
            ),
        },
        None => (None, None),
    };
    Some(ProxyVerdict {
        variable,
        url: Arc::clone(&chosen.shown.url),
        via,
        unresolved,
        endpoint: Arc::clone(&chosen.shown.endpoint),
        scheme: chosen.for_scheme,
        rules: chosen.rules,
        source,
        drift,
    })
}

/// Names of the proxies in `endpoints` that need a lookup, for resolving
/// ahead of the first attempt.
pub fn names_to_resolve(endpoints: &[ProxyChoice]) -> impl Iterator<Item = &str> {
    endpoints
        .iter()
        .filter(|ep| ep.url.ip().is_none())
        .map(|ep| ep.url.host.as_str())
}

enum Dial {
    Yes,
    No,
    Unknown(Unresolved),
}

/// Whether `ip` is an address of the proxy `ep`. An IP-literal proxy (the
/// usual `http://10.0.0.1:3128`, or one with an IPv6 zone the resolver would
/// take for a name) is compared directly; a name is looked up in the
/// resolver's cache, which never blocks.
fn dials(ep: &ProxyChoice, ip: IpAddr, resolver: &mut Resolver, root: Root) -> Dial {
    match ep.url.ip() {
        Some(literal) if literal == ip => Dial::Yes,
        Some(_) => Dial::No,
        None => match resolver.lookup(&ep.url.host, root) {
            Answer::Addrs(addrs) if addrs.contains(&ip) => Dial::Yes,
            Answer::Addrs(_) => Dial::No,
            Answer::Unknown(why) => Dial::Unknown(why),
        },
    }
}

/// Https -> "HTTPS", for "its HTTPS proxy". Taken from the scheme the
/// proxy was chosen for rather than from the variable's name, so it needs
/// no case folding on the per-event path.
pub fn scheme_label(scheme: RequestScheme) -> &'static str {
    match scheme {
        RequestScheme::Https => "HTTPS",
        RequestScheme::Http => "HTTP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::systemd::EnvSource;

    /// Drift values are proxy values: a password holding `://` must not
    /// leak its first part, as the free-text redactor would let it.
    #[test]
    fn drift_values_go_through_the_value_redactor() {
        let live = "http://ops:pa55://live@127.0.0.1:3128";
        let env = ProxyEnv::from_environ(format!("HTTPS_PROXY={live}\0").as_bytes());
        let endpoints = endpoints_of(&env);
        let unit = UnitEnvironment {
            unit: "x.service".into(),
            vars: vec![EnvSource {
                variable: "HTTPS_PROXY".into(),
                value: "http://ops:pa55://conf@127.0.0.1:3128".into(),
                file: "/etc/systemd/system/x.service".into(),
                line: 3,
                via: SourceKind::Environment,
            }],
            ..UnitEnvironment::default()
        };
        let mut resolver = Resolver::new(std::path::Path::new("/"));
        let verdict = judge(
            Some((IpAddr::from([127, 0, 0, 1]), 3128)),
            &env,
            &endpoints,
            Some(&unit),
            &mut resolver,
            Root::HOST,
        )
        .expect("a verdict");
        let drift = verdict.drift.as_ref().expect("drift");
        assert_eq!(drift.live, "http://REDACTED@127.0.0.1:3128");
        assert_eq!(
            drift.configured.as_deref(),
            Some("http://REDACTED@127.0.0.1:3128")
        );
        assert!(!format!("{drift:?}").contains("pa55"));
    }
}
