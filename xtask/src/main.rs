//! `cargo xtask`: what cargo cannot do alone.
//!
//! - `setup`: install what a fresh machine lacks (rust-src for nightly,
//!   bpf-linker built against the nightly toolchain's own LLVM, and the
//!   Debian packages the tests use). Idempotent, and fast when done.
//! - `build`: `target/release/tracer` (build.rs builds the eBPF object).
//! - `run -- ARGS`: set up, build, run the tracer with ARGS.
//! - `test`: set up, then unit tests and the privileged integration tests.
//! - `soak --minutes N`: a mixed workload against the tracer (exactly once,
//!   no loss, flat memory, bounded fds and caches).
//! - `bench`: set up, then the overhead benchmark (`--scale`: the node-scale
//!   case, tests/src/bin/scale.rs; `--floor`: also build the tracer with
//!   every eBPF program empty, into target/floor, and measure it beside the
//!   tracer in the kernel-cost part; `--sks VARIANT`: issue 20 §1's tp_btf
//!   and socket-storage experiment, built into target/sks and measured as
//!   the tracer, the real build as the baseline).
//! - `fuzz [--seconds N]`: install cargo-fuzz if missing, then run every
//!   fuzz target in `tests/fuzz` for N seconds each.
//! - `image`: an OCI image of the tracer, from scratch, offline
//!   (`target/tracer-image.tar`; see `image.rs`).
//! - `docs [--check]`: the book's generated pages, man pages, completions,
//!   `mdbook build docs` and its link check (see `docs.rs`).

mod docs;
mod image;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the eBPF toolchain and test dependencies (idempotent).
    Setup,
    /// Build target/release/tracer.
    Build,
    /// Build and run the tracer, e.g. `cargo xtask run -- trace`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run every test: unit tests, then the privileged integration tests.
    Test {
        /// Extra arguments for the integration test binary (e.g. a test name).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// A mixed workload against the tracer for N minutes (default 10):
    /// exactly-once, no loss, flat memory, bounded fds and caches.
    Soak {
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
    /// Measure overhead against an untraced run and bpftrace.
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run every fuzz target (tests/fuzz, libFuzzer, nightly) for a while.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only these targets (default: all).
        targets: Vec<String>,
    },
    /// Build the OCI image (target/tracer-image.tar) from scratch, offline.
    Image,
    /// Regenerate the book's reference pages, target/man/*.1 and
    /// target/completions/, build the book (docs/book) and check its links.
    Docs {
        /// Change nothing: fail if a generated page is out of date.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    match cli.command {
        Cmd::Setup => setup(true),
        Cmd::Build => {
            setup(false)?;
            build(&root)
        }
        Cmd::Run { args } => {
            setup(false)?;
            build(&root)?;
            let tracer = root.join("target/release/tracer");
            let status = Command::new(&tracer)
                .args(&args)
                .status()
                .with_context(|| format!("cannot run {}", tracer.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Test { args } => {
            setup(true)?;
            test(&root, &args)
        }
        Cmd::Soak { minutes } => {
            setup(true)?;
            build(&root)?;
            soak(&root, minutes)
        }
        Cmd::Bench { args } => {
            setup(true)?;
            build(&root)?;
            bench(&root, &args)
        }
        Cmd::Fuzz { seconds, targets } => {
            // The eBPF toolchain only: tracer-user's build script needs it.
            setup(false)?;
            fuzz(&root, seconds, &targets)
        }
        Cmd::Image => {
            setup(false)?;
            image_tools()?;
            image::build_image(&root).map(|_| ())
        }
        Cmd::Docs { check } => {
            setup(false)?;
            install_missing(&["groff-base"])?;
            build(&root)?;
            docs::docs(&root, check)
        }
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Debian packages the tests and benchmark need, with a binary that shows
/// each is installed.
const PACKAGES: &[(&str, &str)] = &[
    ("containerd", "containerd"),
    ("nftables", "nft"),
    ("bpftrace", "bpftrace"),
    ("iproute2", "ip"),
    ("gcc", "gcc"),
    ("curl", "curl"),
    ("tinyproxy", "tinyproxy"),
    ("docker-registry", "docker-registry"),
    ("openssl", "openssl"),
    ("bpftool", "bpftool"),
    // The metrics tests: a real Prometheus server, and promtool (check
    // metrics, check rules, test rules), which the package carries.
    ("prometheus", "promtool"),
    // The container image (`cargo xtask image`) and its test.
    ("buildah", "buildah"),
    ("podman", "podman"),
    ("runc", "runc"),
    ("binutils", "strip"),
    // The resolver of the DNS tests. dnsmasq-base is the binary alone: the
    // `dnsmasq` package would also install a service that an init system
    // may start on the host's port 53.
    ("dnsmasq-base", "dnsmasq"),
    // tests/tests/rotate.rs rotates the output with the real logrotate.
    ("logrotate", "logrotate"),
    // tests/tests/service.rs: `systemd-analyze verify` on the unit (works
    // without systemd running), and capsh to run the tracer with only the
    // unit's capabilities.
    ("systemd", "systemd-analyze"),
    ("libcap2-bin", "capsh"),
    // tests/tests/pods.rs: the pods' sandbox (pause) image and their
    // containers, built from scratch around one static binary (no image
    // can be pulled here).
    ("busybox-static", "busybox"),
    // tests/tests/top.rs drives `tracer top` in a real terminal
    // (send-keys, capture-pane).
    ("tmux", "tmux"),
    // `cargo xtask docs` renders every generated man page with groff, and
    // `man ./target/man/tracer.1` reads them.
    ("groff-base", "groff"),
    ("man-db", "man"),
];

/// The PyPI package that validates deploy/kubernetes/tracer.yaml against
/// the Kubernetes schemas, offline, and the module that shows it is there.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// The TLS-intercepting proxy of tests/tests/tls.rs (PyPI), in a venv of
/// its own so its many dependencies stay out of the system's Python.
const MITMPROXY: &str = "mitmproxy==11.0.2";
/// Where that venv lives; the tests run `<venv>/bin/mitmdump` and use its
/// Python (which has `cryptography`) to make an expired certificate.
const MITMPROXY_VENV: &str = "/opt/tracer-test/mitmproxy";

fn setup(test_packages: bool) -> Result<()> {
    // 1. rust-src for nightly: -Z build-std=core needs it.
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("the nightly toolchain is needed to build the eBPF programs")?;
    let sysroot = PathBuf::from(sysroot);
    if !sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        eprintln!("xtask: installing rust-src for nightly");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }

    // 2. bpf-linker, built against nightly's own LLVM (no prebuilt binary
    //    can be downloaded here).
    if !bpf_linker_works() {
        install_bpf_linker(&sysroot)?;
    }

    // 3. Debian packages for the integration tests and the benchmark.
    if test_packages {
        let missing: Vec<&str> = PACKAGES
            .iter()
            .filter(|(_, bin)| !have(bin))
            .map(|(pkg, _)| *pkg)
            .collect();
        if !missing.is_empty() {
            eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
            run(Command::new("apt-get").arg("update").arg("-q"))?;
            run(Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"))?;
        }
        // 4. PyPI: kubernetes-validate, run by tests/tests/image.rs as
        //    `python3 -m kubernetes_validate`, so the same interpreter.
        let installed = Command::new("python3")
            .args(["-m", "kubernetes_validate", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            eprintln!("xtask: installing {KUBERNETES_VALIDATE} from PyPI");
            run(Command::new("python3").args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                KUBERNETES_VALIDATE,
            ]))?;
        }
        // 5. PyPI: mitmproxy in its venv, unless its mitmdump already runs.
        let venv = Path::new(MITMPROXY_VENV);
        let mitmdump_works = Command::new(venv.join("bin/mitmdump"))
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !mitmdump_works {
            eprintln!("xtask: installing {MITMPROXY} from PyPI into {MITMPROXY_VENV}");
            run(Command::new("python3").args(["-m", "venv"]).arg(venv))?;
            run(Command::new(venv.join("bin/python")).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                MITMPROXY,
            ]))?;
        }
        // 6. mdbook, for the book `cargo xtask test` builds and checks.
        docs::mdbook()?;
    }
    Ok(())
}

/// What `cargo xtask image` needs beyond the eBPF toolchain (buildah and
/// strip), without the test packages.
fn image_tools() -> Result<()> {
    install_missing(&["buildah", "binutils"])
}

/// Those of `PACKAGES` named here that are not installed yet.
fn install_missing(names: &[&str]) -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(pkg, bin)| names.contains(pkg) && !have(bin))
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

fn bpf_linker_works() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn install_bpf_linker(sysroot: &Path) -> Result<()> {
    // The nightly sysroot ships libLLVM.so.<major>.<minor>-rust-<ver>;
    // bpf-linker's build wants LLVM_PREFIX/lib/libLLVM.so. Derive names
    // from what is there rather than hard-coding a version.
    let lib = sysroot.join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let version = llvm.trim_start_matches("libLLVM.so.");
    let major = version
        .split('.')
        .next()
        .filter(|m| m.chars().all(|c| c.is_ascii_digit()) && !m.is_empty())
        .with_context(|| format!("cannot read the LLVM major version from {llvm}"))?;
    // The binary keeps an rpath to this prefix, so it must stay: put it in
    // a stable per-user place, named by version.
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let prefix = PathBuf::from(home).join(format!(".local/share/tracer-xtask/llvm-{version}"));
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("cannot create {}", prefix_lib.display()))?;
    for name in ["libLLVM.so".to_string(), llvm.clone()] {
        let link = prefix_lib.join(&name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&llvm), &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    eprintln!("xtask: building bpf-linker 0.13.0 against LLVM {version} (about 90 s, once)");
    run(Command::new("cargo")
        .args([
            "+nightly",
            "install",
            "bpf-linker",
            "--version",
            "0.13.0",
            "--locked",
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix))?;
    if !bpf_linker_works() {
        bail!("bpf-linker was installed but does not run; is ~/.cargo/bin on PATH?");
    }
    Ok(())
}

fn build(root: &Path) -> Result<()> {
    run(&mut build_command(root))
}

/// `cargo build` of `target/release/tracer`, for more arguments to add.
fn build_command(root: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root).args([
        "build",
        "--release",
        "--package",
        "tracer-user",
        "--bin",
        "tracer",
    ]);
    cmd
}

fn test(root: &Path, args: &[OsString]) -> Result<()> {
    build(root)?;
    // The book first, as it fails fast: generated pages current, man pages
    // render, every internal link and anchor resolves.
    docs::docs(root, true)?;
    // The image, for tests/tests/image.rs (one static release build,
    // incremental after the first).
    let image = image::build_image(root)?;
    // Unit tests of every crate (pure logic, plus the parts that read this
    // machine's /proc and BTF).
    run(Command::new("cargo").current_dir(root).args([
        "test",
        "--release",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--lib",
        "--bins",
    ]))?;
    // Privileged integration tests: real kernel, real eBPF programs, network
    // namespaces, containerd. One at a time: they load probes node-wide and
    // create namespaces and cgroups.
    if effective_uid() != 0 {
        bail!("the integration tests need root (they load eBPF programs and create network namespaces)");
    }
    // Scratch left by earlier runs (a test that panics keeps its directory
    // for a look; a whole suite leaves about 4 GiB of event logs, and a CI
    // run once failed on a full disk).
    sweep_test_dirs();
    let tracer = root.join("target/release/tracer");
    let outcome = run(Command::new("cargo")
        .current_dir(root)
        .env("TRACER_BIN", &tracer)
        .env("TRACER_IMAGE", &image)
        .args([
            "test",
            "--release",
            "--package",
            "tracer-tests",
            "--tests",
            "--",
        ])
        .args(["--test-threads=1"])
        .args(args));
    // A failed run keeps its scratch: the failing test's events and stderr.
    if outcome.is_ok() {
        sweep_test_dirs();
    }
    outcome
}

/// Remove the tests' scratch directories (`/tmp/trt-TAG-PID-N`, see
/// `tracer_tests::temp_dir`) whose test process has ended. Those of a live
/// process (another suite running at the same time) stay, and so does any
/// directory with something still mounted below it: deleting through a
/// leftover bind mount would delete what it shows.
fn sweep_test_dirs() {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("trt-") {
            continue;
        }
        // TAG may hold dashes: the pid is the second field from the end.
        let Some(pid) = name.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = format!("/tmp/{name}");
        let mounted = mounts.lines().any(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| m == dir || m.starts_with(&format!("{dir}/")))
        });
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && !mounted {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Run one of the test crate's programs (`bench`, `soak`) against the
/// release tracer.
fn run_harness(root: &Path, program: &str, args: &[OsString]) -> Result<()> {
    // Every program of the test crate first: `soak` and `bench` start the
    // `connector` client from beside themselves, and `cargo run --bin`
    // builds only the one it runs (a fresh clone's `cargo xtask soak` used
    // to fail with "storm: No such file or directory").
    run(Command::new("cargo").current_dir(root).args([
        "build",
        "--release",
        "--package",
        "tracer-tests",
        "--bins",
    ]))?;
    // `bench --sks`: the experiment's build is the tracer measured.
    let tracer = std::env::var_os("TRACER_SKS_BIN")
        .map_or_else(|| root.join("target/release/tracer"), PathBuf::from);
    run(Command::new("cargo")
        .current_dir(root)
        .env("TRACER_BIN", &tracer)
        .args([
            "run",
            "--release",
            "--package",
            "tracer-tests",
            "--bin",
            program,
            "--",
        ])
        .args(args))
}

fn bench(root: &Path, args: &[OsString]) -> Result<()> {
    // `--scale`: the node-scale case (tests/src/bin/scale.rs), on its own.
    if args.iter().any(|a| a == "--scale") {
        let rest: Vec<OsString> = args.iter().filter(|a| *a != "--scale").cloned().collect();
        return run_harness(root, "scale", &rest);
    }
    // `--floor`: the tracer again with every eBPF program empty, in a target
    // dir of its own so the real build stays as it is; the bench runs it
    // beside the tracer (tests/src/bin/bench/kernel.rs).
    if args.iter().any(|a| a == "--floor") {
        let floor_dir = root.join("target/floor");
        run(build_command(root)
            .args(["--features", "floor", "--target-dir"])
            .arg(&floor_dir))?;
        // Read by the bench (`floor_bin`); xtask is one thread here.
        std::env::set_var("TRACER_FLOOR_BIN", floor_dir.join("release/tracer"));
    }
    // `--sks VARIANT`: the tp_btf and socket-storage experiment of issue 20
    // §1 (tracer-ebpf's features `sks`, `sks-keep`, `sks-conns`; see
    // docs/src/overhead.md), in a target dir of its own, run as the tracer
    // with the real build (target/release/tracer) as the baseline.
    if let Some(at) = args.iter().position(|a| a == "--sks") {
        let variant = args.get(at + 1).and_then(|v| v.to_str()).unwrap_or("");
        if !["sks", "sks-keep", "sks-conns"].contains(&variant) {
            bail!("--sks takes one of sks, sks-keep, sks-conns (got {variant:?})");
        }
        let sks_dir = root.join("target/sks");
        run(build_command(root)
            .args(["--features", variant, "--target-dir"])
            .arg(&sks_dir))?;
        // Read by run_harness; xtask is one thread here.
        std::env::set_var("TRACER_SKS_BIN", sks_dir.join("release/tracer"));
        let mut rest: Vec<OsString> = args[..at].to_vec();
        rest.extend_from_slice(&args[at + 2..]);
        rest.push("--baseline".into());
        rest.push(root.join("target/release/tracer").into());
        return run_harness(root, "bench", &rest);
    }
    run_harness(root, "bench", args)
}

fn soak(root: &Path, minutes: u64) -> Result<()> {
    if effective_uid() != 0 {
        bail!("the soak needs root (it loads eBPF programs and creates network namespaces)");
    }
    run_harness(
        root,
        "soak",
        &["--minutes".into(), minutes.to_string().into()],
    )
}

fn effective_uid() -> u32 {
    // `id -u` avoids a libc dependency in xtask.
    output(Command::new("id").arg("-u"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u32::MAX)
}

/// The fuzz targets in tests/fuzz/fuzz_targets, one per parser of node
/// input.
const FUZZ_TARGETS: &[&str] = &[
    "environ",
    "unit_file",
    "env_file",
    "proxy_url",
    "no_proxy",
    "cgroup",
    "hosts",
    "decode",
    "dns_message",
    "proxy_line",
    "args",
    "tls",
];

/// Install cargo-fuzz unless it is on PATH (about 1-2 minutes, once).
fn install_cargo_fuzz() -> Result<()> {
    if have("cargo-fuzz") {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz (about 1-2 minutes, once)");
    let started = std::time::Instant::now();
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    eprintln!(
        "xtask: cargo-fuzz installed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if !have("cargo-fuzz") {
        bail!("cargo-fuzz was installed but is not on PATH; is ~/.cargo/bin on PATH?");
    }
    Ok(())
}

/// `cargo +nightly fuzz ARGS` on the fuzz crate, with debug assertions (an
/// overflow is a finding too).
fn cargo_fuzz(root: &Path, subcommand: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root).args([
        "+nightly",
        "fuzz",
        subcommand,
        "--fuzz-dir",
        "tests/fuzz",
        "--debug-assertions",
    ]);
    cmd
}

struct FuzzResult {
    target: &'static str,
    executions: Option<u64>,
    crash: Option<String>,
    ok: bool,
}

fn fuzz(root: &Path, seconds: u64, only: &[String]) -> Result<()> {
    for name in only {
        if !FUZZ_TARGETS.contains(&name.as_str()) {
            bail!(
                "no fuzz target {name:?}; targets: {}",
                FUZZ_TARGETS.join(", ")
            );
        }
    }
    let targets: Vec<&'static str> = FUZZ_TARGETS
        .iter()
        .copied()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == t))
        .collect();
    install_cargo_fuzz()?;
    let started = std::time::Instant::now();
    run(&mut cargo_fuzz(root, "build"))?;
    eprintln!(
        "xtask: fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    // The committed corpus is the seeds only: libFuzzer writes what it finds
    // into the first directory, a scratch one under target/.
    let scratch = root.join("target/fuzz");
    let mut results = Vec::new();
    for &target in &targets {
        let grown = scratch.join("corpus").join(target);
        std::fs::create_dir_all(&grown)
            .with_context(|| format!("cannot create {}", grown.display()))?;
        let seeds = root.join("tests/fuzz/corpus").join(target);
        let log = scratch.join(format!("{target}.log"));
        eprintln!(
            "xtask: fuzzing {target} for {seconds} s (log: {})",
            log.display()
        );
        let out = cargo_fuzz(root, "run")
            .arg(target)
            .arg(&grown)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .args(["-print_final_stats=1", "-timeout=10"])
            .output()
            .with_context(|| format!("cannot run cargo fuzz run {target}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&log, &text).with_context(|| format!("cannot write {}", log.display()))?;
        let executions = text
            .lines()
            .filter_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .filter_map(|n| n.trim().parse().ok())
            .next_back();
        // libFuzzer: "Test unit written to tests/fuzz/artifacts/<target>/crash-<sha1>",
        // relative to the workspace root (cargo fuzz runs it from there).
        let crash = text
            .lines()
            .filter_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
            .next_back()
            .map(|p| root.join(p).display().to_string());
        if !out.status.success() {
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            for line in tail.into_iter().rev() {
                eprintln!("  {line}");
            }
        }
        results.push(FuzzResult {
            target,
            executions,
            crash,
            ok: out.status.success(),
        });
    }

    println!(
        "\n{:<10} {:>14} {:>10}  result",
        "target", "executions", "exec/s"
    );
    for r in &results {
        let execs = r.executions.map_or("?".to_string(), |n| n.to_string());
        let rate = r
            .executions
            .map_or("?".to_string(), |n| (n / seconds.max(1)).to_string());
        let result = match (&r.crash, r.ok) {
            (Some(path), _) => format!("CRASH: {path}"),
            (None, true) => "ok".to_string(),
            (None, false) => "FAILED (see its log)".to_string(),
        };
        println!("{:<10} {execs:>14} {rate:>10}  {result}", r.target);
    }
    let failed: Vec<&str> = results.iter().filter(|r| !r.ok).map(|r| r.target).collect();
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (reproduce: cargo +nightly fuzz run --fuzz-dir tests/fuzz -a <target> <crash file>)",
            failed.join(", ")
        );
    }
    Ok(())
}
