//! `--output FILE` survives log rotation by the real logrotate (Debian's),
//! a full disk (a small tmpfs), a symlink planted at the path, and a
//! permissive umask. Privileged; run by `cargo xtask test`.
//!
//! The count that proves "nothing lost, nothing split": every attempt the
//! storm made is a complete, schema-valid line in exactly one of the files
//! (the live one and every rotated one), or a loss the tracer counted.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    assert_matches_schema, closed_port, connector, connector_bin, temp_dir, Stopped, Tracer,
};

/// Run the tracer with umask 000, so the mode of the file it creates shows
/// that it sets 0640 itself rather than relying on the umask.
fn umask_zero() -> Vec<String> {
    ["sh", "-c", "umask 000; exec \"$0\" \"$@\""]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Every line of one output file: complete (the file ends with a newline),
/// JSON, valid against the schema. Panics naming the file otherwise.
fn whole_lines(path: &Path) -> Vec<Value> {
    let (events, cut) = lines_of(path);
    assert!(!cut, "{} ends with a partial line", path.display());
    events
}

/// The lines of an output file, and whether it ends with a partial line
/// (which is not returned). Every other line must be complete, JSON and
/// schema-valid, and there must be no NUL byte.
fn lines_of(path: &Path) -> (Vec<Value>, bool) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        !bytes.contains(&0),
        "{} holds NUL bytes (a write at a stale offset after a truncation)",
        path.display()
    );
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let cut = whole < bytes.len();
    let text = String::from_utf8_lossy(&bytes[..whole]).into_owned();
    let events = text
        .lines()
        .map(|line| {
            let ev: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("partial or bad line in {} ({e}): {line}", path.display())
            });
            assert_matches_schema(&ev);
            ev
        })
        .collect();
    (events, cut)
}

/// The live file and every rotated one (`NAME.1`, `NAME.2`, ...).
fn all_files(output: &Path) -> Vec<PathBuf> {
    let dir = output.parent().expect("dir");
    let name = output
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&name))
        })
        .collect();
    files.sort();
    files
}

/// A logrotate config for `output`, written with mode 0644 (logrotate
/// skips a group- or world-writable config). `su root root`: the harness's
/// dirs live under /tmp, which logrotate refuses otherwise.
fn logrotate_config(dir: &Path, output: &Path, body: &str) -> (PathBuf, PathBuf) {
    let conf = dir.join("logrotate.conf");
    let state = dir.join("logrotate.state");
    let text = format!(
        "{} {{\n    su root root\n    rotate 50\n    missingok\n    notifempty\n{body}\n}}\n",
        output.display()
    );
    std::fs::write(&conf, text).expect("write config");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    (conf, state)
}

fn logrotate(conf: &Path, state: &Path) {
    let out = Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(state)
        .arg(conf)
        .output()
        .expect("run logrotate");
    assert!(
        out.status.success(),
        "logrotate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The storm's pid and the attempts it reports.
fn storm_result(child: std::process::Child) -> u64 {
    let out = child.wait_with_output().expect("storm output");
    assert!(out.status.success(), "storm failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "attempts")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("the storm reports its attempts")
}

/// What a storm under rotation left: the storm's pid, its attempts, the
/// rotations done, the stopped tracer's stderr, and every file's events.
struct Rotated {
    pid: u32,
    made: u64,
    rotations: u32,
    stderr: String,
    files: Vec<(PathBuf, Vec<Value>)>,
    /// A process that made 50 attempts after the last rotation.
    after_pid: u32,
    /// Rotated files that end with a partial line (their last line cut by
    /// logrotate's copytruncate; never the live file).
    cut_tails: Vec<PathBuf>,
}

/// A connect storm (one process) while logrotate rotates the output every
/// 150 ms.
fn storm_while_rotating(body: &str) -> Rotated {
    let tracer = Tracer::start_wrapped(&umask_zero(), &["--comm", "connector"]);
    let output = tracer.output.clone();
    let mode = std::fs::metadata(&output)
        .expect("output")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640, "created with 0640 under umask 000");
    let dir = temp_dir("logrotate");
    let body = body.replace("TRACER_PID", &tracer.pid().to_string());
    let (conf, state) = logrotate_config(&dir, &output, &body);

    let storm = Command::new(connector_bin())
        .args(["storm", "--count", "200000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start storm");
    let pid = storm.id();
    let mut storm = Some(storm);
    let mut rotations = 0;
    // Bounded: at most 12 rotations, 150 ms apart, while the storm runs.
    std::thread::sleep(Duration::from_millis(150));
    for _ in 0..12 {
        if let Some(child) = storm.as_mut() {
            if child.try_wait().expect("try_wait").is_some() {
                break;
            }
        }
        logrotate(&conf, &state);
        rotations += 1;
        std::thread::sleep(Duration::from_millis(150));
    }
    let made = storm_result(storm.take().expect("storm"));
    // After the last rotation: 50 more attempts, which must all land in the
    // live file (writing goes on at its new start after a truncation, or in
    // the reopened file).
    let addr = format!("127.0.0.1:{}", closed_port());
    let (after_pid, errnos) = connector(&["tcp", &addr, "--count", "50"]);
    assert_eq!(errnos.len(), 50);
    // Let the last batch drain, then stop.
    std::thread::sleep(Duration::from_millis(300));
    let (status, stderr) = tracer.stop_raw();
    assert!(status.success(), "tracer failed: {stderr}");
    let mut files = Vec::new();
    let mut cut_tails = Vec::new();
    for f in all_files(&output) {
        let (events, cut) = if f == output {
            (whole_lines(&f), false)
        } else {
            lines_of(&f)
        };
        if cut {
            cut_tails.push(f.clone());
        }
        files.push((f, events));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Rotated {
        pid,
        made,
        rotations,
        stderr,
        files,
        cut_tails,
        after_pid,
    }
}

fn connects_in(events: &[Value], pid: u32) -> u64 {
    events
        .iter()
        .filter(|e| e["event"]["action"] == "connect" && e["process"]["pid"] == pid)
        .count() as u64
}

/// (lines of the storm over all files, losses the tracer counted), after
/// checking that rotations really split the stream.
fn count_over_files(
    pid: u32,
    made: u64,
    rotations: u32,
    files: &[(PathBuf, Vec<Value>)],
) -> (u64, u64) {
    let lines: u64 = files.iter().map(|(_, ev)| connects_in(ev, pid)).sum();
    let final_record = files
        .iter()
        .flat_map(|(_, ev)| ev.iter())
        .find(|e| e["event"]["action"] == "lost-events-final")
        .expect("a lost-events-final record in the live file");
    let lost = &final_record["tracer"]["lost"];
    let counted =
        lost["total"].as_u64().expect("total") + lost["unwritten"].as_u64().expect("unwritten");
    let with_events = files
        .iter()
        .filter(|(_, ev)| connects_in(ev, pid) > 0)
        .count();
    println!(
        "made {made}, lines {lines}, counted losses {counted} ({lost}), rotations {rotations}, files with events {with_events}: {:?}",
        files
            .iter()
            .map(|(f, ev)| (
                f.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                connects_in(ev, pid)
            ))
            .collect::<Vec<_>>()
    );
    assert!(rotations >= 3, "the storm outlived at least 3 rotations");
    assert!(
        with_events >= 3,
        "the storm's events are spread over several files (else the rotation proved nothing)"
    );
    (lines, counted)
}

/// The 50 attempts made after the last rotation are all in the live file.
fn assert_after_last_rotation_in_the_live_file(after_pid: u32, files: &[(PathBuf, Vec<Value>)]) {
    let live = &files
        .iter()
        .find(|(f, _)| f.extension().is_some_and(|e| e == "json"))
        .expect("live file")
        .1;
    assert_eq!(
        connects_in(live, after_pid),
        50,
        "writing went on in the live file after the last rotation"
    );
}

/// No attempt appears twice, over all files (source port and start time
/// identify one attempt of one process).
fn assert_no_duplicates(pid: u32, files: &[(PathBuf, Vec<Value>)]) {
    let mut seen = std::collections::HashSet::new();
    for (file, events) in files {
        for e in events.iter().filter(|e| e["process"]["pid"] == pid) {
            let key = (
                e["source"]["port"].as_u64(),
                e["event"]["start"].as_str().map(str::to_string),
            );
            assert!(
                seen.insert(key),
                "duplicate line in {}: {e}",
                file.display()
            );
        }
    }
}

/// logrotate's `create` mode: rename, create a new file (0640), SIGHUP.
/// The tracer writes its batch in hand to the renamed file, then reopens.
/// Every attempt is a whole line in exactly one file, or a counted loss
/// (none here).
#[test]
fn create_mode_rotation_under_a_connect_storm_loses_and_splits_nothing() {
    let Rotated {
        pid,
        made,
        rotations,
        stderr,
        files,
        cut_tails,
        after_pid,
    } = storm_while_rotating(
        "    create 0640 root root\n    postrotate\n        kill -HUP TRACER_PID\n    endscript",
    );
    assert!(!stderr.contains("cannot reopen"), "{stderr}");
    assert!(cut_tails.is_empty(), "partial lines in {cut_tails:?}");
    let (lines, counted) = count_over_files(pid, made, rotations, &files);
    assert_after_last_rotation_in_the_live_file(after_pid, &files);
    assert_no_duplicates(pid, &files);
    assert_eq!(
        lines + counted,
        made,
        "every attempt is a whole line in one file or a counted loss"
    );
    assert_eq!(counted, 0, "nothing lost: {stderr}");
}

/// logrotate's `copytruncate` mode: copy, then truncate in place; no
/// signal. O_APPEND makes the next write land at the new end: no NUL hole,
/// no overwritten line, no duplicate, the live file holds whole lines only,
/// and the tracer notices the truncations. What logrotate's manual warns of
/// remains: lines written while it copies (it copies the size it saw when
/// it started, which can fall mid-line) are cut off by its truncate, and no
/// writer can tell which; so a rotated copy may end in a cut line. The test
/// measures that loss and bounds it; `create` mode (above) has none.
#[test]
fn copytruncate_rotation_under_a_connect_storm_splits_nothing() {
    let Rotated {
        pid,
        made,
        rotations,
        stderr,
        files,
        cut_tails,
        after_pid,
    } = storm_while_rotating("    copytruncate");
    let noticed = stderr.matches("was truncated by another process").count() as u32;
    assert!(noticed >= 1, "the truncations were noticed: {stderr}");
    let (lines, counted) = count_over_files(pid, made, rotations, &files);
    assert_after_last_rotation_in_the_live_file(after_pid, &files);
    assert_no_duplicates(pid, &files);
    assert_eq!(counted, 0, "no loss the tracer could count: {stderr}");
    let lost = made - lines;
    println!(
        "copytruncate: {lost} of {made} lines ({:.2}%) lost in logrotate's copy window over {rotations} rotations ({noticed} truncations noticed); {} rotated copies end with a line cut by logrotate",
        lost as f64 * 100.0 / made as f64,
        cut_tails.len()
    );
    // logrotate copies the size it saw when it started, which can fall in
    // the middle of a write: only the last line of a rotated copy can be
    // cut that way (lines_of checked every other line), never the live file.
    assert!(cut_tails.len() as u32 <= rotations);
    // Bounded: each copy window is some tens of ms of a 50,000/s storm
    // (measured 2-7% of the lines over 10-12 rotations); a quarter would
    // mean the tracer lost lines of its own.
    assert!(
        lost * 4 < made,
        "more than 25% lost under copytruncate: {lost} of {made}"
    );
}

/// A tmpfs mounted under a temp dir for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = temp_dir("tmpfs").join("fs");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tracer-test",
            ])
            .arg(&dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fill the file system at `dir` with `filler` until it is full (bounded).
fn fill(filler: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(filler).expect("filler");
    let chunk = vec![b'x'; 16 * 1024];
    for _ in 0..10_000 {
        if f.write_all(&chunk).is_err() {
            return;
        }
    }
    panic!("the tmpfs did not fill up");
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn connects_of(events: &[Value], pid: u32) -> u64 {
    connects_in(events, pid)
}

/// The disk fills up: the tracer keeps running, counts what it could not
/// write, says so on stderr (not per event) and in its stats; once space is
/// freed it writes again, and the file holds whole lines only.
#[test]
fn a_full_disk_is_counted_and_reported_and_writing_resumes() {
    let fs = Tmpfs::new("512k");
    let output = fs.0.join("events.json");
    let tracer = Tracer::start_writing_to(Some(output.clone()), &[], &["--comm", "connector"]);
    let filler = fs.0.join("filler");
    fill(&filler);

    let port = closed_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let (full_pid, errnos) = connector(&["tcp", &addr, "--count", "400"]);
    assert_eq!(errnos.len(), 400);
    let stderr = || std::fs::read_to_string(&tracer.stderr).unwrap_or_default();
    wait_for("the write failure report", Duration::from_secs(10), || {
        stderr().contains("cannot write to")
    });
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGUSR1) };
    wait_for("the stats line", Duration::from_secs(5), || {
        stderr().contains("tracer: stats:")
    });
    let stats = stderr();
    let stats_line = stats
        .lines()
        .find(|l| l.contains("tracer: stats:"))
        .expect("stats line");
    assert!(
        !stats_line.contains(" 0 events not written"),
        "the stats count the unwritten events: {stats_line}"
    );
    // Reported once, not per event (400 events in a few batches).
    assert_eq!(
        stats.matches("cannot write to").count(),
        1,
        "one report per 10 s: {stats}"
    );
    assert!(
        Command::new("kill")
            .args(["-0", &tracer.pid().to_string()])
            .status()
            .expect("kill -0")
            .success(),
        "the tracer keeps running"
    );

    // Space again: the next attempts are written.
    std::fs::remove_file(&filler).expect("free space");
    let (free_pid, errnos) = connector(&["tcp", &addr, "--count", "100"]);
    assert_eq!(errnos.len(), 100);
    wait_for(
        "the events after space was freed",
        Duration::from_secs(10),
        || {
            std::fs::read(&output)
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .matches(&format!("\"pid\":{free_pid},"))
                        .count()
                })
                .unwrap_or(0)
                >= 100
        },
    );
    // The next tick (1 s) writes a lost-events record after the gap.
    wait_for("the lost-events record", Duration::from_secs(5), || {
        std::fs::read_to_string(&output)
            .unwrap_or_default()
            .contains("\"action\":\"lost-events\"")
    });
    let Stopped {
        events,
        stderr,
        status,
        ..
    } = tracer.stop();
    assert!(status.success(), "{stderr}");
    let events_checked = whole_lines(&output);
    assert_eq!(events_checked.len(), events.len());
    assert!(stderr.contains("writing to"), "recovery reported: {stderr}");
    let last = events.last().expect("some output");
    assert_eq!(last["event"]["action"], "lost-events-final");
    let unwritten = last["tracer"]["lost"]["unwritten"]
        .as_u64()
        .expect("unwritten");
    let kernel = last["tracer"]["lost"]["total"].as_u64().expect("total");
    let written_full = connects_of(&events, full_pid);
    println!(
        "while full: {written_full} written, {unwritten} counted unwritten, {kernel} lost in the kernel; after: {} written",
        connects_of(&events, free_pid)
    );
    assert!(unwritten > 0, "the disk was really full");
    assert_eq!(kernel, 0);
    assert_eq!(
        written_full + unwritten,
        400,
        "every attempt written or counted"
    );
    assert_eq!(connects_of(&events, free_pid), 100, "writing resumed");
    // A lost-events record says so in the file, after the gap.
    assert!(
        events.iter().any(|e| e["event"]["action"] == "lost-events"
            && e["tracer"]["lost"]["unwritten"] == unwritten),
        "a lost-events record reports the unwritten events"
    );
    assert!(
        stderr.contains(&format!("{unwritten} events not written")),
        "{stderr}"
    );
}

/// A symlink planted at the output path is refused at start (the tracer
/// exits with a clear error, the link's target untouched), and one swapped
/// in before a SIGHUP reopen is refused too: the tracer keeps writing to
/// the file it had.
#[test]
fn a_symlink_at_the_output_path_is_never_followed() {
    let dir = temp_dir("symlink");
    let target = dir.join("precious");
    std::fs::write(&target, b"precious\n").expect("target");
    let planted = dir.join("events.json");
    std::os::unix::fs::symlink(&target, &planted).expect("symlink");
    let out = Command::new(tracer_tests::tracer_bin())
        .args(["trace", "--output"])
        .arg(&planted)
        .stdin(Stdio::null())
        .output()
        .expect("run tracer");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert!(err.contains(&planted.display().to_string()), "{err}");

    // Swapped in at reopen time.
    let tracer = Tracer::start_wrapped(&umask_zero(), &["--comm", "connector"]);
    let output = tracer.output.clone();
    let rotated = output.with_extension("json.1");
    std::fs::rename(&output, &rotated).expect("rename");
    std::os::unix::fs::symlink(&target, &output).expect("symlink");
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGHUP) };
    wait_for("the refused reopen", Duration::from_secs(5), || {
        std::fs::read_to_string(&tracer.stderr)
            .unwrap_or_default()
            .contains("cannot reopen")
    });
    let addr = format!("127.0.0.1:{}", closed_port());
    let (pid1, _) = connector(&["tcp", &addr, "--count", "3"]);
    wait_for(
        "events in the file opened before",
        Duration::from_secs(5),
        || connects_of(&whole_lines(&rotated), pid1) == 3,
    );
    // The link removed: the next SIGHUP creates a new file, mode 0640.
    std::fs::remove_file(&output).expect("remove link");
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGHUP) };
    wait_for("the new file", Duration::from_secs(5), || output.exists());
    let (pid2, _) = connector(&["tcp", &addr, "--count", "3"]);
    let Stopped {
        events,
        status,
        stderr,
    } = tracer.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(
        connects_of(&events, pid2),
        3,
        "written to the reopened file"
    );
    assert_eq!(connects_of(&events, pid1), 0);
    let mode = std::fs::metadata(&output)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640);
    assert_eq!(std::fs::read(&target).expect("target"), b"precious\n");
    let _ = std::fs::remove_dir_all(&dir);
}
