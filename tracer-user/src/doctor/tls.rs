//! The tracer's own TLS handshake with a registry, through the daemon's
//! proxy or directly, recording the certificate chain it is shown.
//!
//! TLS 1.3 encrypts the server's certificate, so watching the daemon's own
//! traffic cannot say who presented it: the only way to see through a
//! proxy that re-signs certificates ("SSL inspection") is to ask the same
//! proxy for the same tunnel and look. The handshake uses rustls with a
//! verifier that records the chain and accepts it: the judgement is made
//! afterwards against what the daemon trusts (`trust.rs`), not against
//! the tracer's own idea of trust. The server's handshake signature is
//! still checked (the peer holds the key of the certificate it showed).
//!
//! Bounded: one deadline covers the whole exchange (CONNECT, handshake),
//! at most [`MAX_CHAIN`] certificates are kept, every string taken from a
//! certificate is cut at [`MAX_TEXT`] characters (a proxy or a registry
//! chooses them). Nothing is sent after the handshake: no request, no
//! credentials; the socket is closed.

use std::{
    io::Write,
    net::{Shutdown, TcpStream},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{ring as provider, CryptoProvider},
    pki_types::{CertificateDer, ServerName, UnixTime},
    ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme,
};
use serde::{Deserialize, Serialize};

use super::reach::{self, Reach, Tunnel};

/// Certificates kept from one chain: real chains hold 2 to 4.
pub const MAX_CHAIN: usize = 8;
/// Characters kept of a subject, an issuer or a name.
const MAX_TEXT: usize = 256;
/// Names kept from one certificate's subjectAltName.
const MAX_SANS: usize = 32;

/// One certificate as presented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    /// Distinguished name, RFC 4514 order as x509-parser prints it.
    pub subject: String,
    pub issuer: String,
    /// The issuer's common name (or organisation), for sentences.
    pub issuer_name: String,
    /// RFC 3339 UTC.
    pub not_before: String,
    pub not_after: String,
    /// subjectAltName: DNS names and IP addresses (`IP:` prefixed).
    pub sans: Vec<String>,
    /// basicConstraints cA.
    pub is_ca: bool,
    /// SHA-256 of the DER encoding, hex.
    pub sha256: String,
}

/// What one handshake gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    /// The chain the server presented, leaf first (empty when none came).
    pub chain: Vec<CertInfo>,
    /// "1.3" or "1.2", once negotiated.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<String>,
    /// Why the handshake did not complete (the chain may still be there:
    /// it is recorded before the server's Finished).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// The DER of the chain, for the judgement; never serialised.
    #[serde(skip)]
    pub der: Vec<CertificateDer<'static>>,
}

impl Handshake {
    fn failed(error: String) -> Self {
        Handshake {
            chain: Vec::new(),
            version: None,
            error: Some(error),
            der: Vec::new(),
        }
    }

    /// The same leaf certificate as `other`'s (byte for byte).
    pub fn same_leaf(&self, other: &Handshake) -> Option<bool> {
        Some(self.der.first()? == other.der.first()?)
    }
}

/// How the TCP part of a TLS probe went.
#[derive(Debug)]
pub enum Opened {
    Stream(TcpStream),
    /// The proxy did not open the tunnel (its answer, or why there is none).
    NoTunnel(Tunnel),
    /// A direct connect failed.
    NoConnect(Reach),
}

/// Open the path the daemon would use: a CONNECT tunnel through
/// `proxy_url` (the raw value: credentials are sent as the daemon sends
/// them, and appear nowhere else), or a direct TCP connect.
pub fn open(proxy_url: Option<&str>, host: &str, port: u16, timeout: Duration) -> Opened {
    match proxy_url {
        Some(url) => match reach::open_tunnel(url, &reach::join_host_port(host, port), timeout) {
            Ok(stream) => Opened::Stream(stream),
            Err(tunnel) => Opened::NoTunnel(tunnel),
        },
        None => match reach::dial(host, port, timeout) {
            Ok(stream) => Opened::Stream(stream),
            Err(reach) => Opened::NoConnect(reach),
        },
    }
}

/// A TLS handshake on `stream` for `name` (a host name is sent as SNI; an
/// IP address is not, as Go does), done by `deadline`. Sends nothing after
/// the handshake, then closes.
pub fn handshake(mut stream: TcpStream, name: &str, deadline: Instant) -> Handshake {
    let Ok(server_name) = ServerName::try_from(name.to_string()) else {
        return Handshake::failed(format!("{name:?} is not a host name or an IP address"));
    };
    let crypto = Arc::new(provider::default_provider());
    let recorder = Arc::new(Recorder {
        chain: Mutex::new(Vec::new()),
        crypto: Arc::clone(&crypto),
    });
    let config =
        match ClientConfig::builder_with_provider(crypto).with_safe_default_protocol_versions() {
            Ok(b) => b
                .dangerous()
                .with_custom_certificate_verifier(recorder.clone())
                .with_no_client_auth(),
            Err(e) => return Handshake::failed(format!("TLS set-up: {e}")),
        };
    let mut conn = match ClientConnection::new(Arc::new(config), server_name) {
        Ok(c) => c,
        Err(e) => return Handshake::failed(format!("TLS set-up: {e}")),
    };
    let mut error = None;
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            error = Some("no complete handshake within the time allowed".to_string());
            break;
        }
        let _ = stream.set_read_timeout(Some(left));
        let _ = stream.set_write_timeout(Some(left));
        if let Err(e) = conn.complete_io(&mut stream) {
            error = Some(handshake_error(&e));
            break;
        }
    }
    // The client's Finished may still be queued: send it, nothing more.
    if error.is_none() {
        while conn.wants_write() {
            if conn.write_tls(&mut stream).is_err() {
                break;
            }
        }
        let _ = stream.flush();
    }
    let _ = stream.shutdown(Shutdown::Both);
    let der = recorder.chain.lock().map(|c| c.clone()).unwrap_or_default();
    Handshake {
        chain: der.iter().map(|d| cert_info(d)).collect(),
        version: conn.protocol_version().map(|v| match v {
            rustls::ProtocolVersion::TLSv1_3 => "1.3".to_string(),
            rustls::ProtocolVersion::TLSv1_2 => "1.2".to_string(),
            other => format!("{other:?}"),
        }),
        error,
        der,
    }
}

/// What the handshake through the daemon's path shows, judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsVerdict {
    /// Direct, and the chain verifies against the daemon's trust.
    Verified,
    /// Through the proxy, the registry's own certificate arrived (the same
    /// leaf as a direct handshake), and it verifies.
    NotIntercepted,
    /// Through the proxy, another certificate than the registry's own
    /// arrived, and the daemon does not trust it.
    Intercepted,
    /// Through the proxy, another certificate arrived, and the daemon
    /// trusts its issuer: inspection happens at the proxy.
    InterceptedTrusted,
    /// The registry's own certificate does not verify (direct, or the same
    /// leaf through the proxy): expired, wrong name, unknown authority.
    CertificateProblem,
    /// Through the proxy, but the registry could not be reached directly
    /// to compare: who presented the chain is not known.
    NotCompared,
    /// No certificate came back.
    NoHandshake,
}

impl TlsVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVerdict::Verified => "verified",
            TlsVerdict::NotIntercepted => "not_intercepted",
            TlsVerdict::Intercepted => "intercepted",
            TlsVerdict::InterceptedTrusted => "intercepted_trusted",
            TlsVerdict::CertificateProblem => "certificate_problem",
            TlsVerdict::NotCompared => "not_compared",
            TlsVerdict::NoHandshake => "no_handshake",
        }
    }
}

/// The direct handshake made to tell the proxy's certificate from the
/// registry's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectComparison {
    /// A certificate came back directly.
    pub reached: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
    /// The direct leaf's subject and issuer.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub leaf: Option<CertInfo>,
    /// The leaf through the proxy is byte for byte the direct one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub same_certificate: Option<bool>,
}

/// The tracer's TLS handshake with a registry, judged against the daemon's
/// trust (`tls` in doctor probes and in preflight reports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsProbe {
    /// The name verified: the registry's host.
    pub server_name: String,
    /// Whether it was sent as SNI (not for an IP address, as Go does).
    pub sni: bool,
    /// `proxy` (through the daemon's proxy's tunnel) or `direct`.
    pub path: String,
    pub handshake: Handshake,
    /// The chain against the daemon's trust; absent without a chain.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub judgement: Option<super::trust::Judgement>,
    /// The files the daemon's trust was read from.
    pub trust: Vec<super::trust::TrustFile>,
    /// Trust files named but unreadable (reasons only).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub trust_problems: Vec<String>,
    /// Where the daemon's verification is turned off for this registry.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub skip_verify: Option<String>,
    /// With a proxy: the direct handshake used for comparison.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub direct: Option<DirectComparison>,
    pub verdict: TlsVerdict,
}

impl TlsProbe {
    /// The presented leaf.
    pub fn leaf(&self) -> Option<&CertInfo> {
        self.handshake.chain.first()
    }

    /// The presented leaf's issuer, for sentences.
    pub fn issuer_name(&self) -> &str {
        self.leaf().map_or("?", |l| l.issuer_name.as_str())
    }

    /// The issuer of the leaf a direct handshake got, when one did.
    pub fn direct_issuer_name(&self) -> Option<&str> {
        let leaf = self.direct.as_ref()?.leaf.as_ref()?;
        Some(leaf.issuer_name.as_str())
    }

    /// What the daemon trusts, for sentences.
    pub fn trust_words(&self) -> String {
        match &self.skip_verify {
            Some(why) => format!("any certificate ({why})"),
            None => super::trust::describe(&self.trust),
        }
    }
}

/// Handshake with `host:port` the way the daemon would reach it (through
/// `proxy_url`'s tunnel, or directly), judge the chain against `trust`,
/// and with a proxy also handshake directly to compare. None when the
/// tunnel or the connect did not open (the caller reports that already).
/// Each step is bounded by `timeout`.
pub fn probe(
    proxy_url: Option<&str>,
    host: &str,
    port: u16,
    trust: &super::trust::Trust,
    timeout: Duration,
) -> Option<TlsProbe> {
    let Opened::Stream(stream) = open(proxy_url, host, port, timeout) else {
        return None;
    };
    let presented = handshake(stream, host, Instant::now() + timeout);
    let now = UnixTime::now();
    let judgement =
        (!presented.der.is_empty()).then(|| super::trust::judge(&presented.der, host, trust, now));
    let direct = proxy_url.map(|_| {
        let direct = match open(None, host, port, timeout) {
            Opened::Stream(s) => handshake(s, host, Instant::now() + timeout),
            Opened::NoConnect(r) => Handshake::failed(format!(
                "{} ({})",
                r.result.as_str(),
                r.detail.unwrap_or_default()
            )),
            Opened::NoTunnel(_) => Handshake::failed(String::new()),
        };
        DirectComparison {
            reached: !direct.der.is_empty(),
            detail: direct
                .der
                .is_empty()
                .then(|| direct.error.clone())
                .flatten(),
            leaf: direct.chain.first().cloned(),
            same_certificate: presented.same_leaf(&direct),
        }
    });
    let verified = judgement.as_ref().is_some_and(|j| j.verified);
    let verdict = match (&judgement, &direct) {
        (None, _) => TlsVerdict::NoHandshake,
        (Some(_), None) if verified => TlsVerdict::Verified,
        (Some(_), None) => TlsVerdict::CertificateProblem,
        (Some(_), Some(d)) => match d.same_certificate {
            None => TlsVerdict::NotCompared,
            Some(true) if verified => TlsVerdict::NotIntercepted,
            Some(true) => TlsVerdict::CertificateProblem,
            Some(false) if verified => TlsVerdict::InterceptedTrusted,
            Some(false) => TlsVerdict::Intercepted,
        },
    };
    Some(TlsProbe {
        server_name: host.to_string(),
        sni: host.parse::<std::net::IpAddr>().is_err(),
        path: if proxy_url.is_some() {
            "proxy"
        } else {
            "direct"
        }
        .to_string(),
        handshake: presented,
        judgement,
        trust: trust.files.clone(),
        trust_problems: trust.problems.clone(),
        skip_verify: trust.skip_verify.clone(),
        direct,
        verdict,
    })
}

fn handshake_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            "no complete handshake within the time allowed".to_string()
        }
        std::io::ErrorKind::UnexpectedEof => {
            "the peer closed the connection during the handshake".to_string()
        }
        _ => e.to_string(),
    }
}

/// Records the presented chain and accepts it; handshake signatures are
/// checked with the provider's algorithms.
#[derive(Debug)]
struct Recorder {
    chain: Mutex<Vec<CertificateDer<'static>>>,
    crypto: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut chain) = self.chain.lock() {
            chain.clear();
            chain.extend(
                std::iter::once(end_entity)
                    .chain(intermediates)
                    .take(MAX_CHAIN)
                    .map(|c| c.clone().into_owned()),
            );
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.crypto.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.crypto.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.crypto
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn cut(s: &str) -> String {
    s.chars().take(MAX_TEXT).collect()
}

fn rfc3339(t: x509_parser::time::ASN1Time) -> String {
    let secs = t.timestamp();
    let when = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    when.map(|w| humantime::format_rfc3339_seconds(w).to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// Subject, issuer, validity and names of one DER certificate; a
/// certificate that does not parse is described as such.
pub fn cert_info(der: &CertificateDer<'_>) -> CertInfo {
    let sha256 = ring::digest::digest(&ring::digest::SHA256, der.as_ref())
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write;
            let _ = write!(s, "{b:02x}");
            s
        });
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return CertInfo {
            subject: "(not a parsable certificate)".to_string(),
            issuer: String::new(),
            issuer_name: String::new(),
            not_before: String::new(),
            not_after: String::new(),
            sans: Vec::new(),
            is_ca: false,
            sha256,
        };
    };
    let issuer = cert.issuer();
    let issuer_name = issuer
        .iter_common_name()
        .chain(issuer.iter_organization())
        .find_map(|a| a.as_str().ok().map(cut))
        .unwrap_or_else(|| cut(&issuer.to_string()));
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in ext.value.general_names.iter().take(MAX_SANS) {
            use x509_parser::extensions::GeneralName;
            match name {
                GeneralName::DNSName(d) => sans.push(cut(d)),
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b)
                            .ok()
                            .map(|a| std::net::IpAddr::from(a).to_string()),
                        16 => <[u8; 16]>::try_from(*b)
                            .ok()
                            .map(|a| std::net::IpAddr::from(a).to_string()),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        sans.push(format!("IP:{ip}"));
                    }
                }
                _ => {}
            }
        }
    }
    CertInfo {
        subject: cut(&cert.subject().to_string()),
        issuer: cut(&issuer.to_string()),
        issuer_name,
        not_before: rfc3339(cert.validity().not_before),
        not_after: rfc3339(cert.validity().not_after),
        sans,
        is_ca: cert.is_ca(),
        sha256,
    }
}

#[cfg(test)]
impl TlsProbe {
    /// A probe of `server`:443 through a proxy: the leaf presented is
    /// issued by 'mitmproxy' (expired on 2020-01-02), the direct one by
    /// 'registry.test'; the trust is one containerd ca_file.
    pub fn sample(
        server: &str,
        verdict: TlsVerdict,
        problem: Option<super::trust::Problem>,
    ) -> Self {
        use super::trust::{Judgement, TrustFile};
        let cert = |issuer: &str| CertInfo {
            subject: "CN=registry.test".into(),
            issuer: format!("CN={issuer}, O={issuer}"),
            issuer_name: issuer.into(),
            not_before: "2020-01-01T00:00:00Z".into(),
            not_after: "2020-01-02T00:00:00Z".into(),
            sans: vec![format!("IP:{server}")],
            is_ca: false,
            sha256: String::new(),
        };
        TlsProbe {
            server_name: server.into(),
            sni: false,
            path: "proxy".into(),
            handshake: Handshake {
                chain: vec![cert("mitmproxy")],
                version: Some("1.3".into()),
                error: None,
                der: Vec::new(),
            },
            judgement: Some(Judgement {
                verified: problem.is_none(),
                problem,
                detail: problem.map(|p| p.as_str().to_string()),
            }),
            trust: vec![TrustFile {
                path: "/etc/containerd/certs/registry-ca.crt".into(),
                origin: "containerd ca_file".into(),
                certificates: 1,
            }],
            trust_problems: Vec::new(),
            skip_verify: None,
            direct: Some(DirectComparison {
                reached: true,
                detail: None,
                leaf: Some(cert("registry.test")),
                same_certificate: Some(false),
            }),
            verdict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_tcp_server_is_no_handshake_and_sends_back_nothing_secret() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
            buf[..n].to_vec()
        });
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let h = handshake(
            stream,
            "registry.test",
            Instant::now() + Duration::from_secs(3),
        );
        let hello = server.join().unwrap();
        // A TLS handshake record (22) carrying the SNI.
        assert_eq!(hello[0], 22);
        assert!(hello.windows(13).any(|w| w == b"registry.test"));
        assert!(h.chain.is_empty());
        assert!(h.error.is_some(), "{h:?}");
    }

    #[test]
    fn an_ip_name_sends_no_sni() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap();
            // The socket is handed back, so it stays open and silent.
            (buf[..n].to_vec(), s)
        });
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let h = handshake(
            stream,
            "203.0.113.2",
            Instant::now() + Duration::from_millis(300),
        );
        let (hello, _open) = server.join().unwrap();
        assert_eq!(hello[0], 22);
        assert!(!hello.windows(11).any(|w| w == b"203.0.113.2"));
        assert_eq!(
            h.error.as_deref(),
            Some("no complete handshake within the time allowed")
        );
    }
}
