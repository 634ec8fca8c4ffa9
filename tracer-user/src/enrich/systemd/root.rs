//! Reading host files under a host root, for the systemd modules: a thin
//! adapter over [`crate::nodefs`], which resolves paths inside the root
//! like systemd's chase() with a root directory (absolute symlinks stay
//! inside the host's tree), reads regular files only, with a size cap, and
//! gives up on a file system that hangs.

use super::SystemdError;
use crate::nodefs::{FileKind, NodeFsError, NodeRoot, Resolved};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Unit files and env files are tiny; the cap only protects against a symlink
/// to something huge.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

pub(super) fn io_error(path: &Path) -> impl FnOnce(NodeFsError) -> SystemdError + '_ {
    move |source| SystemdError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) struct HostFs<'a> {
    pub(super) root: &'a NodeRoot,
}

pub(super) enum Node {
    Missing,
    /// The path resolves to /dev/null: masked (systemd.unit(5)). Recognised by
    /// name, since the host's /dev may not be visible under `host_root`.
    DevNull,
    Present {
        /// Host path after following symlinks.
        real: PathBuf,
        is_file: bool,
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
    pub(super) is_file: bool,
    pub(super) is_symlink: bool,
    /// Where a symlink points, as written in it.
    pub(super) link_target: Option<PathBuf>,
}

impl HostFs<'_> {
    /// Resolve `host_path` one component at a time like chase() with a root:
    /// ".." cannot climb above the root, absolute symlink targets restart at
    /// the root, at most 40 links are followed.
    pub(super) fn resolve(&self, host_path: &Path) -> Result<Node, NodeFsError> {
        Ok(match self.root.resolve(host_path)? {
            Resolved::Missing => Node::Missing,
            Resolved::DevNull => Node::DevNull,
            Resolved::Present { real, kind } => Node::Present {
                real,
                is_file: kind == FileKind::Regular,
            },
        })
    }

    pub(super) fn read_file(&self, host_path: &Path) -> Result<FileContent, NodeFsError> {
        match self.resolve(host_path)? {
            Node::Missing => return Ok(FileContent::Missing),
            Node::DevNull => return Ok(FileContent::DevNull),
            Node::Present { is_file: false, .. } => return Ok(FileContent::NotRegular),
            Node::Present { .. } => {}
        }
        match self.root.read(host_path, MAX_FILE_BYTES) {
            Ok(bytes) => Ok(FileContent::Bytes(bytes)),
            // Changed since it was resolved.
            Err(e) if e.is_missing() => Ok(FileContent::Missing),
            Err(NodeFsError::NotRegular { .. }) => Ok(FileContent::NotRegular),
            Err(e) => Err(e),
        }
    }

    /// Entries of a directory, or `None` if it does not exist (or is not a
    /// directory).
    pub(super) fn list_dir(
        &self,
        host_dir: &Path,
    ) -> Result<Option<Vec<DirEntryInfo>>, NodeFsError> {
        let entries = match self.root.list_dir(host_dir) {
            Ok(entries) => entries,
            Err(e) if e.is_missing() => return Ok(None),
            Err(NodeFsError::NotRegular { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(
            entries
                .into_iter()
                .map(|e| DirEntryInfo {
                    is_file: e.kind == FileKind::Regular,
                    is_symlink: e.kind == FileKind::Symlink,
                    name: e.name,
                    link_target: e.link_target,
                })
                .collect(),
        ))
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
