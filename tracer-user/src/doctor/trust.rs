//! What a daemon trusts for one registry, read through the host root, and
//! the judgement of a presented chain against it.
//!
//! The daemon is a Go program, and every runtime here builds its pool the
//! same way: Go's system pool, plus the files configured for that
//! registry, ADDED to it (never replacing it):
//!
//! * **System pool** (Go's `crypto/x509` on Linux, `root_linux.go`
//!   `loadSystemRoots`): the first of its bundle files that exists, or the
//!   file the daemon's `SSL_CERT_FILE` names instead; then every file of
//!   `/etc/ssl/certs` and `/etc/pki/tls/certs`, or of the `:`-separated
//!   folders of `SSL_CERT_DIR` instead, skipping symlinks within the same
//!   folder (the OpenSSL hash links). On a normal set-up the folders repeat
//!   the bundle (`update-ca-certificates` writes both); a CA dropped into
//!   the folder alone is trusted by Go all the same, so they are read.
//!   Only those two names are taken from the daemon's environment, and
//!   only to find the files.
//! * **containerd** (1.6, `pkg/cri/server/image_pull.go` `getTLSConfig`):
//!   `[plugins."io.containerd.grpc.v1.cri".registry.configs."HOST".tls]
//!   ca_file` is appended to `x509.SystemCertPool()`. With
//!   `registry.config_path`, `remotes/docker/config/hosts.go` reads
//!   `<dir>/<host>/hosts.toml` (`ca = ...`, top level and per `[host]`,
//!   relative to that folder) or, without one, the folder's `*.crt`; again
//!   appended to the system pool. The config file is the one its command
//!   line names (`--config`/`-c`, default `/etc/containerd/config.toml`),
//!   so k3s's embedded containerd is read from k3s's own file.
//! * **dockerd**: `/etc/docker/certs.d/<host>/*.crt`, plus the system pool.
//! * **CRI-O** (containers/image): `/etc/containers/certs.d/<host>/*.crt`,
//!   plus the system pool.
//!
//! Every file is read with `nodefs` (inside the host root, regular files,
//! a size cap, a time budget). The config path and the `ca_file` paths are
//! named by the daemon's command line and configuration, so they use the
//! budget of files named by a process.
//!
//! The judgement follows Go's `Certificate.Verify` order: validity period
//! first, then the name, then a path to a trusted root, so the first
//! problem named is the one the daemon's error names. A leaf that is
//! itself in the pool is trusted as it is (Go's `Roots.contains`), which is
//! how a self-signed registry certificate in `ca_file` works; otherwise the
//! path is validated by webpki (rustls' verifier), not by comparing names.

use std::path::{Path, PathBuf};

use rustls::{
    client::{verify_server_cert_signed_by_trust_anchor, verify_server_name},
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    server::ParsedCertificate,
    CertificateError, RootCertStore,
};
use serde::{Deserialize, Serialize};

use crate::nodefs::{NodeRoot, HOST_CONFIG, NAMED_BY_PROCESS};

/// Go's system bundle files, in the order it tries them (root_linux.go).
pub const SYSTEM_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Go's certificate folders (root_linux.go `certDirectories`).
pub const SYSTEM_DIRS: [&str; 2] = ["/etc/ssl/certs", "/etc/pki/tls/certs"];

/// A CA bundle is a few hundred KiB (Debian's: about 220 KiB).
const MAX_BUNDLE: u64 = 4 * 1024 * 1024;
/// Files read from one system certificate folder (Debian's /etc/ssl/certs
/// holds about 150 besides its hash links).
const MAX_SYSTEM_DIR_FILES: usize = 1024;
/// All the bytes read from the system folders together.
const MAX_SYSTEM_DIR_BYTES: u64 = 32 * 1024 * 1024;
/// What is read of the daemon's environment to find SSL_CERT_FILE/DIR.
const MAX_ENVIRON: u64 = 1024 * 1024;
/// A containerd config or hosts.toml is a few KiB.
const MAX_CONFIG: u64 = 1024 * 1024;
/// CA files taken from one certs.d folder.
const MAX_DIR_FILES: usize = 32;

/// One file of the trust, and what it gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustFile {
    /// Path under the host root.
    pub path: String,
    /// `system`, `system (SSL_CERT_FILE)`, `system folder` (a folder,
    /// path ending in `/`, counting only what the bundle lacks),
    /// `system (SSL_CERT_DIR)`, `containerd ca_file`, `containerd hosts.toml`,
    /// `containerd certs.d`, `docker certs.d`, `containers certs.d`.
    pub origin: String,
    /// Certificates taken from it.
    pub certificates: usize,
}

/// The files, for sentences: "/etc/ssl/certs/ca-certificates.crt and
/// /etc/containerd/certs/registry-ca.crt".
pub fn describe(files: &[TrustFile]) -> String {
    if files.is_empty() {
        return "nothing (no CA bundle or registry CA file was found)".to_string();
    }
    files
        .iter()
        .map(|f| f.path.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// What the daemon trusts for the registry.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub files: Vec<TrustFile>,
    /// Files that were named but could not be read (reason only).
    pub problems: Vec<String>,
    /// Where verification is turned off for the registry (containerd's
    /// `tls.insecure_skip_verify` or hosts.toml `skip_verify`): the daemon
    /// then accepts any certificate.
    pub skip_verify: Option<String>,
    roots: Vec<CertificateDer<'static>>,
}

impl Trust {
    fn add_file(&mut self, root: &NodeRoot, path: &Path, origin: &str) -> bool {
        match root.read(path, MAX_BUNDLE) {
            Ok(bytes) => {
                let certs = pem_certificates(&bytes);
                self.files.push(TrustFile {
                    path: path.display().to_string(),
                    origin: origin.to_string(),
                    certificates: certs.len(),
                });
                self.roots.extend(certs);
                true
            }
            Err(e) if e.is_missing() => false,
            Err(e) => {
                self.problems.push(e.to_string());
                false
            }
        }
    }

    /// Every file of a system certificate folder, as Go reads it. The
    /// folder is listed as one entry, counting only the certificates the
    /// pool did not hold yet, and only when there are some: on a normal
    /// node it repeats the bundle and would only lengthen the sentence.
    fn add_system_dir(&mut self, root: &NodeRoot, dir: &Path, origin: &str, budget: &mut u64) {
        let Ok(entries) = root.list_dir(dir) else {
            return;
        };
        let mut added = 0;
        for entry in entries.iter().take(MAX_SYSTEM_DIR_FILES) {
            // Go's readUniqueDirectoryEntries: a symlink to a name in the
            // same folder (a hash link) is the same file again.
            if entry
                .link_target
                .as_ref()
                .is_some_and(|t| !t.as_os_str().as_encoded_bytes().contains(&b'/'))
            {
                continue;
            }
            if *budget == 0 {
                self.problems.push(format!(
                    "{}: stopped after {} MiB of certificate files",
                    dir.display(),
                    MAX_SYSTEM_DIR_BYTES >> 20
                ));
                break;
            }
            // A folder entry may be anything (a FIFO, a huge file):
            // nodefs reads regular files only, capped, under its budget.
            let Ok(bytes) = root.read(&dir.join(&entry.name), MAX_BUNDLE.min(*budget)) else {
                continue;
            };
            *budget = budget.saturating_sub(bytes.len() as u64);
            for cert in pem_certificates(&bytes) {
                if !self.roots.contains(&cert) {
                    self.roots.push(cert);
                    added += 1;
                }
            }
        }
        if added > 0 {
            self.files.push(TrustFile {
                path: format!("{}/", dir.display()),
                origin: origin.to_string(),
                certificates: added,
            });
        }
    }
}

/// The certificates of a PEM file; anything else in it is skipped, as Go's
/// `AppendCertsFromPEM` does.
fn pem_certificates(bytes: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(bytes)
        .filter_map(Result::ok)
        .collect()
}

/// Go's two certificate variables, from the daemon's environment.
#[derive(Debug, Default, PartialEq, Eq)]
struct CertEnv {
    file: Option<String>,
    dir: Option<String>,
}

impl CertEnv {
    /// `SSL_CERT_FILE` and `SSL_CERT_DIR` of raw environ bytes, first
    /// occurrence winning (Go's `syscall.copyenv`); empty means unset
    /// (`os.Getenv(...) != ""`). Nothing else is kept.
    fn parse(raw: &[u8]) -> Self {
        let mut env = CertEnv::default();
        for entry in raw.split(|&b| b == 0) {
            let slot = if let Some(v) = entry.strip_prefix(b"SSL_CERT_FILE=") {
                (&mut env.file, v)
            } else if let Some(v) = entry.strip_prefix(b"SSL_CERT_DIR=") {
                (&mut env.dir, v)
            } else {
                continue;
            };
            if slot.0.is_none() {
                *slot.0 = Some(String::from_utf8_lossy(slot.1).into_owned());
            }
        }
        env.file = env.file.filter(|f| !f.is_empty());
        env.dir = env.dir.filter(|d| !d.is_empty());
        env
    }

    /// The daemon's, from `/proc/<pid>/environ` (capped; unreadable reads
    /// as unset, which is Go's default pool).
    fn of(proc_root: &Path, pid: u32) -> Self {
        use std::io::Read;
        let mut raw = Vec::new();
        if let Ok(f) = std::fs::File::open(proc_root.join(pid.to_string()).join("environ")) {
            let _ = f.take(MAX_ENVIRON).read_to_end(&mut raw);
        }
        Self::parse(&raw)
    }
}

/// The trust of daemon `name` (pid `pid`) for `host:port`.
pub fn for_daemon(
    host_root: &Path,
    proc_root: &Path,
    pid: u32,
    name: &str,
    host: &str,
    port: u16,
) -> Trust {
    let mut trust = Trust::default();
    let admin = match NodeRoot::open(host_root, &HOST_CONFIG) {
        Ok(r) => r,
        Err(e) => {
            trust.problems.push(e.to_string());
            return trust;
        }
    };
    let named = NodeRoot::open(host_root, &NAMED_BY_PROCESS).ok();
    let env = CertEnv::of(proc_root, pid);
    match (&env.file, &named) {
        (Some(file), Some(named)) => {
            trust.add_file(named, Path::new(file), "system (SSL_CERT_FILE)");
        }
        _ => {
            for bundle in SYSTEM_BUNDLES {
                if trust.add_file(&admin, Path::new(bundle), "system") {
                    break;
                }
            }
        }
    }
    let mut budget = MAX_SYSTEM_DIR_BYTES;
    match (&env.dir, &named) {
        (Some(dirs), Some(named)) => {
            for dir in dirs.split(':').filter(|d| !d.is_empty()) {
                trust.add_system_dir(named, Path::new(dir), "system (SSL_CERT_DIR)", &mut budget);
            }
        }
        _ => {
            for dir in SYSTEM_DIRS {
                trust.add_system_dir(&admin, Path::new(dir), "system folder", &mut budget);
            }
        }
    }
    let keys = host_keys(host, port);
    match name {
        "containerd" => {
            if let Some(named) = &named {
                let args = super::discover::args_of(proc_root, pid);
                containerd(&mut trust, named, &config_arg(&args), &keys);
            }
        }
        "dockerd" => certs_dir(
            &mut trust,
            &admin,
            "/etc/docker/certs.d",
            &keys,
            "docker certs.d",
        ),
        "crio" => certs_dir(
            &mut trust,
            &admin,
            "/etc/containers/certs.d",
            &keys,
            "containers certs.d",
        ),
        _ => {}
    }
    trust
}

/// How a registry is named in configuration: `host:port`, and `host` alone
/// when the port is 443 (the image reference has none then).
fn host_keys(host: &str, port: u16) -> Vec<String> {
    let joined = super::reach::join_host_port(host, port);
    if port == 443 {
        vec![host.to_string(), joined]
    } else {
        vec![joined]
    }
}

/// containerd's `--config`/`-c`, else its default.
fn config_arg(args: &[String]) -> PathBuf {
    let mut config = PathBuf::from("/etc/containerd/config.toml");
    for (i, arg) in args.iter().enumerate() {
        if let Some(v) = arg.strip_prefix("--config=") {
            config = PathBuf::from(v);
        } else if arg == "--config" || arg == "-c" {
            if let Some(v) = args.get(i + 1) {
                config = PathBuf::from(v);
            }
        }
    }
    config
}

/// The CRI plugin's registry table: version 2 configs (containerd 1.x) and
/// version 3 (2.x, images plugin).
fn registry_table(config: &toml::Table) -> Option<&toml::Table> {
    let plugins = config.get("plugins")?.as_table()?;
    ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images"]
        .iter()
        .find_map(|p| plugins.get(*p)?.get("registry")?.as_table())
}

/// A TOML file read through the host root.
enum Toml {
    Missing,
    /// Unreadable or not TOML: the reason is in `Trust::problems`.
    Unusable,
    Table(toml::Table),
}

fn read_toml(trust: &mut Trust, root: &NodeRoot, path: &Path) -> Toml {
    let text = match root.read(path, MAX_CONFIG) {
        Ok(t) => t,
        Err(e) if e.is_missing() => return Toml::Missing,
        Err(e) => {
            trust.problems.push(e.to_string());
            return Toml::Unusable;
        }
    };
    // The parser's own error may quote the file: only say it did not parse.
    match std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
    {
        Some(table) => Toml::Table(table),
        None => {
            trust
                .problems
                .push(format!("{} is not valid TOML", path.display()));
            Toml::Unusable
        }
    }
}

fn containerd(trust: &mut Trust, root: &NodeRoot, config: &Path, keys: &[String]) {
    let Toml::Table(table) = read_toml(trust, root, config) else {
        return;
    };
    let Some(registry) = registry_table(&table) else {
        return;
    };
    let configs = registry.get("configs").and_then(|c| c.as_table());
    for key in keys {
        let tls = configs.and_then(|c| c.get(key)).and_then(|c| c.get("tls"));
        if tls
            .and_then(|t| t.get("insecure_skip_verify"))
            .and_then(toml::Value::as_bool)
            == Some(true)
        {
            trust.skip_verify = Some(format!("insecure_skip_verify in {}", config.display()));
        }
        let ca = tls
            .and_then(|t| t.get("ca_file"))
            .and_then(|f| f.as_str())
            .filter(|f| !f.is_empty());
        if let Some(ca) = ca {
            trust.add_file(root, Path::new(ca), "containerd ca_file");
        }
    }
    if let Some(dirs) = registry.get("config_path").and_then(|p| p.as_str()) {
        for dir in dirs.split(':').filter(|d| !d.is_empty()) {
            for key in keys {
                hosts_dir(trust, root, &Path::new(dir).join(key));
            }
        }
    }
}

/// `<config_path>/<host>`: hosts.toml's `ca`, or the folder's `*.crt`.
fn hosts_dir(trust: &mut Trust, root: &NodeRoot, dir: &Path) {
    let hosts = dir.join("hosts.toml");
    match read_toml(trust, root, &hosts) {
        Toml::Table(table) => {
            let mut cas = Vec::new();
            collect_ca(table.get("ca"), &mut cas);
            let skip = |t: &toml::Value| t.get("skip_verify").and_then(toml::Value::as_bool);
            let mut skips = table.get("skip_verify").and_then(toml::Value::as_bool) == Some(true);
            if let Some(mirrors) = table.get("host").and_then(|h| h.as_table()) {
                for (_, h) in mirrors.iter().take(MAX_DIR_FILES) {
                    collect_ca(h.get("ca"), &mut cas);
                    skips |= skip(h) == Some(true);
                }
            }
            if skips {
                trust.skip_verify = Some(format!("skip_verify in {}", hosts.display()));
            }
            for ca in cas.into_iter().take(MAX_DIR_FILES) {
                let path = dir.join(ca);
                trust.add_file(root, &path, "containerd hosts.toml");
            }
        }
        Toml::Missing => certs_files(trust, root, dir, "containerd certs.d"),
        Toml::Unusable => {}
    }
}

fn collect_ca(value: Option<&toml::Value>, out: &mut Vec<String>) {
    match value {
        Some(toml::Value::String(s)) => out.push(s.clone()),
        Some(toml::Value::Array(items)) => {
            out.extend(items.iter().filter_map(|v| v.as_str().map(str::to_string)))
        }
        _ => {}
    }
}

fn certs_dir(trust: &mut Trust, root: &NodeRoot, base: &str, keys: &[String], origin: &str) {
    for key in keys {
        certs_files(trust, root, &Path::new(base).join(key), origin);
    }
}

/// The `*.crt` files of a certs.d folder (Docker's and containerd's rule:
/// `.crt` is a CA, `.cert`/`.key` a client pair).
fn certs_files(trust: &mut Trust, root: &NodeRoot, dir: &Path, origin: &str) {
    let Ok(entries) = root.list_dir(dir) else {
        return;
    };
    let mut names: Vec<_> = entries
        .iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".crt"))
        .collect();
    names.sort();
    for name in names.into_iter().take(MAX_DIR_FILES) {
        trust.add_file(root, &dir.join(name), origin);
    }
}

/// Why a chain does not verify, in Go's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    Expired,
    NotYetValid,
    WrongName,
    UnknownAuthority,
    /// Anything else webpki refuses (bad signature, unsupported key...).
    Invalid,
}

impl Problem {
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Expired => "expired",
            Problem::NotYetValid => "not_yet_valid",
            Problem::WrongName => "wrong_name",
            Problem::UnknownAuthority => "unknown_authority",
            Problem::Invalid => "invalid",
        }
    }
}

/// The judgement of one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Judgement {
    pub verified: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub problem: Option<Problem>,
    /// webpki's words for the problem.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

impl Judgement {
    fn bad(problem: Problem, detail: String) -> Self {
        Judgement {
            verified: false,
            problem: Some(problem),
            detail: Some(detail),
        }
    }
}

fn problem_of(e: &rustls::Error) -> Problem {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Problem::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Problem::NotYetValid
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Problem::WrongName
            }
            CertificateError::UnknownIssuer => Problem::UnknownAuthority,
            _ => Problem::Invalid,
        },
        _ => Problem::Invalid,
    }
}

/// Judge `chain` (leaf first) for `name` against `trust`, at `now`.
pub fn judge(
    chain: &[CertificateDer<'static>],
    name: &str,
    trust: &Trust,
    now: UnixTime,
) -> Judgement {
    let Some(leaf) = chain.first() else {
        return Judgement::bad(Problem::Invalid, "no certificate was presented".into());
    };
    if let Some(why) = &trust.skip_verify {
        return Judgement {
            verified: true,
            problem: None,
            detail: Some(format!("the daemon does not verify this registry ({why})")),
        };
    }
    let Ok(server_name) = ServerName::try_from(name) else {
        return Judgement::bad(Problem::Invalid, format!("{name:?} is not a server name"));
    };
    let parsed = match ParsedCertificate::try_from(leaf) {
        Ok(p) => p,
        Err(e) => return Judgement::bad(problem_of(&e), e.to_string()),
    };
    // 1. Validity period of the leaf (Go checks it before anything else).
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) {
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let validity = cert.validity();
        if now > validity.not_after.timestamp() {
            return Judgement::bad(
                Problem::Expired,
                format!("the certificate expired on {}", validity.not_after),
            );
        }
        if now < validity.not_before.timestamp() {
            return Judgement::bad(
                Problem::NotYetValid,
                format!("the certificate is valid only from {}", validity.not_before),
            );
        }
    }
    // 2. The name.
    if let Err(e) = verify_server_name(&parsed, &server_name) {
        return Judgement::bad(problem_of(&e), e.to_string());
    }
    // 3. A path to a trusted root: the leaf itself, or webpki's path.
    if trust.roots.iter().any(|r| r == leaf) {
        return Judgement {
            verified: true,
            problem: None,
            detail: None,
        };
    }
    let mut store = RootCertStore::empty();
    let _ = store.add_parsable_certificates(trust.roots.iter().cloned());
    let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    match verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &store,
        &chain[1..],
        now,
        algorithms.all,
    ) {
        Ok(()) => Judgement {
            verified: true,
            problem: None,
            detail: None,
        },
        // webpki refuses a leaf marked as a CA before it looks for an
        // issuer; Go does not. A self-issued one that is not in the pool
        // has no issuer there (Go: "certificate signed by unknown
        // authority"); any other is left unjudged, and says why.
        Err(e) if is_ca_as_leaf(&e) => match self_issued(leaf) {
            true => Judgement::bad(
                Problem::UnknownAuthority,
                "a self-signed certificate that is not among the trusted ones".into(),
            ),
            false => Judgement::bad(
                Problem::Invalid,
                "the certificate is marked as a CA: webpki does not judge such a leaf (Go would)"
                    .into(),
            ),
        },
        Err(e) => Judgement::bad(problem_of(&e), e.to_string()),
    }
}

/// rustls passes webpki's `CaUsedAsEndEntity` on as an "other" error.
fn is_ca_as_leaf(e: &rustls::Error) -> bool {
    matches!(e, rustls::Error::InvalidCertificate(CertificateError::Other(o))
        if matches!(o.0.downcast_ref::<webpki::Error>(), Some(webpki::Error::CaUsedAsEndEntity)))
}

/// Issuer and subject are the same name.
fn self_issued(der: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(der.as_ref())
        .is_ok_and(|(_, c)| c.subject().as_raw() == c.issuer().as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_variables_first_wins_and_empty_is_unset() {
        let env = CertEnv::parse(
            b"PATH=/bin\0SSL_CERT_FILE=/etc/corp.pem\0SSL_CERT_FILE=/x\0SSL_CERT_DIR=\0SECRET=s",
        );
        assert_eq!(env.file.as_deref(), Some("/etc/corp.pem"));
        assert_eq!(env.dir, None);
        assert_eq!(CertEnv::parse(b"XSSL_CERT_FILE=/a\0"), CertEnv::default());
        assert_eq!(CertEnv::parse(b""), CertEnv::default());
    }

    /// A system folder as Go reads it: every file, hash links within the
    /// folder skipped, only certificates the pool lacks counted, and a
    /// folder that adds nothing not listed.
    #[test]
    fn system_folder_adds_what_the_bundle_lacks() {
        // Three distinct DER blobs (SEQUENCE { INTEGER n }): the pool
        // compares bytes, no certificate is parsed here.
        let pem = |n: usize| {
            let b64 = ["MAMCAQE=", "MAMCAQI=", "MAMCAQM="][n - 1];
            format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n")
        };
        let root = std::env::temp_dir().join(format!("trust-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let certs = root.join("etc/ssl/certs");
        std::fs::create_dir_all(&certs).expect("mkdir");
        std::fs::write(certs.join("ca-certificates.crt"), pem(1) + &pem(2)).expect("bundle");
        std::fs::write(certs.join("corp.pem"), pem(3)).expect("corp");
        std::os::unix::fs::symlink("corp.pem", certs.join("abcd1234.0")).expect("hash link");
        let node = NodeRoot::open(&root, &HOST_CONFIG).expect("root");
        let mut trust = Trust::default();
        assert!(trust.add_file(&node, Path::new(SYSTEM_BUNDLES[0]), "system"));
        let mut budget = MAX_SYSTEM_DIR_BYTES;
        trust.add_system_dir(
            &node,
            Path::new("/etc/ssl/certs"),
            "system folder",
            &mut budget,
        );
        assert_eq!(trust.roots.len(), 3);
        assert_eq!(trust.files.len(), 2);
        assert_eq!(trust.files[1].path, "/etc/ssl/certs/");
        assert_eq!(
            trust.files[1].certificates, 1,
            "corp.pem once, hash link skipped"
        );

        let mut again = trust.clone();
        again.add_system_dir(
            &node,
            Path::new("/etc/ssl/certs"),
            "system folder",
            &mut budget,
        );
        assert_eq!(
            again.files.len(),
            2,
            "a folder that adds nothing is not listed"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn containerd_config_flag_forms() {
        let a = |v: &[&str]| config_arg(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            a(&["containerd"]),
            PathBuf::from("/etc/containerd/config.toml")
        );
        assert_eq!(
            a(&["containerd", "-c", "/x.toml"]),
            PathBuf::from("/x.toml")
        );
        assert_eq!(
            a(&["containerd", "--config=/y.toml"]),
            PathBuf::from("/y.toml")
        );
    }

    #[test]
    fn registry_keys_leave_out_the_default_port() {
        assert_eq!(host_keys("r.test", 443), vec!["r.test", "r.test:443"]);
        assert_eq!(host_keys("r.test", 5000), vec!["r.test:5000"]);
        assert_eq!(host_keys("2001:db8::1", 5000), vec!["[2001:db8::1]:5000"]);
    }

    #[test]
    fn ca_files_of_both_containerd_config_versions() {
        let v2: toml::Table = r#"
version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
[plugins."io.containerd.grpc.v1.cri".registry.configs."r.test".tls]
  ca_file = "/etc/containerd/certs/r.crt"
"#
        .parse()
        .unwrap();
        let reg = registry_table(&v2).unwrap();
        assert_eq!(
            reg["configs"]["r.test"]["tls"]["ca_file"].as_str(),
            Some("/etc/containerd/certs/r.crt")
        );
        let v3: toml::Table = r#"
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/etc/containerd/certs.d"
"#
        .parse()
        .unwrap();
        assert_eq!(
            registry_table(&v3).unwrap()["config_path"].as_str(),
            Some("/etc/containerd/certs.d")
        );
        let mut cas = Vec::new();
        let hosts: toml::Table = r#"
server = "https://r.test"
ca = "ca.crt"
[host."https://mirror.test"]
  ca = ["/etc/a.crt", "/etc/b.crt"]
"#
        .parse()
        .unwrap();
        collect_ca(hosts.get("ca"), &mut cas);
        for (_, h) in hosts["host"].as_table().unwrap() {
            collect_ca(h.get("ca"), &mut cas);
        }
        assert_eq!(cas, vec!["ca.crt", "/etc/a.crt", "/etc/b.crt"]);
    }

    #[test]
    fn no_chain_and_no_trust_are_not_verified() {
        let j = judge(&[], "r.test", &Trust::default(), UnixTime::now());
        assert!(!j.verified);
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        let j = judge(&[junk], "r.test", &Trust::default(), UnixTime::now());
        assert!(!j.verified);
    }
}
