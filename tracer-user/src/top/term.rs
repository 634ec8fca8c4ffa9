//! Being a good terminal citizen: raw mode and the alternate screen while
//! the view runs, and the terminal restored however it ends (quit,
//! SIGTERM, SIGINT, SIGHUP, panic). While the screen is up, stderr (the
//! tracer's own warnings, the drain's summary) is held in a bounded buffer
//! and printed once the terminal is back, instead of tearing the screen.

use std::{
    collections::VecDeque,
    io::{self, Read, Stdout, Write},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossterm::{
    cursor,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::{backend::CrosstermBackend, Terminal};
use rustix::event::{poll, PollFd, PollFlags};

/// The stderr kept while the screen is up: the last this many bytes.
const STDERR_KEPT: usize = 64 * 1024;

/// Colours unless NO_COLOR is set (https://no-color.org: any non-empty
/// value) or the terminal says it has none.
pub fn color_allowed() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var("TERM").map_or(true, |t| t == "dumb");
    !no_color && !dumb
}

/// Put the terminal back: main screen, cursor, cooked mode. Safe to call
/// more than once, and from a panic hook.
pub fn restore() {
    let mut out = io::stdout();
    let _ = crossterm::execute!(out, LeaveAlternateScreen, cursor::Show);
    let _ = terminal::disable_raw_mode();
    let _ = out.flush();
}

/// The full screen; the terminal is restored when this is dropped.
pub struct Screen {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    pub fn enter() -> io::Result<Self> {
        // A panic anywhere (the drain thread too) restores the terminal
        // before the message is printed, so the message is readable and
        // the shell usable.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        terminal::enable_raw_mode()?;
        let mut out = io::stdout();
        if let Err(e) = crossterm::execute!(out, EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(e);
        }
        match Terminal::new(CrosstermBackend::new(out)) {
            Ok(terminal) => Ok(Self { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// How long the screen's loop has to notice a stop signal before the
/// guard ends the process itself.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Set when SIGTERM, SIGINT or SIGHUP arrives; the loop then quits and
/// restores the terminal. (In raw mode Ctrl-C is a key, not SIGINT; these
/// come from `kill` or a closed terminal.)
///
/// A guard thread backs the flag up: should the loop not return within
/// `STOP_GRACE` of the signal (crossterm 0.28's reader spins forever, never
/// returning from `event::poll`, once its terminal is gone and `read(2)`
/// answers 0 or EIO — crossterm-rs/crossterm#793; `Tty::wait` keeps the
/// loop away from that reader on a hung-up terminal, and this covers a
/// hangup that races it), the guard restores what it can and exits with
/// 128 + the signal. `Stop::done` tells it the loop has returned.
pub struct Stop {
    pub flag: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

impl Stop {
    pub fn install() -> io::Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let sigs = [
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGHUP,
        ];
        for sig in sigs {
            signal_hook::flag::register(sig, flag.clone())?;
        }
        let mut signals = signal_hook::iterator::Signals::new(sigs)?;
        let guard_done = done.clone();
        std::thread::Builder::new()
            .name("stop-guard".into())
            .spawn(move || {
                // Ends with the process: one wait for the first signal.
                let Some(sig) = signals.forever().next() else {
                    return;
                };
                let deadline = Instant::now() + STOP_GRACE;
                while Instant::now() < deadline {
                    if guard_done.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                if !guard_done.load(Ordering::Relaxed) {
                    restore();
                    std::process::exit(128 + sig);
                }
            })?;
        Ok(Self { flag, done })
    }

    pub fn stopped(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// The screen's loop has returned: the guard stands down.
    pub fn done(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// What the terminal has for the screen's loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Nothing within the wait.
    Idle,
    /// Bytes to read: crossterm may read them now.
    Ready,
    /// The terminal hung up (its window or pane closed, ssh dropped).
    Gone,
}

/// The terminal crossterm reads keys from (stdin when it is a terminal,
/// else /dev/tty, as crossterm chooses), polled here first so crossterm's
/// reader only runs when there is something to read and the terminal is
/// still there.
pub struct Tty {
    fd: OwnedFd,
}

impl Tty {
    pub fn open() -> io::Result<Self> {
        let fd = if io::IsTerminal::is_terminal(&io::stdin()) {
            io::stdin().as_fd().try_clone_to_owned()?
        } else {
            std::fs::File::open("/dev/tty")?.into()
        };
        Ok(Self { fd })
    }

    /// Wait up to `timeout` for input or a hangup.
    pub fn wait(&self, timeout: Duration) -> io::Result<Input> {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        match poll(&mut fds, ms) {
            Ok(_) => {}
            // A signal: the caller looks at its stop flag next.
            Err(rustix::io::Errno::INTR) => return Ok(Input::Idle),
            Err(e) => return Err(e.into()),
        }
        let got = fds[0].revents();
        Ok(
            if got.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
                Input::Gone
            } else if got.contains(PollFlags::IN) {
                Input::Ready
            } else {
                Input::Idle
            },
        )
    }
}

/// stderr sent into a pipe whose reader keeps the last `STDERR_KEPT`
/// bytes; `release` puts stderr back and prints them.
pub struct HeldStderr {
    saved: OwnedFd,
    reader: Option<JoinHandle<()>>,
    kept: Arc<Mutex<VecDeque<u8>>>,
}

impl HeldStderr {
    /// Hold stderr when it is the terminal the screen is on; None when it
    /// goes elsewhere (a file, a pipe), where it harms nothing.
    pub fn hold() -> io::Result<Option<Self>> {
        if !io::IsTerminal::is_terminal(&io::stderr()) {
            return Ok(None);
        }
        let (mut rx, tx) = io::pipe()?;
        // SAFETY: dup of our own descriptor 2; the result is owned here.
        let saved = unsafe { libc::dup(2) };
        if saved < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `saved` is a fresh descriptor nobody else owns.
        let saved = unsafe { OwnedFd::from_raw_fd(saved) };
        // SAFETY: replaces descriptor 2 with the pipe's write end; `tx`
        // stays valid for the call.
        if unsafe { libc::dup2(tx.as_raw_fd(), 2) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // Descriptor 2 is now the only write end: the reader sees EOF when
        // `release` puts the terminal back on it.
        drop(tx);
        let kept = Arc::new(Mutex::new(VecDeque::with_capacity(4096)));
        let sink = kept.clone();
        let reader = std::thread::Builder::new()
            .name("stderr".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                // Ends at EOF (stderr restored) or on a read error.
                while let Ok(n @ 1..) = rx.read(&mut buf) {
                    if let Ok(mut k) = sink.lock() {
                        k.extend(buf.iter().take(n));
                        let over = k.len().saturating_sub(STDERR_KEPT);
                        k.drain(..over);
                    }
                }
            })?;
        Ok(Some(Self {
            saved,
            reader: Some(reader),
            kept,
        }))
    }

    /// Put stderr back and print what was held.
    pub fn release(mut self) {
        // SAFETY: restores descriptor 2 from our saved copy.
        unsafe { libc::dup2(self.saved.as_raw_fd(), 2) };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let kept: Vec<u8> = self
            .kept
            .lock()
            .map(|k| k.iter().copied().collect())
            .unwrap_or_default();
        let _ = io::stderr().write_all(&kept);
    }
}
