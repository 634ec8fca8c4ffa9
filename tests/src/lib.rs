//! Harness for the privileged integration tests and the benchmark: run the
//! real `tracer` binary, make test hosts in network namespaces, read events.
//!
//! Tests panic with a message rather than returning errors, so a failure
//! shows where it happened.

pub mod containerd;
pub mod tinyproxy;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

/// The tracer under test: `TRACER_BIN` (set by `cargo xtask test`), else
/// the workspace's release build.
pub fn tracer_bin() -> PathBuf {
    std::env::var_os("TRACER_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tracer"),
        PathBuf::from,
    )
}

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under /tmp, short enough for unix socket paths.
pub fn temp_dir(tag: &str) -> PathBuf {
    let n = UNIQUE.fetch_add(1, Ordering::SeqCst);
    let dir = PathBuf::from(format!("/tmp/trt-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// A running `tracer trace`, writing JSON lines to a file.
pub struct Tracer {
    child: Option<Child>,
    pub output: PathBuf,
    pub stderr: PathBuf,
    _dir: PathBuf,
}

pub struct Stopped {
    pub events: Vec<Value>,
    pub stderr: String,
    pub status: std::process::ExitStatus,
}

/// A `sh -c` script that runs the tracer the way a node that has just
/// booted (or a DaemonSet pod) would: in a private mount namespace without
/// tracefs or debugfs. It refuses to run the tracer if either is still
/// mounted there, so a test can never pass by accident on a machine where
/// someone mounted them.
pub const FRESH_NODE: &str = "umount /sys/kernel/tracing 2>/dev/null; \
    umount /sys/kernel/debug/tracing 2>/dev/null; \
    umount /sys/kernel/debug 2>/dev/null; \
    if grep -qE ' - (tracefs|debugfs) ' /proc/self/mountinfo; then \
        echo 'FRESH_NODE: tracefs or debugfs is still mounted' >&2; exit 98; \
    fi; \
    exec \"$0\" \"$@\"";

/// `unshare -m --propagation private sh -c SCRIPT`: run the tracer in a
/// mount namespace of its own, prepared by SCRIPT, which must end with
/// `exec "$0" "$@"` (the tracer and its arguments).
pub fn in_private_mounts(script: &str) -> Vec<String> {
    [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Tracer {
    /// Start with extra arguments and wait (at most 60 s) for "ready".
    pub fn start(args: &[&str]) -> Tracer {
        Self::start_wrapped(&[], args)
    }

    /// Start under `wrapper` (a command that execs its arguments, such as
    /// `in_private_mounts(FRESH_NODE)`), so the process that gets SIGINT
    /// is the tracer itself.
    pub fn start_wrapped(wrapper: &[String], args: &[&str]) -> Tracer {
        let dir = temp_dir("tracer");
        let output = dir.join("events.json");
        let stderr = dir.join("stderr.txt");
        let err_file = std::fs::File::create(&stderr).expect("create stderr file");
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(tracer_bin());
                cmd
            }
            None => Command::new(tracer_bin()),
        };
        let child = cmd
            .arg("trace")
            .arg("--output")
            .arg(&output)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", tracer_bin().display()));
        let mut tracer = Tracer {
            child: Some(child),
            output,
            stderr,
            _dir: dir,
        };
        tracer.wait_ready();
        tracer
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            if text.contains("ready") {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("tracer exited before ready ({status}): {text}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "tracer not ready after 60 s: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGINT, wait (at most 30 s), read every line. Each line must be JSON.
    pub fn stop(self) -> Stopped {
        let output = self.output.clone();
        let (status, stderr) = self.stop_raw();
        let events = read_events(&output);
        Stopped {
            events,
            stderr,
            status,
        }
    }

    /// SIGINT and wait; returns the exit status and stderr.
    pub fn stop_raw(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().expect("tracer running");
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("tracer did not stop within 30 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        (status, stderr)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The event schema (schema/event.schema.json), compiled once: the
/// contract log pipelines build on.
fn event_schema() -> &'static jsonschema::Validator {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/event.schema.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("the schema compiles")
    })
}

/// Check one event against the schema; panics with every violation.
pub fn assert_matches_schema(event: &Value) {
    let errors: Vec<String> = event_schema()
        .iter_errors(event)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "event does not match schema/event.schema.json:\n  {}\nevent: {event}",
        errors.join("\n  ")
    );
}

/// Parse a JSON-lines file; every line must be complete JSON, and valid
/// against schema/event.schema.json (every integration test reads its
/// events through here, so every line they produce is checked).
pub fn read_events(path: &Path) -> Vec<Value> {
    let file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    BufReader::new(file)
        .lines()
        .map(|line| {
            let line = line.expect("read line");
            let event: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert_matches_schema(&event);
            event
        })
        .collect()
}

/// Connect-attempt events of one process.
pub fn attempts_of(events: &[Value], pid: u32) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["event"]["action"] == "connect" && e["process"]["pid"] == pid)
        .collect()
}

/// Run the test client; returns (pid, the errno it printed per attempt).
pub fn connector(args: &[&str]) -> (u32, Vec<i32>) {
    connector_with(Command::new(connector_bin()).args(args))
}

/// The `connector` test client, built next to the test binary (integration
/// tests live in target/release/deps, the bench binary in target/release).
pub fn connector_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("connector")
}

pub fn connector_with(cmd: &mut Command) -> (u32, Vec<i32>) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start connector");
    let pid = child.id();
    let out = child.wait_with_output().expect("connector output");
    assert!(out.status.success(), "connector failed: {:?}", out.status);
    let errnos = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("errno ")?.parse().ok())
        .collect();
    (pid, errnos)
}

/// A loopback TCP port with nothing listening (bound then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{cmd}`: {e}"));
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test host: a network namespace joined to this one by a veth pair.
/// Host side 198.51.100.1/30 + 2001:db8::1, namespace side 198.51.100.2 +
/// 2001:db8::2 (documentation ranges, never eth0's 192.0.2.0/24). Removed
/// on drop.
pub struct NetNs {
    pub name: String,
    pub host_veth: String,
    pub addr: String,
}

impl NetNs {
    /// `index` keeps concurrently existing namespaces apart (0..=63).
    pub fn new(index: u8) -> NetNs {
        let tag = format!("{}{}", std::process::id() % 100_000, index);
        let name = format!("trt{tag}");
        let host_veth = format!("th{tag}");
        let ns_veth = format!("tn{tag}");
        let subnet = index.min(63) * 4;
        let host_ip = format!("198.51.100.{}", subnet + 1);
        let addr = format!("198.51.100.{}", subnet + 2);
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        // A veth left behind by a killed earlier run would hold the same
        // subnet and steal the route: remove whatever holds it.
        for line in sh(&format!("ip -o addr show to 198.51.100.{subnet}/30")).lines() {
            if let Some(dev) = line.split_whitespace().nth(1) {
                let dev = dev.split('@').next().unwrap_or(dev);
                let _ = Command::new("ip").args(["link", "del", dev]).status();
            }
        }
        sh(&format!("ip netns add {name}"));
        let ns = NetNs {
            name: name.clone(),
            host_veth: host_veth.clone(),
            addr: addr.clone(),
        };
        sh(&format!(
            "ip link add {host_veth} type veth peer name {ns_veth}"
        ));
        sh(&format!("ip link set {ns_veth} netns {name}"));
        sh(&format!("ip addr add {host_ip}/30 dev {host_veth}"));
        sh(&format!("ip link set {host_veth} up"));
        sh(&format!("ip -n {name} addr add {addr}/30 dev {ns_veth}"));
        sh(&format!("ip -n {name} link set {ns_veth} up"));
        sh(&format!("ip -n {name} link set lo up"));
        ns.assert_routed();
        ns
    }

    /// Safety: traffic to the test host must leave through our veth, never
    /// through eth0.
    pub fn assert_routed(&self) {
        let route = sh(&format!("ip route get {}", self.addr));
        assert!(
            route.contains(&format!("dev {}", self.host_veth)),
            "route to {} does not use {}: {route}",
            self.addr,
            self.host_veth
        );
    }

    /// Drop every SYN to `port` in the test host: attempts there stay in
    /// SYN_SENT until the client gives up.
    pub fn drop_syns(&self, port: u16) {
        self.nft(&format!(
            "table inet t {{\n chain input {{\n  type filter hook input priority 0;\n  tcp dport {port} drop\n }}\n}}"
        ));
    }

    /// Load an nftables ruleset inside the namespace.
    pub fn nft(&self, ruleset: &str) {
        let path = temp_dir("nft").join("rules.nft");
        std::fs::write(&path, ruleset).expect("write nft rules");
        sh(&format!(
            "ip netns exec {} nft -f {}",
            self.name,
            path.display()
        ));
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace destroys the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .stderr(Stdio::null())
            .status();
    }
}

/// A process placed in a systemd-like unit cgroup, in both the cgroup v2
/// and the v1 name=systemd hierarchies (the machine is hybrid).
pub struct UnitCgroup {
    dirs: Vec<PathBuf>,
}

impl UnitCgroup {
    pub fn new(unit: &str) -> UnitCgroup {
        let mut dirs = Vec::new();
        for root in cgroup_roots() {
            let dir = root.join("system.slice").join(unit);
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            dirs.push(dir);
        }
        UnitCgroup { dirs }
    }

    /// Paths of the `cgroup.procs` files a child writes itself into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// A command that joins the unit's cgroup before exec.
    pub fn command(&self, program: &Path) -> Command {
        use std::os::unix::process::CommandExt;
        let files: Vec<std::ffi::CString> = self
            .procs_files()
            .iter()
            .map(|p| std::ffi::CString::new(p.to_string_lossy().as_bytes()).expect("cstring"))
            .collect();
        let mut cmd = Command::new(program);
        // SAFETY: only async-signal-safe calls (open/write/close) between
        // fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                for f in &files {
                    let fd = libc::open(f.as_ptr(), libc::O_WRONLY);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                    if n != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd
    }
}

impl Drop for UnitCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for candidate in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"] {
        if Path::new(candidate).join("cgroup.procs").exists() {
            roots.push(PathBuf::from(candidate));
        }
    }
    if roots.is_empty() {
        roots.push(PathBuf::from("/sys/fs/cgroup"));
    }
    roots
}
