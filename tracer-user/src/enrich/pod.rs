//! Which Kubernetes pod a container belongs to: its namespace, pod name,
//! container name and image, read from the container runtime's own record
//! of the container, the OCI bundle's `config.json`, through the host root.
//! No API server is asked.
//!
//! The runtimes write the pod's names into the bundle as annotations when
//! kubelet creates the container over CRI:
//! - containerd (`<state>/io.containerd.runtime.v2.task/k8s.io/<id>/config.json`,
//!   state `/run/containerd`, `/run/k3s/containerd` on k3s):
//!   `io.kubernetes.cri.sandbox-namespace`, `…sandbox-name`, `…sandbox-uid`,
//!   `…container-name`, `…image-name`, `…container-type`;
//! - CRI-O (`<runroot>/overlay-containers/<id>/userdata/config.json`, runroot
//!   `/run/containers/storage`): kubelet's labels copied as annotations,
//!   `io.kubernetes.pod.namespace`, `io.kubernetes.pod.name`,
//!   `io.kubernetes.pod.uid`, `io.kubernetes.container.name`, and
//!   `io.kubernetes.cri-o.ImageName`.
//!
//! When no bundle can be read, the runtime is asked over CRI instead
//! (`ContainerStatus`, enrich/pod_cri.rs).
//!
//! A container is looked up once, when the first process of it is seen
//! (announced, or met at its first attempt when it ran before the tracer),
//! never per event. The answer, names or none, is kept while a process
//! snapshot of the container is cached, and forgotten in the sweep after
//! its last one went (`PodNamer::sweep`), so a new container never inherits
//! a gone one's names (container ids are never reused either).
//!
//! The annotations are written by the runtime, but their values come from
//! whoever created the pod: each is bounded in length and checked against
//! Kubernetes' own rules for names, and the file is read with a size cap,
//! as a regular file, without leaving the host root.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::nodefs::{NodeRoot, HOST_CONFIG};

use super::pod_cri::CriNames;

/// The runtimes' state folders searched by default (inside the host root).
pub const DEFAULT_STATE_DIRS: [&str; 3] = [
    "/run/containerd",
    "/run/k3s/containerd",
    "/run/containers/storage",
];

/// The runtimes' CRI sockets asked by default (inside the host root), when
/// a container has no readable bundle.
pub const DEFAULT_CRI_SOCKETS: [&str; 3] = [
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/run/crio/crio.sock",
];

/// An OCI `config.json` is a few KB to a few hundred KB (a large
/// environment, many mounts); 4 MiB bounds what a hostile bundle costs.
const MAX_BUNDLE_BYTES: u64 = 4 * 1024 * 1024;
/// Containers remembered; a node runs at most a few hundred (kubelet's
/// default is 110 pods). Beyond this the cache starts over.
const MAX_CONTAINERS: usize = 4096;
/// Longest namespace, pod or container name Kubernetes accepts (a DNS
/// subdomain, RFC 1123); longer values are not Kubernetes names.
const MAX_NAME: usize = 253;
/// Longest image reference kept (docker's reference grammar has no limit,
/// a repository name is at most 255 characters, a tag 128, a digest ~71).
const MAX_IMAGE: usize = 512;

/// A pod's names for one of its containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNames {
    /// `orchestrator.namespace`.
    pub namespace: String,
    /// `orchestrator.resource.name`.
    pub pod: String,
    /// `container.name`; None for the pod's sandbox (pause) container.
    pub container: Option<String>,
    /// `container.image.*`.
    pub image: Option<ImageRef>,
}

/// An image reference split the way ECS names its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `container.image.name`: the repository, with its registry when the
    /// reference names one (`quay.io/calico/cni`).
    pub name: String,
    /// `container.image.tag`, when the reference has one.
    pub tag: Option<String>,
    /// `container.image.hash.all`, for a reference by digest
    /// (`name@sha256:…`): a digest is no tag, so it is not put there.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Split `registry/repo[:tag][@digest]`. The tag is after the last ':'
    /// of the last path component (a registry's `host:port` is not a tag).
    pub fn parse(reference: &str) -> Option<ImageRef> {
        if reference.is_empty() || reference.len() > MAX_IMAGE {
            return None;
        }
        if !reference
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            return None;
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.to_string())),
            None => (reference, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(colon) => {
                let at = last_slash + colon;
                (&rest[..at], Some(rest[at + 1..].to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() || tag.as_deref() == Some("") || digest.as_deref() == Some("") {
            return None;
        }
        Some(ImageRef {
            name: name.to_string(),
            tag,
            digest,
        })
    }
}

/// The annotations of a bundle; nothing else of the spec is kept (serde
/// skips the rest without building it).
#[derive(Deserialize)]
struct Bundle {
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// Annotation keys of one runtime.
struct Keys {
    namespace: &'static str,
    pod: &'static str,
    uid: &'static str,
    container: &'static str,
    image: &'static str,
}

const CONTAINERD: Keys = Keys {
    namespace: "io.kubernetes.cri.sandbox-namespace",
    pod: "io.kubernetes.cri.sandbox-name",
    uid: "io.kubernetes.cri.sandbox-uid",
    container: "io.kubernetes.cri.container-name",
    image: "io.kubernetes.cri.image-name",
};

const CRIO: Keys = Keys {
    namespace: "io.kubernetes.pod.namespace",
    pod: "io.kubernetes.pod.name",
    uid: "io.kubernetes.pod.uid",
    container: "io.kubernetes.container.name",
    image: "io.kubernetes.cri-o.ImageName",
};

/// The names in a bundle's annotations, if it is a Kubernetes container
/// whose pod UID (when the cgroup names one) is the one annotated: a
/// bundle that disagrees with the kernel's cgroup is not believed.
pub fn names_from_bundle(bytes: &[u8], pod_uid: Option<&str>) -> Option<PodNames> {
    let bundle: Bundle = serde_json::from_slice(bytes).ok()?;
    let a = &bundle.annotations;
    let keys = if a.contains_key(CONTAINERD.pod) {
        &CONTAINERD
    } else {
        &CRIO
    };
    let namespace = a.get(keys.namespace).filter(|n| is_k8s_name(n))?;
    let pod = a.get(keys.pod).filter(|n| is_k8s_name(n))?;
    if let (Some(annotated), Some(seen)) = (a.get(keys.uid), pod_uid) {
        if !annotated.eq_ignore_ascii_case(seen) {
            return None;
        }
    }
    Some(PodNames {
        namespace: namespace.clone(),
        pod: pod.clone(),
        container: a.get(keys.container).filter(|n| is_k8s_name(n)).cloned(),
        image: a.get(keys.image).and_then(|i| ImageRef::parse(i)),
    })
}

/// A name Kubernetes could have given: a DNS subdomain (RFC 1123; lower
/// case letters, digits, '-' and '.'), at most 253 characters. This keeps
/// control characters and quotes of a forged annotation out of the output.
pub(super) fn is_k8s_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// The bundle files a container of `id` may have, per runtime layout.
fn bundle_paths(state_dir: &Path, id: &str) -> [PathBuf; 2] {
    [
        state_dir
            .join("io.containerd.runtime.v2.task/k8s.io")
            .join(id)
            .join("config.json"),
        state_dir
            .join("overlay-containers")
            .join(id)
            .join("userdata/config.json"),
    ]
}

/// container id -> its pod's names (or None: not a pod's container, or no
/// readable bundle), learned once per container.
pub struct PodNamer {
    host_root: PathBuf,
    state_dirs: Vec<PathBuf>,
    /// The answer per container id, and when it was learned.
    known: HashMap<String, (Option<Arc<PodNames>>, Instant)>,
    /// Asks the runtimes over CRI when no bundle can be read.
    cri: Option<CriNames>,
}

/// How long "no names" is believed for a container (not a pod's: a
/// podman or nerdctl container, or a bundle that could not be read) before
/// its next new process asks again.
const NO_NAMES_TTL: Duration = Duration::from_secs(60);

impl PodNamer {
    pub fn new(host_root: PathBuf, state_dirs: Vec<PathBuf>) -> Self {
        Self {
            host_root,
            state_dirs,
            known: HashMap::new(),
            cri: None,
        }
    }

    /// Ask these runtimes (CRI `ContainerStatus`) for containers without
    /// a readable bundle.
    pub fn with_cri(mut self, cri: CriNames) -> Self {
        self.cri = Some(cri);
        self
    }

    /// The names of container `id` (a 64-hex id from the cgroup path), read
    /// from its bundle the first time it is asked for.
    pub fn names_of(&mut self, id: &str, pod_uid: Option<&str>) -> Option<Arc<PodNames>> {
        if let Some((known, _)) = self.known.get(id) {
            return known.clone();
        }
        // The id comes from a cgroup path: only hex digits may reach a
        // path (cgroup.rs checks this too; checked again where it matters).
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let names = self
            .read(id, pod_uid)
            .or_else(|| self.cri.as_ref()?.ask(id, pod_uid))
            .map(Arc::new);
        if self.known.len() >= MAX_CONTAINERS {
            self.known.clear();
        }
        self.known
            .insert(id.to_string(), (names.clone(), Instant::now()));
        names
    }

    fn read(&self, id: &str, pod_uid: Option<&str>) -> Option<PodNames> {
        for dir in &self.state_dirs {
            for path in bundle_paths(dir, id) {
                // The bundle is the runtime's, but what it holds (the
                // image's name, the pod's) came from whoever created the
                // pod: read it like any node file, confined to the host
                // root, regular files only, capped and bounded in time.
                let read = NodeRoot::open(&self.host_root, &HOST_CONFIG)
                    .and_then(|root| root.read(&path, MAX_BUNDLE_BYTES));
                match read {
                    Ok(bytes) => return names_from_bundle(&bytes, pod_uid),
                    Err(e) if e.is_missing() => {}
                    Err(e) => {
                        log::debug!("container {id}: cannot read {}: {e}", path.display());
                    }
                }
            }
        }
        None
    }

    /// Forget the containers no cached process snapshot refers to any
    /// more (their last process exited and was swept: the container is
    /// gone, or idle), and after a while those whose lookup found nothing.
    pub fn sweep(&mut self, now: Instant) {
        self.known.retain(|_, (names, at)| match names {
            Some(n) => Arc::strong_count(n) > 1,
            None => now.saturating_duration_since(*at) < NO_NAMES_TTL,
        });
    }

    /// Containers whose pod names are remembered now (not counting those
    /// remembered as nameless).
    pub fn len(&self) -> usize {
        self.known.values().filter(|(n, _)| n.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "12345678-1234-1234-1234-123456789abc";

    fn containerd_bundle(name: &str, image: &str) -> String {
        format!(
            r#"{{"ociVersion":"1.0.2","process":{{"env":["SECRET=x"]}},"annotations":{{
              "io.kubernetes.cri.container-type":"container",
              "io.kubernetes.cri.container-name":"app",
              "io.kubernetes.cri.image-name":"{image}",
              "io.kubernetes.cri.sandbox-id":"{ID}",
              "io.kubernetes.cri.sandbox-name":"{name}",
              "io.kubernetes.cri.sandbox-namespace":"kube-system",
              "io.kubernetes.cri.sandbox-uid":"{UID}"}}}}"#
        )
    }

    #[test]
    fn containerd_annotations_name_the_pod() {
        let names = names_from_bundle(
            containerd_bundle("calico-node-x7k2p", "quay.io/calico/node:v3.31.3").as_bytes(),
            Some(UID),
        )
        .expect("names");
        assert_eq!(names.namespace, "kube-system");
        assert_eq!(names.pod, "calico-node-x7k2p");
        assert_eq!(names.container.as_deref(), Some("app"));
        let image = names.image.expect("image");
        assert_eq!(image.name, "quay.io/calico/node");
        assert_eq!(image.tag.as_deref(), Some("v3.31.3"));
        assert_eq!(image.digest, None);
    }

    #[test]
    fn crio_annotations_name_the_pod() {
        let bundle = format!(
            r#"{{"annotations":{{"io.kubernetes.pod.namespace":"default",
               "io.kubernetes.pod.name":"web-0","io.kubernetes.pod.uid":"{UID}",
               "io.kubernetes.container.name":"nginx",
               "io.kubernetes.cri-o.ImageName":"docker.io/library/nginx:1.27"}}}}"#
        );
        let names = names_from_bundle(bundle.as_bytes(), None).expect("names");
        assert_eq!(
            (names.namespace.as_str(), names.pod.as_str()),
            ("default", "web-0")
        );
        assert_eq!(names.container.as_deref(), Some("nginx"));
        assert_eq!(names.image.and_then(|i| i.tag).as_deref(), Some("1.27"));
    }

    #[test]
    fn a_bundle_that_disagrees_with_the_cgroup_or_is_not_a_pod_is_not_believed() {
        let bundle = containerd_bundle("p", "busybox");
        assert!(names_from_bundle(
            bundle.as_bytes(),
            Some("99999999-1234-1234-1234-123456789abc")
        )
        .is_none());
        assert!(names_from_bundle(br#"{"annotations":{}}"#, None).is_none());
        assert!(names_from_bundle(br#"{"ociVersion":"1.0.2"}"#, None).is_none());
        assert!(names_from_bundle(b"not json", None).is_none());
        // A forged name with a newline and quotes is no Kubernetes name.
        let forged = containerd_bundle("evil\\n\\\"x", "busybox");
        assert!(names_from_bundle(forged.as_bytes(), None).is_none());
        let long = containerd_bundle(&"a".repeat(254), "busybox");
        assert!(names_from_bundle(long.as_bytes(), None).is_none());
    }

    #[test]
    fn image_references_split_into_name_tag_and_digest() {
        let cases = [
            ("busybox", "busybox", None, None),
            ("busybox:1.36", "busybox", Some("1.36"), None),
            (
                "localhost:5000/acc/img",
                "localhost:5000/acc/img",
                None,
                None,
            ),
            (
                "localhost:5000/acc/img:1",
                "localhost:5000/acc/img",
                Some("1"),
                None,
            ),
            (
                "quay.io/x/y@sha256:abcd",
                "quay.io/x/y",
                None,
                Some("sha256:abcd"),
            ),
            (
                "quay.io/x/y:v1@sha256:abcd",
                "quay.io/x/y",
                Some("v1"),
                Some("sha256:abcd"),
            ),
        ];
        for (reference, name, tag, digest) in cases {
            let r = ImageRef::parse(reference).expect(reference);
            assert_eq!(r.name, name, "{reference}");
            assert_eq!(r.tag.as_deref(), tag, "{reference}");
            assert_eq!(r.digest.as_deref(), digest, "{reference}");
        }
        for bad in ["", "a:", "x@", ":1", "a b", "a\"b", &"a".repeat(600)] {
            assert_eq!(ImageRef::parse(bad), None, "{bad:?}");
        }
    }

    fn temp_root(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tracer-pod-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn bundles_are_read_under_the_host_root_once_per_container_and_swept() {
        let root = temp_root("read");
        let bundle_dir = root.join(format!(
            "run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}"
        ));
        std::fs::create_dir_all(&bundle_dir).expect("mkdir");
        std::fs::write(
            bundle_dir.join("config.json"),
            containerd_bundle("p1", "busybox:1"),
        )
        .expect("write");
        let mut namer = PodNamer::new(root.clone(), vec![PathBuf::from("/run/containerd")]);
        let names = namer.names_of(ID, Some(UID)).expect("names");
        assert_eq!(names.pod, "p1");
        // Cached: a changed file is not read again while the container lives.
        std::fs::write(
            bundle_dir.join("config.json"),
            containerd_bundle("p2", "busybox:1"),
        )
        .expect("write");
        let again = namer.names_of(ID, Some(UID)).expect("names");
        assert!(Arc::ptr_eq(&names, &again));
        // Held by a snapshot: kept; released: forgotten, and read anew.
        let now = Instant::now();
        namer.sweep(now);
        assert_eq!(namer.len(), 1);
        drop((names, again));
        namer.sweep(now);
        assert!(namer.is_empty());
        let held = namer.names_of(ID, Some(UID)).expect("names");
        assert_eq!(held.pod, "p2");
        // Not a hex id: nothing is read.
        assert!(namer.names_of("../../etc", None).is_none());
        // No bundle: "no names" is remembered for a while, then asked again.
        let other = ID.replace('0', "f");
        assert!(namer.names_of(&other, None).is_none());
        namer.sweep(now);
        assert!(namer.known.contains_key(&other));
        assert_eq!(namer.len(), 1, "nameless containers are not counted");
        drop(held);
        namer.sweep(Instant::now() + NO_NAMES_TTL);
        assert!(!namer.known.contains_key(&other));
        let _ = std::fs::remove_dir_all(&root);
    }
}
