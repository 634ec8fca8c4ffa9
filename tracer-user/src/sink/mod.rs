//! Sink: write events as JSON lines (or text lines) to stdout or a file.
//!
//! Writes are batched: records are serialised into one buffer and the
//! buffer is written once per ring-buffer drain, so a connect storm costs
//! one write(2) per batch rather than per event. Every record is a whole
//! line, so a reader never sees half a JSON object, even at shutdown.
//!
//! A write that fails (disk full, I/O error) does not stop tracing: the
//! batch's lines are counted as unwritten (`Sink::unwritten`, reported on
//! stderr at most every `REPORT_EVERY`, in the SIGUSR1 stats, the
//! lost-events records and the final summary) and the next batch tries
//! again. Rotation (SIGHUP reopen, copytruncate) and link safety are in
//! `output`.

pub mod dns;
pub mod escape;
pub mod exchange;
pub mod ndjson;
pub mod output;
pub mod text;
pub mod words;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod golden;

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use output::Output;

use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One ECS JSON object per line.
    Json,
    /// One human-readable line per attempt.
    Text,
}

#[derive(Debug, Error)]
pub enum SinkError {
    #[error("cannot open output file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the reader of the output went away")]
    Closed,
    #[error("cannot serialise an event: {0}")]
    Json(#[from] serde_json::Error),
}

/// Where a sink writes: a descriptor of ours (stdout, `--output FILE`), or
/// any writer (tests, `tracer preflight` collecting lines in memory).
enum Out {
    Fd(Output),
    Writer(Box<dyn Write + Send>),
}

/// At most one stderr report of failing writes per this interval: a full
/// disk fails every batch (50 a second), and the operator needs the count,
/// not a flood.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Lines that could not be written, and the state of the reports about it.
#[derive(Debug, Default)]
struct Failures {
    /// Event lines (attempts) that could not be written, since start.
    unwritten: u64,
    /// Other lines (lost-events records) that could not be written.
    unwritten_meta: u64,
    /// The output is failing now (the last write failed).
    failing: bool,
    last_report: Option<Instant>,
    /// Truncations by someone else (copytruncate) noticed.
    truncations: u64,
}

pub struct Sink {
    out: Out,
    target: String,
    buf: Vec<u8>,
    /// End offsets in `buf` of the lines that are not events (lost-events
    /// records), so a failed write counts events and other lines apart.
    /// Rare; the capacity is kept, so the hot path does not allocate.
    meta_ends: Vec<usize>,
    failures: Failures,
    pub format: Format,
    pub color: bool,
    pub written: u64,
}

impl Sink {
    pub fn stdout(format: Format) -> Self {
        let color = format == Format::Text && io::IsTerminal::is_terminal(&io::stdout());
        // Our own copy of descriptor 1, written in whole lines; if even
        // that cannot be had, the standard library's handle.
        let out = match Output::stdout() {
            Ok(fd) => Out::Fd(fd),
            Err(_) => Out::Writer(Box::new(io::stdout())),
        };
        Self::with(out, "stdout".into(), format, color)
    }

    /// Append to `path`, created with mode 0640, never through a symbolic
    /// link (see `output`).
    pub fn file(path: &Path, format: Format) -> Result<Self, SinkError> {
        let out = Output::open(path).map_err(|source| SinkError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::with(
            Out::Fd(out),
            path.display().to_string(),
            format,
            false,
        ))
    }

    pub fn new(out: Box<dyn Write + Send>, target: String, format: Format, color: bool) -> Self {
        Self::with(Out::Writer(out), target, format, color)
    }

    fn with(out: Out, target: String, format: Format, color: bool) -> Self {
        Self {
            out,
            target,
            buf: Vec::with_capacity(64 * 1024),
            meta_ends: Vec::with_capacity(16),
            failures: Failures::default(),
            format,
            color,
            written: 0,
        }
    }

    /// Event lines that could not be written (disk full, write errors),
    /// since start.
    pub fn unwritten(&self) -> u64 {
        self.failures.unwritten
    }

    /// Whether the last write failed (the output is not being written now).
    pub fn failing(&self) -> bool {
        self.failures.failing
    }

    /// One phrase for the stats line and the summary.
    pub fn describe_failures(&self) -> String {
        let f = &self.failures;
        format!(
            "{} events not written to {} (output errors), {} other lines not written, {} truncations by others noticed",
            f.unwritten, self.target, f.unwritten_meta, f.truncations
        )
    }

    /// Open the output path again (SIGHUP, after logrotate renamed the
    /// file). What is queued is written to the old file first, so every
    /// line before the signal is in the old file and every line after it
    /// in the new one. A failed reopen keeps the old file and says why.
    pub fn reopen(&mut self) -> Result<(), SinkError> {
        self.flush()?;
        if let Out::Fd(out) = &mut self.out {
            match out.reopen() {
                Ok(_) => {}
                Err(e) => log::warn!(
                    "SIGHUP: cannot reopen {}: {e}; still writing to the file opened before",
                    self.target
                ),
            }
        }
        Ok(())
    }

    /// Queue one line that is not an event (a lost-events record).
    pub fn meta_json<T: Serialize>(&mut self, record: &T) -> Result<(), SinkError> {
        self.json(record)?;
        self.meta_ends.push(self.buf.len());
        Ok(())
    }

    /// Queue one text line that is not an event.
    pub fn meta_line(&mut self, line: &str) {
        self.line(line);
        self.meta_ends.push(self.buf.len());
    }

    /// Queue one JSON record (a whole line).
    pub fn json<T: Serialize>(&mut self, record: &T) -> Result<(), SinkError> {
        let mark = self.buf.len();
        if let Err(e) = escape::to_writer(&mut self.buf, record) {
            // Never leave half a record in the buffer.
            self.buf.truncate(mark);
            return Err(e.into());
        }
        self.buf.push(b'\n');
        self.written += 1;
        Ok(())
    }

    /// Queue one record that `write` appends as raw JSON (a whole line).
    pub fn record(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.buf);
        self.buf.push(b'\n');
        self.written += 1;
    }

    /// Queue one text line (without its newline).
    pub fn line(&mut self, line: &str) {
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.push(b'\n');
        self.written += 1;
    }

    /// Bytes queued and not written yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Write out everything queued. A closed reader (EPIPE) ends tracing
    /// (`SinkError::Closed`); any other failure is counted and reported,
    /// and tracing goes on.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = match &mut self.out {
            Out::Fd(out) => {
                if out.was_truncated() {
                    self.failures.truncations += 1;
                    log::warn!(
                        "{} was truncated by another process (logrotate copytruncate?); writing goes on at its new end. Lines written between its copy and its truncation are lost: prefer logrotate's create mode with postrotate kill -HUP",
                        self.target
                    );
                }
                out.write_lines(&self.buf)
            }
            Out::Writer(w) => w
                .write_all(&self.buf)
                .and_then(|()| w.flush())
                .map_err(|error| output::ShortWrite { written: 0, error }),
        };
        let outcome = match result {
            Ok(()) => {
                if self.failures.failing {
                    self.failures.failing = false;
                    log::warn!(
                        "writing to {} again; {} events could not be written meanwhile",
                        self.target,
                        self.failures.unwritten
                    );
                }
                Ok(())
            }
            Err(short) if short.error.kind() == io::ErrorKind::BrokenPipe => Err(SinkError::Closed),
            Err(short) => {
                self.count_unwritten(short.written);
                self.report_failure(&short.error);
                Ok(())
            }
        };
        self.buf.clear();
        self.meta_ends.clear();
        outcome
    }

    /// Count the lines of `buf` past `written` bytes as unwritten, events
    /// and other lines apart.
    fn count_unwritten(&mut self, written: usize) {
        let rest = self.buf.get(written..).unwrap_or_default();
        let lines = rest.iter().filter(|&&b| b == b'\n').count() as u64;
        let meta = self.meta_ends.iter().filter(|&&end| end > written).count() as u64;
        self.failures.unwritten_meta += meta;
        self.failures.unwritten += lines.saturating_sub(meta);
    }

    fn report_failure(&mut self, error: &io::Error) {
        let f = &mut self.failures;
        f.failing = true;
        let due = f.last_report.is_none_or(|t| t.elapsed() >= REPORT_EVERY);
        if due {
            f.last_report = Some(Instant::now());
            log::warn!(
                "cannot write to {}: {error}; {} events not written so far. Tracing goes on, and writing resumes by itself when it can (reported at most every {} s)",
                self.target,
                f.unwritten,
                REPORT_EVERY.as_secs()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn batches_whole_lines() {
        let shared = Shared::default();
        let mut sink = Sink::new(Box::new(shared.clone()), "mem".into(), Format::Json, false);
        sink.json(&serde_json::json!({"a": 1})).expect("json");
        sink.json(&serde_json::json!({"b": "x\ny"})).expect("json");
        assert!(
            shared.0.lock().expect("lock").is_empty(),
            "nothing written before flush"
        );
        sink.flush().expect("flush");
        let text = String::from_utf8(shared.0.lock().expect("lock").clone()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for l in lines {
            serde_json::from_str::<serde_json::Value>(l).expect("each line is JSON");
        }
    }

    #[test]
    fn a_closed_reader_is_reported_as_closed() {
        let mut sink = Sink::new(Box::new(Broken), "pipe".into(), Format::Json, false);
        sink.line("x");
        assert!(matches!(sink.flush(), Err(SinkError::Closed)));
    }

    /// A writer that fails while `full` is set, like a full disk.
    #[derive(Clone, Default)]
    struct Disk {
        full: Arc<Mutex<bool>>,
        data: Shared,
    }
    impl Write for Disk {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if *self.full.lock().map_err(|_| io::Error::other("poisoned"))? {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.data.write(b)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_counts_events_and_writing_resumes() {
        let disk = Disk::default();
        let mut sink = Sink::new(Box::new(disk.clone()), "disk".into(), Format::Json, false);
        *disk.full.lock().expect("lock") = true;
        sink.line("a");
        sink.line("b");
        sink.meta_line("-- lost");
        sink.flush().expect("a failed write is not an error");
        assert_eq!(sink.unwritten(), 2, "events counted, the meta line apart");
        assert!(sink.failing());
        *disk.full.lock().expect("lock") = false;
        sink.line("c");
        sink.flush().expect("flush");
        assert!(!sink.failing());
        assert_eq!(sink.unwritten(), 2);
        assert_eq!(disk.data.0.lock().expect("lock").as_slice(), b"c\n");
        assert!(sink.describe_failures().starts_with("2 events not written"));
    }

    #[test]
    fn an_unopenable_file_names_the_path() {
        let err = Sink::file(Path::new("/nonexistent-dir/out.json"), Format::Json)
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("/nonexistent-dir/out.json"));
    }
}
