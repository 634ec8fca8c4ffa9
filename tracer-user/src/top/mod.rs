//! `tracer top`: a full-screen view of the node's connect attempts, one
//! row per unit or pod (or process, destination, proxy), failing rows
//! first.
//!
//! Live, the drain is `tracer trace`'s own loop (`trace::run_with`) on a
//! thread of its own, writing the same JSON lines, not to a file but into
//! a bounded queue the screen's thread reads. Rendering therefore never
//! slows the drain: when the screen falls behind, the queue is full, the
//! batch is counted as unwritten by the sink (the counter `trace` reports
//! in its lost-events records and summary) and the drain goes on. Over a
//! recorded file (`--from FILE`, `-` for stdin) the same lines come from
//! the file, paced by their timestamps; both build the same `model`.
//!
//! `app` is the state and the keys, `view` the drawing, `term` the
//! terminal (restored on every way out).

pub mod app;
pub mod model;
pub mod term;
pub mod view;

use std::{
    io::{self, BufRead, Read, Write},
    path::PathBuf,
    sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use crossterm::event::{self, Event, KeyEventKind};
use thiserror::Error;

use crate::{
    cli::{TopArgs, TraceArgs},
    sink::{Format, Sink},
    trace::{self, TraceError},
};
use app::{Action, App};
use model::{parse_line, Line, Model};

/// Batches of JSON lines queued between the drain and the screen. At a
/// storm's 1,000 events per 20 ms batch this is 2.5 s of backlog.
const HANDOFF: usize = 128;
/// Lines of a recording read ahead of the replay clock.
const READ_AHEAD: usize = 4096;
/// A longer line is not a record of ours (node input is hostile; so is a
/// file someone hands over).
const MAX_LINE: usize = 1 << 20;
/// Frames per second at most.
const FRAME: Duration = Duration::from_millis(250);
/// Time spent taking in queued lines before looking at the keyboard.
const INGEST_SLICE: Duration = Duration::from_millis(40);
/// Idle stretches of a recording longer than this are skipped.
const MAX_GAP: f64 = 60.0;

#[derive(Debug, Error)]
pub enum TopError {
    #[error("tracer top needs a terminal on stdout (for a stream of events use `tracer trace`)")]
    NotATerminal,
    #[error("cannot open the recording {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("terminal: {0}")]
    Terminal(#[source] io::Error),
    #[error("cannot start a thread: {0}")]
    Thread(#[source] io::Error),
    #[error("invalid options: {0}")]
    Args(String),
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("the drain thread panicked")]
    DrainPanicked,
}

/// Run the view until the user quits, a signal arrives, or (live) the
/// drain stops.
pub fn run(args: TopArgs) -> Result<(), TopError> {
    if !io::IsTerminal::is_terminal(&io::stdout()) {
        return Err(TopError::NotATerminal);
    }
    // Before the screen: a file that cannot be opened, or options the
    // pipeline refuses, are said on a normal terminal.
    let mut feed = match &args.from {
        Some(path) => Feed::Replay(Replay::open(path, args.speed)?),
        None => Feed::Live(Live::start(trace_args(&args)?)?),
    };
    let stop = term::Stop::install().map_err(TopError::Terminal)?;
    let tty = term::Tty::open().map_err(TopError::Terminal)?;
    let held = HeldStderr::hold();
    let outcome = term::Screen::enter()
        .map_err(TopError::Terminal)
        .and_then(|mut screen| {
            let r = ui(&mut screen, &tty, &mut feed, &args, &stop);
            stop.done();
            drop(screen);
            r
        });
    let drained = feed.finish();
    if let Ok(Some(h)) = held {
        h.release();
    }
    outcome.and(drained)
}

use term::HeldStderr;

/// `trace`'s options from `top`'s, through clap, so that every option
/// `top` does not set keeps `trace`'s default.
fn trace_args(args: &TopArgs) -> Result<TraceArgs, TopError> {
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        trace: TraceArgs,
    }
    let mut argv: Vec<std::ffi::OsString> = vec!["tracer".into(), "--mode".into()];
    argv.push(args.mode.as_str().into());
    argv.push("--host-root".into());
    argv.push(args.host_root.clone().into());
    for c in &args.comm {
        argv.extend(["--comm".into(), c.into()]);
    }
    for p in &args.pid {
        argv.extend(["--pid".into(), p.to_string().into()]);
    }
    for p in &args.proxy {
        argv.extend(["--proxy".into(), p.into()]);
    }
    if args.dns {
        argv.push("--dns".into());
    }
    Wrap::try_parse_from(argv)
        .map(|w| w.trace)
        .map_err(|e| TopError::Args(e.to_string()))
}

/// Where the lines come from.
enum Feed {
    Live(Live),
    Replay(Replay),
}

impl Feed {
    fn finish(self) -> Result<(), TopError> {
        match self {
            Feed::Live(live) => live.stop(),
            // The reader thread ends by itself at EOF, or when the queue
            // is dropped; a stdin that never ends is left to exit with
            // the process.
            Feed::Replay(_) => Ok(()),
        }
    }
}

/// The queue's writing end, as the sink's output: one `write` per batch,
/// never blocking. A full queue is an error the sink counts as unwritten
/// events; a screen that is gone reads as a closed reader.
struct Handoff(SyncSender<Vec<u8>>);

impl Write for Handoff {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.try_send(buf.to_vec()) {
            Ok(()) => Ok(buf.len()),
            Err(TrySendError::Full(_)) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the screen is behind (its queue is full)",
            )),
            Err(TrySendError::Disconnected(_)) => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The drain thread and its queue.
struct Live {
    rx: Receiver<Vec<u8>>,
    quit: Option<tokio::sync::oneshot::Sender<()>>,
    drain: Option<JoinHandle<Result<(), TraceError>>>,
}

impl Live {
    fn start(args: TraceArgs) -> Result<Self, TopError> {
        let (tx, rx) = mpsc::sync_channel(HANDOFF);
        let (quit, quit_rx) = tokio::sync::oneshot::channel::<()>();
        let drain = std::thread::Builder::new()
            .name("drain".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|source| TraceError::Io {
                        what: "cannot start the async runtime",
                        source,
                    })?;
                let sink = Sink::new(
                    Box::new(Handoff(tx)),
                    "the screen".into(),
                    Format::Json,
                    false,
                );
                rt.block_on(trace::run_with(args, sink, async {
                    // Quit pressed, or the screen gone: either way, stop.
                    let _ = quit_rx.await;
                }))
            })
            .map_err(TopError::Thread)?;
        Ok(Self {
            rx,
            quit: Some(quit),
            drain: Some(drain),
        })
    }

    fn stop(mut self) -> Result<(), TopError> {
        if let Some(q) = self.quit.take() {
            let _ = q.send(());
        }
        // The drain's shutdown flush writes into the queue: keep reading
        // it so that flush is never refused.
        let Some(drain) = self.drain.take() else {
            return Ok(());
        };
        // Bounded: the shutdown flush takes milliseconds; a drain that
        // does not finish in 10 s is left to end with the process.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !drain.is_finished() {
            if Instant::now() > deadline {
                return Ok(());
            }
            let _ = self.rx.recv_timeout(Duration::from_millis(20));
        }
        match drain.join() {
            Ok(r) => r.map_err(TopError::from),
            Err(_) => Err(TopError::DrainPanicked),
        }
    }
}

/// A recording, read ahead by a thread, released by the replay clock.
struct Replay {
    name: String,
    rx: Receiver<String>,
    /// The next line, read but not due yet, with its time.
    next: Option<(Option<f64>, String)>,
    ended: bool,
    clock: Option<f64>,
    speed: f64,
}

impl Replay {
    fn open(path: &std::path::Path, speed: f64) -> Result<Self, TopError> {
        let input: Box<dyn io::Read + Send> = if path.as_os_str() == "-" {
            Box::new(io::stdin())
        } else {
            Box::new(std::fs::File::open(path).map_err(|source| TopError::Open {
                path: path.to_path_buf(),
                source,
            })?)
        };
        let (tx, rx) = mpsc::sync_channel(READ_AHEAD);
        std::thread::Builder::new()
            .name("recording".into())
            .spawn(move || read_lines(io::BufReader::new(input), &tx))
            .map_err(TopError::Thread)?;
        Ok(Self {
            name: if path.as_os_str() == "-" {
                "stdin".into()
            } else {
                path.display().to_string()
            },
            rx,
            next: None,
            ended: false,
            clock: None,
            speed,
        })
    }

    /// The next line and its time (None: not an attempt, due at once).
    fn peek(&mut self) -> Option<&(Option<f64>, String)> {
        if self.next.is_none() && !self.ended {
            match self.rx.try_recv() {
                Ok(line) => {
                    let ts = match parse_line(&line) {
                        Ok(Line::Attempt(a)) => Some(a.ts),
                        _ => None,
                    };
                    self.next = Some((ts, line));
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => self.ended = true,
            }
        }
        self.next.as_ref()
    }

    /// Move the clock by `dt` seconds of recording and take in what is
    /// due, for at most `budget`.
    fn advance(&mut self, model: &mut Model, dt: Option<f64>, budget: Duration) {
        let started = Instant::now();
        if let (Some(c), Some(dt)) = (self.clock.as_mut(), dt) {
            *c += dt;
        }
        while started.elapsed() < budget {
            let clock = self.clock;
            let Some((ts, _)) = self.peek() else { break };
            let ts = *ts;
            match (ts, clock) {
                (Some(t), None) => self.clock = Some(t),
                // A long idle stretch: jump to the next attempt.
                (Some(t), Some(c)) if t > c + MAX_GAP => self.clock = Some(t),
                (Some(t), Some(c)) if t > c => break,
                _ => {}
            }
            if let Some((_, line)) = self.next.take() {
                model.ingest_line(&line);
            }
        }
    }

    /// Take in everything read so far, the clock at the newest attempt.
    fn play_to_end(&mut self, model: &mut Model) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(2) && self.peek().is_some() {
            if let Some((ts, line)) = self.next.take() {
                model.ingest_line(&line);
                if let Some(t) = ts {
                    self.clock = Some(self.clock.map_or(t, |c| c.max(t)));
                }
            }
        }
    }
}

/// Send the file's lines, each bounded; an over-long line is replaced by
/// an empty one (counted as unreadable by the model).
fn read_lines(mut input: impl BufRead, tx: &SyncSender<String>) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        let mut limited = input.by_ref().take(MAX_LINE as u64 + 1);
        match limited.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
            // Skip the rest of the line.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let mut l = input.by_ref().take(MAX_LINE as u64);
                match l.read_until(b'\n', &mut rest) {
                    Ok(0) | Err(_) => return,
                    Ok(_) if rest.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                }
            }
            buf.clear();
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        if line.is_empty() && buf.is_empty() {
            // The over-long line: one unreadable.
            if tx.send(String::from("\u{0}")).is_err() {
                return;
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if tx.send(line).is_err() {
            return;
        }
    }
}

fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The screen's loop.
fn ui(
    screen: &mut term::Screen,
    tty: &term::Tty,
    feed: &mut Feed,
    args: &TopArgs,
    stop: &term::Stop,
) -> Result<(), TopError> {
    let mut model = Model::default();
    let mut app = App::new(args.group);
    app.color = term::color_allowed();
    let mut last_frame: Option<Instant> = None;
    let mut last_tick = Instant::now();
    let mut dirty = true;
    loop {
        if stop.stopped() {
            return Ok(());
        }
        // Take in what is queued, for a bounded slice of time.
        let started = Instant::now();
        let dt = last_tick.elapsed().as_secs_f64();
        last_tick = Instant::now();
        match feed {
            Feed::Live(live) => {
                while started.elapsed() < INGEST_SLICE {
                    match live.rx.try_recv() {
                        Ok(batch) => {
                            for line in batch.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                                model.ingest_line(&String::from_utf8_lossy(line));
                            }
                        }
                        Err(TryRecvError::Empty) => break,
                        // The drain stopped (a signal, or an error it
                        // reports once the screen is gone).
                        Err(TryRecvError::Disconnected) => return Ok(()),
                    }
                }
            }
            Feed::Replay(r) => {
                let dt = (!app.paused).then_some(dt * r.speed);
                r.advance(&mut model, dt, INGEST_SLICE);
            }
        }
        let frame_due = last_frame.is_none_or(|t| t.elapsed() >= FRAME);
        if frame_due || dirty {
            let (now, source, speed, ended) = match feed {
                Feed::Live(_) => (wall_now(), "live".to_string(), None, false),
                Feed::Replay(r) => (
                    r.clock.unwrap_or_else(wall_now),
                    format!("replay {}", r.name),
                    Some(r.speed),
                    r.ended && r.next.is_none(),
                ),
            };
            let width = screen.terminal.size().map_or(80, |s| s.width);
            if !app.paused || dirty || matches!(feed, Feed::Replay(_)) {
                app.refresh(&model, now, width >= view::WIDE);
            }
            let status = view::Status {
                source,
                now,
                speed,
                ended,
                color: app.color,
                domains: args.dns || app.rows.iter().any(|r| !r.domain.is_empty()),
            };
            screen
                .terminal
                .draw(|f| view::draw(f, &mut app, &model, &status))
                .map_err(TopError::Terminal)?;
            last_frame = Some(Instant::now());
            dirty = false;
        }
        // crossterm reads only when the terminal has bytes and is still
        // there (see `term::Stop` for why); then every event it parsed
        // from them, since those no longer show in the terminal's poll.
        match tty
            .wait(Duration::from_millis(20))
            .map_err(TopError::Terminal)?
        {
            term::Input::Gone => return Ok(()),
            term::Input::Idle => {}
            term::Input::Ready => {
                while event::poll(Duration::ZERO).map_err(TopError::Terminal)? {
                    match event::read().map_err(TopError::Terminal)? {
                        Event::Key(k) if k.kind != KeyEventKind::Release => {
                            dirty = true;
                            match app.key(k, &model) {
                                Action::Quit => return Ok(()),
                                Action::None => {}
                                action => {
                                    if let Feed::Replay(r) = feed {
                                        replay_action(r, &mut model, action);
                                    }
                                }
                            }
                        }
                        Event::Resize(..) => dirty = true,
                        _ => {}
                    }
                }
            }
        }
    }
}

fn replay_action(r: &mut Replay, model: &mut Model, action: Action) {
    match action {
        Action::Step => r.advance(model, Some(1.0), Duration::from_secs(1)),
        Action::ToEnd => r.play_to_end(model),
        Action::Faster => r.speed = (r.speed * 2.0).min(1024.0),
        Action::Slower => r.speed = (r.speed / 2.0).max(1.0 / 16.0),
        Action::None | Action::Quit => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &[u8]) -> Vec<String> {
        let (tx, rx) = mpsc::sync_channel(16);
        read_lines(io::Cursor::new(input.to_vec()), &tx);
        drop(tx);
        rx.iter().collect()
    }

    #[test]
    fn recordings_are_read_in_bounded_lines() {
        assert_eq!(lines_of(b"a\n\nb\r\nc"), ["a", "b", "c"]);
        let mut big = vec![b'x'; MAX_LINE + 10];
        big.extend_from_slice(b"\nafter\n");
        let got = lines_of(&big);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], "after");
        let mut m = Model::default();
        assert!(!m.ingest_line(&got[0]), "the over-long line is unreadable");
    }

    #[test]
    fn options_reach_the_pipeline_with_trace_defaults() {
        let top = crate::cli::Cli::try_parse_from([
            "tracer", "top", "--comm", "curl", "--dns", "--pid", "7",
        ])
        .map_err(|e| e.to_string());
        let Ok(crate::cli::Cli {
            command: crate::cli::Command::Top(top),
        }) = top
        else {
            panic!("not parsed: {top:?}")
        };
        let t = trace_args(&top).expect("trace args");
        assert_eq!(t.comm, ["curl"]);
        assert_eq!(t.pid, [7]);
        assert!(t.dns);
        assert_eq!(t.format, Format::Json);
        assert!(t.output.is_none());
    }

    #[test]
    fn a_full_queue_is_an_error_the_sink_counts() {
        let (tx, rx) = mpsc::sync_channel(1);
        let mut sink = Sink::new(Box::new(Handoff(tx)), "q".into(), Format::Json, false);
        sink.line("{}");
        sink.flush().expect("queued");
        sink.line("{}");
        sink.line("{}");
        sink.flush().expect("a full queue is not fatal");
        assert_eq!(sink.unwritten(), 2);
        assert_eq!(rx.try_recv().expect("first batch"), b"{}\n");
        drop(rx);
        sink.line("{}");
        assert!(matches!(sink.flush(), Err(crate::sink::SinkError::Closed)));
    }
}
