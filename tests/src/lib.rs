//! Harness for the privileged integration tests and the benchmark: run the
//! real `tracer` binary, make test hosts in network namespaces, read events.
//!
//! Tests panic with a message rather than returning errors, so a failure
//! shows where it happened.

pub mod bpf_stats;
pub mod containerd;
pub mod mitmproxy;
pub mod pods;
pub mod prometheus;
pub mod registry;
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

/// The incident's drop-in: where a node's containerd gets its proxy.
pub const CONTAINERD_DROPIN: &str = "/etc/systemd/system/containerd.service.d/http-proxy.conf";

/// A host root whose [`CONTAINERD_DROPIN`] sets `vars`, one per line from
/// line 2 (line 1 is `[Service]`).
pub fn dropin_root(vars: &[(&str, &str)]) -> PathBuf {
    let root = temp_dir("dropinroot");
    let path = root.join(CONTAINERD_DROPIN.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let mut text = String::from("[Service]\n");
    for (k, v) in vars {
        text.push_str(&format!("Environment=\"{k}={v}\"\n"));
    }
    std::fs::write(&path, text).expect("write drop-in");
    root
}

/// HTTP_PROXY, HTTPS_PROXY (lines 2 and 3 of a [`dropin_root`]) set to
/// `url`, and NO_PROXY=localhost,127.0.0.1.
pub fn proxy_vars(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HTTP_PROXY", url.to_string()),
        ("HTTPS_PROXY", url.to_string()),
        ("NO_PROXY", "localhost,127.0.0.1".to_string()),
    ]
}

/// `(name, value)` pairs borrowed, as the harnesses take them.
pub fn env_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Copy `file` into `root` (a test's host root) at its own absolute path,
/// so the tracer finds it there as it would on the node.
pub fn mirror_into(root: &Path, file: &Path) {
    let to = root.join(file.strip_prefix("/").expect("an absolute path"));
    std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
    std::fs::copy(file, &to).unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
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
        Self::start_writing_to(None, wrapper, args)
    }

    /// Start writing to `output` (default: events.json in a fresh temp
    /// dir), under `wrapper`, with extra arguments.
    pub fn start_writing_to(output: Option<PathBuf>, wrapper: &[String], args: &[&str]) -> Tracer {
        let dir = temp_dir("tracer");
        let output = output.unwrap_or_else(|| dir.join("events.json"));
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

    /// Ask for the statistics line (SIGUSR1) and return it once written
    /// (waits at most 3 s): `tracer: stats: ...`, with the caches' sizes.
    pub fn stats(&self) -> Option<String> {
        let count = |text: &str| text.matches("tracer: stats:").count();
        let before = count(&std::fs::read_to_string(&self.stderr).unwrap_or_default());
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid() as i32, libc::SIGUSR1) };
        for _ in 0..60 {
            std::thread::sleep(Duration::from_millis(50));
            let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            if count(&stderr) > before {
                return stderr
                    .lines()
                    .rev()
                    .find(|l| l.contains("tracer: stats:"))
                    .map(str::to_string);
            }
        }
        None
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
        let status = wait_child(
            &mut child,
            Duration::from_secs(30),
            "the tracer after SIGINT",
        );
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

/// A schema of schema/, compiled once per test process: the contracts log
/// pipelines and scripts build on.
fn schema(name: &'static str) -> &'static jsonschema::Validator {
    use std::{collections::HashMap, sync::Mutex, sync::OnceLock};
    static SCHEMAS: OnceLock<Mutex<HashMap<&'static str, &'static jsonschema::Validator>>> =
        OnceLock::new();
    let mut schemas = SCHEMAS
        .get_or_init(Default::default)
        .lock()
        .expect("schema cache");
    schemas.entry(name).or_insert_with(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../schema")
            .join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
        // Leaked once per schema file and test process: the validators live
        // as long as the tests.
        Box::leak(Box::new(
            jsonschema::validator_for(&schema).expect("the schema compiles"),
        ))
    })
}

/// Check a document against schema/`name`; panics with every violation.
pub fn assert_matches_schema_file(name: &'static str, document: &Value) {
    let errors: Vec<String> = schema(name)
        .iter_errors(document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "document does not match schema/{name}:\n  {}\ndocument: {document}",
        errors.join("\n  ")
    );
}

/// Check one event against schema/event.schema.json.
pub fn assert_matches_schema(event: &Value) {
    assert_matches_schema_file("event.schema.json", event);
}

/// Check one `tracer doctor --format json` report against its schema.
pub fn assert_matches_doctor_schema(report: &Value) {
    assert_matches_schema_file("doctor.schema.json", report);
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

/// Stop a child of ours: SIGTERM, then SIGKILL if it has not exited
/// within `grace`. Bounded either way.
pub fn terminate(child: &mut Child, grace: Duration) {
    let wait = |child: &mut Child, limit: Duration| {
        let deadline = Instant::now() + limit;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return true,
                Ok(None) if Instant::now() >= deadline => return false,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    };
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    if !wait(child, grace) {
        let _ = child.kill();
        wait(child, Duration::from_secs(5));
    }
}

/// Wait for `child` to exit, at most `limit`; past it, kill it (and reap
/// it) and fail the test naming `what`. Every wait in the tests is bounded.
#[track_caller]
pub fn wait_child(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU time of `pid`, ns: its process CPU clock (clock_getcpuclockid(3)
/// and clock_gettime(2)), which counts every thread it ever had, exited
/// ones included (the kernel folds a thread's run time into its process
/// when it exits). Where that clock cannot be read, the sum over its live
/// threads (/proc/<pid>/task/*/schedstat: time on CPU), which misses the
/// exited ones. 0 when the process is gone.
pub fn cpu_ns(pid: u32) -> u64 {
    let mut clock: libc::clockid_t = 0;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain calls with pointers to our own locals.
    let read = unsafe {
        libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) == 0
            && libc::clock_gettime(clock, &mut ts) == 0
    };
    if read {
        return ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    }
    let mut total = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

/// A process's resident memory, in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
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

/// The documentation ranges test hosts live in (RFC 5737), never eth0's
/// 192.0.2.0/24. Each test host gets a /30 of one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestNet {
    /// 198.51.100.0/24 (TEST-NET-2): the tracer's connect tests.
    Net2,
    /// 203.0.113.0/24 (TEST-NET-3): registries (index 0 is 203.0.113.2).
    Net3,
}

impl TestNet {
    /// The first three octets.
    pub fn prefix(self) -> &'static str {
        match self {
            TestNet::Net2 => "198.51.100",
            TestNet::Net3 => "203.0.113",
        }
    }

    /// The letter that keeps namespace and veth names of the ranges apart
    /// (`t`: trt*/th*/tn*, `r`: trr*/rh*/rn*).
    fn letter(self) -> char {
        match self {
            TestNet::Net2 => 't',
            TestNet::Net3 => 'r',
        }
    }
}

/// Prefixes of the host-side veth names [`NetNs`] makes.
pub const HOST_VETH_PREFIXES: [&str; 2] = ["th", "rh"];

/// A test host: a network namespace joined to this one by a veth pair.
/// [`NetNs::new`]: host side 198.51.100.1/30, namespace side 198.51.100.2
/// (for index 0; index i uses the i-th /30). [`NetNs::new_in`] picks the
/// range. Removed on drop.
pub struct NetNs {
    pub name: String,
    pub host_veth: String,
    /// The test host's address (namespace side).
    pub addr: String,
    /// This side's address on the veth.
    pub host_addr: String,
}

impl NetNs {
    /// A test host in 198.51.100.0/24. `index` keeps concurrently existing
    /// namespaces apart (0..=63).
    pub fn new(index: u8) -> NetNs {
        Self::new_in(TestNet::Net2, index)
    }

    /// A test host in `net`: the /30 number `index` (0..=63), e.g.
    /// `new_in(TestNet::Net3, 0)` is 203.0.113.2 (this side 203.0.113.1).
    pub fn new_in(net: TestNet, index: u8) -> NetNs {
        let prefix = net.prefix();
        let l = net.letter();
        let tag = format!("{}{}", std::process::id() % 100_000, index);
        let name = format!("tr{l}{tag}");
        let host_veth = format!("{l}h{tag}");
        let ns_veth = format!("{l}n{tag}");
        let subnet = index.min(63) * 4;
        let host_ip = format!("{prefix}.{}", subnet + 1);
        let addr = format!("{prefix}.{}", subnet + 2);
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        // A veth left behind by a killed earlier run would hold the same
        // subnet and steal the route: remove whatever holds it.
        for line in sh(&format!("ip -o addr show to {prefix}.{subnet}/30")).lines() {
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
            host_addr: host_ip.clone(),
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

    /// `ip netns exec NAME PROGRAM`: a command that runs inside the test
    /// host (`ip` execs PROGRAM, so the child's pid is PROGRAM's).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Safety: traffic to the test host must leave through our veth, never
    /// through eth0.
    pub fn assert_routed(&self) {
        let dev = route_dev(&self.addr);
        assert!(
            dev.as_deref() == Some(self.host_veth.as_str()),
            "route to {} does not use {} but {dev:?}: {}",
            self.addr,
            self.host_veth,
            sh(&format!("ip route get {}", self.addr))
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

/// The device `ip route get ADDR` sends a packet for `addr` through, if the
/// route is direct (no gateway): None for a routed (`via`) address.
pub fn route_dev(addr: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["route", "get", addr])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.contains(&"via") {
        return None;
    }
    let i = words.iter().position(|w| *w == "dev")?;
    words.get(i + 1).map(|d| d.to_string())
}

/// Whether `addr` is a test host made by [`NetNs`] in this run or another:
/// in one of the [`TestNet`] ranges, and routed directly through a veth
/// whose name [`NetNs`] gives (never eth0).
pub fn is_test_host(addr: &str) -> bool {
    let Ok(ip) = addr.parse::<std::net::Ipv4Addr>() else {
        return false;
    };
    let in_range = [TestNet::Net2, TestNet::Net3].iter().any(|n| {
        let o = ip.octets();
        format!("{}.{}.{}", o[0], o[1], o[2]) == n.prefix()
    });
    if !in_range {
        return false;
    }
    let Some(dev) = route_dev(addr) else {
        return false;
    };
    let ours = HOST_VETH_PREFIXES.iter().any(|p| {
        dev.strip_prefix(p)
            .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()))
    });
    // `ip -d link` names the link kind ("veth") among its details.
    let details = Command::new("ip")
        .args(["-d", "-o", "link", "show", "dev", &dev])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let is_veth = details
        .split(|c: char| c.is_whitespace() || c == '\\')
        .any(|w| w == "veth");
    ours && is_veth && dev != "eth0"
}

/// A process placed in a systemd-like unit cgroup, in both the cgroup v2
/// and the v1 name=systemd hierarchies (the machine is hybrid).
pub struct UnitCgroup {
    dirs: Vec<PathBuf>,
    /// Every folder this created, deepest last (removed in reverse).
    created: Vec<PathBuf>,
}

impl UnitCgroup {
    pub fn new(unit: &str) -> UnitCgroup {
        Self::at(&format!("system.slice/{unit}"))
    }

    /// The cgroup at `rel` (e.g. `user.slice/user-1000.slice/user@1000.service/app.slice/x.service`)
    /// below each hierarchy's root; the folders it creates are removed
    /// again when dropped.
    pub fn at(rel: &str) -> UnitCgroup {
        let (mut dirs, mut created) = (Vec::new(), Vec::new());
        for root in cgroup_roots() {
            let mut dir = root.clone();
            for part in rel.split('/') {
                dir.push(part);
                if !dir.exists() {
                    std::fs::create_dir(&dir)
                        .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                    created.push(dir.clone());
                }
            }
            dirs.push(dir);
        }
        UnitCgroup { dirs, created }
    }

    /// Paths of the `cgroup.procs` files a child writes itself into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// A command that joins the unit's cgroup before exec.
    pub fn command(&self, program: &Path) -> Command {
        command_in_cgroups(program, &self.procs_files())
    }
}

/// A command that writes itself into each of these `cgroup.procs` files
/// between fork and exec, so it runs in those cgroups from its first
/// instruction.
pub fn command_in_cgroups(program: &Path, procs_files: &[PathBuf]) -> Command {
    use std::os::unix::process::CommandExt;
    let files: Vec<std::ffi::CString> = procs_files
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

impl Drop for UnitCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
        for d in self.created.iter().rev() {
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

/// A loopback sink: reads each connection to its end, then closes. With
/// `proxy`, answers the first request head with a 200 like a proxy's
/// CONNECT. Bounded: serves `conns` connections, then its thread ends.
pub fn bulk_server(proxy: bool, conns: usize) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..conns {
            let Ok((mut c, _)) = listener.accept() else {
                return;
            };
            if proxy {
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 4096 {
                    let n = c.read(&mut buf[..512]).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let _ = c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
            }
            while c.read(&mut buf).is_ok_and(|n| n > 0) {}
        }
    });
    port
}
