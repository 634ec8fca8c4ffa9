//! Faults around the tracer: killed with SIGKILL, two tracers at once, the
//! environment changing underneath it (a vanished /proc/<pid>, unreadable or
//! replaced unit files, a removed cgroup), processes in other pid
//! namespaces. The tracer must keep running, report what it can, never
//! panic, and every event must validate against the schema (`read_events`
//! checks each line).
//! Run as root with --test-threads=1.

use std::{
    io::Read,
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    attempts_of, closed_port, connector, connector_bin, connector_with, temp_dir, Stopped, Tracer,
    UnitCgroup,
};

fn assert_clean(out: &Stopped) {
    assert!(
        out.status.success(),
        "tracer exit {:?}: {}",
        out.status,
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// (id, name) of every BPF program process `pid` holds: the ids come from
/// its descriptors' fdinfo (`prog_id:` of program and link fds; this
/// bpftool build does not name holding pids), the names from `bpftool prog
/// list`.
fn programs_of(pid: u32) -> Vec<(u64, String)> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default();
        for line in text.lines() {
            if let Some(id) = line.strip_prefix("prog_id:") {
                ids.push(id.trim().parse::<u64>().expect("prog id"));
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let out = Command::new("bpftool")
        .args(["-j", "prog", "list"])
        .output()
        .expect("bpftool (Debian package bpftool; cargo xtask test installs it)");
    assert!(out.status.success(), "bpftool prog list failed");
    let list: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    list.as_array()
        .expect("a list")
        .iter()
        .filter(|p| p["id"].as_u64().is_some_and(|id| ids.contains(&id)))
        .map(|p| {
            (
                p["id"].as_u64().expect("id"),
                p["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn all_program_ids() -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "list"])
        .output()
        .expect("bpftool");
    let list: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    list.as_array()
        .expect("a list")
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// SIGKILL gives the tracer no chance to clean up: the kernel must drop its
/// programs with its file descriptors (cgroup programs are bpf_links held
/// only by the process, never pinned), and the next start must work.
#[test]
fn sigkill_leaves_no_programs_attached_and_the_next_start_works() {
    let tracer = Tracer::start(&[]);
    let pid = tracer.pid();
    let mine = programs_of(pid);
    let names: Vec<&str> = mine.iter().map(|(_, n)| n.as_str()).collect();
    for expected in ["connect4", "connect6", "inet_sock_set_"] {
        assert!(
            names.iter().any(|n| n.starts_with(expected)),
            "bpftool shows {expected} held by the tracer: {names:?}"
        );
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    drop(tracer); // reaps it
                  // The kernel frees programs asynchronously (RCU): wait, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids = all_program_ids();
        let left: Vec<_> = mine.iter().filter(|(id, _)| ids.contains(id)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "programs still loaded 10 s after SIGKILL: {left:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !Command::new("bpftool")
            .args(["cgroup", "tree", "/sys/fs/cgroup/unified"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
            .any(|l| mine
                .iter()
                .any(|(id, _)| { l.split_whitespace().next() == Some(id.to_string().as_str()) })),
        "no cgroup attachment of the killed tracer's programs is left"
    );

    let port = closed_port();
    let tracer = Tracer::start(&[]);
    let (pid, errnos) = connector(&["tcp", &format!("127.0.0.1:{port}")]);
    assert_eq!(errnos, vec![libc::ECONNREFUSED]);
    let out = tracer.stop();
    assert_clean(&out);
    let mine = attempts_of(&out.events, pid);
    assert_eq!(mine.len(), 1, "{mine:#?}");
    assert_eq!(mine[0]["tracer"]["result"], "refused");
}

/// Decision: two tracers may run at once, and both see every attempt. Each
/// loads its own maps and programs; the cgroup programs attach as bpf_links,
/// which the kernel always treats as BPF_F_ALLOW_MULTI, and raw tracepoints
/// take any number of programs.
#[test]
fn two_tracers_each_see_every_attempt_once() {
    const N: usize = 20;
    let port = closed_port();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let open = listener.local_addr().expect("addr").port();
    let a = Tracer::start(&[]);
    let b = Tracer::start(&[]);
    let (refused, e1) = connector(&[
        "tcp",
        &format!("127.0.0.1:{port}"),
        "--count",
        &N.to_string(),
    ]);
    let (ok, e2) = connector(&[
        "tcp",
        &format!("127.0.0.1:{open}"),
        "--nonblock",
        "--count",
        &N.to_string(),
    ]);
    assert_eq!(e1.len(), N);
    assert!(e2.iter().all(|e| *e == 0));
    let out_b = b.stop();
    let out_a = a.stop();
    for out in [&out_a, &out_b] {
        assert_clean(out);
        let r = attempts_of(&out.events, refused);
        assert_eq!(r.len(), N, "every refused attempt once");
        assert!(r.iter().all(|e| e["tracer"]["result"] == "refused"));
        let c = attempts_of(&out.events, ok);
        assert_eq!(c.len(), N, "every connected attempt once");
        assert!(c.iter().all(|e| e["tracer"]["result"] == "connected"));
        // Neither saw the other's attempts twice: source ports are distinct.
        let mut ports: Vec<u64> = c
            .iter()
            .filter_map(|e| e["source"]["port"].as_u64())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), N);
    }
    drop(listener);
}

/// Clients that exit right after connecting: /proc/<pid> may be gone by the
/// time userspace looks. What the kernel side knows (pid, comm, address,
/// outcome) is still reported, for every attempt.
#[test]
fn a_vanished_proc_entry_still_gives_an_event() {
    let port = closed_port();
    let tracer = Tracer::start(&[]);
    let mut pids = Vec::new();
    for _ in 0..20 {
        let (pid, errnos) = connector(&["tcp", &format!("127.0.0.1:{port}")]);
        assert_eq!(errnos, vec![libc::ECONNREFUSED]);
        pids.push(pid);
    }
    let out = tracer.stop();
    assert_clean(&out);
    for pid in pids {
        let mine = attempts_of(&out.events, pid);
        assert_eq!(mine.len(), 1, "pid {pid}: {mine:#?}");
        let ev = mine[0];
        assert_eq!(ev["tracer"]["result"], "refused");
        assert_eq!(ev["process"]["name"], "connector");
        assert_eq!(ev["destination"]["port"], port);
    }
}

fn write(root: &Path, host_path: &str, text: &str) {
    let path = root.join(host_path.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A process with a proxy in a unit whose files cannot be read: the unit
/// file is mode 000 (root reads it anyway, so a directory stands in for a
/// file too: a drop-in `proxy.conf` that is a directory), or an
/// EnvironmentFile that is a directory. The attempt is reported with the
/// live proxy; the configured source is just unknown.
#[test]
fn unreadable_unit_files_do_not_stop_the_tracer() {
    let port = closed_port();
    let unit = format!("trt-unread-{}.service", std::process::id());
    let root = temp_dir("root");
    write(
        &root,
        &format!("/etc/systemd/system/{unit}"),
        "[Service]\nExecStart=/bin/true\nEnvironmentFile=/etc/default/trt-dir\n",
    );
    let unit_file = root.join(format!("etc/systemd/system/{unit}"));
    std::fs::set_permissions(
        &unit_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .expect("chmod 000");
    std::fs::create_dir_all(root.join(format!("etc/systemd/system/{unit}.d/proxy.conf")))
        .expect("a directory where a drop-in should be");
    std::fs::create_dir_all(root.join("etc/default/trt-dir")).expect("dir as env file");
    let cgroup = UnitCgroup::new(&unit);
    let tracer = Tracer::start(&["--host-root", &root.display().to_string()]);
    let (pid, errnos) = connector_with(
        cgroup
            .command(&connector_bin())
            .env_clear()
            .env("HTTPS_PROXY", format!("http://127.0.0.1:{port}"))
            .args(["tcp", &format!("127.0.0.1:{port}"), "--linger-ms", "300"]),
    );
    assert_eq!(errnos, vec![libc::ECONNREFUSED]);
    let out = tracer.stop();
    assert_clean(&out);
    let mine = attempts_of(&out.events, pid);
    assert_eq!(mine.len(), 1, "{mine:#?}");
    let ev = mine[0];
    assert_eq!(ev["tracer"]["unit"], unit.as_str());
    assert_eq!(ev["tracer"]["proxy"]["via"], true);
    assert_eq!(ev["tracer"]["result"], "refused");
}

/// The unit file is replaced (rename over it, as editors and config
/// management do) in a tight loop while proxied clients of that unit
/// connect, longer than the unit cache's 2 s. Every attempt is reported,
/// the proxy source, when found, is one of the two versions.
#[test]
fn unit_file_replaced_mid_read() {
    let port = closed_port();
    let unit = format!("trt-swap-{}.service", std::process::id());
    let root = temp_dir("root");
    let dir = root.join("etc/systemd/system");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let versions = [
        format!("[Service]\nEnvironment=HTTPS_PROXY=http://127.0.0.1:{port}\n"),
        format!(
            "[Service]\n# a longer version, so reads see different sizes\n{}Environment=HTTPS_PROXY=http://127.0.0.1:{port}\n",
            "Environment=PAD=x\n".repeat(200)
        ),
    ];
    std::fs::write(dir.join(&unit), &versions[0]).expect("write");
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let dir = dir.clone();
        let unit = unit.clone();
        thread::spawn(move || {
            let mut n = 0u64;
            // Bounded: at most 20 s even if the test fails to stop it.
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let tmp = dir.join(format!(".{unit}.tmp"));
                std::fs::write(&tmp, &versions[(n % 2) as usize]).expect("write tmp");
                std::fs::rename(&tmp, dir.join(&unit)).expect("rename over");
                n += 1;
            }
            n
        })
    };
    let cgroup = UnitCgroup::new(&unit);
    let tracer = Tracer::start(&["--host-root", &root.display().to_string()]);
    let mut pids = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3500) && pids.len() < 40 {
        let (pid, _) = connector_with(
            cgroup
                .command(&connector_bin())
                .env_clear()
                .env("HTTPS_PROXY", format!("http://127.0.0.1:{port}"))
                .args(["tcp", &format!("127.0.0.1:{port}"), "--linger-ms", "100"]),
        );
        pids.push(pid);
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().expect("swapper");
    assert!(swaps > 100, "the file was really replaced often: {swaps}");
    let out = tracer.stop();
    assert_clean(&out);
    for pid in pids {
        let mine = attempts_of(&out.events, pid);
        assert_eq!(mine.len(), 1, "pid {pid}: {mine:#?}");
        assert_eq!(mine[0]["tracer"]["proxy"]["via"], true);
        assert_eq!(mine[0]["tracer"]["unit"], unit.as_str());
    }
}

/// A cgroup removed while its process is being looked up: the client joins
/// a unit cgroup, connects, and is moved out and the cgroup removed right
/// away (bounded rounds). The tracer reports every attempt, with whatever
/// cgroup it could still read.
#[test]
fn cgroup_removed_during_lookup() {
    let port = closed_port();
    let tracer = Tracer::start(&[]);
    let mut pids = Vec::new();
    for round in 0..10 {
        let unit = format!("trt-gone-{}-{round}.service", std::process::id());
        let cgroup = UnitCgroup::new(&unit);
        let mut child = cgroup
            .command(&connector_bin())
            .args(["tcp", &format!("127.0.0.1:{port}"), "--linger-ms", "50"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start connector");
        let pid = child.id();
        thread::sleep(Duration::from_millis(5 * (round % 4)));
        // Move it out (to the roots) and remove the unit's directories.
        for files in cgroup.procs_files() {
            let root_procs = files
                .parent()
                .and_then(Path::parent)
                .and_then(Path::parent)
                .expect("root")
                .join("cgroup.procs");
            let _ = std::fs::write(&root_procs, pid.to_string());
        }
        drop(cgroup); // rmdir in both hierarchies
        child.wait().expect("wait");
        pids.push(pid);
    }
    let out = tracer.stop();
    assert_clean(&out);
    for pid in pids {
        let mine = attempts_of(&out.events, pid);
        assert_eq!(mine.len(), 1, "pid {pid}: {mine:#?}");
        assert_eq!(mine[0]["tracer"]["result"], "refused");
    }
}

/// A process inside its own pid namespace is reported with its host pid
/// (the kernel side reads the pid in the initial namespace), not the pid it
/// sees itself (1 here).
#[test]
fn pid_namespace_process_is_reported_with_its_host_pid() {
    let port = closed_port();
    let tracer = Tracer::start(&[]);
    let mut unshare = Command::new("unshare")
        .args(["-p", "-f", "--mount-proc"])
        .arg(connector_bin())
        .args([
            "tcp",
            &format!("127.0.0.1:{port}"),
            "--print-pid",
            "--linger-ms",
            "1500",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("unshare");
    // The connector is unshare's (forked) child: its host pid, from the host.
    let deadline = Instant::now() + Duration::from_secs(5);
    let host_pid: u32 = loop {
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id()))
                .unwrap_or_default();
        if let Some(p) = children.split_whitespace().next() {
            break p.parse().expect("pid");
        }
        assert!(Instant::now() < deadline, "no child of unshare");
        thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    unshare
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read");
    assert!(unshare.wait().expect("wait").success());
    assert!(stdout.contains("pid 1\n"), "inside, it is pid 1: {stdout}");
    assert!(stdout.contains(&format!("errno {}", libc::ECONNREFUSED)));
    let out = tracer.stop();
    assert_clean(&out);
    let mine = attempts_of(&out.events, host_pid);
    assert_eq!(
        mine.len(),
        1,
        "reported with host pid {host_pid}: {:#?}",
        out.events
    );
    assert_eq!(mine[0]["process"]["name"], "connector");
    assert_eq!(mine[0]["process"]["parent"]["pid"], unshare.id());
    assert!(
        attempts_of(&out.events, 1).is_empty(),
        "never with its namespace's pid"
    );
}
