//! A real containerd daemon for end-to-end tests, started "the way systemd
//! would", and a CRI client that asks the **daemon** to pull an image.
//!
//! * The daemon is Debian's `containerd` package (1.6.x; `apt-get install -y
//!   containerd`). Its config is `containerd config default`, edited so that
//!   root, state, temp, the gRPC and ttrpc sockets, the `opt` plugin and the
//!   CNI folders all live under the test's own folder: nothing is written to
//!   `/var/lib/containerd`, `/run/containerd`, `/opt` or `/etc/cni`.
//! * Like a systemd service, it starts in a new session with an **empty**
//!   environment plus `PATH` and the variables the test gives (for example
//!   `HTTPS_PROXY`), and it is put into the cgroup
//!   `system.slice/containerd.service` **before it execs**: in the cgroup v1
//!   named hierarchy `/sys/fs/cgroup/systemd` (`name=systemd`) and in the
//!   cgroup v2 hierarchy (`/sys/fs/cgroup/unified` on a hybrid host,
//!   `/sys/fs/cgroup` on a pure v2 host). So `/proc/<pid>/cgroup` of the
//!   daemon reads like a real node's, from its very first instruction.
//! * [`Containerd::cri_pull`] calls `ImageService/PullImage` over the daemon's
//!   unix socket with the library's CRI client (`tracer_user::cri`, the one
//!   `tracer preflight` uses). The pull, and so the proxy decision, happens
//!   inside the daemon.
//!
//! CRI API version: containerd 1.6.20 (Debian 12) serves **both**
//! `runtime.v1` and `runtime.v1alpha2` (checked: `Version` answers on both,
//! `runtime_api_version` "v1" and "v1alpha2"). This module uses `runtime.v1`
//! and falls back to `runtime.v1alpha2` only if the daemon answers
//! UNIMPLEMENTED (older containerd). The request and response messages used
//! here are wire-identical in both versions.
//!
//! Network safety: [`Containerd::cri_pull`] refuses to pull from a registry
//! that is not on loopback unless either
//! * the daemon's `HTTPS_PROXY` and `HTTP_PROXY` both point at a loopback
//!   address and `NO_PROXY` names nothing but loopback: the daemon then
//!   dials only that loopback proxy; or
//! * the registry is one of the tests' own hosts ([`crate::is_test_host`]:
//!   an address in a test range that `ip route get` sends directly through
//!   a veth named like [`crate::NetNs`]'s, never eth0), and any proxy set is
//!   on loopback: the daemon then dials that host or the loopback proxy.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tracer_user::cri;

/// The unit's cgroup, relative to each hierarchy's root.
pub const CGROUP_REL: &str = "system.slice/containerd.service";
/// systemd's default `PATH` for services.
const SYSTEMD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const START_TIMEOUT: Duration = Duration::from_secs(20);
const PULL_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);
const LOG_TAIL_LINES: usize = 40;

const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Which CRI API the daemon answered on.
pub use tracer_user::cri::Api as CriApi;

/// A running containerd daemon. Dropping it stops the daemon (SIGTERM, then
/// SIGKILL), kills what is left of its own in its cgroup (processes whose
/// command line names its folder, e.g. shims), unmounts anything left under
/// its folder and removes its cgroup folders if they are empty. The folder
/// itself (with `containerd.log`) is left to its owner.
pub struct Containerd {
    /// The daemon's pid (containerd itself: it is exec'd directly).
    pub pid: u32,
    /// The daemon's gRPC unix socket (`<dir>/containerd.sock`).
    pub socket: PathBuf,
    /// The folder given to [`Containerd::start`].
    pub dir: PathBuf,
    /// The generated config (`<dir>/config.toml`).
    pub config: PathBuf,
    /// The daemon's stdout+stderr (`<dir>/containerd.log`).
    pub log: PathBuf,
    /// The `system.slice/containerd.service` folder in each hierarchy used.
    pub cgroups: Vec<PathBuf>,
    /// The CRI API the daemon answered `Version` on.
    pub cri_api: CriApi,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

/// Extra configuration for [`Containerd::start_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Options<'a> {
    /// Registries (host or host:port, as in the image reference) whose TLS
    /// certificate is not verified: each adds
    /// `[plugins."io.containerd.grpc.v1.cri".registry.configs."HOST".tls]`
    /// `insecure_skip_verify = true` (e.g. a test registry with a
    /// self-signed certificate).
    pub insecure_registries: &'a [&'a str],
    /// Registries whose certificate is verified against a CA file: each
    /// adds `[...registry.configs."HOST".tls] ca_file = "FILE"` (containerd
    /// adds the file to the system pool).
    pub ca_files: &'a [(&'a str, &'a Path)],
}

impl Containerd {
    /// [`Containerd::start_with`] with default [`Options`].
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Result<Containerd, String> {
        Self::start_with(dir, env, &Options::default())
    }

    /// Start containerd as root under `dir` (a fresh folder; created if
    /// missing) with an empty environment plus `PATH` and `env`, inside the
    /// cgroup `system.slice/containerd.service`. Returns once the CRI
    /// `Version` call answers on the socket (at most 20 s), else an error
    /// that includes the tail of containerd's log.
    pub fn start_with(
        dir: &Path,
        env: &[(&str, &str)],
        options: &Options,
    ) -> Result<Containerd, String> {
        Self::start_inner(dir, env, options, None)
    }

    /// [`Containerd::start`] ready to run pods over CRI the way kubelet
    /// does (see `crate::pods`): `sandbox_image` (imported with
    /// [`Containerd::import`] before the first pod) and
    /// `restrict_oom_score_adj = true` (this sandbox lacks CAP_SYS_RESOURCE,
    /// so the pause container's negative oom_score_adj would fail).
    pub fn start_for_pods(
        dir: &Path,
        env: &[(&str, &str)],
        sandbox_image: &str,
    ) -> Result<Containerd, String> {
        Self::start_inner(dir, env, &Options::default(), Some(sandbox_image))
    }

    /// `ctr -a SOCK -n k8s.io images import ARCHIVE`: an image CRI can use.
    pub fn import(&self, archive: &Path) -> Result<(), String> {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(archive)
            .output()
            .map_err(|e| format!("run ctr: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ctr images import {} failed: {}",
                archive.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// The daemon's state folder (`<dir>/state`): OCI bundles live in
    /// `io.containerd.runtime.v2.task/k8s.io/<id>` below it.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn start_inner(
        dir: &Path,
        env: &[(&str, &str)],
        options: &Options,
        sandbox_image: Option<&str>,
    ) -> Result<Containerd, String> {
        if unsafe { libc::geteuid() } != 0 {
            return Err("containerd harness: must run as root".into());
        }
        let bin = find_in_path("containerd", SYSTEMD_PATH).ok_or_else(|| {
            "containerd not found in PATH (install it: apt-get install -y containerd)".to_string()
        })?;
        fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let dir =
            fs::canonicalize(dir).map_err(|e| format!("canonicalize {}: {e}", dir.display()))?;
        let socket = dir.join("containerd.sock");
        // sun_path is 108 bytes; containerd also binds "<socket>.ttrpc".
        if socket.as_os_str().len() + ".ttrpc".len() >= 108 {
            return Err(format!(
                "socket path too long for a unix socket: {}",
                socket.display()
            ));
        }
        // A socket that answers belongs to another daemon on this folder; a
        // dead one is stale. Either way ours must not be confused with it.
        if socket.exists() {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Err(format!("another process is serving {}", socket.display()));
            }
            fs::remove_file(&socket)
                .map_err(|e| format!("remove stale {}: {e}", socket.display()))?;
        }
        for sub in ["root", "state", "tmp", "opt", "cni/bin", "cni/net.d"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| format!("create {sub}: {e}"))?;
        }

        // 1. Config: `containerd config default`, paths moved under `dir`.
        let out = Command::new(&bin)
            .args(["config", "default"])
            .env_clear()
            .env("PATH", SYSTEMD_PATH)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run `containerd config default`: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`containerd config default` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let default =
            String::from_utf8(out.stdout).map_err(|e| format!("config not UTF-8: {e}"))?;
        let mut config_text = edit_config(&default, &dir)?;
        if let Some(image) = sandbox_image {
            config_text = pod_config(&config_text, image)?;
        }
        config_text.push_str(&registry_tables(options)?);
        let config = dir.join("config.toml");
        fs::write(&config, config_text).map_err(|e| format!("write {}: {e}", config.display()))?;

        // 2. The cgroup, in each hierarchy, made before the fork.
        let cgroups = cgroup_dirs()?;
        let mut procs_files = Vec::new();
        for cg in &cgroups {
            fs::create_dir_all(cg).map_err(|e| format!("create cgroup {}: {e}", cg.display()))?;
            let f = cg.join("cgroup.procs");
            procs_files.push(CString::new(f.as_os_str().as_bytes()).expect("no NUL in path"));
        }

        // 3. Spawn: empty env + PATH + the given vars, new session, own cgroup.
        let log = dir.join("containerd.log");
        let log_file =
            fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| format!("dup log fd: {e}"))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(&config)
            .arg("--log-level")
            .arg("info")
            .env_clear()
            .env("PATH", SYSTEMD_PATH)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: the hook only calls async-signal-safe functions (setsid,
        // open, write, close) on memory prepared before the fork; it does not
        // allocate.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                for p in &procs_files {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // "0" = the writing process itself (cgroup v1 and v2).
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    let err = io::Error::last_os_error();
                    libc::close(fd);
                    if n != 1 {
                        return Err(err);
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn containerd in {CGROUP_REL}: {e}"))?;

        let mut me = Containerd {
            pid: child.id(),
            socket,
            dir,
            config,
            log,
            cgroups,
            cri_api: CriApi::V1,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: Some(child),
        };

        // 4. Wait (bounded) until CRI answers on the socket.
        match me.wait_ready() {
            Ok(api) => {
                me.cri_api = api;
                Ok(me)
            }
            Err(e) => {
                let msg = format!(
                    "containerd did not become ready: {e}\n--- tail of {} ---\n{}",
                    me.log.display(),
                    me.log_tail(LOG_TAIL_LINES)
                );
                drop(me); // stop it, clean the cgroups
                Err(msg)
            }
        }
    }

    fn wait_ready(&mut self) -> Result<CriApi, String> {
        let rt = runtime()?;
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::from("socket not there yet");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("containerd exited early: {status}"));
                }
            }
            if let Some(peer) = socket_peer_pid(&self.socket) {
                if peer != self.pid as libc::pid_t {
                    return Err(format!(
                        "{} is served by pid {peer}, not by our containerd",
                        self.socket.display()
                    ));
                }
                let left = deadline.saturating_duration_since(Instant::now());
                let socket = self.socket.clone();
                let call = async move {
                    let client = cri::Client::connect(&socket).await?;
                    client.version().await
                };
                match rt.block_on(async { tokio::time::timeout(left, call).await }) {
                    Ok(Ok((api, _version))) => return Ok(api),
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "CRI Version call timed out".into(),
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no answer within {:?}; last: {last}",
                    START_TIMEOUT
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ask the daemon to pull `image` through CRI (`ImageService/PullImage`
    /// on [`Containerd::socket`]), bounded by 30 s. `Err` is the gRPC status
    /// message verbatim (e.g. `failed to pull and unpack image ...: proxyconnect
    /// tcp: dial tcp 127.0.0.1:7897: connect: connection refused`), or a
    /// harness message for transport errors, timeouts and refused pulls.
    ///
    /// Refuses (network safety) unless the registry is on loopback, or the
    /// daemon's HTTPS_PROXY and HTTP_PROXY are loopback and NO_PROXY names only
    /// loopback, or the registry is a test host (see the module doc) and any
    /// proxy set is on loopback.
    pub fn cri_pull(&self, image: &str) -> Result<(), String> {
        check_pull_is_loopback_only(image, &self.env)?;
        let rt = runtime()?;
        let socket = self.socket.clone();
        let image = image.to_string();
        rt.block_on(async move {
            let client = cri::Client::connect(&socket)
                .await
                .map_err(|e| format!("CRI transport error: {e}"))?;
            match client.pull(&image, PULL_TIMEOUT).await {
                Ok(_) => Ok(()),
                Err(cri::CriError::Status { message, .. }) => Err(message),
                Err(cri::CriError::Timeout(_)) => Err(format!(
                    "CRI PullImage of {image} timed out after {PULL_TIMEOUT:?}"
                )),
                Err(e) => Err(format!("CRI transport error: {e}")),
            }
        })
    }

    /// The last `n` lines of containerd's log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::terminate(&mut child, STOP_GRACE);
        }
        // Anything of ours left in the unit's cgroup: shims (if a test ran a
        // container) carry `-address <our socket>` on their command line.
        // Other processes there (another harness instance, running in
        // parallel) are left alone.
        let mut dir = self.dir.as_os_str().as_bytes().to_vec();
        dir.push(b'/');
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut any = false;
            for cg in &self.cgroups {
                for pid in read_procs(cg) {
                    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    if cmdline.windows(dir.len()).any(|w| w == dir.as_slice()) {
                        any = true;
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            if !any || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Mounts left under our folder (snapshots of an interrupted unpack).
        for m in mounts_under(&self.dir) {
            if let Ok(c) = CString::new(m.as_os_str().as_bytes()) {
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        // The cgroup folders, if empty. rmdir can say EBUSY for a moment
        // after the last task exits: retry briefly.
        for cg in &self.cgroups {
            let deadline = Instant::now() + Duration::from_secs(2);
            while cg.exists()
                && read_procs(cg).is_empty()
                && fs::remove_dir(cg).is_err()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some(slice) = cg.parent() {
                let _ = fs::remove_dir(slice); // only succeeds if empty
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// Config

/// Edit the text of `containerd config default` (1.6, config version 2).
/// Every replaced key must be found, so a layout change fails loudly.
fn edit_config(default: &str, dir: &Path) -> Result<String, String> {
    let d = |s: &str| toml_str(&dir.join(s));
    let edits: Vec<(&str, &str, String)> = vec![
        ("", "root", d("root")),
        ("", "state", d("state")),
        ("", "temp", d("tmp")),
        ("grpc", "address", d("containerd.sock")),
        ("ttrpc", "address", d("containerd.sock.ttrpc")),
        (
            "plugins.\"io.containerd.internal.v1.opt\"",
            "path",
            d("opt"),
        ),
        (
            "plugins.\"io.containerd.grpc.v1.cri\".cni",
            "bin_dir",
            d("cni/bin"),
        ),
        (
            "plugins.\"io.containerd.grpc.v1.cri\".cni",
            "conf_dir",
            d("cni/net.d"),
        ),
    ];
    let mut done = vec![false; edits.len()];
    let mut section = String::new();
    let mut out = String::with_capacity(default.len() + 512);
    for line in default.lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            section = t
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .to_string();
        }
        let mut replaced = false;
        if let Some((k, _)) = t.split_once('=') {
            let k = k.trim();
            for (i, (sec, key, val)) in edits.iter().enumerate() {
                if section == *sec && k == *key {
                    let indent = &line[..line.len() - line.trim_start().len()];
                    out.push_str(&format!("{indent}{key} = {val}\n"));
                    done[i] = true;
                    replaced = true;
                    break;
                }
            }
        }
        if !replaced {
            out.push_str(line);
            out.push('\n');
        }
    }
    if let Some(i) = done.iter().position(|x| !x) {
        let (sec, key, _) = &edits[i];
        return Err(format!(
            "`containerd config default` has no `{key}` in [{sec}]: unknown config layout"
        ));
    }
    Ok(out)
}

/// The CRI settings a pod needs here (see [`Containerd::start_for_pods`]).
fn pod_config(text: &str, sandbox_image: &str) -> Result<String, String> {
    if !sandbox_image
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "./:-_@".contains(c))
    {
        return Err(format!("not an image reference: {sandbox_image:?}"));
    }
    let mut found = [false; 2];
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let key = line.trim().split('=').next().unwrap_or("").trim();
        match key {
            "sandbox_image" => {
                out.push_str(&format!("{indent}sandbox_image = \"{sandbox_image}\"\n"));
                found[0] = true;
            }
            "restrict_oom_score_adj" => {
                out.push_str(&format!("{indent}restrict_oom_score_adj = true\n"));
                found[1] = true;
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if found != [true, true] {
        return Err("the config has no sandbox_image or restrict_oom_score_adj".into());
    }
    Ok(out)
}

/// The tables [`Options`] adds at the end of the config (TOML lets a
/// sub-table of `registry.configs` follow the rest of the file).
fn registry_tables(options: &Options) -> Result<String, String> {
    let mut out = String::new();
    // A host goes into a TOML key between quotes: only host characters.
    let check = |host: &str| {
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        {
            return Err(format!("not a registry host: {host:?}"));
        }
        Ok(())
    };
    for host in options.insecure_registries {
        check(host)?;
        out.push_str(&format!(
            "\n[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"{host}\".tls]\n  \
             insecure_skip_verify = true\n"
        ));
    }
    for (host, file) in options.ca_files {
        check(host)?;
        out.push_str(&format!(
            "\n[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"{host}\".tls]\n  \
             ca_file = {}\n",
            toml_str(file)
        ));
    }
    Ok(out)
}

fn toml_str(p: &Path) -> String {
    let s = p.to_string_lossy();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn find_in_path(name: &str, path: &str) -> Option<PathBuf> {
    path.split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------
// cgroups

fn fs_magic(p: &str) -> Option<i64> {
    let c = CString::new(p).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_type as i64)
}

/// `system.slice/containerd.service` in the name=systemd v1 hierarchy and in
/// the v2 hierarchy, whichever of them this host mounts.
fn cgroup_dirs() -> Result<Vec<PathBuf>, String> {
    let mut v = Vec::new();
    if fs_magic("/sys/fs/cgroup/systemd") == Some(CGROUP_SUPER_MAGIC) {
        v.push(PathBuf::from("/sys/fs/cgroup/systemd").join(CGROUP_REL));
    }
    if fs_magic("/sys/fs/cgroup/unified") == Some(CGROUP2_SUPER_MAGIC) {
        v.push(PathBuf::from("/sys/fs/cgroup/unified").join(CGROUP_REL));
    } else if fs_magic("/sys/fs/cgroup") == Some(CGROUP2_SUPER_MAGIC) {
        v.push(PathBuf::from("/sys/fs/cgroup").join(CGROUP_REL));
    }
    if v.is_empty() {
        return Err("no name=systemd or cgroup v2 hierarchy mounted under /sys/fs/cgroup".into());
    }
    Ok(v)
}

/// The pid of the process listening on a unix socket (SO_PEERCRED), if it
/// accepts a connection.
fn socket_peer_pid(socket: &Path) -> Option<libc::pid_t> {
    use std::os::fd::AsRawFd;
    let s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.pid)
}

fn read_procs(cg: &Path) -> Vec<libc::pid_t> {
    fs::read_to_string(cg.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v
}

fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn tail(path: &Path, n: usize) -> String {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("(no log: {e})"),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| match l.char_indices().nth(400) {
            Some((i, _)) => format!("{}...", &l[..i]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------
// Network safety

fn env_any<'a>(env: &'a [(String, String)], names: &[&str]) -> Option<&'a str> {
    // Go's httpproxy.FromEnvironment: first non-empty of the names, in order.
    names.iter().find_map(|n| {
        env.iter()
            .find(|(k, v)| k == n && !v.is_empty())
            .map(|(_, v)| v.as_str())
    })
}

fn host_is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Host of `host[:port]` / `[v6]:port`.
fn split_host(hostport: &str) -> &str {
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => hostport,
    }
}

/// The registry host of an image reference (docker.io when none is named).
fn registry_host(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            split_host(first).to_string()
        }
        _ => "docker.io".to_string(),
    }
}

fn proxy_host(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.split('/').next().unwrap_or(rest);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    split_host(rest)
}

fn check_pull_is_loopback_only(image: &str, env: &[(String, String)]) -> Result<(), String> {
    check_pull(image, env, crate::is_test_host)
}

/// The check, with the test-host predicate as a parameter (unit tests).
fn check_pull(
    image: &str,
    env: &[(String, String)],
    is_test_host: impl Fn(&str) -> bool,
) -> Result<(), String> {
    let reg = registry_host(image);
    if host_is_loopback(&reg) {
        return Ok(()); // Go never proxies loopback; the daemon dials loopback.
    }
    if is_test_host(&reg) {
        // Direct dials reach our own namespace; a proxy must be loopback.
        for name in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
            if let Some(p) = env_any(env, &[name]) {
                if !host_is_loopback(proxy_host(p)) {
                    return Err(format!(
                        "refusing to pull {image} (network safety: {name}={p} is not loopback)"
                    ));
                }
            }
        }
        return Ok(());
    }
    let refuse = |why: String| {
        Err(format!(
            "refusing to pull {image} (network safety: registry {reg} is not loopback and {why}); \
             start containerd with HTTPS_PROXY and HTTP_PROXY on 127.0.0.1"
        ))
    };
    for (upper, lower) in [("HTTPS_PROXY", "https_proxy"), ("HTTP_PROXY", "http_proxy")] {
        match env_any(env, &[upper, lower]) {
            None => return refuse(format!("{upper} is not set")),
            Some(p) if !host_is_loopback(proxy_host(p)) => {
                return refuse(format!("{upper}={p} is not loopback"))
            }
            Some(_) => {}
        }
    }
    if let Some(np) = env_any(env, &["NO_PROXY", "no_proxy"]) {
        for e in np.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let host = e.split('/').next().unwrap_or(e); // CIDR: check the address part
            if !host_is_loopback(split_host(host)) {
                return refuse(format!("NO_PROXY entry {e:?} may bypass the proxy"));
            }
        }
    }
    Ok(())
}

/// A current-thread tokio runtime for the CRI client's calls.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("build tokio runtime: {e}"))
}

#[cfg(test)]
mod unit {
    use super::*;

    fn env(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn registry_hosts() {
        assert_eq!(registry_host("quay.io/calico/cni:v3.31.3"), "quay.io");
        assert_eq!(registry_host("busybox"), "docker.io");
        assert_eq!(registry_host("library/busybox:1"), "docker.io");
        assert_eq!(registry_host("127.0.0.1:5000/x/y:1"), "127.0.0.1");
        assert_eq!(registry_host("localhost/x"), "localhost");
        assert_eq!(registry_host("[::1]:5000/x"), "::1");
    }

    #[test]
    fn pull_guard() {
        let img = "quay.io/calico/cni:v3.31.3";
        assert!(check_pull_is_loopback_only(img, &env(&[])).is_err());
        assert!(check_pull_is_loopback_only(
            img,
            &env(&[("HTTPS_PROXY", "http://127.0.0.1:7897")])
        )
        .is_err());
        let ok = [
            ("HTTPS_PROXY", "http://127.0.0.1:7897"),
            ("HTTP_PROXY", "http://127.0.0.1:7897"),
        ];
        assert!(check_pull_is_loopback_only(img, &env(&ok)).is_ok());
        let mut with_np = ok.to_vec();
        with_np.push(("NO_PROXY", "localhost,127.0.0.1,127.0.0.0/8,::1"));
        assert!(check_pull_is_loopback_only(img, &env(&with_np)).is_ok());
        with_np.push(("no_proxy", "ignored-because-upper-wins"));
        assert!(check_pull_is_loopback_only(img, &env(&with_np)).is_ok());
        let bad = [
            ("HTTPS_PROXY", "http://10.0.0.1:7897"),
            ("HTTP_PROXY", "http://127.0.0.1:7897"),
        ];
        assert!(check_pull_is_loopback_only(img, &env(&bad)).is_err());
        let np = [
            ("HTTPS_PROXY", "127.0.0.1:7897"),
            ("HTTP_PROXY", "http://u:p@[::1]:7897"),
            ("NO_PROXY", "quay.io"),
        ];
        assert!(check_pull_is_loopback_only(img, &env(&np)).is_err());
        assert!(check_pull_is_loopback_only("127.0.0.1:5000/x:1", &env(&[])).is_ok());
    }

    #[test]
    fn pull_guard_test_hosts() {
        let ours = |h: &str| h == "203.0.113.2";
        let img = "203.0.113.2/acc/img:1";
        let proxy = [
            ("HTTPS_PROXY", "http://127.0.0.1:7897"),
            ("HTTP_PROXY", "http://127.0.0.1:7897"),
            ("NO_PROXY", "localhost,127.0.0.1"),
        ];
        assert!(check_pull(img, &env(&proxy), ours).is_ok());
        assert!(check_pull(img, &env(&[("NO_PROXY", "203.0.113.2")]), ours).is_ok());
        assert!(check_pull(img, &env(&[]), ours).is_ok());
        let far = [("HTTPS_PROXY", "http://10.1.1.1:3128")];
        assert!(check_pull(img, &env(&far), ours).is_err());
        // Not one of ours: the loopback-only rule.
        assert!(check_pull("203.0.113.6/acc/img:1", &env(&[]), ours).is_err());
        assert!(check_pull("203.0.113.6/acc/img:1", &env(&proxy), ours).is_ok());
        // Without a namespace, 203.0.113.2 routes via eth0's gateway: never
        // a test host. (Skipped while some test's namespace holds it.)
        let route = crate::sh("ip route get 203.0.113.2");
        if route.contains(" via ") {
            assert!(!crate::is_test_host("203.0.113.2"), "{route}");
        }
        assert!(!crate::is_test_host("192.0.2.1"));
        assert!(!crate::is_test_host("127.0.0.1"));
    }

    #[test]
    fn insecure_registry_tables() {
        let t = registry_tables(&Options {
            insecure_registries: &["203.0.113.2"],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            t,
            "\n[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"203.0.113.2\".tls]\n  \
             insecure_skip_verify = true\n"
        );
        assert!(registry_tables(&Options {
            insecure_registries: &["a\"]\nx"],
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn config_edit() {
        let out = Command::new("containerd")
            .args(["config", "default"])
            .output();
        let Ok(out) = out else { return };
        let text = String::from_utf8(out.stdout).unwrap();
        let edited = edit_config(&text, Path::new("/tmp/x")).unwrap();
        assert!(edited.contains("root = \"/tmp/x/root\""));
        assert!(edited.contains("address = \"/tmp/x/containerd.sock\""));
        assert!(edited.contains("address = \"/tmp/x/containerd.sock.ttrpc\""));
        assert!(!edited.contains("/var/lib/containerd"));
        assert!(!edited.contains("/run/containerd"));
        assert!(!edited.contains("/opt/"));
        assert!(!edited.contains("/etc/cni"));
    }

    #[test]
    fn mount_unescape() {
        assert_eq!(unescape_mount("/a\\040b"), "/a b");
    }
}
