//! The proxy-relevant part of a process's environment, as enrichment reads
//! it from `/proc/<pid>/environ`.
//!
//! This module only describes what the environment says: which of the proxy
//! variables are set, to what, and whether it is a CGI environment. Which
//! proxy a client would pick from it is the verdict's business
//! (`verdict::proxy`). Environments hold secrets, so nothing but the proxy
//! variables is ever kept, and `Debug` redacts credentials.

use std::fmt;

use crate::redact::redact_value;

/// The longest variable name we look for is `REQUEST_METHOD` (14 bytes), so
/// the `=` of an interesting entry is never further in than this.
const MAX_KEY_LEN: usize = 14;

/// One of the eight proxy variables, in exactly upper or exactly lower case.
///
/// Mixed-case spellings (`Http_Proxy`) are deliberately not kept: Go, curl and
/// glibc `getenv` are case-sensitive and only ever ask for these spellings.
/// (CPython's first pass also accepts mixed case, a corner we do not model.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProxyVar {
    /// `HTTP_PROXY`
    HttpUpper,
    /// `http_proxy`
    HttpLower,
    /// `HTTPS_PROXY`
    HttpsUpper,
    /// `https_proxy`
    HttpsLower,
    /// `NO_PROXY`
    NoUpper,
    /// `no_proxy`
    NoLower,
    /// `ALL_PROXY`
    AllUpper,
    /// `all_proxy`
    AllLower,
}

impl ProxyVar {
    /// The exact variable name.
    pub const fn name(self) -> &'static str {
        match self {
            ProxyVar::HttpUpper => "HTTP_PROXY",
            ProxyVar::HttpLower => "http_proxy",
            ProxyVar::HttpsUpper => "HTTPS_PROXY",
            ProxyVar::HttpsLower => "https_proxy",
            ProxyVar::NoUpper => "NO_PROXY",
            ProxyVar::NoLower => "no_proxy",
            ProxyVar::AllUpper => "ALL_PROXY",
            ProxyVar::AllLower => "all_proxy",
        }
    }

    /// The variable with exactly this name, if it is one of the eight.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::from_key(name.as_bytes())
    }

    fn from_key(key: &[u8]) -> Option<Self> {
        match key {
            b"HTTP_PROXY" => Some(ProxyVar::HttpUpper),
            b"http_proxy" => Some(ProxyVar::HttpLower),
            b"HTTPS_PROXY" => Some(ProxyVar::HttpsUpper),
            b"https_proxy" => Some(ProxyVar::HttpsLower),
            b"NO_PROXY" => Some(ProxyVar::NoUpper),
            b"no_proxy" => Some(ProxyVar::NoLower),
            b"ALL_PROXY" => Some(ProxyVar::AllUpper),
            b"all_proxy" => Some(ProxyVar::AllLower),
            _ => None,
        }
    }
}

impl fmt::Display for ProxyVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The proxy-relevant part of one process environment.
///
/// Only the eight variables of [`ProxyVar`] are kept, plus two facts about
/// `REQUEST_METHOD` (its value is dropped). No other variable is ever stored,
/// because environments hold secrets. `Debug` redacts credentials in the
/// values; [`ProxyEnv::get`] returns them raw.
///
/// A variable that is present with an empty value is kept: Go and curl treat
/// it as unset, but for Python an empty lower-case variable removes the
/// upper-case one.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    /// First occurrence of each variable, in environment order.
    vars: Vec<(ProxyVar, String)>,
    /// `REQUEST_METHOD` is set to a non-empty value. Go's CGI rule uses
    /// `os.Getenv("REQUEST_METHOD") != ""`.
    pub request_method_set: bool,
    /// `REQUEST_METHOD` is present at all, even empty. CPython's rule is
    /// `'REQUEST_METHOD' in os.environ`.
    pub request_method_present: bool,
    /// The raw environment did not end with a NUL, so its last entry may have
    /// been cut short (a capped read of `/proc/<pid>/environ`, or a process
    /// that rewrote its environment block).
    pub truncated: bool,
    /// When [`ProxyEnv::truncated`] is set and the unterminated last entry was a
    /// proxy variable, its name. Its value is kept as read and may be partial.
    pub truncated_var: Option<&'static str>,
}

impl ProxyEnv {
    /// Parses raw `/proc/<pid>/environ` bytes: NUL-separated `KEY=VALUE`
    /// entries, possibly not UTF-8 (values are converted lossily), possibly
    /// cut off at the end.
    ///
    /// Only the bytes of each entry's key are inspected, and only kept
    /// variables allocate, so a 500 KB environment costs one linear scan.
    /// When a name occurs twice the first one wins, as with glibc `getenv`,
    /// Go's `syscall.copyenv` and CPython's `os.environ` (built with
    /// `PyDict_SetDefault`). Never panics.
    pub fn from_environ(raw: &[u8]) -> Self {
        let mut env = ProxyEnv::default();
        let mut request_method_seen = false;
        let mut rest = raw;
        while !rest.is_empty() {
            let (entry, terminated) = match rest.iter().position(|&b| b == 0) {
                Some(nul) => {
                    let entry = &rest[..nul];
                    rest = &rest[nul + 1..];
                    (entry, true)
                }
                None => {
                    let entry = rest;
                    rest = &[];
                    (entry, false)
                }
            };
            if !terminated {
                env.truncated = true;
            }
            // Cheap pre-filter on the first byte: every interesting key starts
            // with one of these, and most environment entries do not.
            if !matches!(
                entry.first(),
                Some(b'H' | b'h' | b'N' | b'n' | b'A' | b'a' | b'R')
            ) {
                continue;
            }
            let Some(eq) = entry.iter().take(MAX_KEY_LEN + 1).position(|&b| b == b'=') else {
                continue;
            };
            let (key, value) = (&entry[..eq], &entry[eq + 1..]);
            if key == b"REQUEST_METHOD" {
                if !request_method_seen {
                    request_method_seen = true;
                    env.request_method_present = true;
                    env.request_method_set = !value.is_empty();
                }
                continue;
            }
            let Some(var) = ProxyVar::from_key(key) else {
                continue;
            };
            if env.get_var(var).is_none() {
                env.vars
                    .push((var, String::from_utf8_lossy(value).into_owned()));
                if !terminated {
                    env.truncated_var = Some(var.name());
                }
            }
        }
        env
    }

    /// The raw value of the variable with exactly this name (e.g.
    /// `"https_proxy"`), if present (possibly empty).
    pub fn get(&self, name: &str) -> Option<&str> {
        ProxyVar::from_name(name).and_then(|var| self.get_var(var))
    }

    /// The raw value of `var`, if present (possibly empty).
    pub fn get_var(&self, var: ProxyVar) -> Option<&str> {
        self.vars
            .iter()
            .find(|(v, _)| *v == var)
            .map(|(_, value)| value.as_str())
    }

    /// The value of `var` if present and non-empty: Go's `getEnvAny` and
    /// curl's `curl_getenv` both treat an empty value as unset.
    pub fn non_empty(&self, var: ProxyVar) -> Option<&str> {
        self.get_var(var).filter(|v| !v.is_empty())
    }

    /// No proxy variable is present at all (not even with an empty value).
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }
}

impl fmt::Debug for ProxyEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Vars<'a>(&'a [(ProxyVar, String)]);
        impl fmt::Debug for Vars<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.iter().map(|(k, v)| (k.name(), redact_value(v))))
                    .finish()
            }
        }
        f.debug_struct("ProxyEnv")
            .field("vars", &Vars(&self.vars))
            .field("request_method_set", &self.request_method_set)
            .field("request_method_present", &self.request_method_present)
            .field("truncated", &self.truncated)
            .field("truncated_var", &self.truncated_var)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test-only helpers, kept out of the shipped API.
    impl ProxyVar {
        /// All eight variables.
        const ALL: [ProxyVar; 8] = [
            ProxyVar::HttpUpper,
            ProxyVar::HttpLower,
            ProxyVar::HttpsUpper,
            ProxyVar::HttpsLower,
            ProxyVar::NoUpper,
            ProxyVar::NoLower,
            ProxyVar::AllUpper,
            ProxyVar::AllLower,
        ];
    }

    impl ProxyEnv {
        /// Every kept variable as `(exact name, raw value)`, in environment order.
        /// Values may contain credentials: pass them through
        /// [`crate::redact::redact`] before logging.
        pub(crate) fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
            self.vars
                .iter()
                .map(|(var, value)| (var.name(), value.as_str()))
        }
    }

    #[test]
    fn environ_keeps_only_proxy_variables() {
        let raw =
            b"PATH=/usr/bin\0HTTPS_PROXY=http://10.0.0.1:7897\0AWS_SECRET_ACCESS_KEY=hunter2\0\
no_proxy=localhost,.svc\0Http_Proxy=mixed\0REQUEST_METHOD=GET\0all_proxy=socks5://s:1080\0";
        let e = ProxyEnv::from_environ(raw);
        assert_eq!(e.get("HTTPS_PROXY"), Some("http://10.0.0.1:7897"));
        assert_eq!(e.get("no_proxy"), Some("localhost,.svc"));
        assert_eq!(e.get("all_proxy"), Some("socks5://s:1080"));
        assert_eq!(e.get("https_proxy"), None);
        assert_eq!(e.get("Http_Proxy"), None);
        assert_eq!(e.get("PATH"), None);
        assert_eq!(e.get("REQUEST_METHOD"), None, "its value is never kept");
        assert!(e.request_method_set && e.request_method_present);
        assert!(!e.truncated);
        let names: Vec<_> = e.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["HTTPS_PROXY", "no_proxy", "all_proxy"]);
        let dbg = format!("{e:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("PATH") && !dbg.contains("/usr/bin"));
    }

    #[test]
    fn environ_first_duplicate_wins_and_empty_values_are_kept() {
        let e = ProxyEnv::from_environ(b"HTTP_PROXY=first\0HTTP_PROXY=second\0http_proxy=\0");
        assert_eq!(e.get("HTTP_PROXY"), Some("first"));
        assert_eq!(e.get("http_proxy"), Some(""));
        assert!(!e.is_empty());
        assert!(ProxyEnv::from_environ(b"PATH=/bin\0").is_empty());
    }

    #[test]
    fn environ_request_method_empty_is_present_but_not_set() {
        let e = ProxyEnv::from_environ(b"REQUEST_METHOD=\0");
        assert!(e.request_method_present);
        assert!(!e.request_method_set);
        assert!(e.is_empty());
    }

    #[test]
    fn environ_non_utf8_values_are_converted_lossily() {
        let mut raw = b"X=\xff\xfe\0HTTPS_PROXY=http://pr\xf6xy:3128\0\xc3\x28=bad\0".to_vec();
        raw.extend_from_slice(b"https_proxy=http://ok:1\0");
        let e = ProxyEnv::from_environ(&raw);
        assert_eq!(e.get("HTTPS_PROXY"), Some("http://pr\u{fffd}xy:3128"));
        assert_eq!(e.get("https_proxy"), Some("http://ok:1"));
    }

    #[test]
    fn environ_huge_still_finds_variables() {
        let mut raw = Vec::with_capacity(600 * 1024);
        raw.extend_from_slice(b"http_proxy=http://first:1\0");
        let filler = b"SOME_LONG_VARIABLE_NAME_HERE="
            .iter()
            .chain([b'x'; 200].iter());
        let entry: Vec<u8> = filler.copied().chain([0u8]).collect();
        while raw.len() < 500 * 1024 {
            raw.extend_from_slice(&entry);
        }
        // A single huge value too, with '=' and NULs around it.
        raw.extend_from_slice(b"BLOB=");
        raw.extend(std::iter::repeat_n(b'=', 64 * 1024));
        raw.push(0);
        raw.extend_from_slice(b"HTTPS_PROXY=http://last:2\0NO_PROXY=.corp\0");
        assert!(raw.len() > 500 * 1024);
        let started = std::time::Instant::now();
        let e = ProxyEnv::from_environ(&raw);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(e.get("http_proxy"), Some("http://first:1"));
        assert_eq!(e.get("HTTPS_PROXY"), Some("http://last:2"));
        assert_eq!(e.get("NO_PROXY"), Some(".corp"));
        assert_eq!(e.iter().count(), 3);
    }

    #[test]
    fn environ_truncated_last_entry() {
        let e = ProxyEnv::from_environ(b"HTTP_PROXY=http://a:1\0HTTPS_PROXY=http://10.0.0");
        assert!(e.truncated);
        assert_eq!(e.truncated_var, Some("HTTPS_PROXY"));
        assert_eq!(e.get("HTTP_PROXY"), Some("http://a:1"));
        assert_eq!(e.get("HTTPS_PROXY"), Some("http://10.0.0"));

        // Cut inside the key: nothing is invented.
        let e = ProxyEnv::from_environ(b"HTTP_PROXY=http://a:1\0HTTPS_PRO");
        assert!(e.truncated);
        assert_eq!(e.truncated_var, None);
        assert_eq!(e.iter().count(), 1);

        // Cut after an unrelated variable.
        let e = ProxyEnv::from_environ(b"HTTP_PROXY=http://a:1\0PATH=/us");
        assert!(e.truncated && e.truncated_var.is_none());
    }

    #[test]
    fn proxy_var_names_round_trip() {
        for var in ProxyVar::ALL {
            assert_eq!(ProxyVar::from_name(var.name()), Some(var));
        }
        assert_eq!(ProxyVar::from_name("Http_Proxy"), None);
    }
}
