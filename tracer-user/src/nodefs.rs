//! The one way to read a file of the node on behalf of a process.
//!
//! The tracer runs as root, and nearly every path it reads was chosen by
//! someone else: unit files and `EnvironmentFile=` by the node's admin, the
//! kubelet's `--config` by whatever process calls itself `kubelet`, a
//! container's `/etc/hosts` by whoever built or runs the container. So every
//! such read goes through a [`NodeRoot`] and holds to four rules:
//!
//! * **Confined to its root.** A root is a directory handle: `--host-root`
//!   for the node's files, `/proc/<pid>/root` for a process's own. Paths are
//!   resolved inside it with `openat2(2)` and `RESOLVE_IN_ROOT` (Linux 5.6):
//!   `..` stops at the root and absolute symlinks restart at it, as they
//!   would for the process itself (`chroot`-like), never at the tracer's
//!   own `/`. Magic links (`/proc/self/root/...` inside a container's
//!   procfs) are refused (`RESOLVE_NO_MAGICLINKS`). Where `openat2` is
//!   missing (ENOSYS: an old kernel, or a seccomp profile that hides it),
//!   the same rules are applied by hand, one component at a time with
//!   `O_PATH | O_NOFOLLOW` from directory handles (the walk below, also used
//!   where the caller needs the resolved path, as systemd's `chase()` does).
//! * **Regular files only, nothing opened that has side effects.** The path
//!   is first opened with `O_PATH`, which opens nothing on the file system
//!   (no FIFO wait, no device `open()`: a watchdog device, a tape, a tty are
//!   never touched); only after `fstat` says "regular file" is the same
//!   inode reopened for reading through `/proc/self/fd`, with
//!   `O_NONBLOCK | O_NOCTTY | O_CLOEXEC`.
//! * **A size cap per use.** The caller says how much it will take; a larger
//!   file (or one that grows while it is read, or `/dev/zero` behind a bind
//!   mount) is an error after at most cap + 1 bytes.
//! * **Bounded in time.** A file system can hang a thread in the kernel
//!   (a dead NFS server, a FUSE daemon that never answers), and no flag
//!   avoids that. Every operation therefore runs on a short-lived thread of
//!   its own and the caller waits at most the [`Budget`]'s deadline, then
//!   gives up with [`NodeFsError::TimedOut`]. The hung thread is left to
//!   the kernel; each budget allows only a few to be outstanding at once,
//!   after which its reads fail at once with [`NodeFsError::Busy`] instead
//!   of piling up threads. Budgets are separate per kind of caller, so a
//!   process that hangs reads of its own root cannot starve the reads of
//!   the node's unit files.
//!
//! Errors never carry any of a file's content: only paths and reasons.

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    io::{self, Read},
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::{
            ffi::OsStrExt,
            fs::{FileTypeExt, MetadataExt, OpenOptionsExt},
        },
    },
    path::{Component, Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc,
    },
    time::{Duration, SystemTime},
};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

/// Same limit as Linux's SYMLOOP_MAX / systemd's chase().
const MAX_SYMLINKS: usize = 40;
/// Entries taken from one directory at most: unit directories hold tens.
const MAX_DIR_ENTRIES: usize = 16 * 1024;
/// `openat2` may fail with EAGAIN when a rename raced the lookup
/// (openat2(2), RESOLVE_IN_ROOT); it is retried this many times.
const EAGAIN_RETRIES: usize = 3;
/// Stack of a reader thread: it only makes system calls.
const READER_STACK: usize = 128 * 1024;

/// How long one kind of caller waits for one operation, and how many of its
/// operations may hang at once before it stops starting new ones.
#[derive(Debug)]
pub struct Budget {
    /// What the reads are for, in messages.
    what: &'static str,
    deadline: Duration,
    max_in_flight: usize,
    in_flight: AtomicUsize,
}

impl Budget {
    pub const fn new(what: &'static str, deadline: Duration, max_in_flight: usize) -> Self {
        Self {
            what,
            deadline,
            max_in_flight,
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Operations started and not finished (hung ones included).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// Files the node's admin writes under `--host-root`: unit files, drop-ins,
/// `EnvironmentFile=`, `/etc/default`, `system.conf`, the host's hosts file.
/// Read on the drain thread (unit files, cached) and by the doctor: a hung
/// host file system costs at most 2 × 1 s, then fails at once.
pub static HOST_CONFIG: Budget = Budget::new("node configuration files", Duration::from_secs(1), 2);

/// A host path that a process named (the kubelet's `--config`): chosen by
/// whoever runs a process with that name, so kept apart from the admin's
/// files.
pub static NAMED_BY_PROCESS: Budget =
    Budget::new("files named by a process", Duration::from_secs(2), 2);

/// Files inside a process's own root (`/proc/<pid>/root`): a container's
/// `/etc/hosts`. Read by the resolver's workers.
pub static PROCESS_FILES: Budget =
    Budget::new("files inside a process's root", Duration::from_secs(1), 4);

/// Why a node file was not read. Never holds any of the file's content.
#[derive(Debug, thiserror::Error)]
pub enum NodeFsError {
    #[error("{} does not exist under {}", path.display(), root.display())]
    Missing { root: PathBuf, path: PathBuf },
    #[error("{} under {} is a {kind}, not a regular file: not read", path.display(), root.display())]
    NotRegular {
        root: PathBuf,
        path: PathBuf,
        kind: &'static str,
    },
    #[error("{} under {} is larger than {limit} bytes: not read", path.display(), root.display())]
    TooLarge {
        root: PathBuf,
        path: PathBuf,
        limit: u64,
    },
    #[error("{} under {}: too many levels of symbolic links (more than 40)", path.display(), root.display())]
    TooManyLinks { root: PathBuf, path: PathBuf },
    #[error("{} under {} did not answer within {after:?} (a hung file system?): given up", path.display(), root.display())]
    TimedOut {
        root: PathBuf,
        path: PathBuf,
        after: Duration,
    },
    #[error("{} under {} not read: {in_flight} earlier reads of {what} are still hung", path.display(), root.display())]
    Busy {
        root: PathBuf,
        path: PathBuf,
        what: &'static str,
        in_flight: usize,
    },
    #[error("cannot open {} as a root directory: {source}", root.display())]
    Root {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {} under {}: {source}", path.display(), root.display())]
    Io {
        root: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl NodeFsError {
    /// The path does not exist (or a component is not a directory): for
    /// most callers an answer, not a failure.
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Missing { .. })
    }
}

/// What a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

impl FileKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Regular => "regular file",
            Self::Directory => "directory",
            Self::Symlink => "symbolic link",
            Self::Fifo => "FIFO",
            Self::Socket => "socket",
            Self::CharDevice => "character device",
            Self::BlockDevice => "block device",
            Self::Unknown => "file of unknown type",
        }
    }

    fn of(t: std::fs::FileType) -> Self {
        if t.is_file() {
            Self::Regular
        } else if t.is_dir() {
            Self::Directory
        } else if t.is_symlink() {
            Self::Symlink
        } else if t.is_fifo() {
            Self::Fifo
        } else if t.is_socket() {
            Self::Socket
        } else if t.is_char_device() {
            Self::CharDevice
        } else if t.is_block_device() {
            Self::BlockDevice
        } else {
            Self::Unknown
        }
    }

    fn of_rustix(t: rustix::fs::FileType) -> Self {
        use rustix::fs::FileType as T;
        match t {
            T::RegularFile => Self::Regular,
            T::Directory => Self::Directory,
            T::Symlink => Self::Symlink,
            T::Fifo => Self::Fifo,
            T::Socket => Self::Socket,
            T::CharacterDevice => Self::CharDevice,
            T::BlockDevice => Self::BlockDevice,
            T::Unknown => Self::Unknown,
        }
    }
}

/// What `stat` says about a file (symlinks followed inside the root).
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub kind: FileKind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub modified: Option<SystemTime>,
    pub size: u64,
    /// Owner and group, for "could this user have read it".
    pub uid: u32,
    pub gid: u32,
    /// Device and inode: the file's identity, for "is this the same file
    /// as a process's executable".
    pub dev: u64,
    pub ino: u64,
}

/// One entry of a directory.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: OsString,
    /// The entry itself, symlinks not followed.
    pub kind: FileKind,
    /// Where a symlink points, as written in it.
    pub link_target: Option<PathBuf>,
}

/// A path resolved inside a root, the way systemd's `chase()` does with a
/// root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Missing,
    /// The path resolves to `/dev/null` (a masked unit, systemd.unit(5)).
    /// Recognised by name, since a host root may not hold the host's /dev.
    DevNull,
    Present {
        /// The path inside the root after following every symlink.
        real: PathBuf,
        kind: FileKind,
    },
}

/// A directory that node paths are resolved in: a handle, so a later
/// rename or mount over its path does not move it.
#[derive(Debug, Clone)]
pub struct NodeRoot {
    dir: Arc<OwnedFd>,
    /// The root's path as given, for messages.
    shown: Arc<Path>,
    budget: &'static Budget,
}

/// Whether `openat2` answered ENOSYS once: then the walk is used directly.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

impl NodeRoot {
    /// The directory at `root` (the tracer's own path to it, such as
    /// `--host-root` or `/proc/<pid>/root`), read under `budget`.
    pub fn open(root: &Path, budget: &'static Budget) -> Result<Self, NodeFsError> {
        let shown: Arc<Path> = Arc::from(root);
        let target = root.to_path_buf();
        let dir = bounded(budget, &shown, Path::new("/"), move || {
            // O_PATH opens nothing on the file system; following the path
            // given (including the /proc/<pid>/root magic link) is the
            // point here: it is the tracer's own configuration or procfs.
            rustix::fs::open(
                &target,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| NodeFsError::Root {
                root: target.clone(),
                source: e.into(),
            })
        })?;
        Ok(Self {
            dir: Arc::new(dir),
            shown,
            budget,
        })
    }

    /// The root of process `pid` (`<proc_root>/<pid>/root`): where that
    /// process's own absolute paths lead.
    pub fn of_process(
        proc_root: &Path,
        pid: u32,
        budget: &'static Budget,
    ) -> Result<Self, NodeFsError> {
        let root = proc_root.join(pid.to_string()).join("root");
        // Opened here, not on a reader thread: following the procfs magic
        // link asks nothing of the process's own file system (the kernel
        // hands over the task's root directory as it is), so it cannot
        // hang; this saves a thread on the resolver's every lookup.
        let dir = rustix::fs::open(
            &root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| NodeFsError::Root {
            root: root.clone(),
            source: e.into(),
        })?;
        Ok(Self {
            dir: Arc::new(dir),
            shown: Arc::from(root.as_path()),
            budget,
        })
    }

    /// The root as given, for messages.
    pub fn path(&self) -> &Path {
        &self.shown
    }

    /// The whole of regular file `path` (resolved inside the root), at most
    /// `max_bytes` of it.
    pub fn read(&self, path: &Path, max_bytes: u64) -> Result<Vec<u8>, NodeFsError> {
        self.run(path, move |at| {
            let fd = at.locate()?;
            at.read_regular(&fd, max_bytes)
        })
    }

    /// `stat` of `path`, symlinks followed inside the root.
    pub fn stat(&self, path: &Path) -> Result<FileInfo, NodeFsError> {
        self.run(path, |at| {
            let fd = at.locate()?;
            let meta = at.metadata(&fd)?;
            Ok(FileInfo {
                kind: FileKind::of(meta.file_type()),
                mode: meta.mode() & 0o7777,
                modified: meta.modified().ok(),
                size: meta.size(),
                uid: meta.uid(),
                gid: meta.gid(),
                dev: meta.dev(),
                ino: meta.ino(),
            })
        })
    }

    /// The entries of directory `path` (without `.` and `..`), in the
    /// order the file system gives them.
    pub fn list_dir(&self, path: &Path) -> Result<Vec<DirEntry>, NodeFsError> {
        self.run(path, |at| {
            let fd = at.locate()?;
            let kind = FileKind::of(at.metadata(&fd)?.file_type());
            if kind != FileKind::Directory {
                return Err(at.not_regular(kind));
            }
            at.entries(&fd)
        })
    }

    /// Follow `path` inside the root component by component, and say where
    /// it leads (systemd's `chase()` with a root directory).
    pub fn resolve(&self, path: &Path) -> Result<Resolved, NodeFsError> {
        self.run(path, |at| match at.walk()? {
            Walked::Missing => Ok(Resolved::Missing),
            Walked::DevNull => Ok(Resolved::DevNull),
            Walked::Found { fd, real } => Ok(Resolved::Present {
                real,
                kind: FileKind::of(at.metadata(&fd)?.file_type()),
            }),
        })
    }

    /// Run `job` for `path` under the root's budget.
    fn run<T: Send + 'static>(
        &self,
        path: &Path,
        job: impl FnOnce(&At) -> Result<T, NodeFsError> + Send + 'static,
    ) -> Result<T, NodeFsError> {
        let at = At {
            dir: Arc::clone(&self.dir),
            root: Arc::clone(&self.shown),
            path: path.to_path_buf(),
        };
        bounded(self.budget, &self.shown, path, move || job(&at))
    }
}

/// Run `job` on a thread of its own and wait at most the budget's deadline.
fn bounded<T: Send + 'static>(
    budget: &'static Budget,
    root: &Path,
    path: &Path,
    job: impl FnOnce() -> Result<T, NodeFsError> + Send + 'static,
) -> Result<T, NodeFsError> {
    let before = budget.in_flight.fetch_add(1, Ordering::SeqCst);
    // Released when the job ends, however it ends (a hung job keeps it).
    let slot = Slot(budget);
    if before >= budget.max_in_flight {
        return Err(NodeFsError::Busy {
            root: root.to_path_buf(),
            path: path.to_path_buf(),
            what: budget.what,
            in_flight: before,
        });
    }
    let (tx, rx) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("nodefs".into())
        .stack_size(READER_STACK)
        .spawn(move || {
            let result = job();
            drop(slot);
            // The caller may have given up: nobody to tell then.
            let _ = tx.send(result);
        });
    if let Err(source) = spawned {
        return Err(NodeFsError::Io {
            root: root.to_path_buf(),
            path: path.to_path_buf(),
            source,
        });
    }
    match rx.recv_timeout(budget.deadline) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(NodeFsError::TimedOut {
            root: root.to_path_buf(),
            path: path.to_path_buf(),
            after: budget.deadline,
        }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(NodeFsError::Io {
            root: root.to_path_buf(),
            path: path.to_path_buf(),
            source: io::Error::other("the reader thread ended without an answer"),
        }),
    }
}

/// One operation's place in its budget.
struct Slot(&'static Budget);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One operation: a root handle and a path inside it, on the reader thread.
struct At {
    dir: Arc<OwnedFd>,
    root: Arc<Path>,
    path: PathBuf,
}

enum Walked {
    Missing,
    DevNull,
    /// An `O_PATH` handle on what the path leads to, and that place's path
    /// inside the root.
    Found {
        fd: OwnedFd,
        real: PathBuf,
    },
}

fn is_missing_errno(e: rustix::io::Errno) -> bool {
    e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR
}

impl At {
    fn missing(&self) -> NodeFsError {
        NodeFsError::Missing {
            root: self.root.to_path_buf(),
            path: self.path.clone(),
        }
    }

    fn not_regular(&self, kind: FileKind) -> NodeFsError {
        NodeFsError::NotRegular {
            root: self.root.to_path_buf(),
            path: self.path.clone(),
            kind: kind.name(),
        }
    }

    fn io(&self, source: impl Into<io::Error>) -> NodeFsError {
        NodeFsError::Io {
            root: self.root.to_path_buf(),
            path: self.path.clone(),
            source: source.into(),
        }
    }

    fn errno(&self, e: rustix::io::Errno) -> NodeFsError {
        if is_missing_errno(e) {
            self.missing()
        } else if e == rustix::io::Errno::LOOP {
            NodeFsError::TooManyLinks {
                root: self.root.to_path_buf(),
                path: self.path.clone(),
            }
        } else {
            self.io(e)
        }
    }

    /// An `O_PATH` handle on what the path leads to inside the root.
    fn locate(&self) -> Result<OwnedFd, NodeFsError> {
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            let flags = OFlags::PATH | OFlags::CLOEXEC;
            let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
            for _ in 0..EAGAIN_RETRIES {
                match rustix::fs::openat2(&*self.dir, &self.path, flags, Mode::empty(), resolve) {
                    Ok(fd) => return Ok(fd),
                    Err(e) if e == rustix::io::Errno::AGAIN => continue,
                    Err(e) if e == rustix::io::Errno::NOSYS => {
                        NO_OPENAT2.store(true, Ordering::Relaxed);
                        break;
                    }
                    // A seccomp profile may refuse openat2 with EPERM; the
                    // walk answers a real EPERM the same way.
                    Err(e) if e == rustix::io::Errno::PERM => break,
                    Err(e) => return Err(self.errno(e)),
                }
            }
        }
        match self.walk()? {
            Walked::Found { fd, .. } => Ok(fd),
            // Without /dev under the root, /dev/null has no inode to read.
            Walked::Missing | Walked::DevNull => Err(self.missing()),
        }
    }

    /// Resolve the path by hand: every component opened with
    /// `O_PATH | O_NOFOLLOW` from the handle of its directory, `..` popping
    /// that list (never above the root), symlinks read and their target's
    /// components pushed back (absolute ones restart at the root).
    fn walk(&self) -> Result<Walked, NodeFsError> {
        let mut pending: Vec<OsString> = Vec::new();
        push_components(&mut pending, &self.path);
        // Directories below the root on the way, and their names.
        let mut dirs: Vec<OwnedFd> = Vec::new();
        let mut names: Vec<OsString> = Vec::new();
        let mut last: Option<OwnedFd> = None;
        let mut links = 0usize;
        while let Some(name) = pending.pop() {
            if let Some(fd) = last.take() {
                // What was the last component has more after it.
                dirs.push(fd);
            }
            if name == ".." {
                dirs.pop();
                names.pop();
                continue;
            }
            if is_dev_null(&names, &name, &pending) {
                return Ok(Walked::DevNull);
            }
            let parent = dirs.last().map_or(self.dir.as_fd(), AsFd::as_fd);
            let fd = match rustix::fs::openat(
                parent,
                name.as_os_str(),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(e) if is_missing_errno(e) => return Ok(Walked::Missing),
                Err(e) => return Err(self.errno(e)),
            };
            let kind = FileKind::of(self.metadata(&fd)?.file_type());
            if kind == FileKind::Symlink {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(NodeFsError::TooManyLinks {
                        root: self.root.to_path_buf(),
                        path: self.path.clone(),
                    });
                }
                // Empty path: the link the O_PATH handle is on (Linux 2.6.39).
                let target =
                    rustix::fs::readlinkat(&fd, "", Vec::new()).map_err(|e| self.errno(e))?;
                let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                if target.is_absolute() {
                    dirs.clear();
                    names.clear();
                }
                push_components(&mut pending, &target);
                continue;
            }
            if !pending.is_empty() && kind != FileKind::Directory {
                return Ok(Walked::Missing);
            }
            names.push(name);
            last = Some(fd);
        }
        let fd = match last.or_else(|| dirs.pop()) {
            Some(fd) => fd,
            None => self.dir.try_clone().map_err(|e| self.io(e))?,
        };
        let mut real = PathBuf::from("/");
        real.extend(&names);
        Ok(Walked::Found { fd, real })
    }

    /// `fstat` of an `O_PATH` handle.
    fn metadata(&self, fd: &OwnedFd) -> Result<std::fs::Metadata, NodeFsError> {
        let file = fd.try_clone().map(File::from).map_err(|e| self.io(e))?;
        file.metadata().map_err(|e| self.io(e))
    }

    /// Reopen the inode an `O_PATH` handle is on, for reading, if it is a
    /// regular file, and read at most `max_bytes` of it.
    fn read_regular(&self, fd: &OwnedFd, max_bytes: u64) -> Result<Vec<u8>, NodeFsError> {
        let kind = FileKind::of(self.metadata(fd)?.file_type());
        if kind != FileKind::Regular {
            return Err(self.not_regular(kind));
        }
        // /proc/self/fd/N reopens exactly that inode, whatever has been
        // renamed or mounted since (the tracer always has /proc).
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(|e| self.io(e))?;
        let meta = file.metadata().map_err(|e| self.io(e))?;
        let kind = FileKind::of(meta.file_type());
        if kind != FileKind::Regular {
            return Err(self.not_regular(kind));
        }
        let too_large = || NodeFsError::TooLarge {
            root: self.root.to_path_buf(),
            path: self.path.clone(),
            limit: max_bytes,
        };
        if meta.len() > max_bytes {
            return Err(too_large());
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        // One byte more than allowed tells a file that grew (or lies about
        // its size, as procfs and sysfs files do) from one that fits.
        file.take(max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| self.io(e))?;
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > max_bytes {
            return Err(too_large());
        }
        Ok(bytes)
    }

    fn entries(&self, fd: &OwnedFd) -> Result<Vec<DirEntry>, NodeFsError> {
        // "." relative to the O_PATH handle is that very directory, opened
        // for reading now (getdents refuses an O_PATH handle).
        let dir = rustix::fs::openat(
            fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(rustix::fs::Dir::new)
        .map_err(|e| self.errno(e))?;
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| self.errno(e))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            if out.len() >= MAX_DIR_ENTRIES {
                return Err(NodeFsError::TooLarge {
                    root: self.root.to_path_buf(),
                    path: self.path.clone(),
                    limit: MAX_DIR_ENTRIES as u64,
                });
            }
            let mut kind = FileKind::of_rustix(entry.file_type());
            if kind == FileKind::Unknown {
                // Some file systems leave d_type out.
                if let Ok(st) = rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                    kind = FileKind::of_rustix(rustix::fs::FileType::from_raw_mode(st.st_mode));
                }
            }
            let link_target = (kind == FileKind::Symlink)
                .then(|| rustix::fs::readlinkat(fd, name, Vec::new()).ok())
                .flatten()
                .map(|t| PathBuf::from(OsStr::from_bytes(t.as_bytes())));
            out.push(DirEntry {
                name: name.to_os_string(),
                kind,
                link_target,
            });
        }
        Ok(out)
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
    use std::os::unix::fs::symlink;
    use std::time::Instant;

    static TEST: Budget = Budget::new("test files", Duration::from_secs(5), 8);

    /// A throw-away root with a secret beside it (outside the root).
    struct Fixture {
        base: PathBuf,
        root: PathBuf,
    }

    impl Fixture {
        fn new(tag: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let base = std::env::temp_dir().join(format!(
                "nodefs-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&base);
            // Four levels deep, so a plain join of "../../../../etc/shadow"
            // would land on base/etc/shadow.
            let root = base.join("a/b/c/root");
            std::fs::create_dir_all(root.join("etc")).unwrap();
            std::fs::create_dir_all(base.join("etc")).unwrap();
            std::fs::write(base.join("etc/shadow"), "OUTSIDE-SECRET\n").unwrap();
            std::fs::write(root.join("etc/shadow"), "inside\n").unwrap();
            Fixture { base, root }
        }

        fn open(&self) -> NodeRoot {
            NodeRoot::open(&self.root, &TEST).unwrap()
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    fn read(root: &NodeRoot, path: &str) -> Result<String, NodeFsError> {
        root.read(Path::new(path), 1024)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    #[test]
    fn dot_dot_and_absolute_symlinks_stay_inside_the_root() {
        let f = Fixture::new("escape");
        let root = f.open();
        // The relative path that escapes a plain join...
        assert_eq!(
            std::fs::read_to_string(f.root.join("../../../../etc/shadow")).unwrap(),
            "OUTSIDE-SECRET\n"
        );
        // ...stays inside here.
        assert_eq!(read(&root, "../../../../etc/shadow").unwrap(), "inside\n");
        symlink("/etc/shadow", f.root.join("abs")).unwrap();
        symlink("../../../../../etc/shadow", f.root.join("etc/rel")).unwrap();
        symlink(f.base.join("etc/shadow"), f.root.join("full")).unwrap();
        for p in ["abs", "/abs", "etc/rel"] {
            assert_eq!(read(&root, p).unwrap(), "inside\n", "{p}");
        }
        // An absolute link to the outside file's real path is re-rooted:
        // the same path does not exist inside.
        assert!(read(&root, "full").unwrap_err().is_missing());
        assert_eq!(
            root.resolve(Path::new("/abs")).unwrap(),
            Resolved::Present {
                real: PathBuf::from("/etc/shadow"),
                kind: FileKind::Regular
            }
        );
    }

    #[test]
    fn the_hand_walk_confines_the_same_way() {
        // The fallback for kernels without openat2, run directly.
        let f = Fixture::new("walk");
        symlink("/etc/shadow", f.root.join("abs")).unwrap();
        symlink("../../../../../etc/shadow", f.root.join("etc/rel")).unwrap();
        std::fs::create_dir_all(f.root.join("usr/lib")).unwrap();
        symlink("usr/lib", f.root.join("lib")).unwrap();
        std::fs::write(f.root.join("usr/lib/x"), "x\n").unwrap();
        let root = f.open();
        for (p, real) in [
            ("../../../../etc/shadow", "/etc/shadow"),
            ("abs", "/etc/shadow"),
            ("etc/rel", "/etc/shadow"),
            ("/lib/x", "/usr/lib/x"),
            ("/lib/../lib/x", "/usr/lib/x"),
            ("/../../etc/./shadow", "/etc/shadow"),
        ] {
            let at = At {
                dir: Arc::clone(&root.dir),
                root: Arc::clone(&root.shown),
                path: PathBuf::from(p),
            };
            let Ok(Walked::Found { fd, real: got }) = at.walk() else {
                panic!("{p} not found");
            };
            assert_eq!(got, PathBuf::from(real), "{p}");
            let bytes = at.read_regular(&fd, 64).unwrap();
            assert!(!bytes.starts_with(b"OUTSIDE"), "{p}");
        }
    }

    #[test]
    fn dev_zero_and_devices_are_refused_without_reading() {
        let f = Fixture::new("dev");
        let host = NodeRoot::open(Path::new("/"), &TEST).unwrap();
        let started = Instant::now();
        let err = host.read(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(
            matches!(
                err,
                NodeFsError::NotRegular {
                    kind: "character device",
                    ..
                }
            ),
            "{err}"
        );
        // A symlink inside the root to a device: the root has no /dev, the
        // link leads nowhere.
        symlink("/dev/zero", f.root.join("zero")).unwrap();
        assert!(read(&f.open(), "zero").unwrap_err().is_missing());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_fifo_never_blocks() {
        let f = Fixture::new("fifo");
        let fifo = f.root.join("etc/hosts");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let root = f.open();
        let err = read(&root, "/etc/hosts").unwrap_err();
        assert!(
            matches!(err, NodeFsError::NotRegular { kind: "FIFO", .. }),
            "{err}"
        );
        assert_eq!(
            root.stat(Path::new("/etc/hosts")).unwrap().kind,
            FileKind::Fifo
        );
    }

    #[test]
    fn the_size_cap_is_enforced() {
        let f = Fixture::new("cap");
        std::fs::write(f.root.join("big"), vec![b'x'; 4096]).unwrap();
        let root = f.open();
        assert_eq!(root.read(Path::new("big"), 4096).unwrap().len(), 4096);
        let err = root.read(Path::new("big"), 4095).unwrap_err();
        assert!(
            matches!(err, NodeFsError::TooLarge { limit: 4095, .. }),
            "{err}"
        );
        // A file that says size 0 but streams (procfs): the cap still holds.
        let host = NodeRoot::open(Path::new("/"), &TEST).unwrap();
        let err = host.read(Path::new("/proc/self/maps"), 16).unwrap_err();
        assert!(matches!(err, NodeFsError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn symlink_loops_and_missing_paths() {
        let f = Fixture::new("loop");
        symlink("b", f.root.join("a")).unwrap();
        symlink("a", f.root.join("b")).unwrap();
        let root = f.open();
        assert!(matches!(
            read(&root, "a").unwrap_err(),
            NodeFsError::TooManyLinks { .. }
        ));
        assert!(matches!(
            root.resolve(Path::new("a")).unwrap_err(),
            NodeFsError::TooManyLinks { .. }
        ));
        assert!(read(&root, "nothing/here").unwrap_err().is_missing());
        assert!(read(&root, "etc/shadow/below").unwrap_err().is_missing());
        assert_eq!(
            root.resolve(Path::new("nothing")).unwrap(),
            Resolved::Missing
        );
        symlink("/dev/null", f.root.join("masked")).unwrap();
        assert_eq!(
            root.resolve(Path::new("masked")).unwrap(),
            Resolved::DevNull
        );
        assert!(matches!(
            read(&root, "etc").unwrap_err(),
            NodeFsError::NotRegular {
                kind: "directory",
                ..
            }
        ));
    }

    #[test]
    fn directories_list_kinds_and_link_targets() {
        let f = Fixture::new("list");
        symlink("/etc/shadow", f.root.join("etc/link")).unwrap();
        let root = f.open();
        let mut entries = root.list_dir(Path::new("/etc")).unwrap();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, "link");
        assert_eq!(entries[0].kind, FileKind::Symlink);
        assert_eq!(entries[0].link_target, Some(PathBuf::from("/etc/shadow")));
        assert_eq!(entries[1].kind, FileKind::Regular);
        assert!(root
            .list_dir(Path::new("/nothing"))
            .unwrap_err()
            .is_missing());
        // The root itself, also through "..".
        assert_eq!(root.list_dir(Path::new("/..")).unwrap().len(), 1);
    }

    #[test]
    fn a_process_root_is_its_own() {
        // Our own root is "/": the process root of ourselves reads the
        // real /etc/hostname-like files; here simply /proc/self/root/etc.
        let me = NodeRoot::of_process(Path::new("/proc"), std::process::id(), &TEST).unwrap();
        assert!(me.stat(Path::new("/etc")).unwrap().kind == FileKind::Directory);
        let gone = NodeRoot::of_process(Path::new("/proc"), u32::MAX, &TEST).unwrap_err();
        assert!(matches!(gone, NodeFsError::Root { .. }), "{gone}");
    }

    #[test]
    fn a_hung_operation_is_given_up_and_bounded() {
        static SLOW: Budget = Budget::new("slow files", Duration::from_millis(100), 1);
        let root = Path::new("/r");
        let started = Instant::now();
        let hung = bounded(&SLOW, root, Path::new("x"), || {
            std::thread::sleep(Duration::from_millis(700));
            Ok(())
        });
        assert!(
            matches!(hung, Err(NodeFsError::TimedOut { .. })),
            "{hung:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(600));
        // While it hangs, the budget is spent: the next fails at once.
        let busy = bounded(&SLOW, root, Path::new("y"), || Ok(()));
        assert!(
            matches!(busy, Err(NodeFsError::Busy { in_flight: 1, .. })),
            "{busy:?}"
        );
        // Once the hung one ends, reads start again.
        let deadline = Instant::now() + Duration::from_secs(5);
        while SLOW.in_flight() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(bounded(&SLOW, root, Path::new("z"), || Ok(())).is_ok());
    }
}
