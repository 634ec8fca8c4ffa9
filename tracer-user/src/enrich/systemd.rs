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
//! the default `PATH`, and user managers (`systemd --user`).

use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Where one environment variable's configured value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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
    #[error("host root {} is not a readable directory", path.display())]
    HostRoot { path: PathBuf },
    /// A unit file, drop-in, drop-in directory or `system.conf` exists but
    /// cannot be read: the answer would silently miss its assignments.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

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

/// systemd-system.conf(5): the main file is `system.conf`; newer systemd also
/// accepts it from /run and /usr (the first one found is used), older only
/// reads /etc, where the others do not exist.
const SYSTEM_CONF_PATHS: &[&str] = &[
    "/etc/systemd/system.conf",
    "/run/systemd/system.conf",
    "/usr/local/lib/systemd/system.conf",
    "/usr/lib/systemd/system.conf",
];

/// systemd-system.conf(5): drop-ins in `system.conf.d/`, highest priority
/// first; a file name present in several directories counts once.
const SYSTEM_CONF_DROPIN_DIRS: &[&str] = &[
    "/etc/systemd/system.conf.d",
    "/run/systemd/system.conf.d",
    "/usr/local/lib/systemd/system.conf.d",
    "/usr/lib/systemd/system.conf.d",
];

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

/// Same limit as Linux's SYMLOOP_MAX / systemd's chase().
const MAX_SYMLINKS: usize = 40;

/// Unit files and env files are tiny; the cap only protects against a symlink
/// to something huge.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Load the configured environment of `unit` from the unit files under
/// `host_root` (use "/" for the real host). Never panics; missing files are not
/// errors (a unit may have no file at all).
pub fn load_unit_environment(
    host_root: &Path,
    unit: &str,
) -> Result<UnitEnvironment, SystemdError> {
    let name = UnitName::parse(unit).map_err(|reason| SystemdError::InvalidUnitName {
        name: unit.to_string(),
        reason,
    })?;
    match fs::metadata(host_root) {
        Ok(m) if m.is_dir() => {}
        _ => {
            return Err(SystemdError::HostRoot {
                path: host_root.to_path_buf(),
            })
        }
    }
    let host = HostFs { root: host_root };
    let mut out = UnitEnvironment {
        unit: unit.to_string(),
        ..Default::default()
    };

    // 1. The fragment: first match of the exact name in search-path order,
    //    then, for instances, of the template (systemd.unit(5): "foo@bar.service"
    //    falls back to "foo@.service").
    let mut looked_up = unit.to_string();
    let mut fragment = find_fragment(&host, unit)?;
    if matches!(fragment, FragmentLookup::NotFound) {
        if let Some(template) = name.template() {
            fragment = find_fragment(&host, &template)?;
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
    for alias in find_aliases(&host, &canonical, name.utype)? {
        if !names.contains(&alias) {
            names.push(alias);
        }
    }

    // 3. Drop-ins.
    let dropins = collect_dropins(&host, &names, name.utype)?;

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
    let defaults = load_default_environment(&host, &mut out.warnings)?;

    out.vars = exec.merge(defaults, &host, &mut out.warnings);
    Ok(out)
}

// ---------------------------------------------------------------------------
// Environment assembly
// ---------------------------------------------------------------------------

/// One `NAME=value` with the place it was written.
#[derive(Debug, Clone)]
struct Assign {
    name: String,
    value: String,
    file: PathBuf,
    line: u32,
}

#[derive(Debug, Clone)]
struct EnvFileRef {
    pattern: String,
    optional: bool,
    unit_file: PathBuf,
    unit_line: u32,
}

#[derive(Debug, Clone)]
struct UnsetEntry {
    name: String,
    /// `UnsetEnvironment=NAME=value` removes only that exact assignment.
    value: Option<String>,
}

/// The exec-context settings relevant to the environment, accumulated over the
/// fragment and its drop-ins in load order.
#[derive(Debug, Default)]
struct ExecEnv {
    environment: Vec<Assign>,
    env_files: Vec<EnvFileRef>,
    unset: Vec<UnsetEntry>,
}

impl ExecEnv {
    fn apply(
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
    fn merge(
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

/// A file and line, printed as `file:line` in warnings like systemd's
/// log_syntax().
#[derive(Clone, Copy)]
struct Location<'a> {
    file: &'a Path,
    line: u32,
}

impl std::fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
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
fn load_default_environment(
    host: &HostFs<'_>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Assign>, SystemdError> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for candidate in SYSTEM_CONF_PATHS {
        let path = PathBuf::from(candidate);
        match host.read_file(&path).map_err(io_error(&path))? {
            FileContent::Missing | FileContent::NotRegular => continue,
            FileContent::DevNull => break,
            FileContent::Bytes(b) => {
                files.push((path, b));
                break;
            }
        }
    }
    let dirs: Vec<PathBuf> = SYSTEM_CONF_DROPIN_DIRS.iter().map(PathBuf::from).collect();
    for dropin in list_conf_files(host, &dirs)? {
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

// ---------------------------------------------------------------------------
// Unit names, fragments, drop-ins
// ---------------------------------------------------------------------------

/// A syntactically valid unit name, split like systemd's unit-name.c does.
#[derive(Debug, Clone, Copy)]
struct UnitName<'a> {
    full: &'a str,
    /// Part before '@' (or before ".type" for non-templates).
    prefix: &'a str,
    /// `Some("")` for a template, `Some(i)` for an instance.
    instance: Option<&'a str>,
    utype: &'a str,
}

impl<'a> UnitName<'a> {
    /// unit_name_is_valid(): at most 255 bytes; characters `[A-Za-z0-9:_.\\-]`
    /// plus '@'; a known type suffix; a non-empty prefix before the first '@'.
    fn parse(full: &'a str) -> Result<Self, &'static str> {
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

    fn is_template(&self) -> bool {
        self.instance == Some("")
    }

    /// "foo@bar.service" -> "foo@.service"; `None` unless an instance.
    fn template(&self) -> Option<String> {
        match self.instance {
            Some(i) if !i.is_empty() => Some(format!("{}@.{}", self.prefix, self.utype)),
            _ => None,
        }
    }
}

fn is_unit_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b":-_.\\".contains(&b)
}

fn same_type_unit(name: &str, utype: &str) -> bool {
    UnitName::parse(name).is_ok_and(|n| n.utype == utype)
}

/// The section holding exec settings for a unit type (systemd.exec(5)).
fn exec_section(utype: &str) -> Option<&'static str> {
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

enum FragmentLookup {
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

fn find_fragment(host: &HostFs<'_>, name: &str) -> Result<FragmentLookup, SystemdError> {
    for dir in UNIT_SEARCH_PATH {
        let path = Path::new(dir).join(name);
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
fn find_aliases(
    host: &HostFs<'_>,
    canonical: &str,
    utype: &str,
) -> Result<Vec<String>, SystemdError> {
    let mut aliases = Vec::new();
    for dir in UNIT_SEARCH_PATH {
        let dir_path = Path::new(dir);
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
            let Ok(target) = fs::read_link(&entry.disk_path) else {
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

struct ConfFile {
    path: PathBuf,
}

/// The drop-ins of a unit (unit_file_find_dropin_paths()): `<name>.d/` for
/// every expanded name of the unit id and its aliases, in every search
/// directory, then the top-level `<type>.d/` directories ("added last as it's
/// the most generic"), then conf_files_list(): for each file name only the
/// first directory in that order counts, and the survivors are applied sorted
/// by file name.
fn collect_dropins(
    host: &HostFs<'_>,
    names: &[String],
    utype: &str,
) -> Result<Vec<ConfFile>, SystemdError> {
    let mut dirs = Vec::new();
    for name in names {
        let mut candidates = Vec::new();
        expand_dropin_names(name, &mut candidates);
        for search in UNIT_SEARCH_PATH {
            for c in &candidates {
                dirs.push(Path::new(search).join(format!("{c}.d")));
            }
        }
    }
    for search in UNIT_SEARCH_PATH {
        dirs.push(Path::new(search).join(format!("{utype}.d")));
    }
    list_conf_files(host, &dirs)
}

/// conf_files_list_strv(): `*.conf` files (regular files or symlinks, not
/// hidden) in `dirs`; a name seen in an earlier directory shadows later ones;
/// result sorted by file name (byte order, strcmp()).
fn list_conf_files(host: &HostFs<'_>, dirs: &[PathBuf]) -> Result<Vec<ConfFile>, SystemdError> {
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

// ---------------------------------------------------------------------------
// Unit file syntax (systemd.syntax(7))
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Directive {
    key: String,
    value: String,
    /// Line where the (possibly continued) assignment starts.
    line: u32,
}

/// Split like systemd's read_line(): "\n", "\r", "\r\n" and NUL end a line.
fn split_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' | b'\0' => {
                lines.push(&bytes[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                lines.push(&bytes[start..i]);
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            _ => i += 1,
        }
    }
    if start < bytes.len() {
        lines.push(&bytes[start..]);
    }
    lines
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn trim_ws(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ws(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ws(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// Return the assignments of `wanted` section, following config_parse():
///
/// * a line whose first non-blank character is '#' or ';' is a comment, even
///   in the middle of a continuation (it is dropped, the continuation goes on);
/// * a line ending in an unescaped backslash continues on the next line, the
///   backslash becoming a space;
/// * `[Section]` headers; keys and sections are case-sensitive; keys and values
///   are stripped of surrounding whitespace.
fn parse_unit_file(
    content: &[u8],
    wanted: &str,
    file: &Path,
    warnings: &mut Vec<String>,
) -> Vec<Directive> {
    let mut out = Vec::new();
    let mut section: Option<String> = None;
    let mut continuation: Option<(Vec<u8>, u32)> = None;

    for (idx, raw) in split_lines(content).into_iter().enumerate() {
        let lineno = u32::try_from(idx + 1).unwrap_or(u32::MAX);
        let first_non_blank = raw.iter().copied().find(|b| !is_ws(*b));
        if matches!(first_non_blank, Some(b'#' | b';')) {
            continue;
        }
        let raw = if idx == 0 {
            raw.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(raw)
        } else {
            raw
        };
        let (mut buf, start) = match continuation.take() {
            Some((mut buf, start)) => {
                buf.extend_from_slice(raw);
                (buf, start)
            }
            None => (raw.to_vec(), lineno),
        };
        if ends_with_unescaped_backslash(&buf) {
            if let Some(last) = buf.last_mut() {
                *last = b' ';
            }
            continuation = Some((buf, start));
            continue;
        }
        parse_line(&buf, start, wanted, file, &mut section, &mut out, warnings);
    }
    if let Some((buf, start)) = continuation {
        parse_line(&buf, start, wanted, file, &mut section, &mut out, warnings);
    }
    out
}

fn ends_with_unescaped_backslash(buf: &[u8]) -> bool {
    let mut escaped = false;
    for &b in buf {
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        }
    }
    escaped
}

fn parse_line(
    raw: &[u8],
    line: u32,
    wanted: &str,
    file: &Path,
    section: &mut Option<String>,
    out: &mut Vec<Directive>,
    warnings: &mut Vec<String>,
) {
    let at = Location { file, line };
    let trimmed = trim_ws(raw);
    if trimmed.is_empty() {
        return;
    }
    let Ok(text) = std::str::from_utf8(trimmed) else {
        warnings.push(format!("{at}: line is not valid UTF-8; ignored by systemd"));
        return;
    };
    if let Some(rest) = text.strip_prefix('[') {
        match rest.strip_suffix(']') {
            Some(name) => *section = Some(name.to_string()),
            None => {
                // config_parse() fails the whole file on this.
                warnings.push(format!(
                    "{at}: invalid section header {text:?}; systemd refuses to load this file"
                ));
                *section = None;
            }
        }
        return;
    }
    let Some(current) = section.as_deref() else {
        warnings.push(format!(
            "{at}: assignment outside of any section; ignored by systemd"
        ));
        return;
    };
    if current != wanted {
        return;
    }
    match text.split_once('=') {
        None => warnings.push(format!("{at}: missing '='; line ignored by systemd")),
        Some((key, _)) if key.trim_matches(is_ws_char).is_empty() => warnings.push(format!(
            "{at}: missing key name before '='; line ignored by systemd"
        )),
        Some((key, value)) => out.push(Directive {
            key: key.trim_matches(is_ws_char).to_string(),
            value: value.trim_matches(is_ws_char).to_string(),
            line,
        }),
    }
}

fn is_ws_char(c: char) -> bool {
    u8::try_from(c).is_ok_and(is_ws)
}

// ---------------------------------------------------------------------------
// Word splitting, escapes, specifiers
// ---------------------------------------------------------------------------

/// extract_first_word() with EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE, applied until
/// the end: words are separated by whitespace; single or double quotes may
/// cover any part of a word and are removed; backslash escapes are decoded
/// inside and outside quotes. Returns the words before the first syntax error
/// and that error (systemd keeps the former, drops the rest).
fn split_words(s: &str) -> (Vec<Vec<u8>>, Option<&'static str>) {
    let bytes = s.as_bytes();
    let mut words = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && is_ws(bytes[pos]) {
            pos += 1;
        }
        if pos >= bytes.len() {
            return (words, None);
        }
        let mut word = Vec::new();
        let mut quote: Option<u8> = None;
        loop {
            let Some(&c) = bytes.get(pos) else {
                if quote.is_some() {
                    return (words, Some("unbalanced quote"));
                }
                break;
            };
            if c == b'\\' {
                pos += 1;
                if pos >= bytes.len() {
                    return (words, Some("trailing backslash"));
                }
                match cunescape_one(&bytes[pos..]) {
                    Some((decoded, used)) => {
                        word.extend_from_slice(&decoded);
                        pos += used;
                    }
                    None => return (words, Some("invalid escape sequence")),
                }
                continue;
            }
            pos += 1;
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => word.push(c),
                None if c == b'\'' || c == b'"' => quote = Some(c),
                None if is_ws(c) => break,
                None => word.push(c),
            }
        }
        words.push(word);
    }
}

/// cunescape_one() from systemd's escape.c. `s` starts after the backslash.
/// Returns the decoded bytes and how many input bytes were used. NUL is never
/// accepted (environment strings cannot hold it).
fn cunescape_one(s: &[u8]) -> Option<(Vec<u8>, usize)> {
    let simple = |b: u8| Some((vec![b], 1));
    let hex = |d: &[u8]| -> Option<u32> {
        d.iter().try_fold(0u32, |acc, &b| {
            char::from(b).to_digit(16).map(|v| (acc << 4) | v)
        })
    };
    match *s.first()? {
        b'a' => simple(0x07),
        b'b' => simple(0x08),
        b'f' => simple(0x0c),
        b'n' => simple(b'\n'),
        b'r' => simple(b'\r'),
        b't' => simple(b'\t'),
        b'v' => simple(0x0b),
        b'\\' => simple(b'\\'),
        b'"' => simple(b'"'),
        b'\'' => simple(b'\''),
        // An extension of the XDG syntax, systemd.syntax(7).
        b's' => simple(b' '),
        b'x' => {
            let v = u8::try_from(hex(s.get(1..3)?)?).ok()?;
            // Raw byte: "\xc3\xa9" is two bytes making one UTF-8 character.
            (v != 0).then(|| (vec![v], 3))
        }
        b'u' => {
            let v = hex(s.get(1..5)?)?;
            (v != 0).then(|| (encode_utf8_lenient(v), 5))
        }
        b'U' => {
            let v = hex(s.get(1..9)?)?;
            let c = char::from_u32(v).filter(|c| unichar_is_valid(*c))?;
            (v != 0).then(|| (c.to_string().into_bytes(), 9))
        }
        b'0'..=b'7' => {
            let d = s.get(0..3)?;
            let v = d.iter().try_fold(0u32, |acc, &b| {
                char::from(b).to_digit(8).map(|x| (acc << 3) | x)
            })?;
            if v == 0 || v > 255 {
                return None;
            }
            Some((vec![u8::try_from(v).ok()?], 3))
        }
        _ => None,
    }
}

/// systemd's unichar_is_valid(): no surrogates, no non-characters.
fn unichar_is_valid(c: char) -> bool {
    let v = u32::from(c);
    !((0xFDD0..=0xFDEF).contains(&v) || (v & 0xFFFE) == 0xFFFE)
}

/// "\uD800" is accepted by cunescape_one() and encoded like any code point;
/// the result is not valid UTF-8, so the assignment is then rejected as a
/// whole, exactly as systemd's utf8 check does.
fn encode_utf8_lenient(v: u32) -> Vec<u8> {
    match char::from_u32(v) {
        Some(c) => c.to_string().into_bytes(),
        None => {
            // Surrogate: 3-byte encoding without validity checks. The
            // shifted-and-masked values fit in a byte by construction.
            let b = |x: u32| u8::try_from(x & 0xFF).unwrap_or(0);
            vec![
                b(0xE0 | (v >> 12)),
                b(0x80 | ((v >> 6) & 0x3F)),
                b(0x80 | (v & 0x3F)),
            ]
        }
    }
}

/// What `%x` may expand to.
#[derive(Clone, Copy)]
enum Specifiers<'a> {
    /// unit_env_printf(): the full unit table (systemd.unit(5), "Specifiers").
    Unit(&'a UnitSpec),
    /// `DefaultEnvironment=`: system, tmp and credential specifiers only.
    Manager,
}

struct UnitSpec {
    id: String,
    prefix: String,
    instance: Option<String>,
    /// Host path of the fragment after symlinks (for %y / %Y).
    fragment_real: Option<PathBuf>,
}

struct Expanded {
    bytes: Vec<u8>,
    /// Specifiers that depend on the running host (hostname, machine id, ...)
    /// and were kept literally.
    unresolved: Vec<u8>,
}

#[derive(Debug)]
enum SpecError {
    /// specifier_printf() returns -EBADSLT for an unknown letter or digit.
    Unknown(u8),
    Failed(u8, &'static str),
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecError::Unknown(c) => write!(
                f,
                "unknown specifier %{} (a literal '%' must be written %%)",
                char::from(*c)
            ),
            SpecError::Failed(c, why) => {
                write!(f, "specifier %{} cannot be resolved: {why}", char::from(*c))
            }
        }
    }
}

enum SpecValue {
    Value(Vec<u8>),
    HostDependent,
    NotASpecifier,
}

/// specifier_printf(): "%%" is '%'; a known specifier is replaced; an unknown
/// *alphanumeric* one is an error (the assignment is dropped, a classic trap
/// for percent-encoded proxy passwords like `p%40ss`); any other character
/// after '%' is kept with its '%'; a trailing '%' stays.
fn expand_specifiers(input: &[u8], table: Specifiers<'_>) -> Result<Expanded, SpecError> {
    let mut out = Expanded {
        bytes: Vec::with_capacity(input.len()),
        unresolved: Vec::new(),
    };
    let mut iter = input.iter().copied();
    while let Some(b) = iter.next() {
        if b != b'%' {
            out.bytes.push(b);
            continue;
        }
        let Some(c) = iter.next() else {
            out.bytes.push(b'%');
            break;
        };
        if c == b'%' {
            out.bytes.push(b'%');
            continue;
        }
        match resolve_specifier(c, table)? {
            SpecValue::Value(v) => out.bytes.extend_from_slice(&v),
            SpecValue::HostDependent => {
                out.bytes.extend_from_slice(&[b'%', c]);
                if !out.unresolved.contains(&c) {
                    out.unresolved.push(c);
                }
            }
            SpecValue::NotASpecifier if c.is_ascii_alphanumeric() => {
                return Err(SpecError::Unknown(c))
            }
            SpecValue::NotASpecifier => out.bytes.extend_from_slice(&[b'%', c]),
        }
    }
    Ok(out)
}

fn resolve_specifier(c: u8, table: Specifiers<'_>) -> Result<SpecValue, SpecError> {
    let s = |v: &str| Ok(SpecValue::Value(v.as_bytes().to_vec()));
    // Shared by both tables: COMMON_SYSTEM_SPECIFIERS (host facts),
    // COMMON_TMP_SPECIFIERS and COMMON_CREDS_SPECIFIERS for the system
    // manager, which runs as root.
    match c {
        b'a' | b'A' | b'b' | b'B' | b'H' | b'l' | b'm' | b'M' | b'o' | b'q' | b'v' | b'w'
        | b'W' => return Ok(SpecValue::HostDependent),
        b'T' => return s("/tmp"),
        b'V' => return s("/var/tmp"),
        b'u' | b'g' => return s("root"),
        b'U' | b'G' => return s("0"),
        b'h' => return s("/root"),
        b's' => return s("/bin/sh"),
        _ => {}
    }
    let Specifiers::Unit(u) = table else {
        return Ok(SpecValue::NotASpecifier);
    };
    let instance = u.instance.as_deref().unwrap_or("");
    let last_component = |p: &str| p.rsplit_once('-').map_or(p, |(_, last)| last).to_string();
    match c {
        b'n' => s(&u.id),
        b'N' => s(u
            .id
            .rsplit_once('.')
            .map_or(u.id.as_str(), |(stem, _)| stem)),
        b'p' => s(&u.prefix),
        b'P' => unit_name_unescape(u.prefix.as_bytes())
            .map(SpecValue::Value)
            .ok_or(SpecError::Failed(c, "bad escape in unit prefix")),
        b'i' => s(instance),
        b'I' => unit_name_unescape(instance.as_bytes())
            .map(SpecValue::Value)
            .ok_or(SpecError::Failed(c, "bad escape in instance")),
        b'j' => s(&last_component(&u.prefix)),
        b'J' => unit_name_unescape(last_component(&u.prefix).as_bytes())
            .map(SpecValue::Value)
            .ok_or(SpecError::Failed(c, "bad escape in prefix component")),
        b'f' => {
            let source = if instance.is_empty() {
                &u.prefix
            } else {
                instance
            };
            unit_name_path_unescape(source.as_bytes())
                .map(SpecValue::Value)
                .ok_or(SpecError::Failed(c, "name does not unescape to a path"))
        }
        b'y' | b'Y' => {
            let path = u
                .fragment_real
                .as_deref()
                .ok_or(SpecError::Failed(c, "the unit has no fragment"))?;
            let path = if c == b'Y' {
                path.parent().unwrap_or(path)
            } else {
                path
            };
            Ok(SpecValue::Value(path.as_os_str().as_bytes().to_vec()))
        }
        b'C' => s("/var/cache"),
        b'E' => s("/etc"),
        b'L' => s("/var/log"),
        b'S' => s("/var/lib"),
        b't' => s("/run"),
        // Credentials directory and the deprecated cgroup specifiers depend on
        // runtime state.
        b'd' | b'c' | b'r' | b'R' => Ok(SpecValue::HostDependent),
        _ => Ok(SpecValue::NotASpecifier),
    }
}

/// unit_name_unescape(): '-' means '/', "\xNN" a byte.
fn unit_name_unescape(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'-' => {
                out.push(b'/');
                i += 1;
            }
            b'\\' => {
                if s.get(i + 1) != Some(&b'x') {
                    return None;
                }
                let hi = char::from(*s.get(i + 2)?).to_digit(16)?;
                let lo = char::from(*s.get(i + 3)?).to_digit(16)?;
                out.push(u8::try_from((hi << 4) | lo).ok()?);
                i += 4;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// unit_name_path_unescape(): "-" is "/", else unescape and prefix '/'.
fn unit_name_path_unescape(s: &[u8]) -> Option<Vec<u8>> {
    if s.is_empty() {
        return None;
    }
    if s == b"-" {
        return Some(b"/".to_vec());
    }
    let w = unit_name_unescape(s)?;
    if w.starts_with(b"/") || w.ends_with(b"/") {
        return None;
    }
    let mut out = b"/".to_vec();
    out.extend_from_slice(&w);
    Some(out)
}

// ---------------------------------------------------------------------------
// Environment files (systemd.exec(5) EnvironmentFile=, env-file.c)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct EnvFileEntry {
    key: Vec<u8>,
    value: Vec<u8>,
    line: u32,
}

/// parse_env_file_internal() from systemd's env-file.c, state for state:
///
/// * `#` / `;` start a comment only as the first non-blank of a line; an
///   inline `#` is part of the value (`A=b # c` sets `b # c`);
/// * a line without '=' is ignored;
/// * unquoted values lose trailing whitespace; a backslash keeps the next
///   character literally (`\n` is "n"), and backslash-newline continues;
/// * single quotes are literal; in double quotes `\"`, `\\`, `` \` `` and `\$`
///   are unescaped, other backslashes are kept, backslash-newline continues;
///   quoted and unquoted parts concatenate (`A="b"c` sets `bc`);
/// * no `${VAR}` expansion and no `export` keyword: `export A=b` yields the
///   name "export A", which the caller reports and drops like systemd.
fn parse_env_file(content: &[u8]) -> Vec<EnvFileEntry> {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum St {
        PreKey,
        Key,
        PreValue,
        Value,
        ValueEscape,
        SingleQuote,
        DoubleQuote,
        DoubleQuoteEscape,
        Comment,
        CommentEscape,
    }
    let is_nl = |c: u8| c == b'\n' || c == b'\r';

    let mut out = Vec::new();
    let mut st = St::PreKey;
    let mut key: Vec<u8> = Vec::new();
    let mut value: Vec<u8> = Vec::new();
    let mut last_key_ws: Option<usize> = None;
    let mut last_value_ws: Option<usize> = None;
    let mut line: u32 = 1;
    let mut start_line: u32 = 1;

    let mut push = |key: &mut Vec<u8>, value: &mut Vec<u8>, key_ws: Option<usize>, start: u32| {
        let mut k = std::mem::take(key);
        if let Some(n) = key_ws {
            k.truncate(n);
        }
        out.push(EnvFileEntry {
            key: k,
            value: std::mem::take(value),
            line: start,
        });
    };

    for &c in content {
        match st {
            St::PreKey => {
                if c == b'#' || c == b';' {
                    st = St::Comment;
                } else if !is_ws(c) {
                    st = St::Key;
                    last_key_ws = None;
                    key.clear();
                    key.push(c);
                    start_line = line;
                }
            }
            St::Key => {
                if is_nl(c) {
                    st = St::PreKey;
                    key.clear();
                } else if c == b'=' {
                    st = St::PreValue;
                    last_value_ws = None;
                    value.clear();
                } else {
                    if !is_ws(c) {
                        last_key_ws = None;
                    } else if last_key_ws.is_none() {
                        last_key_ws = Some(key.len());
                    }
                    key.push(c);
                }
            }
            St::PreValue => {
                if is_nl(c) {
                    st = St::PreKey;
                    push(&mut key, &mut value, last_key_ws, start_line);
                } else if c == b'\'' {
                    st = St::SingleQuote;
                } else if c == b'"' {
                    st = St::DoubleQuote;
                } else if c == b'\\' {
                    st = St::ValueEscape;
                } else if !is_ws(c) {
                    st = St::Value;
                    value.push(c);
                }
            }
            St::Value => {
                if is_nl(c) {
                    st = St::PreKey;
                    if let Some(n) = last_value_ws {
                        value.truncate(n);
                    }
                    push(&mut key, &mut value, last_key_ws, start_line);
                } else if c == b'\\' {
                    st = St::ValueEscape;
                    last_value_ws = None;
                } else {
                    if !is_ws(c) {
                        last_value_ws = None;
                    } else if last_value_ws.is_none() {
                        last_value_ws = Some(value.len());
                    }
                    value.push(c);
                }
            }
            St::ValueEscape => {
                st = St::Value;
                if !is_nl(c) {
                    value.push(c);
                }
            }
            St::SingleQuote => {
                if c == b'\'' {
                    st = St::PreValue;
                } else {
                    value.push(c);
                }
            }
            St::DoubleQuote => {
                if c == b'"' {
                    st = St::PreValue;
                } else if c == b'\\' {
                    st = St::DoubleQuoteEscape;
                } else {
                    value.push(c);
                }
            }
            St::DoubleQuoteEscape => {
                st = St::DoubleQuote;
                if b"\"\\`$".contains(&c) {
                    value.push(c);
                } else if c != b'\n' {
                    value.extend_from_slice(&[b'\\', c]);
                }
            }
            St::Comment => {
                if c == b'\\' {
                    st = St::CommentEscape;
                } else if is_nl(c) {
                    st = St::PreKey;
                }
            }
            St::CommentEscape => {
                // Since systemd v254 a backslash does not continue a comment.
                st = if is_nl(c) { St::PreKey } else { St::Comment };
            }
        }
        if c == b'\n' {
            line = line.saturating_add(1);
        }
    }
    match st {
        St::Value => {
            if let Some(n) = last_value_ws {
                value.truncate(n);
            }
            push(&mut key, &mut value, last_key_ws, start_line);
        }
        St::PreValue
        | St::ValueEscape
        | St::SingleQuote
        | St::DoubleQuote
        | St::DoubleQuoteEscape => {
            push(&mut key, &mut value, last_key_ws, start_line);
        }
        St::PreKey | St::Key | St::Comment | St::CommentEscape => {}
    }
    out
}

/// Expand an `EnvironmentFile=` glob (systemd uses glob(3); results sorted,
/// wildcards do not match a leading '.'). A pattern without wildcards yields
/// itself; whether it exists is decided when reading.
fn glob_host(host: &HostFs<'_>, pattern: &str) -> io::Result<Vec<PathBuf>> {
    let components: Vec<&str> = pattern
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if !components.iter().any(|c| has_glob_meta(c)) {
        return Ok(vec![PathBuf::from(pattern)]);
    }
    let mut current = vec![PathBuf::from("/")];
    for comp in components {
        let mut next = Vec::new();
        if has_glob_meta(comp) {
            for prefix in &current {
                let Some(entries) = host.list_dir(prefix)? else {
                    continue;
                };
                for entry in entries {
                    if fnmatch(comp.as_bytes(), entry.name.as_bytes()) {
                        next.push(prefix.join(&entry.name));
                    }
                }
            }
        } else {
            let literal = glob_unescape(comp);
            next = current.iter().map(|p| p.join(&literal)).collect();
        }
        current = next;
    }
    current.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    Ok(current)
}

fn has_glob_meta(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'*' | b'?' | b'[' => return true,
            _ => i += 1,
        }
    }
    false
}

fn glob_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// fnmatch(3) without flags but with glob's leading-period rule: `*`, `?`,
/// `[...]` (with `!`/`^` negation and ranges) and backslash quoting.
fn fnmatch(pat: &[u8], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && !(pat.starts_with(b".") || pat.starts_with(b"\\.")) {
        return false;
    }
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match pat.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match match_class(pat, p, name[n]) {
                Some((true, next)) => Some(next),
                Some((false, _)) => None,
                None => (name[n] == b'[').then_some(p + 1),
            },
            Some(b'\\') if p + 1 < pat.len() => (pat[p + 1] == name[n]).then_some(p + 2),
            Some(&c) => (c == name[n]).then_some(p + 1),
            None => None,
        };
        match step {
            Some(next) => {
                p = next;
                n += 1;
            }
            None => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pat[p.min(pat.len())..].iter().all(|&c| c == b'*')
}

/// Match one byte against the bracket expression starting at `pat[start]`
/// ('['). Returns (matched, index after ']'), or `None` if the bracket is
/// unterminated (then '[' is literal).
fn match_class(pat: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(pat.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let mut lo = *pat.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if lo == b'\\' {
            i += 1;
            lo = *pat.get(i)?;
        }
        i += 1;
        if pat.get(i) == Some(&b'-') && pat.get(i + 1).is_some_and(|&b| b != b']') {
            let mut hi = *pat.get(i + 1)?;
            i += 2;
            if hi == b'\\' {
                hi = *pat.get(i)?;
                i += 1;
            }
            if lo <= c && c <= hi {
                matched = true;
            }
        } else if lo == c {
            matched = true;
        }
    }
}

// ---------------------------------------------------------------------------
// Host file system access under a root
// ---------------------------------------------------------------------------

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SystemdError + '_ {
    move |source| SystemdError::Io {
        path: path.to_path_buf(),
        source,
    }
}

struct HostFs<'a> {
    root: &'a Path,
}

enum Node {
    Missing,
    /// The path resolves to /dev/null: masked (systemd.unit(5)). Recognised by
    /// name, since the host's /dev may not be visible under `host_root`.
    DevNull,
    Present {
        disk: PathBuf,
        /// Host path after following symlinks.
        real: PathBuf,
        is_file: bool,
        is_dir: bool,
    },
}

enum FileContent {
    Missing,
    DevNull,
    NotRegular,
    Bytes(Vec<u8>),
}

struct DirEntryInfo {
    name: OsString,
    disk_path: PathBuf,
    is_file: bool,
    is_symlink: bool,
}

fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

impl HostFs<'_> {
    fn disk_path(&self, components: &[OsString]) -> PathBuf {
        let mut p = self.root.to_path_buf();
        p.extend(components);
        p
    }

    /// Resolve `host_path` one component at a time like chase() with a root:
    /// ".." cannot climb above the root, absolute symlink targets restart at
    /// the root, at most [`MAX_SYMLINKS`] links are followed.
    fn resolve(&self, host_path: &Path) -> io::Result<Node> {
        let mut pending: Vec<OsString> = Vec::new();
        push_components(&mut pending, host_path);
        let mut current: Vec<OsString> = Vec::new();
        let mut last_meta: Option<fs::Metadata> = None;
        let mut links = 0usize;

        while let Some(name) = pending.pop() {
            if name == ".." {
                current.pop();
                last_meta = None;
                continue;
            }
            if is_dev_null(&current, &name, &pending) {
                return Ok(Node::DevNull);
            }
            let disk = self.disk_path(&current).join(&name);
            let meta = match fs::symlink_metadata(&disk) {
                Ok(m) => m,
                Err(e) if is_missing(&e) => return Ok(Node::Missing),
                Err(e) => return Err(e),
            };
            if meta.file_type().is_symlink() {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::other(format!(
                        "too many levels of symbolic links resolving {}",
                        host_path.display()
                    )));
                }
                let target = fs::read_link(&disk)?;
                if target.is_absolute() {
                    current.clear();
                }
                push_components(&mut pending, &target);
                last_meta = None;
                continue;
            }
            if !pending.is_empty() && !meta.is_dir() {
                return Ok(Node::Missing);
            }
            current.push(name);
            last_meta = Some(meta);
        }

        let disk = self.disk_path(&current);
        let meta = match last_meta {
            Some(m) => m,
            None => match fs::metadata(&disk) {
                Ok(m) => m,
                Err(e) if is_missing(&e) => return Ok(Node::Missing),
                Err(e) => return Err(e),
            },
        };
        let mut real = PathBuf::from("/");
        real.extend(&current);
        Ok(Node::Present {
            disk,
            real,
            is_file: meta.is_file(),
            is_dir: meta.is_dir(),
        })
    }

    fn read_file(&self, host_path: &Path) -> io::Result<FileContent> {
        let disk = match self.resolve(host_path)? {
            Node::Missing => return Ok(FileContent::Missing),
            Node::DevNull => return Ok(FileContent::DevNull),
            Node::Present { is_file: false, .. } => return Ok(FileContent::NotRegular),
            Node::Present { disk, .. } => disk,
        };
        let file = match fs::File::open(&disk) {
            Ok(f) => f,
            Err(e) if is_missing(&e) => return Ok(FileContent::Missing),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_FILE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {MAX_FILE_BYTES} bytes"),
            ));
        }
        Ok(FileContent::Bytes(bytes))
    }

    /// Entries of a directory, or `None` if it does not exist (or is not a
    /// directory).
    fn list_dir(&self, host_dir: &Path) -> io::Result<Option<Vec<DirEntryInfo>>> {
        let disk = match self.resolve(host_dir)? {
            Node::Present {
                disk, is_dir: true, ..
            } => disk,
            _ => return Ok(None),
        };
        let reader = match fs::read_dir(&disk) {
            Ok(r) => r,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut entries = Vec::new();
        for entry in reader {
            let entry = entry?;
            let file_type = entry.file_type()?;
            entries.push(DirEntryInfo {
                name: entry.file_name(),
                disk_path: entry.path(),
                is_file: file_type.is_file(),
                is_symlink: file_type.is_symlink(),
            });
        }
        Ok(Some(entries))
    }
}

/// Push the components of `path` onto `stack` so that popping yields them in
/// order.
fn push_components(stack: &mut Vec<OsString>, path: &Path) {
    let parts: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    stack.extend(parts.into_iter().rev());
}

fn is_dev_null(current: &[OsString], name: &OsStr, pending: &[OsString]) -> bool {
    match (current, pending) {
        ([], [rest]) => name == "dev" && rest == "null",
        ([dev], []) => dev == "dev" && name == "null",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A throw-away host root under the system temp dir.
    struct TempRoot {
        path: PathBuf,
    }

    impl TempRoot {
        fn new(tag: &str) -> Self {
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

        fn disk(&self, host_path: &str) -> PathBuf {
            self.path.join(host_path.trim_start_matches('/'))
        }

        fn write(&self, host_path: &str, content: &str) {
            let p = self.disk(host_path);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(&p, content).expect("write");
        }

        fn symlink(&self, host_path: &str, target: &str) {
            let p = self.disk(host_path);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::os::unix::fs::symlink(target, &p).expect("symlink");
        }

        fn load(&self, unit: &str) -> UnitEnvironment {
            load_unit_environment(&self.path, unit).expect("load_unit_environment")
        }
    }

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.path);
        }
    }

    const CONTAINERD_UNIT: &str = "[Unit]\n\
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

    const INCIDENT_DROPIN: &str = "[Service]\n\
        Environment=\"HTTP_PROXY=http://10.0.0.1:7897\"\n\
        Environment=\"HTTPS_PROXY=http://10.0.0.1:7897\"\n\
        Environment=\"NO_PROXY=localhost,127.0.0.1,...\"\n";

    fn value<'a>(env: &'a UnitEnvironment, name: &str) -> Option<&'a str> {
        env.get(name).map(|v| v.value.as_str())
    }

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
    fn quoting_of_whole_and_partial_assignments() {
        let root = TempRoot::new("quoting");
        root.write(
            "/etc/systemd/system/q.service",
            "[Service]\n\
             Environment=\"A=b c\" D=e\n\
             Environment='F=g h'   I=\"j k\"l\n\
             Environment=M=\"n 'o'\"\n",
        );
        let env = root.load("q.service");
        assert_eq!(value(&env, "A"), Some("b c"));
        assert_eq!(value(&env, "D"), Some("e"));
        assert_eq!(value(&env, "F"), Some("g h"));
        assert_eq!(value(&env, "I"), Some("j kl"));
        assert_eq!(value(&env, "M"), Some("n 'o'"));
        assert_eq!(env.get("D").map(|v| v.line), Some(2));
        assert_eq!(env.get("I").map(|v| v.line), Some(3));
        assert!(env.warnings.is_empty(), "{:?}", env.warnings);
    }

    #[test]
    fn escapes_and_specifiers() {
        let root = TempRoot::new("escapes");
        root.write(
            "/etc/systemd/system/esc.service",
            "[Service]\n\
             Environment=\"TAB=a\\tb\" HEX=\\x41\\x42 OCT=\\101 SP=a\\sb\n\
             Environment=\"QUOTE=say \\\"hi\\\"\" BS=a\\\\b UNI=caf\\u00e9 UTF=\\xc3\\xa9\n\
             Environment=PCT=100%% NAME=%n PREFIX=%p TMP=%T\n\
             Environment=GOOD=1 BAD=\\q AFTER=never\n\
             Environment=PASS=http://u:p%40ss@proxy:3128 OK=yes\n",
        );
        let env = root.load("esc.service");
        assert_eq!(value(&env, "TAB"), Some("a\tb"));
        assert_eq!(value(&env, "HEX"), Some("AB"));
        assert_eq!(value(&env, "OCT"), Some("A"));
        assert_eq!(value(&env, "SP"), Some("a b"));
        assert_eq!(value(&env, "QUOTE"), Some("say \"hi\""));
        assert_eq!(value(&env, "BS"), Some("a\\b"));
        assert_eq!(value(&env, "UNI"), Some("café"));
        assert_eq!(value(&env, "UTF"), Some("é"));
        assert_eq!(value(&env, "PCT"), Some("100%"));
        assert_eq!(value(&env, "NAME"), Some("esc.service"));
        assert_eq!(value(&env, "PREFIX"), Some("esc"));
        assert_eq!(value(&env, "TMP"), Some("/tmp"));
        // An invalid escape drops the rest of the line; earlier words stay.
        assert_eq!(value(&env, "GOOD"), Some("1"));
        assert_eq!(env.get("BAD"), None);
        assert_eq!(env.get("AFTER"), None);
        assert!(env
            .warnings
            .iter()
            .any(|w| w.contains("esc.service:5") && w.contains("invalid escape")));
        // "%4" is an unknown specifier: that one assignment is dropped.
        assert_eq!(env.get("PASS"), None);
        assert_eq!(value(&env, "OK"), Some("yes"));
        assert!(
            env.warnings.iter().any(|w| w.contains("%4")),
            "{:?}",
            env.warnings
        );
    }

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
    fn environment_file_syntax() {
        let root = TempRoot::new("envfile-syntax");
        root.write(
            "/etc/systemd/system/app.service",
            "[Service]\nEnvironmentFile=/etc/app/env\nEnvironmentFile=-/etc/app/override\n",
        );
        root.write(
            "/etc/app/env",
            "# comment\n\
             ; also a comment\n\
             \n\
             PLAIN=value   \n\
             INLINE=a # not a comment\n\
             SINGLE='x \"y\" $z'\n\
             DOUBLE=\"a \\\"b\\\" \\$c \\n d\"\n\
             CONT=one\\\n\
             two\n\
             export EXPORTED=1\n\
             \x20 SPACED = v\n\
             NOEQUALS\n\
             EMPTY=\n\
             MULTI=\"line1\n\
             line2\"\n\
             AFTER=1\n\
             LATE=first\n",
        );
        root.write("/etc/app/override", "LATE=second\n");
        let env = root.load("app.service");
        assert_eq!(value(&env, "PLAIN"), Some("value"));
        assert_eq!(env.get("PLAIN").map(|v| v.line), Some(4));
        assert_eq!(value(&env, "INLINE"), Some("a # not a comment"));
        assert_eq!(value(&env, "SINGLE"), Some("x \"y\" $z"));
        assert_eq!(value(&env, "DOUBLE"), Some("a \"b\" $c \\n d"));
        assert_eq!(value(&env, "CONT"), Some("onetwo"));
        assert_eq!(env.get("CONT").map(|v| v.line), Some(8));
        assert_eq!(env.get("EXPORTED"), None);
        assert!(env
            .warnings
            .iter()
            .any(|w| w.contains("/etc/app/env:10") && w.contains("export")));
        assert_eq!(value(&env, "SPACED"), Some("v"));
        assert_eq!(env.get("SPACED").map(|v| v.line), Some(11));
        assert_eq!(env.get("NOEQUALS"), None);
        assert_eq!(value(&env, "EMPTY"), Some(""));
        assert_eq!(value(&env, "MULTI"), Some("line1\nline2"));
        assert_eq!(env.get("MULTI").map(|v| v.line), Some(14));
        assert_eq!(env.get("AFTER").map(|v| v.line), Some(16));
        let late = env.get("LATE").expect("LATE");
        assert_eq!(late.value, "second");
        assert_eq!(late.file, PathBuf::from("/etc/app/override"));
        assert_eq!(
            late.via,
            SourceKind::EnvironmentFile {
                unit_file: PathBuf::from("/etc/systemd/system/app.service"),
                unit_line: 3,
                optional: true,
            }
        );
    }

    #[test]
    fn environment_file_reset_glob_and_specifiers() {
        let root = TempRoot::new("envfile-glob");
        root.write(
            "/etc/systemd/system/worker@blue.service",
            "[Service]\n\
             EnvironmentFile=/etc/dropped\n\
             EnvironmentFile=\n\
             EnvironmentFile=/etc/worker/*.env\n\
             EnvironmentFile=-/etc/worker/%i.conf\n\
             EnvironmentFile=relative/path\n",
        );
        root.write("/etc/worker/b.env", "X=b\nFROM_B=1\n");
        root.write("/etc/worker/a.env", "X=a\nFROM_A=1\n");
        root.write("/etc/worker/.hidden.env", "HIDDEN=1\n");
        root.write("/etc/worker/blue.conf", "COLOR=blue\n");
        let env = root.load("worker@blue.service");
        assert_eq!(value(&env, "X"), Some("b"));
        assert_eq!(value(&env, "FROM_A"), Some("1"));
        assert_eq!(env.get("HIDDEN"), None);
        assert_eq!(value(&env, "COLOR"), Some("blue"));
        // The reset removed /etc/dropped, so it is not reported missing.
        assert!(!env.warnings.iter().any(|w| w.contains("/etc/dropped")));
        assert!(env.warnings.iter().any(|w| w.contains("not absolute")));
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
    fn line_continuation_reports_the_starting_line() {
        let root = TempRoot::new("continuation");
        root.write(
            "/etc/systemd/system/cont.service",
            "[Service]\n\
             Environment=A=1 \\\n\
             \x20   B=2 \\\n\
             # a comment inside the continuation is dropped\n\
             \x20   C=3\n\
             Environment=D=ends\\\\\n\
             Environment=E=5\n",
        );
        let env = root.load("cont.service");
        for (name, val) in [("A", "1"), ("B", "2"), ("C", "3")] {
            let src = env.get(name).expect(name);
            assert_eq!(src.value, val);
            assert_eq!(src.line, 2);
        }
        // An escaped backslash at the end is not a continuation.
        assert_eq!(value(&env, "D"), Some("ends\\"));
        assert_eq!(env.get("E").map(|v| v.line), Some(7));
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
    fn symlinks_are_resolved_inside_the_host_root() {
        let root = TempRoot::new("symlinks");
        // Merged /usr: /lib -> usr/lib (relative).
        root.write(
            "/usr/lib/systemd/system/real.service",
            "[Service]\nEnvironment=R=1\n",
        );
        root.symlink("/lib", "usr/lib");
        // An absolute symlink must be followed under the root, not on the tracer's host.
        root.symlink(
            "/etc/systemd/system/linked.service",
            "/lib/systemd/system/real.service",
        );
        root.write("/opt/envs/proxy.env", "HTTPS_PROXY=http://p:1\n");
        root.symlink("/etc/default/linked", "/opt/envs/proxy.env");
        root.write(
            "/etc/systemd/system/linked.service.d/env.conf",
            "[Service]\nEnvironmentFile=/etc/default/linked\n",
        );
        let env = root.load("linked.service");
        assert_eq!(value(&env, "R"), Some("1"));
        let proxy = env
            .get("HTTPS_PROXY")
            .expect("env file through absolute symlink");
        assert_eq!(proxy.file, PathBuf::from("/etc/default/linked"));
        assert!(env
            .warnings
            .iter()
            .any(|w| w.contains("alias of real.service")));
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
    fn other_sections_and_case_are_ignored() {
        let root = TempRoot::new("sections");
        root.write(
            "/etc/systemd/system/s.service",
            "Environment=OUTSIDE=1\n\
             [Unit]\n\
             Environment=UNIT=1\n\
             [Service]\n\
             environment=LOWER=1\n\
             Environment=SERVICE=1\n\
             [Install]\n\
             Environment=INSTALL=1\n\
             [X-Custom]\n\
             Environment=CUSTOM=1\n",
        );
        let env = root.load("s.service");
        let names: Vec<&str> = env.vars.iter().map(|v| v.variable.as_str()).collect();
        assert_eq!(names, ["SERVICE"]);
        assert!(env.warnings.iter().any(|w| w.contains("case-sensitive")));
        assert!(env
            .warnings
            .iter()
            .any(|w| w.contains("outside of any section")));
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

    #[test]
    fn serializes_to_json() {
        let root = TempRoot::new("json");
        root.write(
            "/etc/systemd/system/containerd.service.d/http-proxy.conf",
            INCIDENT_DROPIN,
        );
        root.write(
            "/usr/lib/systemd/system/containerd.service",
            CONTAINERD_UNIT,
        );
        let env = root.load("containerd.service");
        let json = serde_json::to_string(&env.get("HTTPS_PROXY")).expect("json");
        assert!(json.contains("\"line\":3"), "{json}");
        assert!(json.contains("\"via\":\"Environment\""), "{json}");
    }

    #[test]
    fn split_words_matches_extract_first_word() {
        let w = |s: &str| {
            let (words, err) = split_words(s);
            (
                words
                    .into_iter()
                    .map(|w| String::from_utf8_lossy(&w).into_owned())
                    .collect::<Vec<_>>(),
                err,
            )
        };
        assert_eq!(
            w("  a  b\t c "),
            (vec!["a".into(), "b".into(), "c".into()], None)
        );
        assert_eq!(w("\"a b\"c 'd'"), (vec!["a bc".into(), "d".into()], None));
        assert_eq!(w("\"\""), (vec![String::new()], None));
        assert_eq!(w("a \"b"), (vec!["a".into()], Some("unbalanced quote")));
        assert_eq!(w("a b\\"), (vec!["a".into()], Some("trailing backslash")));
        assert_eq!(w("'a\\tb'"), (vec!["a\tb".into()], None));
        assert_eq!(w("\\x00"), (vec![], Some("invalid escape sequence")));
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

    #[test]
    fn fnmatch_basics() {
        assert!(fnmatch(b"*.env", b"a.env"));
        assert!(!fnmatch(b"*.env", b".a.env"));
        assert!(fnmatch(b".*", b".hidden"));
        assert!(fnmatch(b"a?c", b"abc"));
        assert!(fnmatch(b"[a-c]x", b"bx"));
        assert!(!fnmatch(b"[!a-c]x", b"bx"));
        assert!(fnmatch(b"*a*b*", b"xxaYYbzz"));
        assert!(!fnmatch(b"*a*b", b"xxaYYbzz"));
        assert!(fnmatch(b"\\*", b"*"));
        assert!(fnmatch(b"[x", b"[x"));
    }

    #[test]
    fn unit_file_parser_never_panics_on_garbage() {
        let mut warnings = Vec::new();
        for input in [
            &b""[..],
            b"\\",
            b"[",
            b"[Service",
            b"[Service]\n=x\n\\\n",
            b"\xff\xfe[Service]\nEnvironment=\xff\n",
            b"[Service]\nEnvironment=\"unterminated\n",
            b"\r\r\n\0[Service]\0Environment=A=1",
        ] {
            let _ = parse_unit_file(input, "Service", Path::new("/x"), &mut warnings);
            let _ = parse_env_file(input);
        }
        let d = parse_unit_file(
            b"\r\r\n\0[Service]\0Environment=A=1",
            "Service",
            Path::new("/x"),
            &mut warnings,
        );
        assert_eq!(
            d,
            vec![Directive {
                key: "Environment".into(),
                value: "A=1".into(),
                line: 5
            }]
        );
    }
}
