//! Where the batch of lines goes: a file descriptor (stdout, or a file
//! opened without following links), written in whole lines, reopened on
//! SIGHUP, and never the reason tracing stops.
//!
//! - **Rotation, `create` mode:** logrotate renames the file and creates a
//!   new one, then sends SIGHUP. Until then our descriptor still points at
//!   the renamed file, so the batch in hand goes there; `reopen` then opens
//!   the path again. A batch is one write(2) to one descriptor, so a line is
//!   never half in one file and half in the next.
//! - **Rotation, `copytruncate` mode:** logrotate copies the file and
//!   truncates it to 0. The file is opened `O_APPEND`, so the next write
//!   lands at the new end (offset 0), not at our old offset (which would
//!   leave a hole of NUL bytes). logrotate's own manual notes that lines
//!   written between its copy and its truncate are lost; we notice the
//!   truncation (the file is shorter than our last write left it) and say
//!   so on stderr.
//! - **Links:** the path's last component is opened with `O_NOFOLLOW` (and
//!   created with `O_EXCL`), relative to a descriptor of its directory held
//!   from the start, so a symlink planted at the path (in a shared
//!   directory such as /tmp, at start or swapped in before a reopen) is
//!   refused rather than followed to another file.
//! - **Mode:** a file the tracer creates gets mode 0640 exactly (set with
//!   fchmod, so a permissive umask cannot widen it); an existing file (one
//!   logrotate `create`d) keeps its mode.
//! - **Existing files** (at start and at each reopen) are refused unless
//!   they are (see [`refusal`]):
//!   - regular files: a FIFO whose reader stops reading would stall the
//!     drain, and a device or socket is no log (appending to a disk's
//!     device would corrupt it). One exception: `/dev/null` (recognised by
//!     its device number, 1:3, not its name), for metrics without events;
//!   - owned by the tracer's user or by root: a file someone else
//!     pre-created in a shared directory (a 0666 file in /tmp) would hand
//!     that user every event, and let them rewrite or truncate it;
//!   - not writable by every user, whoever owns them: anyone could forge
//!     or erase events that log pipelines and alerts trust. Root chose the
//!     mode of a root-owned file, so group write access is accepted (e.g.
//!     logrotate's `create 0660 root adm`); write access for others is
//!     never what a log of the node's traffic needs;
//!   - of one link: a second hard link is the same file under another
//!     name, perhaps one that is not a log at all.
//! - **Failures:** a write that fails (disk full, I/O error) drops the
//!   batch's unwritten lines and counts them; a short write's trailing
//!   half line is cut off the file again, so the file holds whole lines
//!   only. The next batch tries again: writing resumes by itself once
//!   there is space. A failed write returns at once; it never blocks the
//!   drain (a pipe whose reader is slow does block it: that is the
//!   backpressure `Pipeline::flush_if_full` describes).

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

/// Mode of a file the tracer creates: owner read/write, group read (the
/// log reader's group, e.g. `adm`), nothing for others: events name
/// processes, their arguments and their proxies.
pub const FILE_MODE: libc::mode_t = 0o640;

/// A path the output can be reopened at: its directory, held open, and its
/// last component.
struct Reopenable {
    dir: OwnedFd,
    name: CString,
}

/// An output descriptor.
pub struct Output {
    fd: OwnedFd,
    reopen: Option<Reopenable>,
    /// A regular file: a short write's half line can be cut off again, and
    /// a truncation by someone else can be noticed.
    regular: bool,
    /// Where our last write ended (regular files), to notice a truncation.
    end: Option<u64>,
}

/// A write that did not complete: how many bytes of the batch reached the
/// output before the error.
#[derive(Debug)]
pub struct ShortWrite {
    pub written: usize,
    pub error: io::Error,
}

/// Whether `fd` is a regular file.
fn is_regular(fd: &OwnedFd) -> bool {
    fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: zeroed is a valid bit pattern for the plain-data stat struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open for our lifetime; st is a valid pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Why an existing file (its `stat`) is not fit to receive the events of
/// a tracer running as `euid`, if it is not; see the module comment.
fn refusal(st: &libc::stat, euid: libc::uid_t) -> Option<String> {
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => None,
        // /dev/null: nothing stalls, nothing is kept.
        libc::S_IFCHR if st.st_rdev == libc::makedev(1, 3) => return None,
        libc::S_IFIFO => Some("a FIFO (a reader that stops reading would stall the tracer)"),
        libc::S_IFDIR => Some("a directory"),
        libc::S_IFLNK => Some("a symbolic link"),
        libc::S_IFSOCK => Some("a socket"),
        libc::S_IFCHR | libc::S_IFBLK => Some("a device"),
        _ => Some("not a regular file"),
    };
    if let Some(kind) = kind {
        return Some(format!(
            "it is {kind}, not a regular file; give the path of a regular file (or none, \
             and the tracer creates it), or write to stdout"
        ));
    }
    if st.st_uid != euid && st.st_uid != 0 {
        return Some(format!(
            "it is owned by uid {}, neither the tracer's user (uid {euid}) nor root: whoever \
             pre-created it could read every event and rewrite them; remove it (the tracer \
             creates it, mode 0640) or chown it",
            st.st_uid
        ));
    }
    if st.st_mode & libc::S_IWOTH != 0 {
        return Some(format!(
            "it is writable by every user (mode {:04o}): anyone could forge or erase events; \
             chmod o-w it",
            st.st_mode & 0o7777
        ));
    }
    if st.st_nlink > 1 {
        return Some(format!(
            "it has {} hard links: the same file is reachable under another name, perhaps \
             one that is not a log; give a path with a single link",
            st.st_nlink
        ));
    }
    None
}

/// Refuse the existing file `fd` (freshly opened) if it is not fit; see
/// [`refusal`].
fn check_existing(fd: &OwnedFd) -> io::Result<()> {
    let st = fstat(fd)?;
    // SAFETY: geteuid has no failure mode.
    let euid = unsafe { libc::geteuid() };
    match refusal(&st, euid) {
        None => Ok(()),
        Some(why) => Err(io::Error::new(io::ErrorKind::PermissionDenied, why)),
    }
}

/// The path's directory and last component, as C strings.
fn split(path: &Path) -> io::Result<(CString, CString)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file path (it has no last component)",
        )
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.as_os_str(),
        _ => std::ffi::OsStr::new("."),
    };
    let c = |s: &std::ffi::OsStr| {
        CString::new(s.as_bytes()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte")
        })
    };
    Ok((c(dir)?, c(name)?))
}

/// Open `name` in `dir` for appending, without following a link; create it
/// with `FILE_MODE` if it does not exist.
fn open_at(dir: &OwnedFd, name: &CString) -> io::Result<OwnedFd> {
    // O_NONBLOCK only while opening: a FIFO without a reader then fails
    // (ENXIO) instead of hanging the tracer before it starts.
    let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC | libc::O_NOCTTY;
    // Bounded: a path deleted between the two opens is retried twice, then
    // the error stands.
    let mut last = io::Error::from(io::ErrorKind::NotFound);
    for _ in 0..3 {
        // O_EXCL never follows a link at the last component (EEXIST).
        // SAFETY: valid descriptor and NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                libc::c_uint::from(FILE_MODE),
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // The umask may have narrowed or (umask 0) not narrowed the
            // mode: set it exactly.
            // SAFETY: valid descriptor.
            if unsafe { libc::fchmod(fd.as_raw_fd(), FILE_MODE) } != 0 {
                return Err(io::Error::last_os_error());
            }
            return Ok(fd);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EEXIST) {
            return Err(err);
        }
        // Look before opening: opening a FIFO wakes its reader, and
        // opening some devices has effects of its own.
        // SAFETY: zeroed is a valid bit pattern for the plain-data stat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, NUL-terminated name, valid pointer.
        let looked = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        // (A link is left to O_NOFOLLOW below, which says so.)
        if looked == 0 && st.st_mode & libc::S_IFMT != libc::S_IFLNK {
            // SAFETY: geteuid has no failure mode.
            let euid = unsafe { libc::geteuid() };
            if let Some(why) = refusal(&st, euid) {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
            }
        }
        // SAFETY: valid descriptor and NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // The decision is made on what was opened: the path may have
            // changed since the look above.
            check_existing(&fd)?;
            clear_nonblock(&fd)?;
            return Ok(fd);
        }
        last = io::Error::last_os_error();
        match last.raw_os_error() {
            Some(libc::ENOENT) => continue,
            Some(libc::ELOOP) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "it is a symbolic link, which the tracer does not follow at its output path \
                     (a link planted in a shared directory could send the events to another \
                     file); give the real path",
                ))
            }
            _ => return Err(last),
        }
    }
    Err(last)
}

fn clear_nonblock(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Output {
    /// Open (or create) `path` for appending; see the module comment.
    pub fn open(path: &Path) -> io::Result<Self> {
        let (dir, name) = split(path)?;
        // SAFETY: NUL-terminated path; O_PATH descriptors only name the
        // directory (no read access needed).
        let dir_fd = unsafe {
            libc::open(
                dir.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if dir_fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let dir = unsafe { OwnedFd::from_raw_fd(dir_fd) };
        let fd = open_at(&dir, &name)?;
        let regular = is_regular(&fd);
        Ok(Self {
            fd,
            reopen: Some(Reopenable { dir, name }),
            regular,
            end: None,
        })
    }

    /// The process's stdout (a copy of descriptor 1). Cannot be reopened.
    pub fn stdout() -> io::Result<Self> {
        // SAFETY: dup of a descriptor; the result is ours.
        let fd = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let regular = is_regular(&fd);
        Ok(Self {
            fd,
            reopen: None,
            regular,
            end: None,
        })
    }

    /// Open the path again (after logrotate renamed the file). Returns
    /// false for stdout, which has no path. On error the old descriptor
    /// stays in use.
    pub fn reopen(&mut self) -> io::Result<bool> {
        let Some(at) = &self.reopen else {
            return Ok(false);
        };
        let fd = open_at(&at.dir, &at.name)?;
        self.regular = is_regular(&fd);
        self.fd = fd;
        self.end = None;
        Ok(true)
    }

    /// Whether the file is now shorter than our last write left it: someone
    /// truncated it (logrotate's `copytruncate`). Regular files only.
    pub fn was_truncated(&self) -> bool {
        match (self.regular, self.end) {
            (true, Some(end)) => fstat(&self.fd).is_ok_and(|st| (st.st_size as u64) < end),
            _ => false,
        }
    }

    /// Write all of `buf` (whole lines). On failure, a trailing half line
    /// of a regular file is cut off again, and the error says how many
    /// bytes of `buf` are in the file.
    pub fn write_lines(&mut self, buf: &[u8]) -> Result<(), ShortWrite> {
        let mut done = 0;
        // Bounded: every round writes at least one byte or ends the loop.
        while done < buf.len() {
            let rest = &buf[done..];
            // SAFETY: valid descriptor; pointer and length from a slice.
            let n = unsafe { libc::write(self.fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                done += n as usize;
                continue;
            }
            let error = if n == 0 {
                io::Error::from(io::ErrorKind::WriteZero)
            } else {
                io::Error::last_os_error()
            };
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            let written = self.cut_half_line(&buf[..done]);
            return Err(ShortWrite { written, error });
        }
        if self.regular {
            self.end = self.offset();
        }
        Ok(())
    }

    fn offset(&self) -> Option<u64> {
        // SAFETY: valid descriptor.
        let off = unsafe { libc::lseek(self.fd.as_raw_fd(), 0, libc::SEEK_CUR) };
        u64::try_from(off).ok()
    }

    /// After a short write of `written`: remove the bytes after its last
    /// newline from the file, so no half line stays. Returns the bytes of
    /// whole lines that remain written. Only when the file still ends where
    /// our write left it (nobody truncated or appended meanwhile).
    fn cut_half_line(&mut self, written: &[u8]) -> usize {
        let whole = written
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let tail = (written.len() - whole) as u64;
        if tail == 0 || !self.regular {
            return whole;
        }
        let (Some(end), Ok(st)) = (self.offset(), fstat(&self.fd)) else {
            return whole;
        };
        if st.st_size as u64 == end && end >= tail {
            // SAFETY: valid descriptor.
            let cut = unsafe { libc::ftruncate(self.fd.as_raw_fd(), (end - tail) as libc::off_t) };
            if cut == 0 {
                self.end = Some(end - tail);
                return whole;
            }
        }
        // The half line stays (the file changed under us, or truncating
        // failed): count it as written so it is not counted twice.
        written.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
        path::PathBuf,
    };

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tracer-output-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn creates_with_mode_0640_whatever_the_umask() {
        let d = dir("mode");
        let path = d.join("out.json");
        // SAFETY: umask is process-wide; this test restores it, and no
        // other unit test creates files whose mode it checks.
        let old = unsafe { libc::umask(0) };
        let out = Output::open(&path);
        unsafe { libc::umask(old) };
        let mut out = out.expect("open");
        out.write_lines(b"{}\n").expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_existing_file_keeps_its_mode_and_is_appended_to() {
        let d = dir("append");
        let path = d.join("out.json");
        std::fs::write(&path, b"old\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let mut out = Output::open(&path).expect("open");
        out.write_lines(b"new\n").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"old\nnew\n");
        let mode = std::fs::metadata(&path).expect("meta").mode() & 0o777;
        assert_eq!(mode, 0o600);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_symlink_at_the_path_is_refused_not_followed() {
        let d = dir("link");
        let target = d.join("target");
        std::fs::write(&target, b"precious\n").expect("write");
        let path = d.join("out.json");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        let err = Output::open(&path).err().expect("must refuse");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // A dangling link too (O_CREAT alone would create its target).
        let dangling = d.join("dangling.json");
        std::os::unix::fs::symlink(d.join("nowhere"), &dangling).expect("symlink");
        assert!(Output::open(&dangling).is_err());
        assert!(!d.join("nowhere").exists());
        assert_eq!(std::fs::read(&target).expect("read"), b"precious\n");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn reopen_follows_a_rename_and_refuses_a_swapped_in_link() {
        let d = dir("reopen");
        let path = d.join("out.json");
        let mut out = Output::open(&path).expect("open");
        out.write_lines(b"1\n").expect("write");
        std::fs::rename(&path, d.join("out.json.1")).expect("rename");
        out.write_lines(b"2\n").expect("write");
        assert!(out.reopen().expect("reopen"));
        out.write_lines(b"3\n").expect("write");
        assert_eq!(
            std::fs::read(d.join("out.json.1")).expect("read"),
            b"1\n2\n"
        );
        assert_eq!(std::fs::read(&path).expect("read"), b"3\n");
        // A link swapped in before the next reopen: refused, the old
        // descriptor stays in use.
        std::fs::rename(&path, d.join("out.json.2")).expect("rename");
        let target = d.join("target");
        std::fs::write(&target, b"").expect("write");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        assert!(out.reopen().is_err());
        out.write_lines(b"4\n").expect("write");
        assert_eq!(
            std::fs::read(d.join("out.json.2")).expect("read"),
            b"3\n4\n"
        );
        assert_eq!(std::fs::read(&target).expect("read"), b"");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_truncation_is_noticed_and_writing_goes_on_at_the_new_end() {
        let d = dir("trunc");
        let path = d.join("out.json");
        let mut out = Output::open(&path).expect("open");
        out.write_lines(b"aaaa\n").expect("write");
        assert!(!out.was_truncated());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(0)
            .expect("truncate");
        assert!(out.was_truncated());
        out.write_lines(b"b\n").expect("write");
        // O_APPEND: no hole of NUL bytes where the old content was.
        assert_eq!(std::fs::read(&path).expect("read"), b"b\n");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_half_line_is_cut_off_after_a_short_write() {
        let d = dir("cut");
        let path = d.join("out.json");
        let mut out = Output::open(&path).expect("open");
        out.write_lines(b"one\n").expect("write");
        // Simulate a write that stopped after "two\nthr".
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| io::Write::write_all(&mut f, b"two\nthr"))
            .expect("append");
        // Our descriptor's offset is at its own last write; place it at
        // the end as the kernel would after our own short write.
        // SAFETY: valid descriptor.
        unsafe { libc::lseek(out.fd.as_raw_fd(), 0, libc::SEEK_END) };
        let kept = out.cut_half_line(b"two\nthr");
        assert_eq!(kept, 4);
        assert_eq!(std::fs::read(&path).expect("read"), b"one\ntwo\n");
        let _ = std::fs::remove_dir_all(&d);
    }

    fn stat_of(mode: libc::mode_t, uid: libc::uid_t, nlink: u64) -> libc::stat {
        // SAFETY: zeroed is a valid bit pattern for the plain-data stat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_mode = mode;
        st.st_uid = uid;
        st.st_nlink = nlink as _;
        st
    }

    #[test]
    fn which_existing_files_are_refused() {
        let ok = |mode, uid, euid| refusal(&stat_of(mode, uid, 1), euid).is_none();
        let reg = libc::S_IFREG;
        // Ours or root's, not world-writable: accepted.
        assert!(ok(reg | 0o640, 0, 0));
        assert!(ok(reg | 0o600, 1000, 1000));
        assert!(ok(reg | 0o644, 0, 1000));
        // Root-owned and group-writable (logrotate `create 0660 root adm`).
        assert!(ok(reg | 0o660, 0, 0));
        // Someone else's.
        let why = refusal(&stat_of(reg | 0o666, 65534, 1), 0).expect("refused");
        assert!(why.contains("owned by uid 65534"), "{why}");
        assert!(!ok(reg | 0o600, 1000, 1001));
        // World-writable, even root's.
        let why = refusal(&stat_of(reg | 0o666, 0, 1), 0).expect("refused");
        assert!(why.contains("writable by every user (mode 0666)"), "{why}");
        // Not regular.
        for (mode, word) in [
            (libc::S_IFIFO, "FIFO"),
            (libc::S_IFCHR, "device"),
            (libc::S_IFSOCK, "socket"),
            (libc::S_IFDIR, "directory"),
        ] {
            let why = refusal(&stat_of(mode | 0o600, 0, 1), 0).expect("refused");
            assert!(
                why.contains(word) && why.contains("not a regular file"),
                "{why}"
            );
        }
        // /dev/null is the one device accepted, by number.
        let mut null = stat_of(libc::S_IFCHR | 0o666, 0, 1);
        null.st_rdev = libc::makedev(1, 3);
        assert!(refusal(&null, 1000).is_none());
        Output::open(Path::new("/dev/null")).expect("/dev/null");
        // A second hard link.
        let why = refusal(&stat_of(reg | 0o640, 0, 2), 0).expect("refused");
        assert!(why.contains("2 hard links"), "{why}");
    }

    #[test]
    fn a_fifo_with_a_reader_is_refused() {
        let d = dir("fifo");
        let path = d.join("out.json");
        let c = CString::new(path.as_os_str().as_bytes()).expect("cstring");
        // SAFETY: NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // A reader, so that opening it for writing would succeed.
        let _reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .expect("reader");
        let err = Output::open(&path).err().expect("must refuse");
        assert!(err.to_string().contains("FIFO"), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_world_writable_or_hard_linked_file_is_refused() {
        let d = dir("perm");
        let path = d.join("out.json");
        std::fs::write(&path, b"").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let err = Output::open(&path).err().expect("must refuse");
        assert!(err.to_string().contains("writable by every user"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        std::fs::hard_link(&path, d.join("other")).expect("link");
        let err = Output::open(&path).err().expect("must refuse");
        assert!(err.to_string().contains("hard links"), "{err}");
        std::fs::remove_file(d.join("other")).expect("unlink");
        Output::open(&path).expect("now accepted");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_path_without_a_file_name_is_an_error() {
        assert!(Output::open(Path::new("/")).is_err());
        assert!(Output::open(Path::new("/nonexistent-dir/x.json")).is_err());
    }
}
