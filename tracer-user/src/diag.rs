//! The tracer's own diagnostics on stderr, through the `log` crate: its
//! warnings, and with `--debug-ebpf` the eBPF programs' own lines (aya-log
//! hands them to the same logger). The event stream stays on stdout or the
//! output file; stderr is for the operator of the tracer itself.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

static LOGGER: Stderr = Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        // aya-log tags the eBPF programs' lines with their module path in
        // the eBPF object, which is named `tracer`.
        let origin = if record.target().starts_with("tracer::") {
            "ebpf "
        } else {
            ""
        };
        eprintln!("tracer: {origin}{level}: {}", record.args());
    }

    fn flush(&self) {}
}

/// Install the stderr logger for warnings and errors. The eBPF programs'
/// lines (`--debug-ebpf`) are warnings too; aya's own debug chatter about
/// loading is not shown. A second call keeps the first logger.
pub fn init() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Warn);
}

/// An error and its sources in one line, "a: b: c": aya's syscall errors
/// keep the errno in a source, and tonic's transport errors the
/// interesting part ("No such file or directory").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
