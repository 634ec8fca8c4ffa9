//! The pod's names from the runtime over CRI, when no OCI bundle of the
//! container can be read (a runtime whose state folder is elsewhere, a
//! host root without /run): CRI `ContainerStatus` carries kubelet's labels
//! (`io.kubernetes.pod.namespace`, `…pod.name`, `…pod.uid`,
//! `…container.name`) and the image.
//!
//! Asked on a worker thread of its own (gRPC needs an async runtime, and a
//! slow runtime must not stall the drain): the pipeline waits at most
//! [`ASK_WAIT`] per container, once, when the container's first process is
//! seen; never per event. A late answer is dropped, and the container is
//! remembered as nameless for a while (enrich/pod.rs).

use std::{
    path::PathBuf,
    sync::mpsc::{self, Receiver, Sender, SyncSender},
    time::Duration,
};

use crate::cri::{Client, ContainerStatus};

use super::pod::{is_k8s_name, ImageRef, PodNames};

/// How long a container's first process waits for the runtime's answer.
pub const ASK_WAIT: Duration = Duration::from_millis(150);
/// Bound on one connect or call on the worker.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Requests queued at most; beyond, a container goes unnamed rather than
/// queue behind a stuck runtime.
const QUEUE: usize = 64;

type Reply = Sender<Option<PodNames>>;

/// The handle of the worker that asks the runtimes.
pub struct CriNames {
    requests: SyncSender<(String, Option<String>, Reply)>,
}

impl CriNames {
    /// Start the worker for these CRI sockets (paths on this machine).
    pub fn spawn(sockets: Vec<PathBuf>) -> std::io::Result<Self> {
        let (requests, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("cri-names".into())
            .spawn(move || worker(&sockets, &rx))?;
        Ok(Self { requests })
    }

    /// The names of container `id`, if a runtime answers within
    /// [`ASK_WAIT`] and its labels agree with the cgroup's pod UID.
    pub fn ask(&self, id: &str, pod_uid: Option<&str>) -> Option<PodNames> {
        let (reply, answer) = mpsc::channel();
        self.requests
            .try_send((id.to_string(), pod_uid.map(str::to_string), reply))
            .ok()?;
        answer.recv_timeout(ASK_WAIT).ok().flatten()
    }
}

fn worker(sockets: &[PathBuf], requests: &Receiver<(String, Option<String>, Reply)>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        log::warn!("cannot start the CRI worker: pods are named from bundles only");
        return;
    };
    let mut clients: Vec<Option<Client>> = sockets.iter().map(|_| None).collect();
    while let Ok((id, pod_uid, reply)) = requests.recv() {
        let names = rt.block_on(ask_all(sockets, &mut clients, &id, pod_uid.as_deref()));
        // The asker may have stopped waiting: nothing to do then.
        let _ = reply.send(names);
    }
}

async fn ask_all(
    sockets: &[PathBuf],
    clients: &mut [Option<Client>],
    id: &str,
    pod_uid: Option<&str>,
) -> Option<PodNames> {
    for (socket, client) in sockets.iter().zip(clients.iter_mut()) {
        if client.is_none() {
            *client = tokio::time::timeout(CALL_TIMEOUT, Client::connect(socket))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let Some(c) = client.as_ref() else {
            continue;
        };
        match tokio::time::timeout(CALL_TIMEOUT, c.container_status(id)).await {
            Ok(Ok(status)) => return names_from_status(&status, pod_uid),
            // Not this runtime's container, or the runtime went away: try
            // the next, and connect again next time.
            Ok(Err(crate::cri::CriError::Status { .. })) => {}
            _ => *client = None,
        }
    }
    None
}

/// The names in kubelet's labels of a container's status.
pub fn names_from_status(status: &ContainerStatus, pod_uid: Option<&str>) -> Option<PodNames> {
    let label = |key: &str| status.labels.get(key).filter(|v| is_k8s_name(v));
    let namespace = label("io.kubernetes.pod.namespace")?;
    let pod = label("io.kubernetes.pod.name")?;
    if let (Some(labelled), Some(seen)) = (status.labels.get("io.kubernetes.pod.uid"), pod_uid) {
        if !labelled.eq_ignore_ascii_case(seen) {
            return None;
        }
    }
    let container = label("io.kubernetes.container.name").cloned().or_else(|| {
        status
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .filter(|n| is_k8s_name(n))
    });
    Some(PodNames {
        namespace: namespace.clone(),
        pod: pod.clone(),
        container,
        image: status.image().and_then(ImageRef::parse),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_labels_name_the_pod_unless_the_uid_disagrees() {
        let status = ContainerStatus {
            labels: [
                ("io.kubernetes.pod.namespace", "kube-system"),
                ("io.kubernetes.pod.name", "coredns-1"),
                ("io.kubernetes.pod.uid", "u-1"),
                ("io.kubernetes.container.name", "coredns"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            image: Some(crate::cri::ImageSpec {
                image: "registry.k8s.io/coredns/coredns:v1.11.1".into(),
            }),
            ..ContainerStatus::default()
        };
        let names = names_from_status(&status, Some("u-1")).expect("names");
        assert_eq!(names.namespace, "kube-system");
        assert_eq!(names.pod, "coredns-1");
        assert_eq!(names.container.as_deref(), Some("coredns"));
        let image = names.image.expect("image");
        assert_eq!(image.name, "registry.k8s.io/coredns/coredns");
        assert_eq!(image.tag.as_deref(), Some("v1.11.1"));
        assert!(names_from_status(&status, Some("u-2")).is_none());
        assert!(names_from_status(&ContainerStatus::default(), None).is_none());
    }

    #[test]
    fn a_runtime_that_is_not_there_names_nothing() {
        let names = CriNames::spawn(vec![PathBuf::from("/nonexistent/cri.sock")]).expect("spawn");
        assert!(names.ask(&"a".repeat(64), None).is_none());
    }
}
