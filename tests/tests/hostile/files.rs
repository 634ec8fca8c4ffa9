//! Files the node's processes choose: a kubelet's `--config` that is
//! `/dev/zero`, a FIFO, or a path that climbs out of the host root; a
//! container whose `/etc/hosts` is a FIFO; a container whose `/etc/hosts`
//! is an absolute symlink. The tracer reads them through `nodefs`
//! (confined to the right root, regular files only, capped, bounded in
//! time), so none of them can park a thread, grow its memory, or bring a
//! secret into its output.

use std::{
    io::Read,
    net::SocketAddr,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    assert_matches_doctor_schema, closed_port, connector_bin, connector_with,
    prometheus::{free_port, http_get},
    rss_kib, sh, temp_dir, terminate, tracer_bin, Tracer,
};

/// How long a doctor may take here: its connects are bounded by
/// `--timeout 2s`; a read of a FIFO or of /dev/zero would never end.
const DOCTOR_BOUND: Duration = Duration::from_secs(30);
/// How much the tracer's resident memory may grow while hostile files are
/// around: reading /dev/zero without a cap grew it by gigabytes.
const RSS_GROWTH_KIB: u64 = 100 * 1024;
/// How soon a connect must show up in the output while the tracer runs.
const EVENT_BOUND: Duration = Duration::from_secs(5);

/// A host root four directories deep, so that a plain join of
/// `../../../../etc/shadow` onto it would land on `base/etc/shadow`; a
/// secret is planted there and in the host root's own `/etc/shadow`.
struct HostRoot {
    base: PathBuf,
    root: PathBuf,
    secrets: Vec<String>,
}

impl HostRoot {
    fn new(tag: &str) -> HostRoot {
        let base = temp_dir(tag);
        let root = base.join("a/b/c/root");
        let secrets = vec![
            format!("OUTSIDE-SHADOW-{}", std::process::id()),
            format!("HOST-SHADOW-{}", std::process::id()),
        ];
        write(
            &base,
            "/etc/shadow",
            &format!("root:{}:19000:0:99999:7:::\n", secrets[0]),
        );
        write(
            &root,
            "/etc/shadow",
            &format!("root:{}:19000:0:99999:7:::\n", secrets[1]),
        );
        write(&root, "/etc/hosts", "127.0.0.1 localhost\n");
        // Plain join of the hostile path really does reach the outside file.
        assert!(std::fs::read_to_string(root.join("../../../../etc/shadow"))
            .expect("escape target")
            .contains(&secrets[0]));
        HostRoot {
            base,
            root,
            secrets,
        }
    }

    fn arg(&self) -> String {
        self.root.display().to_string()
    }
}

impl Drop for HostRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn write(root: &Path, host_path: &str, text: &str) {
    let path = root.join(host_path.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    sh(&format!("mkfifo -m 0666 '{}'", path.display()));
}

/// A finished command: output and how long it took.
struct Run {
    stdout: String,
    stderr: String,
    took: Duration,
    success: bool,
}

/// Run `cmd` with its output collected; kill it and fail if it has not
/// ended within `bound`.
fn run_bounded(cmd: &mut Command, bound: Duration) -> Run {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not return within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    Run {
        stdout: String::from_utf8_lossy(&out.join().expect("stdout reader")).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().expect("stderr reader")).into_owned(),
        took,
        success: status.success(),
    }
}

/// `tracer doctor` with `args`, text and JSON, each within the bound; the
/// JSON report matches its schema. Returns every byte they printed.
fn doctors(args: &[&str]) -> String {
    let mut all = String::new();
    for format in ["text", "json"] {
        let run = run_bounded(
            Command::new(tracer_bin()).arg("doctor").args(args).args([
                "--timeout",
                "2s",
                "--format",
                format,
            ]),
            DOCTOR_BOUND,
        );
        assert!(
            run.success,
            "doctor {args:?} --format {format} failed after {:?}:\n{}\n{}",
            run.took, run.stdout, run.stderr
        );
        if format == "json" {
            let report: Value = serde_json::from_str(&run.stdout)
                .unwrap_or_else(|e| panic!("doctor JSON: {e}\n{}", run.stdout));
            assert_matches_doctor_schema(&report);
        }
        all.push_str(&run.stdout);
        all.push_str(&run.stderr);
    }
    all
}

/// A running tracer with metrics and the periodic doctor every second,
/// and its memory when it became ready.
struct Watched {
    tracer: Tracer,
    metrics: SocketAddr,
    rss_ready: u64,
}

impl Watched {
    fn start(root: &HostRoot) -> Watched {
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let tracer = Tracer::start(&[
            "--host-root",
            &root.arg(),
            "--metrics-addr",
            &metrics.to_string(),
            "--doctor-interval",
            "1s",
        ]);
        let rss_ready = rss_kib(tracer.pid());
        Watched {
            tracer,
            metrics,
            rss_ready,
        }
    }

    fn scrape(&self) -> String {
        let (code, body) = http_get(self.metrics, "/metrics", None);
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Periodic examinations finished so far (ok and error alike).
    fn doctor_runs(&self) -> u64 {
        self.scrape()
            .lines()
            .filter(|l| l.starts_with("tracer_doctor_runs_total"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// The periodic doctor goes on finishing examinations: `more` of them
    /// after now, within 30 s (one a second when nothing hangs).
    fn assert_doctor_keeps_running(&self, more: u64) {
        let from = self.doctor_runs();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.doctor_runs() < from + more {
            assert!(
                Instant::now() < deadline,
                "the periodic doctor stopped finishing: {} runs in 30 s",
                self.doctor_runs() - from
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The events written so far (a line still being written is skipped).
    fn events_now(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.tracer.output)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait (bounded) until the connect of `pid` is in the output.
    fn assert_event_on_time(&self, pid: u32, since: Instant) {
        loop {
            let written = self
                .events_now()
                .iter()
                .any(|e| e["event"]["action"] == "connect" && e["process"]["pid"] == pid);
            if written {
                return;
            }
            assert!(
                since.elapsed() < EVENT_BOUND,
                "the connect of {pid} was not written within {EVENT_BOUND:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An ordinary process's connect still shows up on time.
    fn assert_others_served(&self) {
        let port = closed_port();
        let started = Instant::now();
        let (pid, errnos) = connector(&["tcp", &format!("127.0.0.1:{port}"), "--linger-ms", "200"]);
        assert_eq!(errnos, vec![libc::ECONNREFUSED]);
        self.assert_event_on_time(pid, started);
    }

    fn assert_memory_bounded(&self) {
        let now = rss_kib(self.tracer.pid());
        assert!(
            now < self.rss_ready + RSS_GROWTH_KIB,
            "the tracer grew from {} KiB to {now} KiB",
            self.rss_ready
        );
    }

    /// Stop; every line is valid; nothing anywhere holds a secret.
    fn finish(self, secrets: &[String], also: &str) -> Vec<Value> {
        let metrics = self.scrape();
        let out = self.tracer.stop();
        assert!(out.status.success(), "tracer: {}", out.stderr);
        let everything = format!(
            "{}\n{}\n{metrics}\n{also}",
            serde_json::to_string(&out.events).expect("json"),
            out.stderr
        );
        for secret in secrets {
            assert!(
                !everything.contains(secret.as_str()),
                "{secret} leaked into the tracer's output, metrics or a doctor report"
            );
        }
        out.events
    }
}

fn connector(args: &[&str]) -> (u32, Vec<i32>) {
    connector_with(Command::new(connector_bin()).env_clear().args(args))
}

/// A copy of the test client named `kubelet` (comm is the file's name),
/// run as nobody with `--config=CONFIG` among its arguments; it connects
/// once to a closed port and lingers.
fn fake_kubelet(dir: &Path, config: &str) -> Child {
    let exe = dir.join("kubelet");
    if !exe.exists() {
        std::fs::copy(connector_bin(), &exe).expect("copy connector");
    }
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args([
            "tcp",
            &format!("127.0.0.1:{}", closed_port()),
            "--linger-ms",
            "60000",
            &format!("--config={config}"),
        ])
        .env_clear()
        .stdout(Stdio::null())
        .spawn()
        .expect("start the fake kubelet")
}

/// Unprivileged processes named `kubelet` whose `--config` is a device,
/// a FIFO, and a path that climbs out of the host root. With a plain
/// read, the first grew the doctor by gigabytes until the OOM killer came,
/// the second hung it forever, the third read a file outside the root.
#[test]
fn kubelets_whose_config_is_a_device_a_fifo_or_an_escape() {
    let root = HostRoot::new("kubelet");
    // The node's devices as a host root holds them (a DaemonSet's /host).
    sh(&format!(
        "mkdir -p '{0}/dev' && mknod '{0}/dev/zero' c 1 5",
        root.root.display()
    ));
    mkfifo(&root.root.join("run/kubelet.fifo"));
    let watched = Watched::start(&root);
    let bin = temp_dir("kubelet-bin");
    let mut kubelets: Vec<Child> = ["/dev/zero", "/run/kubelet.fifo", "../../../../etc/shadow"]
        .iter()
        .map(|config| fake_kubelet(&bin, config))
        .collect();
    let pids: Vec<u32> = kubelets.iter().map(Child::id).collect();

    // The periodic doctor (which examines processes named kubelet) keeps
    // finishing while they are there.
    watched.assert_doctor_keeps_running(3);
    let mut reports = String::new();
    for pid in &pids {
        reports += &doctors(&["--host-root", &root.arg(), "--pid", &pid.to_string()]);
    }
    // The whole node, as `tracer doctor` with no arguments scans it.
    reports += &doctors(&["--host-root", &root.arg()]);
    // The real node's root, as an operator runs it, under a memory limit
    // so that a regression fails this test instead of the machine.
    let run = run_bounded(
        Command::new("prlimit")
            .arg("--as=4294967296")
            .arg(tracer_bin())
            .args(["doctor", "--timeout", "2s", "--pid", &pids[0].to_string()]),
        DOCTOR_BOUND,
    );
    assert!(
        run.success,
        "doctor of the /dev/zero kubelet on /: {}",
        run.stderr
    );
    reports += &run.stdout;
    reports += &run.stderr;

    watched.assert_others_served();
    watched.assert_memory_bounded();
    for k in &mut kubelets {
        terminate(k, Duration::from_secs(2));
    }
    let events = watched.finish(&root.secrets, &reports);
    // The kubelets' own connects were traced too.
    for pid in &pids {
        assert!(
            events.iter().any(|e| e["process"]["pid"] == *pid),
            "no event of kubelet {pid}"
        );
    }
}

/// Containers (private mount namespaces) whose `/etc/hosts` is a FIFO, each
/// with its own proxy name. A plain open() of that file parked the
/// resolver's workers forever, so no proxy name on the node resolved any
/// more. Now the FIFO is refused at once, the host's hosts file answers,
/// and later clients whose proxy names are in their hosts files still get
/// their verdicts.
#[test]
fn containers_whose_hosts_file_is_a_fifo_leave_name_resolution_working() {
    let root = HostRoot::new("fifo-hosts");
    let port = closed_port();
    let mut hosts = String::from("127.0.0.1 localhost\n127.0.0.8 control-proxy.example\n");
    for n in 1..=3 {
        hosts += &format!("127.0.0.2{n} fifo-proxy-{n}.example\n");
    }
    write(&root.root, "/etc/hosts", &hosts);
    let fifo_dir = temp_dir("fifo");
    let fifo = fifo_dir.join("hosts");
    mkfifo(&fifo);
    let watched = Watched::start(&root);

    // Each process connects twice, a second apart: the first attempt may
    // be drained before its name is answered (the drain waits 50 ms for
    // it, which a loaded machine can exceed); the second must find it.
    let twice = ["--count", "2", "--interval-ms", "1000"];
    let script = format!(
        "mount --bind '{}' /etc/hosts || exit 97; exec \"$0\" \"$@\"",
        fifo.display()
    );
    let started = Instant::now();
    let containers: Vec<Child> = (1..=3)
        .map(|n| {
            Command::new("unshare")
                .args(["-m", "--propagation", "private", "sh", "-c", &script])
                .arg(connector_bin())
                .args(["tcp", &format!("127.0.0.2{n}:{port}"), "--linger-ms", "500"])
                .args(twice)
                .env_clear()
                .env(
                    "HTTPS_PROXY",
                    format!("http://fifo-proxy-{n}.example:{port}"),
                )
                .stdout(Stdio::null())
                .spawn()
                .expect("start a container")
        })
        .collect();
    let pids: Vec<u32> = containers.iter().map(Child::id).collect();
    for pid in &pids {
        watched.assert_event_on_time(*pid, started);
    }
    for mut c in containers {
        let status = c.wait().expect("container");
        assert!(status.success(), "container: {status}");
    }

    // The controls, after them: a healthy container whose own hosts file
    // names its proxy, and a process in the node's own namespace whose
    // proxy is `localhost` (the node's /etc/hosts, which is its root's).
    let own = temp_dir("own-hosts");
    write(
        &own,
        "/hosts",
        "127.0.0.8 control-proxy.example
",
    );
    let healthy = format!(
        "mount --bind '{}/hosts' /etc/hosts || exit 97; exec \"$0\" \"$@\"",
        own.display()
    );
    let (control, _) = connector_with(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &healthy])
            .arg(connector_bin())
            .env_clear()
            .env(
                "HTTPS_PROXY",
                format!("http://control-proxy.example:{port}"),
            )
            .args(["tcp", &format!("127.0.0.8:{port}"), "--linger-ms", "300"])
            .args(twice),
    );
    let (node, _) = connector_with(
        Command::new(connector_bin())
            .env_clear()
            .env("HTTPS_PROXY", format!("http://localhost:{port}"))
            .args(["tcp", &format!("127.0.0.1:{port}"), "--linger-ms", "300"])
            .args(twice),
    );
    watched.assert_doctor_keeps_running(2);
    let reports = doctors(&["--host-root", &root.arg()]);
    watched.assert_others_served();
    watched.assert_memory_bounded();
    let events = watched.finish(&root.secrets, &reports);

    // The verdict of a process's last attempt.
    let verdict = |pid: u32| -> Value {
        events
            .iter()
            .rev()
            .find(|e| e["event"]["action"] == "connect" && e["process"]["pid"] == pid)
            .unwrap_or_else(|| panic!("no event of {pid}"))["tracer"]["proxy"]
            .clone()
    };
    for (who, pid) in [("healthy container", control), ("node process", node)] {
        let p = verdict(pid);
        assert_eq!(p["via"], true, "{who}: {p}");
    }
    for n in 1..=3 {
        // Every container's name was answered too (from the host's file):
        // its last attempt has the verdict.
        let address = format!("127.0.0.2{n}");
        let last = events
            .iter()
            .rev()
            .find(|e| e["event"]["action"] == "connect" && e["destination"]["ip"] == address)
            .unwrap_or_else(|| panic!("no event to {address}"));
        assert_eq!(
            last["tracer"]["proxy"]["via"], true,
            "container {n}: {last}"
        );
    }
}

/// A container root (chroot in a private mount namespace) whose
/// `/etc/hosts` is an absolute symlink to `/srv/hosts`: the link is
/// followed inside the container's root, as the container's own resolver
/// does. Opened through /proc/<pid>/root with a plain open(), the link was
/// resolved against the tracer's own root instead.
#[test]
fn an_absolute_symlink_in_a_container_resolves_inside_the_container() {
    let root = HostRoot::new("symlink-hosts");
    let port = closed_port();
    // The host's file says something else for the same name, and must lose.
    write(
        &root.root,
        "/etc/hosts",
        "127.0.0.1 localhost\n127.0.0.32 chroot-proxy.example\n",
    );
    let container = temp_dir("chroot");
    write(
        &container,
        "/srv/hosts",
        "127.0.0.31 chroot-proxy.example\n",
    );
    std::fs::create_dir_all(container.join("etc")).expect("mkdir");
    std::fs::create_dir_all(container.join("usr")).expect("mkdir");
    symlink("/srv/hosts", container.join("etc/hosts")).expect("symlink");
    symlink("usr/lib", container.join("lib")).expect("symlink");
    symlink("usr/lib64", container.join("lib64")).expect("symlink");
    std::fs::copy(connector_bin(), container.join("connector")).expect("copy");
    let watched = Watched::start(&root);

    let script = format!(
        "mount --rbind /usr '{0}/usr' || exit 97; exec chroot '{0}' /connector \"$@\"",
        container.display()
    );
    let started = Instant::now();
    let (pid, errnos) = connector_with(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
            .args(["tcp", &format!("127.0.0.31:{port}"), "--linger-ms", "300"])
            .env_clear()
            .env("HTTPS_PROXY", format!("http://chroot-proxy.example:{port}")),
    );
    assert_eq!(errnos, vec![libc::ECONNREFUSED]);
    watched.assert_event_on_time(pid, started);
    let reports = doctors(&["--host-root", &root.arg()]);
    watched.assert_others_served();
    watched.assert_memory_bounded();
    let events = watched.finish(&root.secrets, &reports);
    let ev = events
        .iter()
        .find(|e| e["event"]["action"] == "connect" && e["process"]["pid"] == pid)
        .unwrap_or_else(|| panic!("no event of {pid}"));
    assert_eq!(
        ev["tracer"]["proxy"]["via"], true,
        "the container's own /srv/hosts names 127.0.0.31: {ev}"
    );
}
