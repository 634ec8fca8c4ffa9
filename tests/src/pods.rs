//! Pods run the way kubelet runs them: CRI `RunPodSandbox`,
//! `CreateContainer`, `StartContainer` on a real containerd (see
//! [`crate::containerd::Containerd::start_for_pods`]), with the project's
//! CRI client, and ended with `StopPodSandbox` and `RemovePodSandbox`.
//!
//! What a pod needs on this machine (shared/docs/PLATFORM.md):
//! - an image, since none can be pulled: [`busybox_image`] builds one from
//!   scratch with buildah around Debian's static `/bin/busybox`
//!   (busybox-static), whose entrypoint sleeps forever, so it serves as
//!   the sandbox (pause) image too; the containers name their command;
//! - the node's network namespace (no CNI), so the sandbox sets no
//!   hostname; the containers dial loopback only;
//! - the cgroupfs driver with kubelet's pod cgroup
//!   `/kubepods/besteffort/pod<uid>`: a container's processes sit in
//!   `/kubepods/besteffort/pod<uid>/<container id>`, which is how the
//!   tracer finds their container id and pod UID.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use tracer_user::cri::{
    self, ContainerConfig, KeyValue, LinuxContainerConfig, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata,
};

use crate::containerd::Containerd;

/// The image every test pod uses, for its sandbox and its containers.
pub const IMAGE: &str = "localhost/tracer-test/busybox:1.36";
const BUSYBOX: &str = "/bin/busybox";
/// Bound on each CRI call (a sandbox start runs runc twice).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Build [`IMAGE`] into an OCI archive under `dir` and return its path.
pub fn busybox_image(dir: &Path) -> PathBuf {
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} is missing: cargo xtask setup installs busybox-static"
    );
    std::fs::create_dir_all(dir).expect("image dir");
    let buildah = |args: &[&str]| -> String {
        let out = Command::new("buildah")
            .arg("--root")
            .arg(dir.join("storage"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .expect("run buildah (cargo xtask setup installs it)");
        assert!(
            out.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let container = buildah(&["from", "scratch"]);
    buildah(&["copy", "--quiet", &container, BUSYBOX, BUSYBOX]);
    buildah(&[
        "config",
        "--entrypoint",
        r#"["/bin/busybox","sleep","2147483647"]"#,
        &container,
    ]);
    buildah(&["commit", "--quiet", &container, IMAGE]);
    let archive = dir.join("busybox.tar");
    let _ = std::fs::remove_file(&archive);
    buildah(&[
        "push",
        "--quiet",
        IMAGE,
        &format!("oci-archive:{}:{IMAGE}", archive.display()),
    ]);
    buildah(&["rm", "--all"]);
    let _ = std::fs::remove_dir_all(dir.join("storage"));
    let _ = std::fs::remove_dir_all(dir.join("run"));
    archive
}

/// One container of a pod: its name, its shell script (run by busybox sh)
/// and its environment.
pub struct Spec<'a> {
    pub name: &'a str,
    pub script: &'a str,
    pub env: &'a [(&'a str, &'a str)],
}

/// A running pod: removed (StopPodSandbox, RemovePodSandbox) and its pod
/// cgroup deleted when dropped.
pub struct Pod {
    socket: PathBuf,
    pub sandbox: String,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// Container ids, in the order of the specs.
    pub containers: Vec<String>,
    removed: bool,
}

fn runtime() -> tokio::runtime::Runtime {
    crate::containerd::runtime().unwrap_or_else(|e| panic!("{e}"))
}

/// A fresh pod UID (a UUID's shape, from the clock and our pid).
fn new_uid() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let hex = format!("{:032x}", nanos ^ (u128::from(std::process::id()) << 96));
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

impl Pod {
    /// Run pod `namespace/name` with `containers` on `daemon`, as kubelet
    /// would for a `hostNetwork: true`, BestEffort pod.
    pub fn run(daemon: &Containerd, namespace: &str, name: &str, containers: &[Spec]) -> Pod {
        let uid = new_uid();
        let node = NamespaceOption {
            network: NamespaceMode::Node as i32,
            pid: NamespaceMode::Container as i32,
            ipc: NamespaceMode::Pod as i32,
        };
        let sandbox_config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                uid: uid.clone(),
                namespace: namespace.to_string(),
                attempt: 0,
            }),
            hostname: String::new(),
            labels: kubelet_labels(namespace, name, &uid, None),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(node.clone()),
                }),
            }),
        };
        let mut pod = Pod {
            socket: daemon.socket.clone(),
            sandbox: String::new(),
            uid: uid.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            containers: Vec::new(),
            removed: false,
        };
        let socket = daemon.socket.clone();
        let result: Result<(String, Vec<String>), cri::CriError> = runtime().block_on(async {
            tokio::time::timeout(CALL_TIMEOUT * 4, async {
                let client = cri::Client::connect(&socket).await?;
                let sandbox = client.run_pod_sandbox(&sandbox_config).await?;
                let mut ids = Vec::new();
                for spec in containers {
                    let mut config = ContainerConfig::new(spec.name, IMAGE);
                    config.command = vec![BUSYBOX.into(), "sh".into(), "-c".into()];
                    config.args = vec![spec.script.to_string()];
                    config.envs = spec
                        .env
                        .iter()
                        .map(|(k, v)| KeyValue {
                            key: k.to_string(),
                            value: v.to_string(),
                        })
                        .collect();
                    config.labels = kubelet_labels(namespace, name, &uid, Some(spec.name));
                    config.linux = Some(LinuxContainerConfig {
                        security_context: Some(LinuxContainerSecurityContext {
                            namespace_options: Some(node.clone()),
                        }),
                    });
                    let id = client
                        .create_container(&sandbox, &config, &sandbox_config)
                        .await?;
                    client.start_container(&id).await?;
                    ids.push(id);
                }
                Ok((sandbox, ids))
            })
            .await
            .unwrap_or(Err(cri::CriError::Timeout(CALL_TIMEOUT * 4)))
        });
        match result {
            Ok((sandbox, ids)) => {
                pod.sandbox = sandbox;
                pod.containers = ids;
                pod
            }
            Err(e) => panic!(
                "running pod {namespace}/{name}: {e}\n--- containerd log ---\n{}",
                daemon.log_tail(30)
            ),
        }
    }

    /// The pids in container `index`'s cgroup (v1 named hierarchy or v2).
    pub fn pids(&self, index: usize) -> Vec<u32> {
        let Some(id) = self.containers.get(index) else {
            return Vec::new();
        };
        let rel = format!("kubepods/besteffort/pod{}/{id}", self.uid);
        for root in [
            "/sys/fs/cgroup/systemd",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup",
        ] {
            let procs = Path::new(root).join(&rel).join("cgroup.procs");
            if let Ok(text) = std::fs::read_to_string(procs) {
                let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
                if !pids.is_empty() {
                    return pids;
                }
            }
        }
        Vec::new()
    }

    /// StopPodSandbox and RemovePodSandbox, then the pod's cgroup folders
    /// (kubelet's job; runc removes only the containers').
    pub fn remove(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        let socket = self.socket.clone();
        let sandbox = self.sandbox.clone();
        let result = runtime().block_on(async {
            tokio::time::timeout(CALL_TIMEOUT, async {
                let client = cri::Client::connect(&socket).await?;
                client.remove_pod_sandbox(&sandbox).await
            })
            .await
            .unwrap_or(Err(cri::CriError::Timeout(CALL_TIMEOUT)))
        });
        if let Err(e) = result {
            eprintln!("removing pod {}/{}: {e}", self.namespace, self.name);
        }
        remove_pod_cgroups(&self.uid);
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The labels kubelet puts on a pod's sandbox and containers
/// (pkg/kubelet/types/labels.go).
fn kubelet_labels(
    namespace: &str,
    name: &str,
    uid: &str,
    container: Option<&str>,
) -> HashMap<String, String> {
    let mut labels = HashMap::from([
        ("io.kubernetes.pod.name".to_string(), name.to_string()),
        (
            "io.kubernetes.pod.namespace".to_string(),
            namespace.to_string(),
        ),
        ("io.kubernetes.pod.uid".to_string(), uid.to_string()),
    ]);
    if let Some(c) = container {
        labels.insert("io.kubernetes.container.name".into(), c.to_string());
    }
    labels
}

/// `kubepods/besteffort/pod<uid>` in every hierarchy, deepest first, and
/// the `kubepods` parents when they are empty. Bounded retries: rmdir says
/// EBUSY for a moment after the last task exits.
fn remove_pod_cgroups(uid: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut roots: Vec<PathBuf> = hierarchies.flatten().map(|e| e.path()).collect();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    for root in roots {
        let pod = root.join(format!("kubepods/besteffort/pod{uid}"));
        if !pod.is_dir() {
            continue;
        }
        for _ in 0..40 {
            if let Ok(children) = std::fs::read_dir(&pod) {
                for c in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
            if std::fs::remove_dir(&pod).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir(root.join("kubepods/besteffort"));
        let _ = std::fs::remove_dir(root.join("kubepods"));
    }
}
