//! Sink: write events as JSON lines (or text lines) to stdout or a file.
//!
//! Writes are batched: records are serialised into one buffer and the
//! buffer is written once per ring-buffer drain, so a connect storm costs
//! one write(2) per batch rather than per event. Every record is a whole
//! line, so a reader never sees half a JSON object, even at shutdown.

pub mod exchange;
pub mod ndjson;
pub mod text;
pub mod words;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod golden;

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

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
    #[error("cannot write to {target}: {source}")]
    Write {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot serialise an event: {0}")]
    Json(#[from] serde_json::Error),
}

pub struct Sink {
    out: Box<dyn Write + Send>,
    target: String,
    buf: Vec<u8>,
    pub format: Format,
    pub color: bool,
    pub written: u64,
}

impl Sink {
    pub fn stdout(format: Format) -> Self {
        let color = format == Format::Text && io::IsTerminal::is_terminal(&io::stdout());
        Self::new(Box::new(io::stdout()), "stdout".into(), format, color)
    }

    pub fn file(path: &Path, format: Format) -> Result<Self, SinkError> {
        let file: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| SinkError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self::new(
            Box::new(file),
            path.display().to_string(),
            format,
            false,
        ))
    }

    pub fn new(out: Box<dyn Write + Send>, target: String, format: Format, color: bool) -> Self {
        Self {
            out,
            target,
            buf: Vec::with_capacity(64 * 1024),
            format,
            color,
            written: 0,
        }
    }

    /// Queue one JSON record (a whole line).
    pub fn json<T: Serialize>(&mut self, record: &T) -> Result<(), SinkError> {
        let mark = self.buf.len();
        if let Err(e) = serde_json::to_writer(&mut self.buf, record) {
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

    /// Write out everything queued.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self
            .out
            .write_all(&self.buf)
            .and_then(|()| self.out.flush());
        self.buf.clear();
        result.map_err(|source| {
            if source.kind() == io::ErrorKind::BrokenPipe {
                SinkError::Closed
            } else {
                SinkError::Write {
                    target: self.target.clone(),
                    source,
                }
            }
        })
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

    #[test]
    fn an_unopenable_file_names_the_path() {
        let err = Sink::file(Path::new("/nonexistent-dir/out.json"), Format::Json)
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("/nonexistent-dir/out.json"));
    }
}
