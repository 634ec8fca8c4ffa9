//! A real image registry for tests: Debian's `docker-registry`
//! (distribution 2.8) serving HTTPS on :443 inside a test host
//! ([`NetNs`] in 203.0.113.0/24; index 0 is 203.0.113.2), with an openssl
//! self-signed certificate whose SAN names the IP and `registry.test`.
//! Storage lives in a temp folder. At start it holds one tiny image,
//! `acc/img:1`, pushed through the registry's own HTTP API with `curl`:
//! a schema2 manifest, one gzip'd tar layer with one small file, and a
//! config whose `rootfs.diff_ids` is the uncompressed layer's sha256.
//!
//! Network safety: every request goes to the test host only, after
//! [`NetNs::assert_routed`], and `curl` runs with `--noproxy '*'` so a
//! proxy in the test's environment is never used. The registry process
//! itself runs in the namespace, which has no route but its /30.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{sh, temp_dir, NetNs, TestNet};

const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Per request: curl's `--max-time`.
const CURL_MAX_TIME: &str = "10";

/// The repository and tag pushed at start.
pub const REPOSITORY: &str = "acc/img";
pub const TAG: &str = "1";
/// The one file in the image's layer, and its content.
pub const FILE_NAME: &str = "hello.txt";
pub const FILE_CONTENT: &str = "hello from the test registry\n";

/// The certificate a registry serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cert {
    /// Self-signed by openssl, SAN `IP:<host>` and `DNS:registry.test`,
    /// valid 2 days.
    #[default]
    SelfSigned,
    /// Self-signed, valid, but for `elsewhere.test` only: not the
    /// registry's address nor `registry.test`.
    WrongName,
    /// Self-signed for the right names, but expired (2020-01-01 to
    /// 2020-01-02), made with Python's `cryptography` from the mitmproxy
    /// venv (openssl 3.0's `req`/`x509` cannot set dates in the past).
    Expired,
}

/// A running registry on a test host. Dropping it kills the registry and
/// removes the namespace.
pub struct Registry {
    /// Its folder: certificate, key, config, storage, log, image files.
    pub dir: PathBuf,
    /// The self-signed certificate (PEM), for clients that verify.
    pub cert: PathBuf,
    /// The registry's stdout+stderr.
    pub log_path: PathBuf,
    /// The manifest's digest (`sha256:...`), as pushed.
    pub manifest_digest: String,
    child: Option<Child>,
    // Dropped after the fields above: the process goes before its namespace.
    ns: NetNs,
}

impl Registry {
    /// A registry on test host `index` of 203.0.113.0/24 (0: 203.0.113.2),
    /// up and holding `acc/img:1`. Panics with the registry's log if any
    /// step fails; waits at most 20 s for it to answer.
    pub fn start(index: u8) -> Registry {
        Self::start_with(index, Cert::SelfSigned)
    }

    /// [`Registry::start`] serving the certificate `kind`.
    pub fn start_with(index: u8, kind: Cert) -> Registry {
        let ns = NetNs::new_in(TestNet::Net3, index);
        let dir = temp_dir("registry");
        let ip = ns.addr.clone();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        match kind {
            Cert::SelfSigned | Cert::WrongName => {
                let (cn, san) = if kind == Cert::WrongName {
                    (
                        "elsewhere.test".to_string(),
                        "DNS:elsewhere.test".to_string(),
                    )
                } else {
                    (
                        "registry.test".to_string(),
                        format!("IP:{ip},DNS:registry.test"),
                    )
                };
                sh(&format!(
                    "openssl req -x509 -newkey rsa:2048 -nodes -days 2 \
                     -keyout {} -out {} -subj /CN={cn} \
                     -addext subjectAltName={san} 2>&1",
                    key.display(),
                    cert.display()
                ));
            }
            Cert::Expired => expired_cert(&ip, &cert, &key),
        }
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).expect("create registry storage");
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: info\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: :443\n  tls:\n    certificate: {}\n    key: {}\n",
                storage.display(),
                cert.display(),
                key.display()
            ),
        )
        .expect("write registry config");
        let log_path = dir.join("registry.log");
        let log = std::fs::File::create(&log_path).expect("create registry log");
        let log_err = log.try_clone().expect("dup registry log");
        let child = ns
            .command("docker-registry")
            .arg("serve")
            .arg(&config)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start docker-registry (apt-get install docker-registry / \
                     cargo xtask setup): {e}"
                )
            });
        let mut reg = Registry {
            dir,
            cert,
            log_path,
            manifest_digest: String::new(),
            child: Some(child),
            ns,
        };
        reg.wait_ready();
        reg.manifest_digest = reg.push_image();
        reg
    }

    /// The test host's address, e.g. `203.0.113.2`.
    pub fn host(&self) -> &str {
        &self.ns.addr
    }

    /// The image reference, e.g. `203.0.113.2/acc/img:1`.
    pub fn image(&self) -> String {
        format!("{}/{REPOSITORY}:{TAG}", self.host())
    }

    /// The namespace the registry runs in.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// The registry's pid (`ip netns exec` execs it), 0 once stopped.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// "Registry down": kill the registry process, keep the namespace, so a
    /// connect to `host():443` is refused (RST from the test host's kernel).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::terminate(&mut child, STOP_GRACE);
        }
    }

    /// `https://IP/PATH` (PATH starts with `/`).
    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.host())
    }

    /// Run curl against the test host only. Returns (HTTP code, headers,
    /// body). Panics if curl cannot reach it at all.
    fn curl(&self, args: &[&str], url: &str) -> (u16, String, String) {
        self.ns.assert_routed();
        let host = url
            .strip_prefix("https://")
            .and_then(|r| r.split('/').next())
            .unwrap_or("");
        assert_eq!(
            host,
            self.host(),
            "registry harness: refusing to send to {url}: not the test host"
        );
        let headers = self.dir.join("curl-headers.txt");
        let body = self.dir.join("curl-body.txt");
        let out = Command::new("curl")
            .args(["-sS", "-k", "--noproxy", "*", "--max-time", CURL_MAX_TIME])
            .arg("-D")
            .arg(&headers)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .args(args)
            .arg(url)
            .output()
            .expect("run curl");
        let code = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let headers = std::fs::read_to_string(&headers).unwrap_or_default();
        let body = std::fs::read_to_string(&body).unwrap_or_default();
        assert!(
            out.status.success() || code != 0,
            "curl {url} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (code, headers, body)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "docker-registry exited at start ({status}):\n{}",
                        self.log()
                    );
                }
            }
            self.ns.assert_routed();
            let ok = Command::new("curl")
                .args([
                    "-s",
                    "-k",
                    "--noproxy",
                    "*",
                    "--max-time",
                    "2",
                    "-o",
                    "/dev/null",
                ])
                .args(["-w", "%{http_code}"])
                .arg(self.url("/v2/"))
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "200")
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry does not answer {} after {START_TIMEOUT:?}:\n{}",
                self.url("/v2/"),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Push `acc/img:1`; returns the manifest's digest.
    fn push_image(&self) -> String {
        let work = self.dir.join("image");
        let rootfs = work.join("rootfs");
        std::fs::create_dir_all(&rootfs).expect("create image rootfs");
        std::fs::write(rootfs.join(FILE_NAME), FILE_CONTENT).expect("write image file");
        let tar = work.join("layer.tar");
        let gz = work.join("layer.tar.gz");
        sh(&format!(
            "tar -C {} --owner=0 --group=0 --numeric-owner --mtime=@0 -cf {} {FILE_NAME}",
            rootfs.display(),
            tar.display()
        ));
        sh(&format!("gzip -n -c {} > {}", tar.display(), gz.display()));
        let diff_id = sha256_file(&tar);
        let layer_digest = sha256_file(&gz);
        let layer_size = file_size(&gz);

        let config = json!({
            "architecture": go_arch(),
            "os": "linux",
            "config": { "Cmd": ["/hello.txt"] },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{ "created_by": "tracer-tests registry harness" }],
        });
        let config_path = work.join("config.json");
        std::fs::write(&config_path, config.to_string()).expect("write image config");
        let config_digest = sha256_file(&config_path);
        let config_size = file_size(&config_path);

        self.push_blob(&gz, &layer_digest);
        self.push_blob(&config_path, &config_digest);

        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config_size,
                "digest": config_digest,
            },
            "layers": [{
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": layer_size,
                "digest": layer_digest,
            }],
        });
        let manifest_path = work.join("manifest.json");
        std::fs::write(&manifest_path, manifest.to_string()).expect("write manifest");
        let manifest_digest = sha256_file(&manifest_path);
        let data = format!("@{}", manifest_path.display());
        let (code, headers, body) = self.curl(
            &[
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/vnd.docker.distribution.manifest.v2+json",
                "--data-binary",
                &data,
            ],
            &self.url(&format!("/v2/{REPOSITORY}/manifests/{TAG}")),
        );
        assert_eq!(code, 201, "manifest PUT: {headers}{body}\n{}", self.log());
        assert_eq!(
            header(&headers, "docker-content-digest").as_deref(),
            Some(manifest_digest.as_str()),
            "manifest digest: {headers}"
        );
        manifest_digest
    }

    /// POST an upload, then PUT the whole blob with `?digest=`.
    fn push_blob(&self, file: &Path, digest: &str) {
        let (code, headers, body) = self.curl(
            &["-X", "POST", "-H", "Content-Length: 0"],
            &self.url(&format!("/v2/{REPOSITORY}/blobs/uploads/")),
        );
        assert_eq!(code, 202, "upload POST: {headers}{body}\n{}", self.log());
        let location = header(&headers, "location")
            .unwrap_or_else(|| panic!("upload POST without Location: {headers}"));
        let mut url = if location.starts_with("https://") {
            location
        } else {
            self.url(&location)
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={digest}"));
        let data = format!("@{}", file.display());
        let (code, headers, body) = self.curl(
            &[
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                &data,
            ],
            &url,
        );
        assert_eq!(code, 201, "blob PUT: {headers}{body}\n{}", self.log());
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The last value of header `name` (case-insensitive) in curl's `-D` dump.
fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().rev().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// `sha256:<hex>` of a file, by `sha256sum`.
fn sha256_file(path: &Path) -> String {
    let out = sh(&format!("sha256sum {}", path.display()));
    let hex = out.split_whitespace().next().unwrap_or("");
    assert_eq!(hex.len(), 64, "sha256sum output: {out}");
    format!("sha256:{hex}")
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .len()
}

/// This machine's architecture as Go (and so an image config) names it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// A self-signed certificate for `ip` and registry.test that expired in
/// 2020, written as PEM to `cert` and `key`.
fn expired_cert(ip: &str, cert: &Path, key: &Path) {
    let script = r#"
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
ip, cert_path, key_path = sys.argv[1:4]
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry.test")])
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
    .public_key(key.public_key()).serial_number(x509.random_serial_number())
    .not_valid_before(datetime.datetime(2020, 1, 1))
    .not_valid_after(datetime.datetime(2020, 1, 2))
    .add_extension(x509.SubjectAlternativeName([
        x509.IPAddress(ipaddress.ip_address(ip)), x509.DNSName("registry.test")]), critical=False)
    .sign(key, hashes.SHA256()))
open(cert_path, "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(key_path, "wb").write(key.private_bytes(serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
"#;
    let python = Path::new(crate::mitmproxy::VENV).join("bin/python");
    let out = Command::new(&python)
        .args(["-c", script, ip])
        .arg(cert)
        .arg(key)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (cargo xtask setup installs the mitmproxy venv): {e}",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "making an expired certificate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
