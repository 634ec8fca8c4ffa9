//! Being a good terminal citizen: raw mode and the alternate screen while
//! the view runs, and the terminal restored however it ends (quit,
//! SIGTERM, SIGINT, SIGHUP, panic). While the screen is up, stderr (the
//! tracer's own warnings, the drain's summary) is held in a bounded buffer
//! and printed once the terminal is back, instead of tearing the screen.

use std::{
    collections::VecDeque,
    io::{self, Read, Stdout, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
};

use crossterm::{
    cursor,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::{backend::CrosstermBackend, Terminal};

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

/// Set when SIGTERM, SIGINT or SIGHUP arrives; the loop then quits and
/// restores the terminal. (In raw mode Ctrl-C is a key, not SIGINT; these
/// come from `kill` or a closed terminal.)
pub fn stop_flag() -> io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(flag)
}

pub fn stopped(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
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
