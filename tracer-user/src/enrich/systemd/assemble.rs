//! Assembling a unit's environment from its parsed directives, in systemd's
//! order: `DefaultEnvironment=` < `Environment=` < `EnvironmentFile=`, then
//! `UnsetEnvironment=` (systemd.exec(5), systemd-system.conf(5)).

use super::envfile::{glob_host, parse_env_file};
use super::root::{io_error, FileContent, HostFs};
use super::syntax::{parse_unit_file, Directive, Location};
use super::units::{list_conf_files, SearchPath};
use super::words::{expand_specifiers, split_words, Expanded, Specifiers, UnitSpec};
use super::{EnvSource, SourceKind, SystemdError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One `NAME=value` with the place it was written.
#[derive(Debug)]
pub(super) struct Assign {
    name: String,
    value: String,
    file: PathBuf,
    line: u32,
}

#[derive(Debug)]
struct EnvFileRef {
    pattern: String,
    optional: bool,
    unit_file: PathBuf,
    unit_line: u32,
}

#[derive(Debug)]
struct UnsetEntry {
    name: String,
    /// `UnsetEnvironment=NAME=value` removes only that exact assignment.
    value: Option<String>,
}

/// The exec-context settings relevant to the environment, accumulated over the
/// fragment and its drop-ins in load order.
#[derive(Debug, Default)]
pub(super) struct ExecEnv {
    environment: Vec<Assign>,
    env_files: Vec<EnvFileRef>,
    unset: Vec<UnsetEntry>,
}

impl ExecEnv {
    pub(super) fn apply(
        &mut self,
        directives: &[Directive],
        file: &Path,
        spec: &UnitSpec,
        warnings: &mut Vec<String>,
    ) {
        for d in directives {
            let at = Location { file, line: d.line };
            match d.key.as_str() {
                "Environment" => {
                    apply_environment(&mut self.environment, &d.value, at, Specifiers::Unit(spec), warnings)
                }
                "EnvironmentFile" => self.apply_env_file(&d.value, at, spec, warnings),
                "UnsetEnvironment" => self.apply_unset(&d.value, at, spec, warnings),
                "PassEnvironment" if !d.value.is_empty() => warnings.push(format!(
                    "{at}: PassEnvironment={} imports variables from the service manager's runtime environment, which no file shows",
                    d.value
                )),
                key => {
                    // Keys are case-sensitive (systemd.syntax(7)): a
                    // lower-case "environment=" is an unknown setting that
                    // systemd ignores, which is worth saying.
                    for known in ["Environment", "EnvironmentFile", "UnsetEnvironment"] {
                        if key.eq_ignore_ascii_case(known) {
                            warnings.push(format!(
                                "{at}: unknown key {key:?} ignored by systemd (keys are case-sensitive; did you mean {known}=?)"
                            ));
                        }
                    }
                }
            }
        }
    }

    /// systemd.exec(5) `EnvironmentFile=`: one path per directive (not a
    /// list), specifiers resolved, optional '-' prefix, must be absolute; an
    /// empty assignment resets the list.
    fn apply_env_file(
        &mut self,
        value: &str,
        at: Location<'_>,
        spec: &UnitSpec,
        warnings: &mut Vec<String>,
    ) {
        if value.is_empty() {
            self.env_files.clear();
            return;
        }
        let expanded = match expand_specifiers(value.as_bytes(), Specifiers::Unit(spec)) {
            Ok(e) => e,
            Err(e) => {
                warnings.push(format!("{at}: EnvironmentFile={value}: {e}; ignored"));
                return;
            }
        };
        note_unresolved(&expanded, at, warnings);
        let Ok(resolved) = String::from_utf8(expanded.bytes) else {
            warnings.push(format!("{at}: EnvironmentFile={value}: not UTF-8; ignored"));
            return;
        };
        let (optional, path) = match resolved.strip_prefix('-') {
            Some(rest) => (true, rest.to_string()),
            None => (false, resolved),
        };
        if !path.starts_with('/') {
            warnings.push(format!(
                "{at}: EnvironmentFile={value}: path is not absolute; ignored by systemd"
            ));
            return;
        }
        self.env_files.push(EnvFileRef {
            pattern: path,
            optional,
            unit_file: at.file.to_path_buf(),
            unit_line: at.line,
        });
    }

    /// systemd.exec(5) `UnsetEnvironment=`: names or exact assignments,
    /// applied as the final step of building the environment.
    fn apply_unset(
        &mut self,
        value: &str,
        at: Location<'_>,
        spec: &UnitSpec,
        warnings: &mut Vec<String>,
    ) {
        if value.is_empty() {
            self.unset.clear();
            return;
        }
        let (words, error) = split_words(value);
        for word in words {
            let expanded = match expand_specifiers(&word, Specifiers::Unit(spec)) {
                Ok(e) => e,
                Err(e) => {
                    warnings.push(format!("{at}: UnsetEnvironment: {e}; word ignored"));
                    continue;
                }
            };
            let Ok(text) = String::from_utf8(expanded.bytes) else {
                warnings.push(format!(
                    "{at}: UnsetEnvironment: word is not UTF-8; ignored"
                ));
                continue;
            };
            match text.split_once('=') {
                Some((name, v)) if env_name_is_valid(name) => self.unset.push(UnsetEntry {
                    name: name.to_string(),
                    value: Some(v.to_string()),
                }),
                None if env_name_is_valid(&text) => self.unset.push(UnsetEntry {
                    name: text,
                    value: None,
                }),
                _ => warnings.push(format!(
                    "{at}: UnsetEnvironment: {text:?} is neither a variable name nor an assignment; ignored"
                )),
            }
        }
        if let Some(e) = error {
            warnings.push(format!(
                "{at}: UnsetEnvironment: {e}; rest of the line ignored"
            ));
        }
    }

    /// Build the final variable set. Order from systemd's exec_invoke():
    /// manager environment (DefaultEnvironment=) < Environment= <
    /// EnvironmentFile= (systemd.exec(5): "variables read from the file
    /// override variables of the same name set with Environment="), and
    /// UnsetEnvironment= last.
    pub(super) fn merge(
        self,
        defaults: Vec<Assign>,
        host: &HostFs<'_>,
        warnings: &mut Vec<String>,
    ) -> Vec<EnvSource> {
        let mut vars: BTreeMap<String, EnvSource> = BTreeMap::new();
        for a in defaults {
            insert(&mut vars, a, SourceKind::DefaultEnvironment);
        }
        for a in self.environment {
            insert(&mut vars, a, SourceKind::Environment);
        }
        for file_ref in &self.env_files {
            for a in load_env_file_ref(host, file_ref, warnings) {
                let kind = SourceKind::EnvironmentFile {
                    unit_file: file_ref.unit_file.clone(),
                    unit_line: file_ref.unit_line,
                    optional: file_ref.optional,
                };
                insert(&mut vars, a, kind);
            }
        }
        for u in &self.unset {
            let remove = match (vars.get(&u.name), &u.value) {
                (Some(_), None) => true,
                (Some(src), Some(v)) => &src.value == v,
                (None, _) => false,
            };
            if remove {
                vars.remove(&u.name);
            }
        }
        vars.into_values().collect()
    }
}

fn insert(vars: &mut BTreeMap<String, EnvSource>, a: Assign, via: SourceKind) {
    vars.insert(
        a.name.clone(),
        EnvSource {
            variable: a.name,
            value: a.value,
            file: a.file,
            line: a.line,
            via,
        },
    );
}

/// systemd's config_parse_environ(), shared by `Environment=` and
/// `DefaultEnvironment=`: an empty value resets the list; otherwise a
/// whitespace-separated list of assignments with quoting and C escapes
/// (systemd.syntax(7)), then specifiers. A word that fails specifier
/// expansion or is not a valid `NAME=value` is skipped; a syntax error (bad
/// escape, unbalanced quote) drops the rest of the line. A later assignment to
/// the same name replaces the earlier one.
fn apply_environment(
    list: &mut Vec<Assign>,
    value: &str,
    at: Location<'_>,
    specifiers: Specifiers<'_>,
    warnings: &mut Vec<String>,
) {
    if value.is_empty() {
        list.clear();
        return;
    }
    let (words, error) = split_words(value);
    for word in words {
        let expanded = match expand_specifiers(&word, specifiers) {
            Ok(e) => e,
            Err(e) => {
                warnings.push(format!(
                    "{at}: {e} in {:?}; assignment ignored by systemd",
                    String::from_utf8_lossy(&word)
                ));
                continue;
            }
        };
        note_unresolved(&expanded, at, warnings);
        let Ok(text) = String::from_utf8(expanded.bytes) else {
            warnings.push(format!(
                "{at}: assignment {:?} is not valid UTF-8; ignored by systemd",
                String::from_utf8_lossy(&word)
            ));
            continue;
        };
        let Some((name, val)) = text.split_once('=').filter(|(n, _)| env_name_is_valid(n)) else {
            warnings.push(format!(
                "{at}: invalid environment assignment {text:?}; ignored by systemd"
            ));
            continue;
        };
        let assign = Assign {
            name: name.to_string(),
            value: val.to_string(),
            file: at.file.to_path_buf(),
            line: at.line,
        };
        match list.iter_mut().find(|a| a.name == assign.name) {
            Some(existing) => *existing = assign,
            None => list.push(assign),
        }
    }
    if let Some(e) = error {
        warnings.push(format!(
            "{at}: {e}; systemd ignores the rest of this line: {value}"
        ));
    }
}

fn note_unresolved(expanded: &Expanded, at: Location<'_>, warnings: &mut Vec<String>) {
    for c in &expanded.unresolved {
        warnings.push(format!(
            "{at}: specifier %{} depends on the running host; kept literally",
            char::from(*c)
        ));
    }
}

/// env_name_is_valid() in systemd's env-util.c: bash-compatible names.
fn env_name_is_valid(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.first() {
        None => false,
        Some(first) if first.is_ascii_digit() => false,
        Some(_) => bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_'),
    }
}

/// Read every file an `EnvironmentFile=` names (globs allowed, systemd.exec(5))
/// and return its assignments, later files and lines winning.
fn load_env_file_ref(host: &HostFs<'_>, r: &EnvFileRef, warnings: &mut Vec<String>) -> Vec<Assign> {
    let directive = Location {
        file: &r.unit_file,
        line: r.unit_line,
    };
    // exec_context_load_environment() fails the start of the service when a
    // non-optional file is missing or unreadable; say so, since that is how
    // such a misconfiguration shows up.
    let fatal = if r.optional {
        "optional, so systemd skips it"
    } else {
        "systemd refuses to start the service"
    };
    let paths = match glob_host(host, &r.pattern) {
        Ok(p) => p,
        Err(e) => {
            warnings.push(format!(
                "{directive}: EnvironmentFile={}: cannot expand: {e} ({fatal})",
                r.pattern
            ));
            return Vec::new();
        }
    };
    if paths.is_empty() && !r.optional {
        warnings.push(format!(
            "{directive}: EnvironmentFile={} matches no file ({fatal})",
            r.pattern
        ));
    }
    let mut out: Vec<Assign> = Vec::new();
    for path in paths {
        let content = match host.read_file(&path) {
            Ok(FileContent::Bytes(b)) => b,
            Ok(FileContent::DevNull) => Vec::new(),
            Ok(FileContent::Missing) => {
                if !r.optional {
                    warnings.push(format!(
                        "{directive}: environment file {} not found ({fatal})",
                        path.display()
                    ));
                }
                continue;
            }
            Ok(FileContent::NotRegular) => {
                warnings.push(format!(
                    "{directive}: environment file {} is not a regular file ({fatal})",
                    path.display()
                ));
                continue;
            }
            Err(e) => {
                warnings.push(format!(
                    "{directive}: environment file {} unreadable: {e} ({fatal})",
                    path.display()
                ));
                continue;
            }
        };
        let entries = parse_env_file(&content);
        // load_env_file() rejects the whole file on invalid UTF-8.
        if let Some(bad) = entries.iter().find(|e| {
            std::str::from_utf8(&e.key).is_err() || std::str::from_utf8(&e.value).is_err()
        }) {
            warnings.push(format!(
                "{}:{}: invalid UTF-8; systemd rejects the whole file ({fatal})",
                path.display(),
                bad.line
            ));
            continue;
        }
        for e in entries {
            let key = String::from_utf8_lossy(&e.key).into_owned();
            let value = String::from_utf8_lossy(&e.value).into_owned();
            if !env_name_is_valid(&key) {
                // strv_env_clean_with_callback() drops invalid names. The
                // common case is shell syntax, which systemd does not speak.
                let hint = if key.starts_with("export ") {
                    " (\"export\" is shell syntax; systemd takes \"export NAME\" as the name and drops the line)"
                } else {
                    ""
                };
                warnings.push(format!(
                    "{}:{}: invalid variable name {key:?}; ignored by systemd{hint}",
                    path.display(),
                    e.line
                ));
                continue;
            }
            let assign = Assign {
                name: key,
                value,
                file: path.clone(),
                line: e.line,
            };
            match out.iter_mut().find(|a| a.name == assign.name) {
                Some(existing) => *existing = assign,
                None => out.push(assign),
            }
        }
    }
    out
}

/// `DefaultEnvironment=` from the first `system.conf` found and all
/// `system.conf.d/*.conf` drop-ins, which are applied after it in file-name
/// order (systemd-system.conf(5)). Only the `[Manager]` section counts.
/// Specifiers are expanded with the manager's table (`%%`, `%T`, host facts)
/// as current systemd does; versions before that change kept
/// `DefaultEnvironment=` values verbatim, so `%%` there stayed `%%`.
pub(super) fn load_default_environment(
    host: &HostFs<'_>,
    search: &SearchPath,
    warnings: &mut Vec<String>,
) -> Result<Vec<Assign>, SystemdError> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for path in &search.manager_conf {
        let path = path.clone();
        match host.read_file(&path).map_err(io_error(&path))? {
            FileContent::Missing | FileContent::NotRegular => continue,
            FileContent::DevNull => break,
            FileContent::Bytes(b) => {
                files.push((path, b));
                break;
            }
        }
    }
    for dropin in list_conf_files(host, &search.manager_conf_dirs)? {
        if let FileContent::Bytes(b) = host
            .read_file(&dropin.path)
            .map_err(io_error(&dropin.path))?
        {
            files.push((dropin.path, b));
        }
    }

    let mut list = Vec::new();
    for (path, content) in &files {
        for d in parse_unit_file(content, "Manager", path, warnings) {
            if d.key == "DefaultEnvironment" {
                let at = Location {
                    file: path,
                    line: d.line,
                };
                apply_environment(&mut list, &d.value, at, Specifiers::Manager, warnings);
            }
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::systemd::test_support::{value, TempRoot};

    #[test]
    fn empty_environment_resets_earlier_assignments() {
        let root = TempRoot::new("reset");
        root.write(
            "/usr/lib/systemd/system/kubelet.service",
            "[Service]\nEnvironment=HTTP_PROXY=http://old:1 KEEP=no\n",
        );
        root.write(
            "/etc/systemd/system/kubelet.service.d/10-reset.conf",
            "[Service]\nEnvironment=\nEnvironment=NEW=1\n",
        );
        let env = root.load("kubelet.service");
        assert_eq!(env.get("HTTP_PROXY"), None);
        assert_eq!(env.get("KEEP"), None);
        assert_eq!(value(&env, "NEW"), Some("1"));

        // Within one file, and a later assignment to the same name wins.
        root.write(
            "/etc/systemd/system/kubelet.service.d/20-more.conf",
            "[Service]\nEnvironment=X=1\nEnvironment=X=2 Y=1\nEnvironment=  \nEnvironment=Z=1\n",
        );
        let env = root.load("kubelet.service");
        let names: Vec<&str> = env.vars.iter().map(|v| v.variable.as_str()).collect();
        assert_eq!(names, ["Z"]);
    }

    #[test]
    fn environment_file_optional_missing_is_fine_required_missing_warns() {
        let root = TempRoot::new("envfile-missing");
        root.write(
            "/usr/lib/systemd/system/docker.service",
            "[Service]\nEnvironmentFile=-/etc/default/docker\nEnvironment=A=1\n",
        );
        let env = root.load("docker.service");
        assert_eq!(value(&env, "A"), Some("1"));
        assert!(env.warnings.is_empty(), "{:?}", env.warnings);

        root.write(
            "/etc/systemd/system/docker.service.d/env.conf",
            "[Service]\nEnvironmentFile=/etc/sysconfig/docker\n",
        );
        let env = root.load("docker.service");
        assert_eq!(value(&env, "A"), Some("1"));
        assert_eq!(env.warnings.len(), 1, "{:?}", env.warnings);
        assert!(env.warnings[0].contains("/etc/sysconfig/docker"));
        assert!(env.warnings[0].contains("env.conf:2"));
        assert!(env.warnings[0].contains("refuses to start"));
    }

    #[test]
    fn environment_file_overrides_environment_regardless_of_order() {
        let root = TempRoot::new("envfile-override");
        root.write(
            "/usr/lib/systemd/system/containerd.service",
            "[Service]\n\
             EnvironmentFile=-/etc/sysconfig/containerd\n\
             Environment=HTTPS_PROXY=http://from-unit:1 ONLY_UNIT=1\n",
        );
        root.write(
            "/etc/sysconfig/containerd",
            "# proxy for containerd\nHTTPS_PROXY=http://from-file:2\n",
        );
        let env = root.load("containerd.service");
        assert_eq!(
            env.get("HTTPS_PROXY"),
            Some(&EnvSource {
                variable: "HTTPS_PROXY".into(),
                value: "http://from-file:2".into(),
                file: PathBuf::from("/etc/sysconfig/containerd"),
                line: 2,
                via: SourceKind::EnvironmentFile {
                    unit_file: PathBuf::from("/usr/lib/systemd/system/containerd.service"),
                    unit_line: 2,
                    optional: true,
                },
            })
        );
        assert_eq!(
            env.get("ONLY_UNIT").map(|v| &v.via),
            Some(&SourceKind::Environment)
        );
    }

    #[test]
    fn default_environment_is_lowest_priority() {
        let root = TempRoot::new("default-env");
        root.write(
            "/etc/systemd/system.conf",
            "[Manager]\n#DefaultEnvironment=\nDefaultEnvironment=\"HTTP_PROXY=http://global:1\" NO_PROXY=.local LITERAL=50%%\n",
        );
        root.write(
            "/usr/lib/systemd/system.conf.d/10-vendor.conf",
            "[Manager]\nDefaultEnvironment=VENDOR=1\n",
        );
        root.write(
            "/etc/systemd/system.conf.d/20-admin.conf",
            "[Manager]\nDefaultEnvironment=NO_PROXY=.corp\n[Service]\nDefaultEnvironment=IGNORED=1\n",
        );
        root.write(
            "/usr/lib/systemd/system/kubelet.service",
            "[Service]\nEnvironment=HTTP_PROXY=http://unit:2\n",
        );
        let env = root.load("kubelet.service");
        assert_eq!(value(&env, "HTTP_PROXY"), Some("http://unit:2"));
        let no_proxy = env.get("NO_PROXY").expect("NO_PROXY");
        assert_eq!(no_proxy.value, ".corp");
        assert_eq!(no_proxy.via, SourceKind::DefaultEnvironment);
        assert_eq!(
            no_proxy.file,
            PathBuf::from("/etc/systemd/system.conf.d/20-admin.conf")
        );
        assert_eq!(no_proxy.line, 2);
        assert_eq!(value(&env, "VENDOR"), Some("1"));
        assert_eq!(value(&env, "LITERAL"), Some("50%"));
        assert_eq!(env.get("IGNORED"), None);
        assert_eq!(env.get("LITERAL").map(|v| v.line), Some(3));
    }

    #[test]
    fn unset_environment_is_applied_last() {
        let root = TempRoot::new("unset");
        root.write(
            "/etc/systemd/system.conf",
            "[Manager]\nDefaultEnvironment=HTTP_PROXY=http://g:1\n",
        );
        root.write(
            "/etc/systemd/system/u.service",
            "[Service]\n\
             UnsetEnvironment=HTTP_PROXY HTTPS_PROXY=http://other:9 NO_PROXY=keep\n\
             EnvironmentFile=/etc/u.env\n",
        );
        root.write("/etc/u.env", "HTTPS_PROXY=http://other:9\nNO_PROXY=other\n");
        let env = root.load("u.service");
        assert_eq!(env.get("HTTP_PROXY"), None);
        assert_eq!(env.get("HTTPS_PROXY"), None);
        // Only the exact assignment NO_PROXY=keep would be removed.
        assert_eq!(value(&env, "NO_PROXY"), Some("other"));
    }
}
