//! Verdict: was this attempt a dial to the process's proxy, which variable
//! made it so, which file set that variable, and does the running process
//! still agree with its unit's configuration?
//!
//! Go's rules (net/http ProxyFromEnvironment) are applied: the daemons that
//! matter on a node (containerd, kubelet, dockerd, cri-o) are Go programs.

pub mod proxy;
pub mod resolve;

use std::net::IpAddr;

use serde::Serialize;

use crate::enrich::systemd::{EnvSource, SourceKind, UnitEnvironment};
use proxy::{proxy_endpoints, ProxyChoice, ProxyEnv, Rules};
use resolve::HostResolver;

/// What the tracer concluded about proxies for one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyVerdict {
    /// The variable that names the proxy, e.g. "HTTPS_PROXY".
    pub variable: &'static str,
    /// The proxy URL, credentials redacted.
    pub url: String,
    /// true: the attempt's destination is this proxy.
    pub via: bool,
    /// The proxy endpoint as host:port.
    #[serde(skip)]
    pub endpoint: String,
    pub rules: Rules,
    /// Where the variable was set, when a unit file says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef>,
    /// The live value differs from what the unit's files configure now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<Drift>,
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
/// worked out once per process snapshot, not per attempt.
pub fn endpoints_of(env: &ProxyEnv) -> Vec<ProxyChoice> {
    proxy_endpoints(env, Rules::Go)
}

/// Decide the proxy verdict for a dial to `dest` by a process with `env`,
/// whose proxies are `endpoints` (from `endpoints_of`). Returns None when
/// the process has no proxy at all.
pub fn judge(
    dest: Option<(IpAddr, u16)>,
    env: &ProxyEnv,
    endpoints: &[ProxyChoice],
    unit_env: Option<&UnitEnvironment>,
    resolver: &mut HostResolver,
) -> Option<ProxyVerdict> {
    let hit = dest.and_then(|(ip, port)| {
        endpoints
            .iter()
            .find(|ep| ep.url.port == port && resolver.resolve(&ep.url.host).contains(&ip))
    });
    let via = hit.is_some();
    let chosen = hit.or_else(|| endpoints.first())?;
    let variable = chosen.variable;
    let live = env.get(variable).unwrap_or_default();
    let (source, drift) = match unit_env {
        Some(unit) => match unit.get(variable) {
            Some(src) => {
                let drift = (src.value != live).then(|| Drift {
                    configured: Some(proxy::redact(&src.value)),
                    live: proxy::redact(live),
                });
                (Some(SourceRef::from_source(src)), drift)
            }
            None => (
                None,
                Some(Drift {
                    configured: None,
                    live: proxy::redact(live),
                }),
            ),
        },
        None => (None, None),
    };
    Some(ProxyVerdict {
        variable,
        url: chosen.url.redacted(),
        via,
        endpoint: host_port(&chosen.url.host, chosen.url.port),
        rules: chosen.rules,
        source,
        drift,
    })
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// "HTTPS_PROXY" -> "HTTPS", for "its HTTPS proxy".
pub fn scheme_label(variable: &str) -> &'static str {
    match variable.to_ascii_uppercase().as_str() {
        "HTTPS_PROXY" => "HTTPS",
        "HTTP_PROXY" => "HTTP",
        _ => "",
    }
}
