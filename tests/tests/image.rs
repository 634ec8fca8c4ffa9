//! The container image and the DaemonSet, end to end: the manifest
//! validates against the Kubernetes schemas, and a real podman runs the
//! image (`cargo xtask image`) the way a kubelet on a cgroup v2 node runs
//! the DaemonSet: its own settings, read from deploy/kubernetes/tracer.yaml
//! (so the manifest and what is tested cannot drift apart), a private
//! cgroup namespace and a pod network namespace of its own. The tracer
//! inside must become ready, trace containerd's dials to a proxy on the
//! node's loopback with the unit, the drop-in's file:line (read through
//! `/host`) and the proxy's answer, and its doctor must find that proxy
//! reachable from where containerd dials it.
//! Run by `cargo xtask test` as root with --test-threads=1.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde::Deserialize as _;
use serde_json::Value;
use tracer_tests::{
    containerd::Containerd,
    prometheus::http_get,
    read_events, temp_dir,
    tinyproxy::{Tinyproxy, TinyproxyOptions},
    NetNs,
};

fn manifest_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/tracer.yaml")
}

/// Every document of the manifest, as JSON values.
fn manifest() -> Vec<Value> {
    let path = manifest_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn daemonset() -> Value {
    manifest()
        .into_iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("the manifest holds a DaemonSet")
}

/// The DaemonSet's pod spec and its one container.
fn pod_and_container() -> (Value, Value) {
    let ds = daemonset();
    let pod = ds["spec"]["template"]["spec"].clone();
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container: the tracer");
    let container = containers[0].clone();
    (pod, container)
}

fn kubernetes_validate(path: &Path) -> std::process::Output {
    Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "-k", "1.33.0"])
        .arg(path)
        .output()
        .expect("python3 (kubernetes-validate is installed by `cargo xtask setup`)")
}

/// The manifest is valid Kubernetes 1.33 with no unknown field, and the
/// validator is strict enough to notice one (a misspelt field in a copy).
#[test]
fn the_manifest_validates_against_kubernetes_1_33() {
    let out = kubernetes_validate(&manifest_path());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate: {text}");
    for kind in [
        "namespace/tracer",
        "serviceaccount/tracer",
        "daemonset/tracer",
        "networkpolicy/tracer",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{kind} checked: {text}"
        );
    }

    let original = std::fs::read_to_string(manifest_path()).expect("manifest");
    let broken = original.replacen("hostPID: true", "hostPid: true", 1);
    assert_ne!(broken, original);
    let dir = temp_dir("k8s");
    let copy = dir.join("tracer.yaml");
    std::fs::write(&copy, broken).expect("write copy");
    let out = kubernetes_validate(&copy);
    assert!(
        !out.status.success(),
        "--strict must reject an unknown field: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The liveness probe asks the metrics port's /livez, and the one
/// NetworkPolicy selects the DaemonSet's pods and admits nothing but TCP to
/// that port.
#[test]
fn liveness_is_probed_and_only_scrapes_are_admitted() {
    let (_, c) = pod_and_container();
    let args = string_list(&c["args"]);
    let addr = flag_value(&args, "--metrics-addr").expect("--metrics-addr");
    let port: u64 = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let live = &c["livenessProbe"]["httpGet"];
    assert_eq!(live["path"], "/livez");
    assert_eq!(
        live["port"].as_u64(),
        Some(port),
        "liveness asks the metrics port"
    );
    let policies: Vec<Value> = manifest()
        .into_iter()
        .filter(|d| d["kind"] == "NetworkPolicy")
        .collect();
    assert_eq!(policies.len(), 1, "one NetworkPolicy");
    let spec = &policies[0]["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"],
        daemonset()["spec"]["template"]["metadata"]["labels"],
        "it selects the tracer's pods"
    );
    assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]));
    let rules = spec["ingress"].as_array().expect("ingress rules");
    assert_eq!(rules.len(), 1, "{rules:?}");
    let ports = rules[0]["ports"].as_array().expect("ports");
    let named = c["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .find(|p| p["containerPort"].as_u64() == Some(port))
        .expect("the metrics port is declared");
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0]["protocol"], "TCP");
    assert!(
        ports[0]["port"] == named["name"] || ports[0]["port"].as_u64() == Some(port),
        "only the metrics port: {ports:?}"
    );
    assert!(
        !rules[0]["from"].as_array().expect("from").is_empty(),
        "from scrapers only, not from everywhere"
    );
}

/// What a node agent for troubleshooting needs, as the issue lists it.
#[test]
fn the_daemonset_runs_on_every_node_with_host_access() {
    let (pod, c) = pod_and_container();
    assert_eq!(pod["hostPID"], true);
    assert_ne!(pod["hostNetwork"], true, "no hostNetwork");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    let tolerations = pod["tolerations"].as_array().expect("tolerations");
    assert!(
        tolerations.iter().any(|t| t["operator"] == "Exists"
            && t.get("key").is_none()
            && t.get("effect").is_none()),
        "tolerates every taint: {tolerations:?}"
    );
    let args = string_list(&c["args"]);
    assert_eq!(args.first().map(String::as_str), Some("trace"));
    assert_eq!(flag_value(&args, "--host-root"), Some("/host"));
    assert_eq!(flag_value(&args, "--events"), Some("notable"));
    assert!(
        !args.iter().any(|a| a == "--output"),
        "JSON lines on stdout"
    );
    let addr = flag_value(&args, "--metrics-addr").expect("--metrics-addr");
    let probe = &c["readinessProbe"]["httpGet"];
    assert_eq!(probe["path"], "/healthz");
    assert_eq!(
        addr.rsplit(':').next(),
        Some(probe["port"].to_string().as_str()),
        "the readiness probe asks the metrics port"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    let host_mount = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == "/host")
        .expect("/host mounted");
    assert_eq!(host_mount["readOnly"], true);
    let volume = volume(&pod, host_mount["name"].as_str().expect("name"));
    assert_eq!(volume["hostPath"]["path"], "/");
    for what in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][what][resource].is_string(),
                "resources.{what}.{resource} set"
            );
        }
    }
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).map(String::as_str)
}

fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("volume {name}"))
}

/// Podman with a storage of its own under a temporary directory, so the
/// test leaves nothing in the machine's container storage. Only with
/// `--runtime runc` (crun refuses this hybrid cgroup layout), and never
/// podman's default network (it would turn on ip_forward and add nft
/// tables to the host): the host's, or a namespace the test made.
struct Podman {
    dir: PathBuf,
    containers: Vec<String>,
}

impl Podman {
    fn new() -> Podman {
        Podman {
            dir: temp_dir("podman"),
            containers: Vec::new(),
        }
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"]);
        cmd
    }

    fn output(&self, args: &[&str]) -> String {
        let out = self
            .cmd()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run podman {args:?}: {e}"));
        assert!(
            out.status.success(),
            "podman {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman run` options every container here gets: the platform's
    /// (runtime, rlimits), the network (`host`, or `ns:/run/netns/NAME`
    /// for a pod network the test made), and a private cgroup namespace,
    /// the CRI default on cgroup v2 nodes.
    fn base_run_args(network: &str) -> Vec<String> {
        [
            "--runtime",
            "runc",
            "--network",
            network,
            "--cgroupns",
            "private",
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=32768:32768",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for name in &self.containers {
            let _ = self
                .cmd()
                .args(["rm", "--force", "--time", "0", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self
            .cmd()
            .args(["rmi", "--all", "--force"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The image archive `cargo xtask image` built (`TRACER_IMAGE`, set by
/// `cargo xtask test`).
fn image_archive() -> PathBuf {
    let path = std::env::var_os("TRACER_IMAGE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tracer-image.tar"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask image` (cargo xtask test does)",
        path.display()
    );
    path
}

/// `podman run` options for the DaemonSet's pod and container settings:
/// hostPID, hostNetwork (else the pod network `pod_netns`), privileges,
/// seccomp, the read-only root, hostPath volumes with their propagation,
/// resources. Panics on a setting it cannot map, so a new setting in the
/// manifest cannot go untested unnoticed.
fn daemonset_run_args(pod: &Value, c: &Value, pod_netns: &NetNs) -> Vec<String> {
    let network = if pod["hostNetwork"] == true {
        "host".to_string()
    } else {
        format!("ns:/run/netns/{}", pod_netns.name)
    };
    let mut args = Podman::base_run_args(&network);
    if pod["hostPID"] == true {
        args.extend(["--pid".into(), "host".into()]);
    }
    let sc = &c["securityContext"];
    if sc["privileged"] == true {
        args.push("--privileged".into());
    }
    for cap in string_list(&sc["capabilities"]["drop"]) {
        args.extend(["--cap-drop".into(), cap.to_lowercase()]);
    }
    for cap in string_list(&sc["capabilities"]["add"]) {
        args.extend(["--cap-add".into(), format!("CAP_{cap}")]);
    }
    if sc["readOnlyRootFilesystem"] == true {
        args.push("--read-only".into());
    }
    if sc["allowPrivilegeEscalation"] == false {
        args.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    match sc["seccompProfile"]["type"].as_str() {
        None | Some("RuntimeDefault") => {}
        Some("Unconfined") => args.extend(["--security-opt".into(), "seccomp=unconfined".into()]),
        Some(other) => panic!("seccompProfile {other} is not mapped to podman"),
    }
    if let Some(uid) = sc["runAsUser"].as_u64() {
        args.extend(["--user".into(), uid.to_string()]);
    }
    for mount in c["volumeMounts"].as_array().into_iter().flatten() {
        let name = mount["name"].as_str().expect("volumeMount name");
        let target = mount["mountPath"].as_str().expect("mountPath");
        let source = volume(pod, name)["hostPath"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("volume {name}: only hostPath volumes are mapped"));
        let mut options = vec![if mount["readOnly"] == true {
            "ro"
        } else {
            "rw"
        }];
        match mount["mountPropagation"].as_str() {
            None | Some("None") => {}
            Some("HostToContainer") => options.push("rslave"),
            Some("Bidirectional") => options.push("rshared"),
            Some(other) => panic!("mountPropagation {other}"),
        }
        args.extend([
            "--volume".into(),
            format!("{source}:{target}:{}", options.join(",")),
        ]);
    }
    let limits = &c["resources"]["limits"];
    if let Some(memory) = limits["memory"].as_str() {
        args.extend(["--memory".into(), podman_memory(memory)]);
    }
    if let Some(cpu) = limits["cpu"].as_str() {
        args.extend(["--cpus".into(), podman_cpus(cpu)]);
    }
    args
}

/// Kubernetes quantity (`256Mi`, `1Gi`) to podman's (`256m`, `1g`).
fn podman_memory(quantity: &str) -> String {
    for (suffix, unit) in [("Ki", "k"), ("Mi", "m"), ("Gi", "g")] {
        if let Some(n) = quantity.strip_suffix(suffix) {
            return format!("{n}{unit}");
        }
    }
    panic!("memory quantity {quantity} is not mapped to podman")
}

/// Kubernetes CPU (`500m`, `1`) to podman's `--cpus` (`0.5`, `1`).
fn podman_cpus(quantity: &str) -> String {
    match quantity.strip_suffix('m') {
        Some(milli) => {
            let m: f64 = milli.parse().expect("millicores");
            format!("{}", m / 1000.0)
        }
        None => quantity.to_string(),
    }
}

/// A drop-in written under the host's own /etc/systemd/system for the test,
/// removed (with the directory, if the test created it) on drop.
struct DropIn {
    path: PathBuf,
    created_dir: bool,
}

impl DropIn {
    fn write(unit: &str, name: &str, text: &str) -> DropIn {
        let dir = Path::new("/etc/systemd/system").join(format!("{unit}.d"));
        let created_dir = !dir.exists();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        DropIn { path, created_dir }
    }
}

impl Drop for DropIn {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if self.created_dir {
            if let Some(dir) = self.path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// The pod's address and the manifest's metrics port, as the kubelet's
/// probe and Prometheus reach it: from the node, over the pod's veth.
fn pod_get(ns: &NetNs, port: u16, path: &str) -> (u16, String) {
    ns.assert_routed();
    let addr = format!("{}:{port}", ns.addr).parse().expect("pod address");
    http_get(addr, path, None)
}

/// Lines of a Prometheus text body that start with `family{` and hold
/// every one of `labels`.
fn series<'a>(body: &'a str, family: &str, labels: &[&str]) -> Vec<&'a str> {
    body.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .collect()
}

/// The DaemonSet, run by podman the way a kubelet on a cgroup v2 node runs
/// it: the manifest's own settings and command line, a private cgroup
/// namespace, and a pod network namespace joined to the node by a veth.
///
/// On the node: tinyproxy on the node's loopback, and containerd (started
/// first, as on a node) in system.slice/containerd.service with the
/// drop-in's HTTPS_PROXY pointing at it. containerd pulls an image from
/// the pod's own address, port 443, where nothing listens: tinyproxy
/// answers its CONNECT with 500.
///
/// From the pod the test sees: containerd's dials carry the unit and the
/// drop-in's file:line (read through /host); the exchange is answered (the
/// CONNECT and the 500), which needs the payload programs attached to the
/// node's `system.slice/containerd.service` though the tracer reads it as
/// `/../../system.slice/containerd.service`; /metrics from the pod's address
/// shows the doctor calling the node-loopback proxy reachable (dialled
/// from containerd's network namespace, not the pod's); /healthz answers
/// 200.
#[test]
fn the_image_runs_as_the_daemonset_and_traces_a_drop_in_proxy() {
    let (pod, c) = pod_and_container();
    let image = c["image"].as_str().expect("image").to_string();
    let podman = Podman::new();
    let loaded = podman.output(&["load", "--input", &image_archive().display().to_string()]);
    assert!(
        loaded.contains(&format!("Loaded image: {image}")),
        "the archive holds the manifest's image {image}: {loaded}"
    );

    // Exactly the manifest's command line.
    let args = string_list(&c["args"]);
    let metrics_port = flag_value(&args, "--metrics-addr")
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse::<u16>().ok())
        .expect("the manifest passes --metrics-addr IP:PORT");

    // The pod's network: its own namespace, a veth to the node.
    let pod_net = NetNs::new(41);

    // The node: a proxy on its loopback, containerd's drop-in at line 3.
    let proxy = Tinyproxy::start(&TinyproxyOptions::default());
    let proxy_url = proxy.url();
    let dropin_name = format!("zz-trt-image-{}.conf", std::process::id());
    let dropin = DropIn::write(
        "containerd.service",
        &dropin_name,
        &format!(
            "[Service]\n# written by tests/tests/image.rs\nEnvironment=\"HTTPS_PROXY={proxy_url}\"\n"
        ),
    );
    let daemon = Containerd::start(&temp_dir("imgctrd"), &[("HTTPS_PROXY", &proxy_url)])
        .unwrap_or_else(|e| panic!("containerd: {e}"));

    let name = format!("trt-image-{}", std::process::id());
    let dir = temp_dir("image");
    let stdout_path = dir.join("stdout.json");
    let stderr_path = dir.join("stderr.txt");
    let mut run = podman.cmd();
    run.arg("run")
        .arg("--rm")
        .args(["--name", &name])
        .args(daemonset_run_args(&pod, &c, &pod_net))
        .arg(&image)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"));
    eprintln!("image test: {run:?}");
    let mut child = run.spawn().expect("podman run");
    let mut podman = podman;
    podman.containers.push(name.clone());

    // Ready: the tracer's own "ready" line (probes attached).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        if stderr.contains("ready") {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the container exited before ready ({status}): {stderr}");
        }
        assert!(Instant::now() < deadline, "not ready after 90 s: {stderr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // It runs in a cgroup namespace of its own, as under a kubelet.
    let inspect = podman.output(&["inspect", "--format", "{{.State.Pid}}", &name]);
    let container_pid: u32 = inspect.trim().parse().expect("container pid");
    let ns_of = |pid: &str, kind: &str| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok();
    assert_ne!(
        ns_of(&container_pid.to_string(), "cgroup"),
        ns_of("self", "cgroup"),
        "--cgroupns private"
    );
    let own_view =
        std::fs::read_to_string(format!("/proc/{container_pid}/cgroup")).unwrap_or_default();
    println!("the pod's /proc/self/cgroup, as the node reads it: {own_view:?}");

    // The manifest's readiness probe, from the node to the pod's address.
    let probe = &c["readinessProbe"]["httpGet"];
    assert_eq!(probe["port"].as_u64(), Some(u64::from(metrics_port)));
    let path = probe["path"].as_str().expect("probe path");
    let (code, body) = pod_get(&pod_net, metrics_port, path);
    assert_eq!(code, 200, "GET {path}: {body}");
    assert!(body.contains("ready"), "readiness answer: {body}");
    // And its liveness probe: the drain is alive.
    let live = &c["livenessProbe"]["httpGet"];
    assert_eq!(live["port"].as_u64(), Some(u64::from(metrics_port)));
    let path = live["path"].as_str().expect("liveness path");
    let (code, body) = pod_get(&pod_net, metrics_port, path);
    assert_eq!(code, 200, "GET {path}: {body}");
    assert!(body.contains("alive"), "liveness answer: {body}");

    // containerd pulls through its proxy; behind it, the pod's address has
    // nothing on 443: tinyproxy answers 500.
    let target = format!("{}:443", pod_net.addr);
    let err = daemon
        .cri_pull(&format!("{}/trt/image:1", pod_net.addr))
        .expect_err("nothing serves the registry");
    println!("containerd: {err}");
    assert!(err.contains("Unable to connect"), "tinyproxy's 500: {err}");
    assert!(
        proxy
            .connect_lines()
            .iter()
            .any(|l| l.starts_with(&format!("CONNECT {target}"))),
        "the proxy saw the CONNECT: {}",
        proxy.log()
    );

    // The doctor, measured from containerd's network namespace (the node's):
    // the node-loopback proxy is reachable.
    let endpoint = format!("127.0.0.1:{}", proxy.port);
    let reachable = ["daemon=\"containerd\"", "unit=\"containerd.service\""];
    let proxy_label = format!("proxy=\"{endpoint}\"");
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let (code, body) = pod_get(&pod_net, metrics_port, "/metrics");
        assert_eq!(code, 200, "/metrics");
        let mut labels = reachable.to_vec();
        labels.push(&proxy_label);
        if let Some(l) = series(&body, "tracer_doctor_proxy_reachable", &labels).first() {
            break l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no doctor series for {endpoint} within 30 s:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    println!("metrics: {line}");
    assert!(
        line.ends_with(" 1"),
        "the node-loopback proxy is reachable: {line}"
    );

    // The kubelet stops a pod with SIGTERM.
    podman.output(&["kill", "--signal", "TERM", &name]);
    let status = tracer_tests::wait_child(
        &mut child,
        Duration::from_secs(30),
        "the container after SIGTERM",
    );
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        status.success(),
        "tracer in the container: {status}: {stderr}"
    );
    // Every line on stdout is a complete event valid against the schema.
    let events = read_events(&stdout_path);
    let dials: Vec<&Value> = events
        .iter()
        .filter(|e| e["process"]["pid"] == daemon.pid)
        .filter(|e| e["destination"]["port"] == proxy.port)
        .collect();
    assert!(
        !dials.is_empty(),
        "no dial of containerd {} to its proxy in {events:#?}\nstderr: {stderr}",
        daemon.pid
    );
    let dropin_path = format!("/etc/systemd/system/containerd.service.d/{dropin_name}");
    for ev in &dials {
        println!("json: {ev}");
        assert_eq!(ev["tracer"]["unit"], "containerd.service");
        assert_eq!(
            ev["tracer"]["cgroup"]["path"], "/system.slice/containerd.service",
            "the node's cgroup path, not the pod's view of it"
        );
        let p = &ev["tracer"]["proxy"];
        assert_eq!(p["variable"], "HTTPS_PROXY");
        assert_eq!(p["via"], true, "{p}");
        assert_eq!(
            p["source"]["file"],
            dropin_path.as_str(),
            "read through /host"
        );
        assert_eq!(p["source"]["line"], 3);
        assert_ne!(p["exchange"], "not_watched", "{ev}");
    }
    let connect = dials
        .iter()
        .find(|e| e["tracer"]["proxy"]["request"]["method"] == "CONNECT")
        .unwrap_or_else(|| panic!("no CONNECT among containerd's dials: {dials:#?}\n{stderr}"));
    let p = &connect["tracer"]["proxy"];
    assert_eq!(p["exchange"], "answered");
    assert_eq!(p["request"]["target"], target.as_str());
    assert_eq!(p["response"]["status_code"], 500, "{connect}");
    let msg = connect["message"].as_str().expect("message");
    assert!(msg.contains(&format!("{dropin_path}:3")), "{msg}");
    drop(daemon);
    drop(dropin);
    let _ = std::fs::remove_dir_all(dir);
}
