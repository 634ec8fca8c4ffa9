//! `tracer top`, driven in a real terminal: tmux runs it, `send-keys`
//! types, `capture-pane` reads the screen. Under the tracer, a
//! containerd-like daemon in system.slice/containerd.service fails against
//! a dead proxy set in a drop-in, while other processes connect fine.
//! Run by `cargo xtask test` as root with --test-threads=1.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use tracer_tests::{closed_port, connector_bin, temp_dir, tracer_bin, Tracer, UnitCgroup};

const DROPIN: &str = "/etc/systemd/system/containerd.service.d/http-proxy.conf";

/// A private tmux server with one pane running a shell.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(tag: &str, width: u16, height: u16, env: &[(&str, &str)]) -> Tmux {
        let socket = format!("tracer-top-{tag}-{}", std::process::id());
        let mut cmd = Command::new("tmux");
        cmd.args([
            "-L",
            &socket,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "t",
        ])
        .args(["-x", &width.to_string(), "-y", &height.to_string()])
        .env("PS1", "top$ ")
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR");
        for (k, v) in env {
            cmd.env(k, v);
        }
        // bash keeps the PS1 it is given (dash resets it for root).
        let status = cmd
            .args(["bash", "--norc", "--noprofile"])
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session failed");
        let t = Tmux { socket };
        t.wait_for("the shell prompt", Duration::from_secs(10), |s| {
            s.contains("top$")
        });
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux");
        assert!(out.status.success(), "tmux {args:?}: {:?}", out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Keys by tmux name (Enter, Escape, Home...).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// Literal text.
    fn text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", text]);
    }

    fn line(&self, command: &str) {
        self.text(command);
        self.keys(&["Enter"]);
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "t"])
    }

    /// The screen with its colours and attributes as escape sequences.
    fn screen_escaped(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-e", "-t", "t"])
    }

    fn wait_for(&self, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The pid of the pane's shell.
    fn shell_pid(&self) -> u32 {
        self.tmux(&["display-message", "-p", "-t", "t", "#{pane_pid}"])
            .trim()
            .parse()
            .expect("pane pid")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

fn write(root: &Path, host_path: &str, text: &str) {
    let path = root.join(host_path.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, text).expect("write");
}

fn wait_file(path: &Path, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if ok(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The table lines of a screen (after the column titles).
fn rows(screen: &str) -> Vec<String> {
    screen
        .lines()
        .skip_while(|l| !l.contains("ATT/S"))
        .skip(1)
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with("q quit"))
        .collect()
}

fn row_index(screen: &str, key: &str) -> Option<usize> {
    rows(screen).iter().position(|r| r.starts_with(key))
}

/// What of a row does not move with the clock: the name, the failure %,
/// and everything from the LAST column on (last result, error, proxy).
fn stable_part(row: &str, last: &str) -> String {
    let key = row.split_whitespace().next().unwrap_or_default();
    let percent = row
        .split_whitespace()
        .find(|w| w.ends_with('%'))
        .unwrap_or_default();
    let tail = row
        .find(&format!(" {last}"))
        .map(|i| row[i..].split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!("{key} {percent} {tail}")
}

/// The terminal's modes, as `stty -a` prints them in the pane.
fn stty(t: &Tmux, dir: &Path) -> String {
    let file = dir.join("stty.txt");
    t.line(&format!("stty -a > {}", file.display()));
    wait_file(&file, "stty -a", Duration::from_secs(10), |s| {
        s.contains("speed")
    })
}

/// Cooked mode is back: line editing, echo, signals, CR/NL translation.
fn assert_usable(modes: &str) {
    for mode in ["icanon", "echo", "isig", "icrnl", "opost"] {
        assert!(
            modes.split_whitespace().any(|m| m == mode),
            "{mode} is not on after top quit:\n{modes}"
        );
    }
}

/// Foreground colour codes in SGR sequences of a captured screen.
fn colour_codes(escaped: &str) -> usize {
    escaped
        .split("\u{1b}[")
        .skip(1)
        .filter_map(|s| s.split_once('m').map(|(params, _)| params))
        .filter(|params| {
            params
                .split(';')
                .any(|p| matches!(p.parse::<u32>(), Ok(30..=38 | 90..=97)))
        })
        .count()
}

/// The pid of the `tracer` the pane's shell runs.
fn tracer_pid(t: &Tmux) -> u32 {
    let sh = t.shell_pid();
    let children = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children"))
        .expect("children of the shell");
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("tracer top runs under the shell")
}

/// The daemon: a connector named `containerd` (so its comm is too), in
/// system.slice/containerd.service, with the drop-in's HTTPS_PROXY.
fn daemon_binary(dir: &Path) -> PathBuf {
    let path = dir.join("containerd");
    std::os::unix::fs::symlink(connector_bin(), &path).expect("symlink");
    path
}

fn run_attempts(cmd: &mut Command) {
    let status = cmd
        .stdout(std::process::Stdio::null())
        .status()
        .expect("start connector");
    assert!(status.success());
}

#[test]
fn the_failing_unit_comes_first_with_its_proxy_and_the_file_that_set_it() {
    let port = closed_port();
    let proxy = format!("http://127.0.0.1:{port}");
    let root = temp_dir("top-root");
    write(
        &root,
        DROPIN,
        &format!(
            "[Service]\nEnvironment=\"HTTP_PROXY={proxy}\"\nEnvironment=\"HTTPS_PROXY={proxy}\"\n"
        ),
    );
    let dir = temp_dir("top");
    let root_arg = root.display().to_string();
    // A recording of the same attempts, for `--from` below.
    let recorder = Tracer::start(&["--host-root", &root_arg]);

    let t = Tmux::start("live", 220, 50, &[]);
    let stderr = dir.join("stderr.txt");
    t.line(&format!(
        "{} top --host-root {} 2>{}",
        tracer_bin().display(),
        root_arg,
        stderr.display()
    ));
    wait_file(&stderr, "tracer: ready", Duration::from_secs(60), |s| {
        s.contains("ready")
    });
    t.wait_for("the table", Duration::from_secs(10), |s| {
        s.contains("ATT/S")
    });

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let open = listener.local_addr().expect("addr").to_string();
    let dead = format!("127.0.0.1:{port}");
    let daemon = UnitCgroup::new("containerd.service");
    let others = UnitCgroup::new("a-top-ok.service");
    let containerd = daemon_binary(&dir);
    for _ in 0..3 {
        run_attempts(
            daemon
                .command(&containerd)
                .args(["tcp", &dead, "--count", "10", "--linger-ms", "200"])
                .env("HTTPS_PROXY", &proxy)
                .env("HTTP_PROXY", &proxy),
        );
        run_attempts(others.command(&connector_bin()).args([
            "tcp",
            &open,
            "--count",
            "5",
            "--linger-ms",
            "200",
        ]));
        std::thread::sleep(Duration::from_millis(500));
    }

    // The unit's row first, with the refusals, the variable and the
    // drop-in's file:line.
    // The path as it is on the host (the host root is where the tracer
    // found it).
    let dropin_line = format!("{DROPIN}:3");
    let live = t.wait_for("containerd.service first", Duration::from_secs(20), |s| {
        rows(s).first().is_some_and(|r| {
            r.starts_with("containerd.service")
                && r.contains("refused")
                && r.contains("ECONNREFUSED")
                && r.contains(&format!("dead HTTPS_PROXY {dropin_line}"))
                && r.contains("100%")
        }) && row_index(s, "a-top-ok.service").is_some()
    });
    println!("{live}");
    std::fs::write(dir.join("screen.txt"), &live).expect("save the screen");
    let ok_row = rows(&live)
        .into_iter()
        .find(|r| r.starts_with("a-top-ok.service"))
        .expect("the working unit's row");
    assert!(
        ok_row.contains("connected") && ok_row.contains(" 0%"),
        "{ok_row}"
    );
    assert!(
        colour_codes(&t.screen_escaped()) > 0,
        "a failing row is drawn in colour when NO_COLOR is not set"
    );

    // `/` filters.
    t.text("/a-top-ok");
    t.keys(&["Enter"]);
    let filtered = t.wait_for("the filter", Duration::from_secs(5), |s| {
        s.contains("/a-top-ok") && row_index(s, "containerd.service").is_none()
    });
    assert_eq!(
        row_index(&filtered, "a-top-ok.service"),
        Some(0),
        "{filtered}"
    );
    t.keys(&["Escape"]);
    t.wait_for("the filter cleared", Duration::from_secs(5), |s| {
        row_index(s, "containerd.service") == Some(0)
    });

    // A sort key reorders: by name, the working unit comes before.
    t.text("N");
    let by_name = t.wait_for("sort by name", Duration::from_secs(5), |s| {
        s.contains("sort name")
    });
    let (a, c) = (
        row_index(&by_name, "a-top-ok.service").expect("a-top-ok row"),
        row_index(&by_name, "containerd.service").expect("containerd row"),
    );
    assert!(a < c, "by name: {by_name}");
    assert!(c > 0, "failing first no more: {by_name}");
    t.text("D");
    t.wait_for("failing first again", Duration::from_secs(5), |s| {
        s.contains("sort failing↓") && row_index(s, "containerd.service") == Some(0)
    });

    // Enter shows the attempts, then the full event.
    t.keys(&["Home", "Enter"]);
    let attempts = t.wait_for("the attempts", Duration::from_secs(5), |s| {
        s.contains("containerd.service: 30 attempts, 30 failed")
    });
    assert!(
        attempts
            .lines()
            .filter(|l| l.contains("containerd (") && l.contains(&format!("-> {dead} refused")))
            .count()
            >= 10,
        "{attempts}"
    );
    t.keys(&["Enter"]);
    let event = t.wait_for("the full event", Duration::from_secs(5), |s| {
        s.contains("\"message\": \"containerd (pid")
    });
    assert!(
        event.contains(&format!("HTTPS_PROXY is set in {DROPIN}:3")),
        "{event}"
    );
    // The tracer.* part is at the end of the record: a page down.
    t.keys(&["PageDown"]);
    let tail = t.wait_for("the end of the event", Duration::from_secs(5), |s| {
        s.contains("\"variable\": \"HTTPS_PROXY\"")
    });
    assert!(tail.contains("\"unit\": \"containerd.service\""), "{tail}");
    // One Escape at a time: two in one write read as Alt-Escape.
    t.keys(&["Escape"]);
    t.wait_for("back to the attempts", Duration::from_secs(5), |s| {
        s.contains("containerd.service: 30 attempts")
    });
    t.keys(&["Escape"]);
    t.wait_for("back to the table", Duration::from_secs(5), |s| {
        s.contains("ATT/S")
    });

    // Quit: the shell is back and the terminal usable.
    t.text("q");
    t.wait_for("the prompt after quit", Duration::from_secs(20), |s| {
        !s.contains("ATT/S") && s.trim_end().ends_with("top$")
    });
    let summary = wait_file(&stderr, "the summary", Duration::from_secs(5), |s| {
        s.contains("tracer: stopped (quit)")
    });
    assert!(
        summary.contains(" 0 attempts lost in the kernel")
            && summary.contains("0 events not written"),
        "{summary}"
    );
    assert_usable(&stty(&t, &dir));

    // The recording gives the same rows.
    let file = recorder.output.clone();
    let recorded = recorder.stop();
    assert!(recorded.status.success());
    t.line(&format!(
        "{} top --from {}",
        tracer_bin().display(),
        file.display()
    ));
    t.wait_for("the replay", Duration::from_secs(10), |s| {
        s.contains("replay")
    });
    let replay = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            t.text("e");
            std::thread::sleep(Duration::from_millis(300));
            let s = t.screen();
            if s.contains("· end") && row_index(&s, "a-top-ok.service").is_some() {
                break s;
            }
            assert!(Instant::now() < deadline, "replay did not end: {s}");
        }
    };
    println!("{replay}");
    for (key, last) in [
        ("containerd.service", "refused"),
        ("a-top-ok.service", "connected"),
    ] {
        let pick = |s: &str| {
            rows(s)
                .into_iter()
                .find(|r| r.starts_with(key))
                .map(|r| stable_part(&r, last))
        };
        assert_eq!(
            pick(&live),
            pick(&replay),
            "live and recorded rows differ for {key}"
        );
    }
    assert_eq!(
        row_index(&replay, "containerd.service"),
        Some(0),
        "{replay}"
    );
    t.text("q");
    t.wait_for(
        "the prompt after the replay",
        Duration::from_secs(10),
        |s| s.trim_end().ends_with("top$"),
    );
    assert_usable(&stty(&t, &dir));
    drop(listener);
}

/// `tracer top --comm connector` in `t`, stderr to `stderr`, until ready.
fn top_of_connectors(t: &Tmux, stderr: &std::path::Path) {
    t.line(&format!(
        "{} top --comm connector 2>{}",
        tracer_bin().display(),
        stderr.display()
    ));
    wait_file(stderr, "tracer: ready", Duration::from_secs(60), |s| {
        s.contains("ready")
    });
}

/// A storm while top runs: nothing lost, by the counters `trace` uses; in
/// 80x24 and without colour (NO_COLOR); SIGTERM restores the terminal.
#[test]
fn a_storm_loses_nothing_and_sigterm_restores_the_terminal() {
    const STORMS: u32 = 2;
    const COUNT: u32 = 20_000;
    let dir = temp_dir("top-storm");
    let t = Tmux::start("storm", 80, 24, &[("NO_COLOR", "1")]);
    let stderr = dir.join("stderr.txt");
    top_of_connectors(&t, &stderr);
    let storms: Vec<_> = (0..STORMS)
        .map(|_| {
            Command::new(connector_bin())
                .args(["storm", "--count", &COUNT.to_string()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start storm")
        })
        .collect();
    for s in storms {
        let out = s.wait_with_output().expect("storm");
        assert!(out.status.success());
        println!("storm: {}", String::from_utf8_lossy(&out.stdout).trim());
    }
    let total = (STORMS * COUNT) as u64;
    let screen = t.wait_for("every storm attempt", Duration::from_secs(30), |s| {
        s.lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= total)
    });
    println!("{screen}");
    let lines: Vec<&str> = screen.lines().collect();
    assert_eq!(lines.len(), 24, "{screen}");
    assert!(lines[0].starts_with("tracer top · live"), "{screen}");
    assert!(
        lines[1].contains("lost 0 (kernel 0, not handed to the view 0)"),
        "{screen}"
    );
    assert!(
        lines[2].contains("ATT/S") && lines[2].contains("PROXY"),
        "{screen}"
    );
    assert!(lines[23].starts_with("q quit"), "{screen}");
    assert!(lines.iter().all(|l| l.chars().count() <= 80));
    assert_eq!(colour_codes(&t.screen_escaped()), 0, "NO_COLOR: no colour");

    // SIGTERM, as from `kill`: the terminal is restored all the same.
    let pid = tracer_pid(&t);
    // SAFETY: plain kill(2) on the tracer this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    t.wait_for("the prompt after SIGTERM", Duration::from_secs(20), |s| {
        !s.contains("ATT/S") && s.trim_end().ends_with("top$")
    });
    let summary = wait_file(&stderr, "the summary", Duration::from_secs(5), |s| {
        s.contains("tracer: stopped")
    });
    println!("{summary}");
    // The drain saw SIGTERM itself, or the screen told it to stop on
    // seeing it first: either way the shutdown flush ran.
    assert!(
        summary.contains("stopped (SIGTERM)") || summary.contains("stopped (quit)"),
        "{summary}"
    );
    assert!(
        summary.contains(" 0 attempts lost in the kernel"),
        "{summary}"
    );
    assert!(
        summary.contains(" 0 events not written to the screen"),
        "{summary}"
    );
    assert_usable(&stty(&t, &dir));
}

/// The terminal goes away under a live `top` (its tmux pane is killed, as
/// when a window closes or ssh drops): top must end by itself and detach,
/// not outlive its terminal spinning on reads that return nothing.
/// crossterm 0.28's reader spins forever on a hung-up terminal; `top`
/// polls the terminal itself first. Without that, this tracer kept
/// running at 100% CPU until SIGKILL.
#[test]
fn closing_the_terminal_ends_top() {
    let dir = temp_dir("top-hangup");
    let t = Tmux::start("hangup", 80, 24, &[]);
    let stderr = dir.join("stderr.txt");
    top_of_connectors(&t, &stderr);
    t.wait_for("the view", Duration::from_secs(10), |s| s.contains("ATT/S"));
    let pid = tracer_pid(&t);
    let t0 = Instant::now();
    t.tmux(&["kill-pane", "-t", "t"]);
    // A bound for a hang, not a timing assertion.
    let deadline = t0 + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        if Instant::now() > deadline {
            // SAFETY: plain kill(2) on the tracer this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("tracer top (pid {pid}) still runs 30 s after its terminal closed: {state}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("ended {:?} after the pane closed", t0.elapsed());
    // It ended through its own shutdown: the drain's summary was written.
    let summary = wait_file(&stderr, "the summary", Duration::from_secs(5), |s| {
        s.contains("tracer: stopped")
    });
    println!("{summary}");
}
