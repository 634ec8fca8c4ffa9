//! Pods named on their attempts: real pods, run the way kubelet runs them
//! (CRI RunPodSandbox, CreateContainer, StartContainer on Debian's
//! containerd 1.6; `tracer_tests::pods`), whose containers dial loopback
//! with busybox nc. The tracer names them from containerd's OCI bundles
//! (`--runtime-state`, the test daemon's state folder, read through the
//! host root `/`). Privileged; run under the shared lock:
//!
//! ```text
//! cargo test --release -p tracer-tests --test pods --no-run
//! flock /tmp/tracer-itest.lock env TRACER_BIN=$PWD/target/release/tracer \
//!     cargo test --release -p tracer-tests --test pods -- --test-threads=1
//! ```

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    assert_matches_schema, closed_port,
    containerd::Containerd,
    pods::{busybox_image, Pod, Spec, IMAGE},
    temp_dir, Tracer,
};

/// A containerd ready for pods, with the busybox image imported.
struct Node {
    daemon: Containerd,
    _dir: PathBuf,
}

impl Node {
    fn start(tag: &str) -> Node {
        let dir = temp_dir(tag);
        let archive = busybox_image(&dir.join("image"));
        let daemon = Containerd::start_for_pods(&dir.join("ctrd"), &[], IMAGE)
            .unwrap_or_else(|e| panic!("containerd: {e}"));
        daemon
            .import(&archive)
            .unwrap_or_else(|e| panic!("import: {e}"));
        Node { daemon, _dir: dir }
    }

    /// `tracer trace` that finds this daemon's bundles, plus `extra`.
    fn tracer(&self, extra: &[&str]) -> Tracer {
        let state = self.daemon.state_dir();
        let state = state.to_str().expect("utf8 path");
        let mut args = vec!["--runtime-state", state];
        args.extend_from_slice(extra);
        Tracer::start(&args)
    }
}

/// A container that dials `127.0.0.1:port` with busybox nc every 0.2 s,
/// at most 300 times (the test removes the pod long before).
fn dialler(
    name: &'static str,
    port: u16,
    env: &'static [(&'static str, &'static str)],
) -> Spec<'static> {
    let script = format!(
        "i=0; while [ $i -lt 300 ]; do /bin/busybox nc 127.0.0.1 {port} </dev/null; i=$((i+1)); /bin/busybox sleep 0.2; done"
    );
    Spec {
        name,
        script: Box::leak(script.into_boxed_str()),
        env,
    }
}

/// The complete lines written so far, each valid against the schema.
fn events_so_far(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| {
            let e: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert_matches_schema(&e);
            e
        })
        .collect()
}

/// Connect events of container `id`.
fn of_container<'a>(events: &'a [Value], id: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["event"]["action"] == "connect" && e["container"]["id"] == id)
        .collect()
}

/// Wait (at most 30 s) until `tracer` wrote `n` attempts of container `id`.
fn wait_for_attempts(tracer: &Tracer, id: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = events_so_far(&tracer.output);
        if of_container(&events, id).len() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {n} attempts of container {id} within 30 s; {} events: {:?}",
            events.len(),
            events.last()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every attempt of `pod`'s container `index` carries the pod's names.
fn assert_named(events: &[Value], pod: &Pod, index: usize, container: &str) -> usize {
    let id = &pod.containers[index];
    let attempts = of_container(events, id);
    assert!(!attempts.is_empty(), "no attempt of container {id}");
    let who = format!("{}/{} (container {container})", pod.namespace, pod.name);
    for e in &attempts {
        assert_eq!(e["orchestrator"]["type"], "kubernetes", "{e}");
        assert_eq!(
            e["orchestrator"]["namespace"],
            pod.namespace.as_str(),
            "{e}"
        );
        assert_eq!(e["orchestrator"]["resource"]["type"], "pod", "{e}");
        assert_eq!(
            e["orchestrator"]["resource"]["name"],
            pod.name.as_str(),
            "{e}"
        );
        assert_eq!(e["container"]["name"], container, "{e}");
        assert_eq!(
            e["container"]["image"]["name"], "localhost/tracer-test/busybox",
            "{e}"
        );
        assert_eq!(e["container"]["image"]["tag"], "1.36", "{e}");
        assert_eq!(e["tracer"]["pod_uid"], pod.uid.as_str(), "{e}");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(message.contains(&who), "{who} not in {message}");
    }
    attempts.len()
}

/// Print the first line about container `id` as written (with
/// --nocapture: the README's example comes from here).
fn print_first_line(output: &Path, id: &str) {
    let text = std::fs::read_to_string(output).unwrap_or_default();
    if let Some(line) = text.lines().find(|l| l.contains(id)) {
        println!("{line}");
    }
}

/// Wait (at most 20 s) until container `index` of `pod` runs a process.
fn wait_running(pod: &Pod, index: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while pod.pids(index).is_empty() {
        assert!(
            Instant::now() < deadline,
            "container {index} of {} not running",
            pod.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_pod_started_before_the_tracer_is_named_on_its_attempts() {
    let node = Node::start("pods-before");
    let port = closed_port();
    let pod = Pod::run(
        &node.daemon,
        "tracer-before",
        "dialler",
        &[dialler("dial", port, &[])],
    );
    wait_running(&pod, 0);
    // The container has been dialling for a while before the tracer starts.
    std::thread::sleep(Duration::from_secs(1));
    let tracer = node.tracer(&[]);
    // Another tracer that cannot read the bundles asks containerd over
    // CRI (ContainerStatus) instead.
    let socket = node.daemon.socket.to_str().expect("utf8 path").to_string();
    let over_cri = Tracer::start(&[
        "--runtime-state",
        "/nonexistent-runtime-state",
        "--runtime-endpoint",
        &socket,
    ]);
    wait_for_attempts(&tracer, &pod.containers[0], 3);
    wait_for_attempts(&over_cri, &pod.containers[0], 3);
    print_first_line(&tracer.output, &pod.containers[0]);
    let stopped = tracer.stop();
    let n = assert_named(&stopped.events, &pod, 0, "dial");
    assert_named(&over_cri.stop().events, &pod, 0, "dial");
    let refused = of_container(&stopped.events, &pod.containers[0])
        .iter()
        .filter(|e| e["tracer"]["result"] == "refused" && e["destination"]["port"] == port)
        .count();
    assert_eq!(refused, n, "every attempt is the container's refused dial");
}

#[test]
fn a_pod_started_after_the_tracer_is_named_and_filtered_by_namespace_and_pod() {
    let node = Node::start("pods-after");
    let all = node.tracer(&[]);
    let filtered = node.tracer(&["--namespace", "tracer-after", "--pod", "web"]);
    let port = closed_port();
    let web = Pod::run(
        &node.daemon,
        "tracer-after",
        "web",
        &[dialler("app", port, &[])],
    );
    // The same pod name in another namespace, another pod in the namespace.
    let elsewhere = Pod::run(
        &node.daemon,
        "tracer-else",
        "web",
        &[dialler("app", port, &[])],
    );
    let api = Pod::run(
        &node.daemon,
        "tracer-after",
        "api",
        &[dialler("app", port, &[])],
    );
    for pod in [&web, &elsewhere, &api] {
        wait_for_attempts(&all, &pod.containers[0], 3);
    }
    wait_for_attempts(&filtered, &web.containers[0], 3);
    let all = all.stop();
    let filtered = filtered.stop();
    for pod in [&web, &elsewhere, &api] {
        assert_named(&all.events, pod, 0, "app");
    }
    assert_named(&filtered.events, &web, 0, "app");
    for e in filtered
        .events
        .iter()
        .filter(|e| e["event"]["action"] == "connect")
    {
        assert_eq!(
            e["container"]["id"],
            web.containers[0].as_str(),
            "--namespace/--pod let through {e}"
        );
    }
}

#[test]
fn a_pods_proxy_verdict_holds_and_its_message_names_the_pod() {
    let node = Node::start("pods-proxy");
    let tracer = node.tracer(&[]);
    // A dead proxy on loopback, named by the pod spec's env.
    let port = closed_port();
    let proxy: &'static str = Box::leak(format!("http://127.0.0.1:{port}").into_boxed_str());
    let env: &'static [(&str, &str)] = Box::leak(Box::new([("HTTPS_PROXY", proxy)]));
    let pod = Pod::run(
        &node.daemon,
        "tracer-proxy",
        "puller",
        &[dialler("pull", port, env)],
    );
    wait_for_attempts(&tracer, &pod.containers[0], 3);
    print_first_line(&tracer.output, &pod.containers[0]);
    let stopped = tracer.stop();
    assert_named(&stopped.events, &pod, 0, "pull");
    for e in of_container(&stopped.events, &pod.containers[0]) {
        assert_eq!(e["tracer"]["proxy"]["via"], true, "{e}");
        assert_eq!(e["tracer"]["proxy"]["variable"], "HTTPS_PROXY", "{e}");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!(
                "(pid {}, tracer-proxy/puller (container pull)) could not reach its HTTPS proxy 127.0.0.1:{port}: connection refused",
                e["process"]["pid"]
            )),
            "{message}"
        );
    }
}

/// The number in `pods' containers N` of the tracer's statistics line.
fn pods_remembered(tracer: &Tracer) -> Option<usize> {
    tracer
        .stats()?
        .split("pods' containers ")
        .nth(1)?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn a_removed_pod_leaves_no_stale_names() {
    let node = Node::start("pods-stale");
    let tracer = node.tracer(&[]);
    let port = closed_port();
    let mut first = Pod::run(
        &node.daemon,
        "tracer-stale-a",
        "first",
        &[dialler("one", port, &[])],
    );
    wait_for_attempts(&tracer, &first.containers[0], 3);
    first.remove();
    let second = Pod::run(
        &node.daemon,
        "tracer-stale-b",
        "second",
        &[dialler("two", port, &[])],
    );
    wait_for_attempts(&tracer, &second.containers[0], 3);
    // The first pod's container is forgotten once its processes are
    // (5 s after they exit): only the second's names are kept.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = pods_remembered(&tracer);
        if n == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "containers remembered: {n:?}");
        std::thread::sleep(Duration::from_millis(700));
    }
    let stopped = tracer.stop();
    assert_named(&stopped.events, &first, 0, "one");
    let n = assert_named(&stopped.events, &second, 0, "two");
    assert!(n >= 3);
    for e in stopped
        .events
        .iter()
        .filter(|e| e["event"]["action"] == "connect")
    {
        let named_first = e["orchestrator"]["resource"]["name"] == "first";
        assert_eq!(
            named_first,
            e["container"]["id"] == first.containers[0].as_str(),
            "names of one container on another's attempt: {e}"
        );
    }
}
