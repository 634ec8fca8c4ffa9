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
        os::unix::fs::{MetadataExt, PermissionsExt},
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

    #[test]
    fn a_path_without_a_file_name_is_an_error() {
        assert!(Output::open(Path::new("/")).is_err());
        assert!(Output::open(Path::new("/nonexistent-dir/x.json")).is_err());
    }
}
