//! A minimal CRI client: ask a container runtime to pull (or remove) an
//! image the way kubelet does, over the runtime's unix socket.
//!
//! A CRI pull (`runtime.v1.ImageService/PullImage`) is carried out by the
//! runtime **daemon**, so the daemon's environment decides the proxy, as in
//! the incident (`ctr image pull` in containerd 1.6 pulls in the client
//! instead, which would test the wrong process). Messages are written by
//! hand with prost (only the fields used; no protoc at build time); they are
//! wire-identical in `runtime.v1` and `runtime.v1alpha2`, and the older API
//! is tried when the daemon answers UNIMPLEMENTED on v1.

use std::{io, path::Path, time::Duration};

use thiserror::Error;

/// How long connecting to the socket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum CriError {
    #[error("cannot talk to the runtime at {socket}: {why}")]
    Transport { socket: String, why: String },
    /// The runtime's own answer, verbatim (e.g. "failed to pull and unpack
    /// image ...: proxyconnect tcp: dial tcp ...: connect: connection
    /// refused").
    #[error("{message}")]
    Status { code: tonic::Code, message: String },
    #[error("the runtime did not answer within {0:?}")]
    Timeout(Duration),
}

/// Which CRI API the daemon answers on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    V1,
    V1alpha2,
}

impl Api {
    pub fn package(self) -> &'static str {
        match self {
            Api::V1 => "runtime.v1",
            Api::V1alpha2 => "runtime.v1alpha2",
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct VersionRequest {
    #[prost(string, tag = "1")]
    version: String,
}

/// CRI `VersionResponse`: who the runtime is.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    #[prost(string, tag = "4")]
    pub runtime_api_version: String,
}

/// CRI `ImageSpec`: an image reference.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    #[prost(string, tag = "1")]
    pub image: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PullImageRequest {
    #[prost(message, optional, tag = "1")]
    image: Option<ImageSpec>,
    // auth = 2 and sandbox_config = 3 stay unset: an anonymous pull.
}

#[derive(Clone, PartialEq, prost::Message)]
struct PullImageResponse {
    #[prost(string, tag = "1")]
    image_ref: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RemoveImageRequest {
    #[prost(message, optional, tag = "1")]
    image: Option<ImageSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RemoveImageResponse {}

/// A connection to a runtime's CRI socket.
pub struct Client {
    channel: tonic::transport::Channel,
    socket: String,
}

impl Client {
    /// Connect to the runtime's unix socket.
    pub async fn connect(socket: &Path) -> Result<Self, CriError> {
        let path = socket.to_path_buf();
        let name = socket.display().to_string();
        // The URI is a placeholder (it becomes :authority); the connector
        // ignores it and dials the unix socket.
        let channel = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|e| CriError::Transport {
                socket: name.clone(),
                why: crate::diag::error_chain(&e),
            })?;
        Ok(Self {
            channel,
            socket: name,
        })
    }

    /// CRI `RuntimeService/Version`, and the API that answered (v1 first,
    /// v1alpha2 when v1 is UNIMPLEMENTED, as on older containerd).
    pub async fn version(&self) -> Result<(Api, VersionResponse), CriError> {
        for api in [Api::V1, Api::V1alpha2] {
            let path = format!("/{}.RuntimeService/Version", api.package());
            let request = VersionRequest {
                version: "v1".into(),
            };
            match self.unary::<_, VersionResponse>(&path, request).await {
                Err(CriError::Status {
                    code: tonic::Code::Unimplemented,
                    ..
                }) => continue,
                other => return other.map(|v| (api, v)),
            }
        }
        Err(CriError::Status {
            code: tonic::Code::Unimplemented,
            message: "CRI Version is not implemented on runtime.v1 or runtime.v1alpha2 (CRI plugin not loaded?)".into(),
        })
    }

    /// Pull `image` (CRI `PullImage`), waiting at most `timeout`. Returns
    /// the image reference the runtime reports.
    pub async fn pull(&self, image: &str, timeout: Duration) -> Result<String, CriError> {
        let call = async {
            let mut api = Api::V1;
            loop {
                let request = PullImageRequest {
                    image: Some(ImageSpec {
                        image: image.to_string(),
                    }),
                };
                let path = format!("/{}.ImageService/PullImage", api.package());
                match self.unary::<_, PullImageResponse>(&path, request).await {
                    Err(CriError::Status {
                        code: tonic::Code::Unimplemented,
                        ..
                    }) if api == Api::V1 => api = Api::V1alpha2,
                    other => return other.map(|r| r.image_ref),
                }
            }
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| CriError::Timeout(timeout))?
    }

    /// Remove `image` (CRI `RemoveImage`).
    pub async fn remove(&self, image: &str) -> Result<(), CriError> {
        for api in [Api::V1, Api::V1alpha2] {
            let request = RemoveImageRequest {
                image: Some(ImageSpec {
                    image: image.to_string(),
                }),
            };
            let path = format!("/{}.ImageService/RemoveImage", api.package());
            match self.unary::<_, RemoveImageResponse>(&path, request).await {
                Err(CriError::Status {
                    code: tonic::Code::Unimplemented,
                    ..
                }) => continue,
                other => return other.map(|_| ()),
            }
        }
        Err(CriError::Status {
            code: tonic::Code::Unimplemented,
            message: "RemoveImage is not implemented by the runtime".into(),
        })
    }

    async fn unary<Req, Resp>(&self, path: &str, request: Req) -> Result<Resp, CriError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let transport = |why: String| CriError::Transport {
            socket: self.socket.clone(),
            why,
        };
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| transport(format!("channel not ready: {e}")))?;
        let path = http::uri::PathAndQuery::try_from(path).map_err(|e| transport(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        grpc.unary(tonic::Request::new(request), path, codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| CriError::Status {
                code: s.code(),
                message: s.message().to_string(),
            })
    }
}

// ---------------------------------------------------------------------------
// Pods, the way kubelet runs them (the tests' harness), and a container's
// status (its pod's names, when no bundle can be read).

/// CRI `NamespaceMode`: whose namespace a pod or container uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum NamespaceMode {
    Pod = 0,
    Container = 1,
    /// The node's (`hostNetwork: true`).
    Node = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamespaceOption {
    #[prost(enumeration = "NamespaceMode", tag = "1")]
    pub network: i32,
    #[prost(enumeration = "NamespaceMode", tag = "2")]
    pub pid: i32,
    #[prost(enumeration = "NamespaceMode", tag = "3")]
    pub ipc: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxSandboxSecurityContext {
    #[prost(message, optional, tag = "1")]
    pub namespace_options: Option<NamespaceOption>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxPodSandboxConfig {
    /// kubelet's pod cgroup, e.g. `/kubepods/besteffort/pod<uid>` (cgroupfs).
    #[prost(string, tag = "1")]
    pub cgroup_parent: String,
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxSandboxSecurityContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

/// CRI `PodSandboxConfig` (the fields kubelet's host-network pods need).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<PodSandboxMetadata>,
    /// Must stay empty with the node's network namespace.
    #[prost(string, tag = "2")]
    pub hostname: String,
    #[prost(map = "string, string", tag = "6")]
    pub labels: std::collections::HashMap<String, String>,
    #[prost(message, optional, tag = "8")]
    pub linux: Option<LinuxPodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RunPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    config: Option<PodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RunPodSandboxResponse {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PodSandboxIdRequest {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerSecurityContext {
    #[prost(message, optional, tag = "3")]
    pub namespace_options: Option<NamespaceOption>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerConfig {
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxContainerSecurityContext>,
}

/// CRI `ContainerConfig` (the fields the tests' containers need).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ContainerMetadata>,
    #[prost(message, optional, tag = "2")]
    pub image: Option<ImageSpec>,
    #[prost(string, repeated, tag = "3")]
    pub command: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub args: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    pub envs: Vec<KeyValue>,
    #[prost(map = "string, string", tag = "9")]
    pub labels: std::collections::HashMap<String, String>,
    #[prost(message, optional, tag = "15")]
    pub linux: Option<LinuxContainerConfig>,
}

impl ContainerConfig {
    /// A container of `image` named `name`.
    pub fn new(name: &str, image: &str) -> Self {
        Self {
            metadata: Some(ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.to_string(),
            }),
            ..Self::default()
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateContainerRequest {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
    #[prost(message, optional, tag = "2")]
    config: Option<ContainerConfig>,
    #[prost(message, optional, tag = "3")]
    sandbox_config: Option<PodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerIdRequest {
    #[prost(string, tag = "1")]
    container_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateContainerResponse {
    #[prost(string, tag = "1")]
    container_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerStatusRequest {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(bool, tag = "2")]
    verbose: bool,
}

/// CRI `ContainerStatus`: the fields that name a container and its pod.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatus {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<ContainerMetadata>,
    #[prost(message, optional, tag = "8")]
    pub image: Option<ImageSpec>,
    /// kubelet's labels: `io.kubernetes.pod.name`, `…pod.namespace`,
    /// `…pod.uid`, `…container.name`.
    #[prost(map = "string, string", tag = "12")]
    pub labels: std::collections::HashMap<String, String>,
}

impl ContainerStatus {
    /// The image reference the container was created from.
    pub fn image(&self) -> Option<&str> {
        self.image.as_ref().map(|i| i.image.as_str())
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerStatusResponse {
    #[prost(message, optional, tag = "1")]
    status: Option<ContainerStatus>,
}

impl Client {
    /// CRI `RunPodSandbox`: returns the sandbox id.
    pub async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, CriError> {
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
        };
        self.runtime::<_, RunPodSandboxResponse>("RunPodSandbox", request)
            .await
            .map(|r| r.pod_sandbox_id)
    }

    /// CRI `CreateContainer` in sandbox `sandbox` (created with `sandbox_config`).
    pub async fn create_container(
        &self,
        sandbox: &str,
        config: &ContainerConfig,
        sandbox_config: &PodSandboxConfig,
    ) -> Result<String, CriError> {
        let request = CreateContainerRequest {
            pod_sandbox_id: sandbox.to_string(),
            config: Some(config.clone()),
            sandbox_config: Some(sandbox_config.clone()),
        };
        self.runtime::<_, CreateContainerResponse>("CreateContainer", request)
            .await
            .map(|r| r.container_id)
    }

    /// CRI `StartContainer`.
    pub async fn start_container(&self, container: &str) -> Result<(), CriError> {
        let request = ContainerIdRequest {
            container_id: container.to_string(),
        };
        self.runtime::<_, Empty>("StartContainer", request)
            .await
            .map(|_| ())
    }

    /// CRI `StopPodSandbox` then `RemovePodSandbox`: kubelet's way to end a
    /// pod (its pause process, PID 1 of the pod, ignores SIGTERM).
    pub async fn remove_pod_sandbox(&self, sandbox: &str) -> Result<(), CriError> {
        for method in ["StopPodSandbox", "RemovePodSandbox"] {
            let request = PodSandboxIdRequest {
                pod_sandbox_id: sandbox.to_string(),
            };
            self.runtime::<_, Empty>(method, request).await?;
        }
        Ok(())
    }

    /// CRI `ContainerStatus` (not verbose): the container's name, image
    /// and kubelet's labels.
    pub async fn container_status(&self, container: &str) -> Result<ContainerStatus, CriError> {
        let request = ContainerStatusRequest {
            container_id: container.to_string(),
            verbose: false,
        };
        let response = self
            .runtime::<_, ContainerStatusResponse>("ContainerStatus", request)
            .await?;
        response.status.ok_or_else(|| CriError::Status {
            code: tonic::Code::NotFound,
            message: format!("no status for container {container}"),
        })
    }

    /// A `RuntimeService` call on v1, else v1alpha2 (wire-identical).
    async fn runtime<Req, Resp>(&self, method: &str, request: Req) -> Result<Resp, CriError>
    where
        Req: prost::Message + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let v1 = format!("/{}.RuntimeService/{method}", Api::V1.package());
        match self.unary::<_, Resp>(&v1, request.clone()).await {
            Err(CriError::Status {
                code: tonic::Code::Unimplemented,
                ..
            }) => {
                let old = format!("/{}.RuntimeService/{method}", Api::V1alpha2.package());
                self.unary(&old, request).await
            }
            other => other,
        }
    }
}

/// The pid of the process serving a unix socket (SO_PEERCRED of a
/// connection to it): the daemon that will really do the pull, whatever its
/// name.
pub fn socket_owner(socket: &Path) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt on a socket we own, with a correctly sized buffer.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(cred.pid)
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| io::Error::other("the socket's peer has no pid"))
}

/// The registry an image reference is pulled from, as host and port
/// (docker's rules: the first component is a registry when it has a dot, a
/// colon or is `localhost`; otherwise Docker Hub). HTTPS unless told
/// otherwise, so port 443 by default.
pub fn registry_of(image: &str) -> (String, u16) {
    let first = image.split('/').next().unwrap_or(image);
    let is_registry =
        image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if !is_registry {
        return ("registry-1.docker.io".to_string(), 443);
    }
    if let Some(rest) = first.strip_prefix('[') {
        // [v6]:port
        let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
        let port = after
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(443);
        return (host.to_string(), port);
    }
    match first.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) && !port.is_empty() => {
            (host.to_string(), port.parse().unwrap_or(443))
        }
        _ => (first.to_string(), 443),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_of_image_references() {
        assert_eq!(
            registry_of("quay.io/calico/cni:v3.31.3"),
            ("quay.io".into(), 443)
        );
        assert_eq!(
            registry_of("203.0.113.2/acc/img:1"),
            ("203.0.113.2".into(), 443)
        );
        assert_eq!(
            registry_of("203.0.113.2:5000/acc/img:1"),
            ("203.0.113.2".into(), 5000)
        );
        assert_eq!(registry_of("localhost/x"), ("localhost".into(), 443));
        assert_eq!(registry_of("nginx"), ("registry-1.docker.io".into(), 443));
        assert_eq!(
            registry_of("library/nginx:1"),
            ("registry-1.docker.io".into(), 443)
        );
        assert_eq!(registry_of("[::1]:5000/a/b"), ("::1".into(), 5000));
    }

    #[test]
    fn a_missing_socket_is_a_clear_error() {
        let err = socket_owner(Path::new("/nonexistent/cri.sock")).expect_err("no socket");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
