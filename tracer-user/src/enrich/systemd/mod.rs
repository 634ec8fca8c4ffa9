//! Where a systemd unit's configured environment comes from: which unit file
//! or drop-in (file + line) sets each variable.
//!
//! This re-implements, read-only and without talking to systemd, the parts of
//! the service manager that build a unit's environment:
//!
//! * unit file lookup and drop-in collection (systemd.unit(5)),
//! * the unit file syntax (systemd.syntax(7)),
//! * `Environment=`, `EnvironmentFile=` and `UnsetEnvironment=`
//!   (systemd.exec(5)),
//! * `DefaultEnvironment=` from `system.conf` (systemd-system.conf(5)).
//!
//! All paths are *host* paths, resolved under a `host_root` (e.g. `/host` when
//! the tracer runs in a container with the host's `/` mounted there); absolute
//! symlinks are re-rooted under it, as systemd's `chase()` does with a root
//! directory, so `/etc/systemd/system/x.service -> /lib/systemd/system/x.service`
//! is read from the host, not from the tracer's own file system.
//!
//! What the result means: the *configured* environment as of the files on disk
//! now. systemd reads unit files at `daemon-reload` and `EnvironmentFile=` at
//! every start, so a running process may have been started with something
//! else; `/proc/<pid>/environ` stays the truth about the process, this module
//! explains where a value was configured. Not covered: variables set with
//! `systemctl set-environment` or passed with `PassEnvironment=` (the manager's
//! runtime environment is not in any file; `PassEnvironment=` is reported as a
//! warning), variables systemd generates itself (`INVOCATION_ID`, `USER`, ...),
//! the default `PATH`, and for user managers (`systemd --user`, read through
//! [`load_user_unit_environment`]) the environment they inherit from
//! `user@.service` and `environment.d` (systemd-environment-d-generator).
//!
//! Layout: [`load_unit_environment`] here drives the steps; `units` finds the
//! fragment and drop-ins, `syntax` parses unit files, `words` splits and
//! unescapes values and expands specifiers, `envfile` reads
//! `EnvironmentFile=` files, `assemble` merges everything in systemd's order,
//! and `root` reads every file through the host root.

mod assemble;
mod envfile;
mod root;
mod syntax;
#[cfg(test)]
mod test_support;
mod units;
mod words;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::nodefs::{FileInfo, FileKind, NodeFsError, NodeRoot, HOST_CONFIG};

use assemble::{load_default_environment, ExecEnv};
use root::{io_error, FileContent, HostFs};
use syntax::parse_unit_file;
use units::{
    collect_dropins, exec_section, find_aliases, find_fragment, same_type_unit, FragmentLookup,
    SearchPath, UnitName,
};
use words::UnitSpec;

/// Where one environment variable's configured value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvSource {
    pub variable: String,
    pub value: String,
    /// Path as seen on the host (without the `host_root` prefix), e.g.
    /// `/etc/systemd/system/containerd.service.d/http-proxy.conf`.
    pub file: PathBuf,
    /// 1-based line in `file` where the assignment starts.
    pub line: u32,
    pub via: SourceKind,
}

/// Which mechanism delivered a variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// `Environment=` in a unit file or drop-in.
    Environment,
    /// A line of a file named by `EnvironmentFile=`. [`EnvSource::file`] and
    /// [`EnvSource::line`] are the environment file's own; `unit_file` /
    /// `unit_line` locate the `EnvironmentFile=` directive; `optional` is its
    /// `-` prefix.
    EnvironmentFile {
        unit_file: PathBuf,
        unit_line: u32,
        optional: bool,
    },
    /// `DefaultEnvironment=` in `system.conf` or `system.conf.d/*.conf`.
    DefaultEnvironment,
}

/// The configured environment of one unit, with provenance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitEnvironment {
    /// The unit name that was asked for.
    pub unit: String,
    /// Main unit file used (host path, as found in the search path).
    pub fragment: Option<PathBuf>,
    /// Drop-ins applied, in the order applied (host paths).
    pub dropins: Vec<PathBuf>,
    /// The effective configured value of every variable, after all override
    /// rules, sorted by variable name (so two nodes' results diff cleanly).
    pub vars: Vec<EnvSource>,
    /// Things systemd would log or that limit the answer: unreadable
    /// non-optional `EnvironmentFile=`, ignored assignments, masked units, ...
    pub warnings: Vec<String>,
}

impl UnitEnvironment {
    /// The effective source of variable `name` (exact, case-sensitive match,
    /// as in the process environment).
    pub fn get(&self, name: &str) -> Option<&EnvSource> {
        self.vars.iter().find(|v| v.variable == name)
    }
}

/// Errors that make the whole answer meaningless. Problems confined to one
/// variable or one `EnvironmentFile=` are warnings instead.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("invalid unit name {name:?}: {reason}")]
    InvalidUnitName { name: String, reason: &'static str },
    #[error("host root {} is not a readable directory: {source}", path.display())]
    HostRoot {
        path: PathBuf,
        #[source]
        source: NodeFsError,
    },
    /// A unit file, drop-in, drop-in directory or `system.conf` exists but
    /// cannot be read (or is too large, or its file system hangs): the
    /// answer would silently miss its assignments.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: NodeFsError,
    },
}

/// Load the configured environment of `unit` from the unit files under
/// `host_root` (use "/" for the real host). Never panics; missing files are not
/// errors (a unit may have no file at all).
pub fn load_unit_environment(
    host_root: &Path,
    unit: &str,
) -> Result<UnitEnvironment, SystemdError> {
    load_in(host_root, unit, &SearchPath::system())
}

/// Load the configured environment of `unit` of the user manager of `uid`
/// (`user@UID.service`): that user's search path (systemd.unit(5), user
/// mode), with the home directory from the host's `/etc/passwd`. Those
/// files are the user's to write, and the tracer reads them as root, so a
/// file the user could not read itself (a symlink to a root-only file) is
/// not used: `systemd --user` could not have read it either.
pub fn load_user_unit_environment(
    host_root: &Path,
    uid: u32,
    unit: &str,
) -> Result<UnitEnvironment, SystemdError> {
    let root = open_host_root(host_root)?;
    let host = HostFs { root: &root };
    let passwd = Path::new("/etc/passwd");
    let user = match host.read_file(passwd).map_err(io_error(passwd))? {
        FileContent::Bytes(text) => passwd_entry(&text, uid),
        _ => None,
    };
    let Some(user) = user else {
        return Ok(UnitEnvironment {
            unit: unit.to_string(),
            warnings: vec![format!(
                "uid {uid} has no entry in the host's /etc/passwd: the unit files of its user manager cannot be located"
            )],
            ..Default::default()
        });
    };
    let env = load_in(host_root, unit, &SearchPath::user(uid, &user.home))?;
    Ok(withhold_unreadable(&host, env, &user))
}

/// The metadata of the regular file `host_path` names under `host_root`,
/// its symlinks resolved inside that root (an absolute target restarts at
/// the root, `..` stops at it), as systemd's chase() does; `Ok(None)` when
/// it is missing or not a regular file. For identifying a daemon by its
/// executable: the host's own file, not one a link points elsewhere.
pub fn host_file_metadata(
    host_root: &Path,
    host_path: &Path,
) -> Result<Option<FileInfo>, SystemdError> {
    let root = open_host_root(host_root)?;
    match root.stat(host_path) {
        Ok(info) if info.kind == FileKind::Regular => Ok(Some(info)),
        Ok(_) => Ok(None),
        Err(e) if e.is_missing() => Ok(None),
        Err(e) => Err(io_error(host_path)(e)),
    }
}

/// The fields of one `/etc/passwd` entry (passwd(5)) that locate a user's
/// files and say what it may read.
struct PasswdEntry {
    uid: u32,
    gid: u32,
    home: PathBuf,
}

/// The entry of `uid` (the first one, as getpwuid(3) returns), when its
/// home is an absolute path.
fn passwd_entry(text: &[u8], uid: u32) -> Option<PasswdEntry> {
    text.split(|&b| b == b'\n').find_map(|line| {
        let line = std::str::from_utf8(line).ok()?;
        let fields: Vec<&str> = line.split(':').collect();
        let [_, _, u, g, _, home, ..] = fields.as_slice() else {
            return None;
        };
        let entry = PasswdEntry {
            uid: u.parse().ok()?,
            gid: g.parse().ok()?,
            home: PathBuf::from(home),
        };
        (entry.uid == uid && entry.home.is_absolute()).then_some(entry)
    })
}

/// `env` unchanged when the user could read every file it came from, else
/// no assignment at all and a warning naming the file.
fn withhold_unreadable(
    host: &HostFs<'_>,
    env: UnitEnvironment,
    user: &PasswdEntry,
) -> UnitEnvironment {
    let files = env
        .fragment
        .iter()
        .chain(&env.dropins)
        .chain(env.vars.iter().flat_map(|v| {
            let via = match &v.via {
                SourceKind::EnvironmentFile { unit_file, .. } => Some(unit_file),
                _ => None,
            };
            std::iter::once(&v.file).chain(via)
        }));
    for file in files {
        if !readable_by(host, file, user) {
            return UnitEnvironment {
                unit: env.unit,
                warnings: vec![format!(
                    "{} is not readable by uid {}: its user manager could not have read it, so none of the unit's files are used",
                    file.display(),
                    user.uid
                )],
                ..Default::default()
            };
        }
    }
    env
}

/// Whether the user could open `host_path` for reading, by its mode bits:
/// the owner's bits for its owner, the group's for its primary group, else
/// the others'. Supplementary groups are not consulted, so a file readable
/// only through one is withheld too (the safe side).
fn readable_by(host: &HostFs<'_>, host_path: &Path, user: &PasswdEntry) -> bool {
    if user.uid == 0 {
        return true;
    }
    match host.resolve(host_path) {
        Ok(root::Node::DevNull) => true,
        Ok(root::Node::Present { .. }) => host.root.stat(host_path).is_ok_and(|m| {
            let bit = if m.uid == user.uid {
                0o400
            } else if m.gid == user.gid {
                0o040
            } else {
                0o004
            };
            m.mode & bit != 0
        }),
        _ => false,
    }
}

/// [`load_unit_environment`] with the unit files and manager configuration
/// of `search`.
fn load_in(
    host_root: &Path,
    unit: &str,
    search: &SearchPath,
) -> Result<UnitEnvironment, SystemdError> {
    let name = UnitName::parse(unit).map_err(|reason| SystemdError::InvalidUnitName {
        name: unit.to_string(),
        reason,
    })?;
    let root = open_host_root(host_root)?;
    let host = HostFs { root: &root };
    let mut out = UnitEnvironment {
        unit: unit.to_string(),
        ..Default::default()
    };

    // 1. The fragment: first match of the exact name in search-path order,
    //    then, for instances, of the template (systemd.unit(5): "foo@bar.service"
    //    falls back to "foo@.service").
    let mut looked_up = unit.to_string();
    let mut fragment = find_fragment(&host, search, unit)?;
    if matches!(fragment, FragmentLookup::NotFound) {
        if let Some(template) = name.template() {
            fragment = find_fragment(&host, search, &template)?;
            looked_up = template;
        }
    }

    let mut fragment_content: Option<(PathBuf, Vec<u8>)> = None;
    let mut fragment_real: Option<PathBuf> = None;
    let mut canonical = unit.to_string();
    match fragment {
        FragmentLookup::Masked(path) => {
            // A unit whose file is a symlink to /dev/null or empty is masked
            // (systemd.unit(5)): systemd loads nothing for it, drop-ins included.
            out.warnings.push(format!(
                "{unit} is masked ({} is empty or links to /dev/null): systemd applies no configuration",
                path.display()
            ));
            return Ok(out);
        }
        FragmentLookup::NotFound => {}
        FragmentLookup::Found {
            path,
            real,
            content,
        } => {
            // A fragment reached through a symlink with another unit name makes
            // the asked name an alias of that unit (systemd.unit(5), "Aliases");
            // the target name becomes the unit's id, and drop-ins of both apply.
            if let Some(target) = real.file_name().and_then(OsStr::to_str) {
                if target != looked_up && !name.is_template() && same_type_unit(target, name.utype)
                {
                    out.warnings.push(format!("{unit} is an alias of {target}"));
                    canonical = target.to_string();
                }
            }
            out.fragment = Some(path.clone());
            fragment_real = Some(real);
            fragment_content = Some((path, content));
        }
    }

    // 2. Names whose drop-in directories apply: the unit id, then its aliases.
    let mut names = vec![canonical.clone()];
    if canonical != unit {
        names.push(unit.to_string());
    }
    for alias in find_aliases(&host, search, &canonical, name.utype)? {
        if !names.contains(&alias) {
            names.push(alias);
        }
    }

    // 3. Drop-ins.
    let dropins = collect_dropins(&host, search, &names, name.utype)?;

    let section = exec_section(name.utype);
    let canonical_name = UnitName::parse(&canonical).unwrap_or(name);
    let spec = UnitSpec {
        id: canonical_name.full.to_string(),
        prefix: canonical_name.prefix.to_string(),
        instance: canonical_name.instance.map(str::to_string),
        fragment_real,
    };

    let mut exec = ExecEnv::default();
    if let Some((path, content)) = &fragment_content {
        if let Some(section) = section {
            let directives = parse_unit_file(content, section, path, &mut out.warnings);
            exec.apply(&directives, path, &spec, &mut out.warnings);
        }
    }
    for dropin in &dropins {
        match host.read_file(&dropin.path).map_err(io_error(&dropin.path))? {
            FileContent::Missing => out.warnings.push(format!(
                "{} is a dangling symlink: ignored, but it still shadows same-named drop-ins of lower priority",
                dropin.path.display()
            )),
            FileContent::DevNull => out.dropins.push(dropin.path.clone()),
            FileContent::NotRegular => out.warnings.push(format!(
                "{} is not a regular file: ignored",
                dropin.path.display()
            )),
            FileContent::Bytes(content) => {
                out.dropins.push(dropin.path.clone());
                if let Some(section) = section {
                    let directives = parse_unit_file(&content, section, &dropin.path, &mut out.warnings);
                    exec.apply(&directives, &dropin.path, &spec, &mut out.warnings);
                }
            }
        }
    }

    if out.fragment.is_none() {
        if out.dropins.is_empty() {
            out.warnings.push(format!(
                "no unit file or drop-in for {unit} in the unit search path"
            ));
        } else {
            // service_load() requires a fragment ("not-found" otherwise); the
            // drop-ins are still reported: the file may have been removed
            // after the unit was loaded.
            out.warnings.push(format!(
                "no unit file for {unit}: systemd would not load it now; drop-ins reported as found"
            ));
        }
    }

    if section.is_none() {
        // systemd.exec(5) options exist only for service, socket, mount and
        // swap units; a scope's processes were forked by someone else
        // (systemd.scope(5)), so their environment is not systemd's doing.
        out.warnings.push(format!(
            "{} units have no Environment= (systemd.exec(5) applies to service, socket, mount and swap units)",
            name.utype
        ));
        return Ok(out);
    }

    // 4. DefaultEnvironment= is the lowest layer of every exec'd unit's
    //    environment (systemd-system.conf(5)).
    let defaults = load_default_environment(&host, search, &mut out.warnings)?;

    out.vars = exec.merge(defaults, &host, &mut out.warnings);
    Ok(out)
}

/// Every file under the host root is read through one handle on it, as
/// the node's configuration (`nodefs::HOST_CONFIG`: confined, capped,
/// bounded in time).
fn open_host_root(host_root: &Path) -> Result<NodeRoot, SystemdError> {
    let root =
        NodeRoot::open(host_root, &HOST_CONFIG).map_err(|source| SystemdError::HostRoot {
            path: host_root.to_path_buf(),
            source,
        })?;
    // A regular file as the root would fail every lookup as "missing".
    match root.stat(Path::new("/")) {
        Ok(_) => Ok(root),
        Err(source) => Err(SystemdError::HostRoot {
            path: host_root.to_path_buf(),
            source,
        }),
    }
}

/// The assignments of one environment file (the `EnvironmentFile=` syntax),
/// read under `host_root`: `Ok(None)` when it does not exist. For files a
/// program reads itself rather than through systemd, such as
/// `/etc/default/k3s` when no unit names it. `via` is
/// [`SourceKind::Environment`] since no unit directive delivered them.
pub fn read_environment_file(
    host_root: &Path,
    host_path: &Path,
) -> Result<Option<Vec<EnvSource>>, SystemdError> {
    let root = open_host_root(host_root)?;
    let host = HostFs { root: &root };
    let content = match host.read_file(host_path).map_err(io_error(host_path))? {
        FileContent::Bytes(content) => content,
        FileContent::Missing | FileContent::DevNull | FileContent::NotRegular => return Ok(None),
    };
    Ok(Some(
        envfile::parse_env_file(&content)
            .into_iter()
            .map(|e| EnvSource {
                variable: String::from_utf8_lossy(&e.key).into_owned(),
                value: String::from_utf8_lossy(&e.value).into_owned(),
                file: host_path.to_path_buf(),
                line: e.line,
                via: SourceKind::Environment,
            })
            .collect(),
    ))
}

/// The pure parsers of this module, for the fuzz targets in `tests/fuzz`:
/// no file system access, only bytes in and parsed values out.
#[doc(hidden)]
pub mod fuzzing {
    use std::path::Path;

    /// The `Key=value` assignments (key, value, line) of section `wanted`
    /// in unit file text, with the warnings systemd would log; each value
    /// also goes through the word splitting and C unescaping that
    /// `Environment=` values get, and the words are returned.
    #[expect(
        clippy::type_complexity,
        reason = "a fuzzing hook hands back the parser's raw pieces as they are"
    )]
    pub fn parse_unit_file(
        content: &[u8],
        wanted: &str,
    ) -> (Vec<(String, String, u32)>, Vec<Vec<Vec<u8>>>, Vec<String>) {
        let mut warnings = Vec::new();
        let directives =
            super::syntax::parse_unit_file(content, wanted, Path::new("fuzz.conf"), &mut warnings);
        let words = directives
            .iter()
            .map(|d| super::words::split_words(&d.value).0)
            .collect();
        let directives = directives
            .into_iter()
            .map(|d| (d.key, d.value, d.line))
            .collect();
        (directives, words, warnings)
    }

    /// The assignments (key, value, line) of `EnvironmentFile=` text.
    pub fn parse_env_file(content: &[u8]) -> Vec<(Vec<u8>, Vec<u8>, u32)> {
        super::envfile::parse_env_file(content)
            .into_iter()
            .map(|e| (e.key, e.value, e.line))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{value, TempRoot, CONTAINERD_UNIT, INCIDENT_DROPIN};
    use super::*;

    #[test]
    fn incident_dropin_reports_https_proxy_at_line_3() {
        let root = TempRoot::new("incident");
        root.write(
            "/usr/lib/systemd/system/containerd.service",
            CONTAINERD_UNIT,
        );
        root.write(
            "/etc/systemd/system/containerd.service.d/http-proxy.conf",
            INCIDENT_DROPIN,
        );
        let env = root.load("containerd.service");
        let dropin = PathBuf::from("/etc/systemd/system/containerd.service.d/http-proxy.conf");

        assert_eq!(
            env.get("HTTPS_PROXY"),
            Some(&EnvSource {
                variable: "HTTPS_PROXY".into(),
                value: "http://10.0.0.1:7897".into(),
                file: dropin.clone(),
                line: 3,
                via: SourceKind::Environment,
            })
        );
        assert_eq!(env.get("HTTP_PROXY").map(|v| v.line), Some(2));
        assert_eq!(value(&env, "NO_PROXY"), Some("localhost,127.0.0.1,..."));
        assert_eq!(env.get("NO_PROXY").map(|v| v.line), Some(4));
        assert_eq!(
            env.fragment.as_deref(),
            Some(Path::new("/usr/lib/systemd/system/containerd.service"))
        );
        assert_eq!(env.dropins, vec![dropin]);
        assert_eq!(env.vars.len(), 3);
        assert!(env.warnings.is_empty(), "{:?}", env.warnings);
        assert_eq!(env.unit, "containerd.service");
    }

    /// A user manager's `containerd.service` is read from that user's search
    /// path, never from the host's system units; a user file that is a
    /// symlink to a file the user cannot read is withheld.
    #[test]
    fn user_units_use_the_users_search_path() {
        use std::{fs, os::unix::fs::PermissionsExt};
        let root = TempRoot::new("user");
        root.write(
            "/usr/lib/systemd/system/containerd.service",
            CONTAINERD_UNIT,
        );
        root.write(
            "/etc/systemd/system/containerd.service.d/http-proxy.conf",
            INCIDENT_DROPIN,
        );
        root.write(
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nbob:x:4242:4242::/home/bob:/bin/sh\nodd:x:4343:4343::relative:/bin/sh\n",
        );
        let own = "/home/bob/.config/systemd/user/containerd.service";
        root.write(
            own,
            "[Service]\nExecStart=/bin/true\nEnvironment=HTTPS_PROXY=http://own:1\n",
        );
        root.write(
            "/etc/systemd/system.conf",
            "[Manager]\nDefaultEnvironment=FROM_SYSTEM=1\n",
        );
        root.write(
            "/etc/systemd/user.conf",
            "[Manager]\nDefaultEnvironment=FROM_USER=1\n",
        );
        let env = load_user_unit_environment(&root.path, 4242, "containerd.service").unwrap();
        assert_eq!(env.fragment.as_deref(), Some(Path::new(own)));
        assert!(env.dropins.is_empty(), "{:?}", env.dropins);
        let https = env.get("HTTPS_PROXY").unwrap();
        assert_eq!((https.file.as_path(), https.line), (Path::new(own), 3));
        assert_eq!(value(&env, "FROM_USER"), Some("1"));
        assert_eq!(value(&env, "FROM_SYSTEM"), None);

        // A unit the user has not: nothing of the host's.
        let none = load_user_unit_environment(&root.path, 4242, "kubelet.service").unwrap();
        assert!(none.fragment.is_none() && none.vars.iter().all(|v| v.variable == "FROM_USER"));

        // Unknown uid, or a home that is not absolute: no unit files at all.
        for uid in [4343, 5000] {
            let env = load_user_unit_environment(&root.path, uid, "containerd.service").unwrap();
            assert!(env.fragment.is_none() && env.vars.is_empty(), "{env:?}");
            assert_eq!(env.warnings.len(), 1, "{:?}", env.warnings);
        }

        // A drop-in linking to a file only its owner can read.
        root.write(
            "/etc/secret.conf",
            "[Service]\nEnvironment=HTTPS_PROXY=http://u:pw@secret:1\n",
        );
        let secret = root.disk("/etc/secret.conf");
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        root.symlink(
            "/home/bob/.config/systemd/user/containerd.service.d/x.conf",
            "/etc/secret.conf",
        );
        let env = load_user_unit_environment(&root.path, 4242, "containerd.service").unwrap();
        assert!(env.vars.is_empty() && env.fragment.is_none(), "{env:?}");
        assert!(
            env.warnings[0].contains("containerd.service.d/x.conf"),
            "{:?}",
            env.warnings
        );
        assert!(!format!("{env:?}").contains("pw@"));
        // World-readable, it applies like any drop-in.
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
        let env = load_user_unit_environment(&root.path, 4242, "containerd.service").unwrap();
        assert_eq!(value(&env, "HTTPS_PROXY"), Some("http://u:pw@secret:1"));
    }

    #[test]
    fn unit_without_any_file() {
        let root = TempRoot::new("nofile");
        let env = root.load("nothing.service");
        assert_eq!(env.unit, "nothing.service");
        assert_eq!(env.fragment, None);
        assert!(env.dropins.is_empty());
        assert!(env.vars.is_empty());
        assert_eq!(env.warnings.len(), 1);
    }

    #[test]
    fn scope_units_have_no_environment() {
        let root = TempRoot::new("scope");
        root.write(
            "/etc/systemd/system.conf",
            "[Manager]\nDefaultEnvironment=A=1\n",
        );
        let id = "3f9c2a7de1b04c5f8a6e2d9b7c1f0e4a5b6c7d8e9f0a1b2c3d4e5f60718293a4";
        let env = root.load(&format!("cri-containerd-{id}.scope"));
        assert!(env.vars.is_empty());
        assert!(env.warnings.iter().any(|w| w.contains("scope units")));
    }

    #[test]
    fn errors_for_bad_input() {
        let root = TempRoot::new("errors");
        for bad in [
            "",
            "containerd",
            "../../etc/passwd.service",
            "a/b.service",
            "x.bogus",
            "@x.service",
        ] {
            assert!(
                matches!(
                    load_unit_environment(&root.path, bad),
                    Err(SystemdError::InvalidUnitName { .. })
                ),
                "{bad}"
            );
        }
        let missing = root.path.join("does-not-exist");
        assert!(matches!(
            load_unit_environment(&missing, "a.service"),
            Err(SystemdError::HostRoot { .. })
        ));
    }
}
