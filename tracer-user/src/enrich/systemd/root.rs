//! Reading host files under a host root: paths are resolved one component at
//! a time like systemd's chase() with a root directory, so absolute symlinks
//! stay inside the host's tree.

use super::SystemdError;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// Same limit as Linux's SYMLOOP_MAX / systemd's chase().
const MAX_SYMLINKS: usize = 40;

/// Unit files and env files are tiny; the cap only protects against a symlink
/// to something huge.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

pub(super) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SystemdError + '_ {
    move |source| SystemdError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) struct HostFs<'a> {
    pub(super) root: &'a Path,
}

pub(super) enum Node {
    Missing,
    /// The path resolves to /dev/null: masked (systemd.unit(5)). Recognised by
    /// name, since the host's /dev may not be visible under `host_root`.
    DevNull,
    Present {
        disk: PathBuf,
        /// Host path after following symlinks.
        real: PathBuf,
        is_file: bool,
        is_dir: bool,
    },
}

pub(super) enum FileContent {
    Missing,
    DevNull,
    NotRegular,
    Bytes(Vec<u8>),
}

pub(super) struct DirEntryInfo {
    pub(super) name: OsString,
    pub(super) disk_path: PathBuf,
    pub(super) is_file: bool,
    pub(super) is_symlink: bool,
}

fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

impl HostFs<'_> {
    fn disk_path(&self, components: &[OsString]) -> PathBuf {
        let mut p = self.root.to_path_buf();
        p.extend(components);
        p
    }

    /// Resolve `host_path` one component at a time like chase() with a root:
    /// ".." cannot climb above the root, absolute symlink targets restart at
    /// the root, at most [`MAX_SYMLINKS`] links are followed.
    pub(super) fn resolve(&self, host_path: &Path) -> io::Result<Node> {
        let mut pending: Vec<OsString> = Vec::new();
        push_components(&mut pending, host_path);
        let mut current: Vec<OsString> = Vec::new();
        let mut last_meta: Option<fs::Metadata> = None;
        let mut links = 0usize;

        while let Some(name) = pending.pop() {
            if name == ".." {
                current.pop();
                last_meta = None;
                continue;
            }
            if is_dev_null(&current, &name, &pending) {
                return Ok(Node::DevNull);
            }
            let disk = self.disk_path(&current).join(&name);
            let meta = match fs::symlink_metadata(&disk) {
                Ok(m) => m,
                Err(e) if is_missing(&e) => return Ok(Node::Missing),
                Err(e) => return Err(e),
            };
            if meta.file_type().is_symlink() {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::other(format!(
                        "too many levels of symbolic links resolving {}",
                        host_path.display()
                    )));
                }
                let target = fs::read_link(&disk)?;
                if target.is_absolute() {
                    current.clear();
                }
                push_components(&mut pending, &target);
                last_meta = None;
                continue;
            }
            if !pending.is_empty() && !meta.is_dir() {
                return Ok(Node::Missing);
            }
            current.push(name);
            last_meta = Some(meta);
        }

        let disk = self.disk_path(&current);
        let meta = match last_meta {
            Some(m) => m,
            None => match fs::metadata(&disk) {
                Ok(m) => m,
                Err(e) if is_missing(&e) => return Ok(Node::Missing),
                Err(e) => return Err(e),
            },
        };
        let mut real = PathBuf::from("/");
        real.extend(&current);
        Ok(Node::Present {
            disk,
            real,
            is_file: meta.is_file(),
            is_dir: meta.is_dir(),
        })
    }

    pub(super) fn read_file(&self, host_path: &Path) -> io::Result<FileContent> {
        let disk = match self.resolve(host_path)? {
            Node::Missing => return Ok(FileContent::Missing),
            Node::DevNull => return Ok(FileContent::DevNull),
            Node::Present { is_file: false, .. } => return Ok(FileContent::NotRegular),
            Node::Present { disk, .. } => disk,
        };
        let file = match fs::File::open(&disk) {
            Ok(f) => f,
            Err(e) if is_missing(&e) => return Ok(FileContent::Missing),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_FILE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {MAX_FILE_BYTES} bytes"),
            ));
        }
        Ok(FileContent::Bytes(bytes))
    }

    /// Entries of a directory, or `None` if it does not exist (or is not a
    /// directory).
    pub(super) fn list_dir(&self, host_dir: &Path) -> io::Result<Option<Vec<DirEntryInfo>>> {
        let disk = match self.resolve(host_dir)? {
            Node::Present {
                disk, is_dir: true, ..
            } => disk,
            _ => return Ok(None),
        };
        let reader = match fs::read_dir(&disk) {
            Ok(r) => r,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut entries = Vec::new();
        for entry in reader {
            let entry = entry?;
            let file_type = entry.file_type()?;
            entries.push(DirEntryInfo {
                name: entry.file_name(),
                disk_path: entry.path(),
                is_file: file_type.is_file(),
                is_symlink: file_type.is_symlink(),
            });
        }
        Ok(Some(entries))
    }
}

/// Push the components of `path` onto `stack` so that popping yields them in
/// order.
fn push_components(stack: &mut Vec<OsString>, path: &Path) {
    let parts: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    stack.extend(parts.into_iter().rev());
}

fn is_dev_null(current: &[OsString], name: &OsStr, pending: &[OsString]) -> bool {
    match (current, pending) {
        ([], [rest]) => name == "dev" && rest == "null",
        ([dev], []) => dev == "dev" && name == "null",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::systemd::test_support::{value, TempRoot};

    #[test]
    fn symlinks_are_resolved_inside_the_host_root() {
        let root = TempRoot::new("symlinks");
        // Merged /usr: /lib -> usr/lib (relative).
        root.write(
            "/usr/lib/systemd/system/real.service",
            "[Service]\nEnvironment=R=1\n",
        );
        root.symlink("/lib", "usr/lib");
        // An absolute symlink must be followed under the root, not on the tracer's host.
        root.symlink(
            "/etc/systemd/system/linked.service",
            "/lib/systemd/system/real.service",
        );
        root.write("/opt/envs/proxy.env", "HTTPS_PROXY=http://p:1\n");
        root.symlink("/etc/default/linked", "/opt/envs/proxy.env");
        root.write(
            "/etc/systemd/system/linked.service.d/env.conf",
            "[Service]\nEnvironmentFile=/etc/default/linked\n",
        );
        let env = root.load("linked.service");
        assert_eq!(value(&env, "R"), Some("1"));
        let proxy = env
            .get("HTTPS_PROXY")
            .expect("env file through absolute symlink");
        assert_eq!(proxy.file, PathBuf::from("/etc/default/linked"));
        assert!(env
            .warnings
            .iter()
            .any(|w| w.contains("alias of real.service")));
    }
}
