//! Where a unit's files are: the unit search path, the fragment (main unit
//! file, masking, template fallback, aliases) and the drop-ins that apply to
//! it (systemd.unit(5)).

use super::root::{io_error, FileContent, HostFs, Node};
use super::SystemdError;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
#[cfg(test)]
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The system manager's unit search path, highest priority first
/// (systemd.unit(5), "Unit File Load Path", system mode). Besides the usual
/// /etc, /run, /usr/local/lib, /usr/lib, /lib this includes the control,
/// transient (`systemd-run -p Environment=...` writes there), attached and
/// generator directories, in systemd's order. On split-/usr systems systemd
/// may rank /lib above /usr/lib; on merged-/usr systems they are one
/// directory, and same-named files are deduplicated either way.
const UNIT_SEARCH_PATH: &[&str] = &[
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/run/systemd/generator.early",
    "/etc/systemd/system",
    "/etc/systemd/system.attached",
    "/run/systemd/system",
    "/run/systemd/system.attached",
    "/run/systemd/generator",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
    "/run/systemd/generator.late",
];

/// Where one service manager finds its units and its own configuration
/// (`DefaultEnvironment=`).
pub(super) struct SearchPath {
    /// Unit directories, highest priority first.
    pub(super) units: Vec<PathBuf>,
    /// The manager's main configuration file: the first one found counts.
    pub(super) manager_conf: Vec<PathBuf>,
    /// Its drop-in directories, highest priority first.
    pub(super) manager_conf_dirs: Vec<PathBuf>,
}

impl SearchPath {
    /// The system manager's (systemd-system.conf(5) for `system.conf`;
    /// newer systemd also accepts it from /run and /usr, the first one found
    /// is used; older only reads /etc, where the others do not exist).
    pub(super) fn system() -> Self {
        let paths = |list: &[&str]| list.iter().map(PathBuf::from).collect();
        SearchPath {
            units: paths(UNIT_SEARCH_PATH),
            manager_conf: paths(&[
                "/etc/systemd/system.conf",
                "/run/systemd/system.conf",
                "/usr/local/lib/systemd/system.conf",
                "/usr/lib/systemd/system.conf",
            ]),
            manager_conf_dirs: paths(&[
                "/etc/systemd/system.conf.d",
                "/run/systemd/system.conf.d",
                "/usr/local/lib/systemd/system.conf.d",
                "/usr/lib/systemd/system.conf.d",
            ]),
        }
    }

    /// A user manager's (systemd.unit(5), "Unit File Load Path", user mode,
    /// with the XDG variables at their defaults: the manager's own
    /// environment is not in any file), for the user whose home is `home`
    /// and whose runtime directory is `/run/user/UID`; `user.conf` and its
    /// drop-ins as systemd-user.conf(5) lists them.
    pub(super) fn user(uid: u32, home: &Path) -> Self {
        let run = PathBuf::from(format!("/run/user/{uid}/systemd"));
        let config = home.join(".config/systemd");
        SearchPath {
            units: vec![
                config.join("user.control"),
                run.join("user.control"),
                run.join("transient"),
                run.join("generator.early"),
                config.join("user"),
                PathBuf::from("/etc/xdg/systemd/user"),
                PathBuf::from("/etc/systemd/user"),
                run.join("user"),
                PathBuf::from("/run/systemd/user"),
                run.join("generator"),
                home.join(".local/share/systemd/user"),
                PathBuf::from("/usr/local/share/systemd/user"),
                PathBuf::from("/usr/share/systemd/user"),
                PathBuf::from("/usr/local/lib/systemd/user"),
                PathBuf::from("/usr/lib/systemd/user"),
                run.join("generator.late"),
            ],
            manager_conf: vec![
                PathBuf::from("/etc/systemd/user.conf"),
                PathBuf::from("/run/systemd/user.conf"),
                PathBuf::from("/usr/local/lib/systemd/user.conf"),
                PathBuf::from("/usr/lib/systemd/user.conf"),
            ],
            manager_conf_dirs: vec![
                config.join("user.conf.d"),
                PathBuf::from("/etc/systemd/user.conf.d"),
                PathBuf::from("/run/systemd/user.conf.d"),
                PathBuf::from("/usr/local/lib/systemd/user.conf.d"),
                PathBuf::from("/usr/lib/systemd/user.conf.d"),
            ],
        }
    }
}

/// Unit types known to systemd.unit(5).
const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "device",
    "mount",
    "automount",
    "swap",
    "target",
    "path",
    "timer",
    "slice",
    "scope",
];

/// A syntactically valid unit name, split like systemd's unit-name.c does.
#[derive(Debug, Clone, Copy)]
pub(super) struct UnitName<'a> {
    pub(super) full: &'a str,
    /// Part before '@' (or before ".type" for non-templates).
    pub(super) prefix: &'a str,
    /// `Some("")` for a template, `Some(i)` for an instance.
    pub(super) instance: Option<&'a str>,
    pub(super) utype: &'a str,
}

impl<'a> UnitName<'a> {
    /// unit_name_is_valid(): at most 255 bytes; characters `[A-Za-z0-9:_.\\-]`
    /// plus '@'; a known type suffix; a non-empty prefix before the first '@'.
    pub(super) fn parse(full: &'a str) -> Result<Self, &'static str> {
        if full.is_empty() {
            return Err("empty");
        }
        if full.len() > 255 {
            return Err("longer than 255 bytes");
        }
        let (stem, utype) = full.rsplit_once('.').ok_or("no .type suffix")?;
        if !UNIT_TYPES.contains(&utype) {
            return Err("unknown unit type");
        }
        if !stem.bytes().all(|b| is_unit_char(b) || b == b'@') {
            // This also rules out '/', so a name can never escape its
            // directory when joined to a search path.
            return Err("invalid character");
        }
        let (prefix, instance) = match stem.split_once('@') {
            Some((p, i)) => (p, Some(i)),
            None => (stem, None),
        };
        if prefix.is_empty() {
            return Err("empty name before the type or '@'");
        }
        Ok(UnitName {
            full,
            prefix,
            instance,
            utype,
        })
    }

    pub(super) fn is_template(&self) -> bool {
        self.instance == Some("")
    }

    /// "foo@bar.service" -> "foo@.service"; `None` unless an instance.
    pub(super) fn template(&self) -> Option<String> {
        match self.instance {
            Some(i) if !i.is_empty() => Some(format!("{}@.{}", self.prefix, self.utype)),
            _ => None,
        }
    }
}

fn is_unit_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b":-_.\\".contains(&b)
}

pub(super) fn same_type_unit(name: &str, utype: &str) -> bool {
    UnitName::parse(name).is_ok_and(|n| n.utype == utype)
}

/// The section holding exec settings for a unit type (systemd.exec(5)).
pub(super) fn exec_section(utype: &str) -> Option<&'static str> {
    match utype {
        "service" => Some("Service"),
        "socket" => Some("Socket"),
        "mount" => Some("Mount"),
        "swap" => Some("Swap"),
        _ => None,
    }
}

/// The drop-in directory names of a unit, most specific first, as
/// unit_file_expand_dropin_names() in systemd's dropin.c builds them:
/// the name itself, for an instance its template, and the dash-prefix chain
/// ("foo-bar-baz.service" -> "foo-bar-.service" -> "foo-.service"), each
/// expanded again. systemd.unit(5): "a drop-in in foo-.service.d/ applies to
/// all units whose name starts with foo-".
fn expand_dropin_names(name: &str, out: &mut Vec<String>) {
    out.push(name.to_string());
    let Ok(unit) = UnitName::parse(name) else {
        return;
    };
    let is_instance = unit.template().is_some();
    if let Some(template) = unit.template() {
        expand_dropin_names(&template, out);
    }

    let mut prefix = unit.prefix.to_string();
    let mut chopped = false;
    loop {
        let Some(dash) = prefix.rfind('-') else {
            return;
        };
        if dash == 0 {
            return;
        }
        if dash + 1 < prefix.len() || chopped {
            prefix.truncate(dash + 1);
            break;
        }
        // A trailing dash ("foo-.service") is chopped once so the chain
        // continues with the next shorter prefix.
        prefix.truncate(dash);
        chopped = true;
    }
    if prefix.is_empty() || !prefix.bytes().all(is_unit_char) {
        return;
    }
    let built = match unit.instance {
        Some(instance) if is_instance => format!("{prefix}@{instance}.{}", unit.utype),
        _ => format!("{prefix}.{}", unit.utype),
    };
    expand_dropin_names(&built, out);
}

pub(super) enum FragmentLookup {
    NotFound,
    Masked(PathBuf),
    Found {
        /// As found in the search path.
        path: PathBuf,
        /// After following symlinks (host path).
        real: PathBuf,
        content: Vec<u8>,
    },
}

pub(super) fn find_fragment(
    host: &HostFs<'_>,
    search: &SearchPath,
    name: &str,
) -> Result<FragmentLookup, SystemdError> {
    for dir in &search.units {
        let path = dir.join(name);
        let node = host.resolve(&path).map_err(io_error(&path))?;
        match node {
            Node::Missing => continue,
            Node::DevNull => return Ok(FragmentLookup::Masked(path)),
            Node::Present {
                is_file: true,
                real,
                ..
            } => {
                let content = match host.read_file(&path).map_err(io_error(&path))? {
                    FileContent::Bytes(b) => b,
                    FileContent::DevNull => return Ok(FragmentLookup::Masked(path)),
                    FileContent::Missing | FileContent::NotRegular => continue,
                };
                // null_or_empty(): an empty unit file masks the unit too.
                if content.is_empty() {
                    return Ok(FragmentLookup::Masked(path));
                }
                return Ok(FragmentLookup::Found {
                    path,
                    real,
                    content,
                });
            }
            Node::Present { .. } => continue,
        }
    }
    Ok(FragmentLookup::NotFound)
}

/// Symlinks directly inside a search directory whose target file name is
/// `canonical` are aliases of it (systemd.unit(5), "Aliases"), and their
/// drop-ins apply as well.
pub(super) fn find_aliases(
    host: &HostFs<'_>,
    search: &SearchPath,
    canonical: &str,
    utype: &str,
) -> Result<Vec<String>, SystemdError> {
    let mut aliases = Vec::new();
    for dir in &search.units {
        let dir_path = dir.as_path();
        let Some(entries) = host.list_dir(dir_path).map_err(io_error(dir_path))? else {
            continue;
        };
        for entry in entries {
            if !entry.is_symlink {
                continue;
            }
            let Some(name) = entry.name.to_str() else {
                continue;
            };
            if name == canonical || !same_type_unit(name, utype) {
                continue;
            }
            let Some(target) = entry.link_target else {
                continue;
            };
            if target.file_name() == Some(OsStr::new(canonical))
                && !aliases.iter().any(|a| a == name)
            {
                aliases.push(name.to_string());
            }
        }
    }
    Ok(aliases)
}

pub(super) struct ConfFile {
    pub(super) path: PathBuf,
}

/// The drop-ins of a unit (unit_file_find_dropin_paths()): `<name>.d/` for
/// every expanded name of the unit id and its aliases, in every search
/// directory, then the top-level `<type>.d/` directories ("added last as it's
/// the most generic"), then conf_files_list(): for each file name only the
/// first directory in that order counts, and the survivors are applied sorted
/// by file name.
pub(super) fn collect_dropins(
    host: &HostFs<'_>,
    search_path: &SearchPath,
    names: &[String],
    utype: &str,
) -> Result<Vec<ConfFile>, SystemdError> {
    let mut dirs = Vec::new();
    for name in names {
        let mut candidates = Vec::new();
        expand_dropin_names(name, &mut candidates);
        for search in &search_path.units {
            for c in &candidates {
                dirs.push(search.join(format!("{c}.d")));
            }
        }
    }
    for search in &search_path.units {
        dirs.push(search.join(format!("{utype}.d")));
    }
    list_conf_files(host, &dirs)
}

/// conf_files_list_strv(): `*.conf` files (regular files or symlinks, not
/// hidden) in `dirs`; a name seen in an earlier directory shadows later ones;
/// result sorted by file name (byte order, strcmp()).
pub(super) fn list_conf_files(
    host: &HostFs<'_>,
    dirs: &[PathBuf],
) -> Result<Vec<ConfFile>, SystemdError> {
    let mut chosen: BTreeMap<OsString, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let Some(entries) = host.list_dir(dir).map_err(io_error(dir))? else {
            continue;
        };
        for entry in entries {
            let bytes = entry.name.as_bytes();
            if !bytes.ends_with(b".conf")
                || bytes.starts_with(b".")
                || !(entry.is_file || entry.is_symlink)
            {
                continue;
            }
            chosen
                .entry(entry.name.clone())
                .or_insert_with(|| dir.join(&entry.name));
        }
    }
    Ok(chosen.into_values().map(|path| ConfFile { path }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::systemd::test_support::{value, TempRoot, CONTAINERD_UNIT};

    #[test]
    fn etc_dropin_overrides_same_name_in_run_and_usr_lib() {
        let root = TempRoot::new("override");
        root.write(
            "/usr/lib/systemd/system/containerd.service",
            CONTAINERD_UNIT,
        );
        root.write(
            "/usr/lib/systemd/system/containerd.service.d/http-proxy.conf",
            "[Service]\nEnvironment=HTTPS_PROXY=http://vendor:1\nEnvironment=VENDOR_ONLY=1\n",
        );
        root.write(
            "/run/systemd/system/containerd.service.d/http-proxy.conf",
            "[Service]\nEnvironment=HTTPS_PROXY=http://runtime:2\n",
        );
        root.write(
            "/etc/systemd/system/containerd.service.d/http-proxy.conf",
            "[Service]\n# admin override\nEnvironment=HTTPS_PROXY=http://admin:3\n",
        );
        let env = root.load("containerd.service");
        let src = env.get("HTTPS_PROXY").expect("HTTPS_PROXY");
        assert_eq!(src.value, "http://admin:3");
        assert_eq!(
            src.file,
            PathBuf::from("/etc/systemd/system/containerd.service.d/http-proxy.conf")
        );
        assert_eq!(src.line, 3);
        // The shadowed files are not applied at all.
        assert_eq!(env.get("VENDOR_ONLY"), None);
        assert_eq!(env.dropins.len(), 1);

        // Without the /etc file, /run wins over /usr/lib.
        fs::remove_file(root.disk("/etc/systemd/system/containerd.service.d/http-proxy.conf"))
            .expect("rm");
        let env = root.load("containerd.service");
        assert_eq!(value(&env, "HTTPS_PROXY"), Some("http://runtime:2"));
    }

    #[test]
    fn dropins_apply_in_lexical_order_across_directories() {
        let root = TempRoot::new("lexical");
        root.write(
            "/lib/systemd/system/docker.service",
            "[Service]\nEnvironment=A=fragment\n",
        );
        root.write(
            "/etc/systemd/system/docker.service.d/10-admin.conf",
            "[Service]\nEnvironment=A=etc-10 B=etc-10\n",
        );
        root.write(
            "/usr/lib/systemd/system/docker.service.d/20-vendor.conf",
            "[Service]\nEnvironment=A=usr-20\n",
        );
        root.write(
            "/run/systemd/system/docker.service.d/05-early.conf",
            "[Service]\nEnvironment=B=run-05 C=run-05\n",
        );
        let env = root.load("docker.service");
        assert_eq!(value(&env, "A"), Some("usr-20"));
        assert_eq!(value(&env, "B"), Some("etc-10"));
        assert_eq!(value(&env, "C"), Some("run-05"));
        assert_eq!(
            env.dropins,
            vec![
                PathBuf::from("/run/systemd/system/docker.service.d/05-early.conf"),
                PathBuf::from("/etc/systemd/system/docker.service.d/10-admin.conf"),
                PathBuf::from("/usr/lib/systemd/system/docker.service.d/20-vendor.conf"),
            ]
        );
        let names: Vec<&str> = env.vars.iter().map(|v| v.variable.as_str()).collect();
        assert_eq!(names, ["A", "B", "C"]);
    }

    #[test]
    fn top_level_service_dropin_applies_and_is_overridden_by_unit_dropin() {
        let root = TempRoot::new("service-d");
        root.write(
            "/usr/lib/systemd/system/containerd.service",
            CONTAINERD_UNIT,
        );
        root.write(
            "/etc/systemd/system/service.d/50-proxy.conf",
            "[Service]\nEnvironment=HTTPS_PROXY=http://everyone:1\n",
        );
        let env = root.load("containerd.service");
        let src = env.get("HTTPS_PROXY").expect("from service.d");
        assert_eq!(
            src.file,
            PathBuf::from("/etc/systemd/system/service.d/50-proxy.conf")
        );
        assert_eq!(src.line, 2);

        // Same file name in the unit's own drop-in dir wins even from /usr/lib:
        // type-level directories are searched after all unit-specific ones.
        root.write(
            "/usr/lib/systemd/system/containerd.service.d/50-proxy.conf",
            "[Service]\nEnvironment=HTTPS_PROXY=http://specific:2\n",
        );
        let env = root.load("containerd.service");
        assert_eq!(value(&env, "HTTPS_PROXY"), Some("http://specific:2"));
        assert_eq!(env.dropins.len(), 1);

        // It does not apply to other unit types.
        root.write(
            "/etc/systemd/system/docker.socket",
            "[Socket]\nListenStream=/run/docker.sock\n",
        );
        let env = root.load("docker.socket");
        assert!(env.vars.is_empty());
    }

    #[test]
    fn fragment_in_lib_and_priority_of_fragments() {
        let root = TempRoot::new("fragment");
        root.write(
            "/lib/systemd/system/kubelet.service",
            "[Service]\nEnvironment=FROM=lib\n",
        );
        let env = root.load("kubelet.service");
        assert_eq!(
            env.fragment.as_deref(),
            Some(Path::new("/lib/systemd/system/kubelet.service"))
        );
        assert_eq!(value(&env, "FROM"), Some("lib"));

        // A full copy in /etc replaces the vendor file entirely.
        root.write(
            "/etc/systemd/system/kubelet.service",
            "[Service]\nExecStart=/usr/bin/kubelet\n",
        );
        let env = root.load("kubelet.service");
        assert_eq!(
            env.fragment.as_deref(),
            Some(Path::new("/etc/systemd/system/kubelet.service"))
        );
        assert_eq!(env.get("FROM"), None);
    }

    #[test]
    fn masked_unit_and_masked_dropin() {
        let root = TempRoot::new("masked");
        root.write(
            "/usr/lib/systemd/system/docker.service",
            "[Service]\nEnvironment=A=1\n",
        );
        root.write(
            "/usr/lib/systemd/system/docker.service.d/proxy.conf",
            "[Service]\nEnvironment=HTTPS_PROXY=http://vendor:1\n",
        );
        root.symlink(
            "/etc/systemd/system/docker.service.d/proxy.conf",
            "/dev/null",
        );
        let env = root.load("docker.service");
        assert_eq!(value(&env, "A"), Some("1"));
        assert_eq!(env.get("HTTPS_PROXY"), None);
        assert_eq!(
            env.dropins,
            vec![PathBuf::from(
                "/etc/systemd/system/docker.service.d/proxy.conf"
            )]
        );

        root.symlink("/etc/systemd/system/docker.service", "/dev/null");
        let env = root.load("docker.service");
        assert!(env.vars.is_empty());
        assert_eq!(env.fragment, None);
        assert!(env.warnings.iter().any(|w| w.contains("masked")));
    }

    #[test]
    fn template_instance_and_dash_prefix_dropins() {
        let root = TempRoot::new("template");
        root.write(
            "/usr/lib/systemd/system/proxy-agent@.service",
            "[Service]\nEnvironment=INSTANCE=%i UNIT=%n FILE=%f\n",
        );
        root.write(
            "/etc/systemd/system/proxy-agent@.service.d/10-all.conf",
            "[Service]\nEnvironment=ALL=1\n",
        );
        root.write(
            "/etc/systemd/system/proxy-.service.d/20-prefix.conf",
            "[Service]\nEnvironment=PREFIX=1\n",
        );
        root.write(
            "/etc/systemd/system/proxy-agent@eu.service.d/30-one.conf",
            "[Service]\nEnvironment=ONE=eu\n",
        );
        let env = root.load("proxy-agent@eu.service");
        assert_eq!(
            env.fragment.as_deref(),
            Some(Path::new("/usr/lib/systemd/system/proxy-agent@.service"))
        );
        assert_eq!(value(&env, "INSTANCE"), Some("eu"));
        assert_eq!(value(&env, "UNIT"), Some("proxy-agent@eu.service"));
        assert_eq!(value(&env, "FILE"), Some("/eu"));
        assert_eq!(value(&env, "ALL"), Some("1"));
        assert_eq!(value(&env, "PREFIX"), Some("1"));
        assert_eq!(value(&env, "ONE"), Some("eu"));
        let other = root.load("proxy-agent@us.service");
        assert_eq!(other.get("ONE"), None);
        assert_eq!(value(&other, "ALL"), Some("1"));
    }

    #[test]
    fn alias_dropins_apply() {
        let root = TempRoot::new("alias");
        root.write(
            "/usr/lib/systemd/system/real.service",
            "[Service]\nEnvironment=A=1\n",
        );
        root.symlink(
            "/etc/systemd/system/nick.service",
            "/usr/lib/systemd/system/real.service",
        );
        root.write(
            "/etc/systemd/system/nick.service.d/proxy.conf",
            "[Service]\nEnvironment=VIA_ALIAS=1\n",
        );
        let env = root.load("real.service");
        assert_eq!(value(&env, "VIA_ALIAS"), Some("1"));
        assert_eq!(value(&env, "A"), Some("1"));
    }

    #[test]
    fn dropin_name_expansion() {
        let mut v = Vec::new();
        expand_dropin_names("foo-bar-baz.service", &mut v);
        assert_eq!(
            v,
            ["foo-bar-baz.service", "foo-bar-.service", "foo-.service"]
        );
        let mut v = Vec::new();
        expand_dropin_names("foo-bar@x.service", &mut v);
        assert_eq!(
            v,
            [
                "foo-bar@x.service",
                "foo-bar@.service",
                "foo-.service",
                "foo-@x.service",
                "foo-@.service",
            ]
        );
        let mut v = Vec::new();
        expand_dropin_names("containerd.service", &mut v);
        assert_eq!(v, ["containerd.service"]);
    }
}
