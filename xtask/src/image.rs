//! `cargo xtask image`: the tracer as an OCI image, built offline.
//!
//! No base image can be downloaded, so the image is built from scratch and
//! holds one file that matters: a static-pie `tracer` (glibc, linked with
//! `+crt-static`), with the eBPF object embedded by tracer-user's build.rs.
//! Static glibc still resolves names: the `files` and `dns` NSS backends are
//! part of libc since glibc 2.34, so getaddrinfo reads `/etc/hosts` and
//! `/etc/resolv.conf` without loading a module (tests/tests/image.rs checks
//! a name that only the container's hosts file knows). An
//! `/etc/nsswitch.conf` saying `hosts: files dns` gives the node's usual
//! order (glibc's built-in default without the file asks DNS first).
//!
//! `--target x86_64-unknown-linux-gnu` keeps RUSTFLAGS away from build
//! scripts and proc macros (they must stay dynamic host programs), and puts
//! the build in `target/x86_64-unknown-linux-gnu/`, beside the ordinary
//! release build rather than over it. The binary is stripped for the
//! image; the unstripped one stays under target/ for symbolising a crash.
//!
//! buildah works in a storage of its own under `target/image/`, removed
//! afterwards, so nothing is left in the machine's container storage.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::{output, run};

/// The image's name, as `deploy/kubernetes/tracer.yaml` refers to it
/// (tests/tests/image.rs checks that they agree).
pub fn reference() -> String {
    format!("localhost/tracer:{}", env!("CARGO_PKG_VERSION"))
}

/// Where the OCI archive goes.
pub fn archive(root: &Path) -> PathBuf {
    root.join("target/tracer-image.tar")
}

const TARGET: &str = "x86_64-unknown-linux-gnu";

pub fn build_image(root: &Path) -> Result<PathBuf> {
    let started = Instant::now();
    // One release build for the image's target; incremental afterwards.
    let mut rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
    if !rustflags.is_empty() {
        rustflags.push(' ');
    }
    rustflags.push_str("-C target-feature=+crt-static");
    run(Command::new("cargo")
        .current_dir(root)
        .env("RUSTFLAGS", &rustflags)
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--package",
            "tracer-user",
            "--bin",
            "tracer",
        ]))?;
    let built = root.join("target").join(TARGET).join("release/tracer");
    let compiled = started.elapsed();
    let elf = std::fs::read(&built).with_context(|| format!("cannot read {}", built.display()))?;
    if has_interpreter(&elf)
        .with_context(|| format!("{} is not an x86-64 ELF file", built.display()))?
    {
        bail!(
            "{} is dynamically linked (it names an ELF interpreter); a scratch image needs a static binary",
            built.display()
        );
    }

    let work = root.join("target/image");
    let _ = std::fs::remove_dir_all(&work);
    let rootfs = work.join("files");
    std::fs::create_dir_all(rootfs.join("etc"))
        .with_context(|| format!("cannot create {}", rootfs.display()))?;
    let binary = rootfs.join("tracer");
    std::fs::copy(&built, &binary).with_context(|| format!("cannot copy {}", built.display()))?;
    run(Command::new("strip").arg("--strip-all").arg(&binary))?;
    std::fs::write(rootfs.join("etc/nsswitch.conf"), "hosts: files dns\n")
        .context("cannot write nsswitch.conf")?;

    let storage = Storage::new(&work);
    let reference = reference();
    let result = (|| -> Result<()> {
        let container = output(storage.buildah().args(["from", "scratch"]))?;
        let container = container.trim();
        run(storage
            .buildah()
            .args(["copy", "--quiet", container])
            .arg(&binary)
            .arg("/tracer"))?;
        run(storage
            .buildah()
            .args(["copy", "--quiet", container])
            .arg(rootfs.join("etc/nsswitch.conf"))
            .arg("/etc/nsswitch.conf"))?;
        run(storage.buildah().args([
            "config",
            "--entrypoint",
            r#"["/tracer"]"#,
            "--cmd",
            "trace",
            "--label",
            "org.opencontainers.image.title=tracer",
            "--label",
            "org.opencontainers.image.description=eBPF connect() tracer: who dialled what, how it ended, and which proxy sent it there",
            "--label",
            &format!("org.opencontainers.image.version={}", env!("CARGO_PKG_VERSION")),
            "--label",
            "org.opencontainers.image.licenses=MIT OR Apache-2.0",
            container,
        ]))?;
        // Prints the image id; the archive below is what counts.
        output(
            storage
                .buildah()
                .args(["commit", "--quiet", container, &reference]),
        )?;
        let dest = archive(root);
        let _ = std::fs::remove_file(&dest);
        run(storage.buildah().args([
            "push",
            "--quiet",
            &reference,
            &format!("oci-archive:{}:{reference}", dest.display()),
        ]))?;
        Ok(())
    })();
    storage.remove();
    result?;

    let dest = archive(root);
    let size = std::fs::metadata(&dest)
        .with_context(|| format!("cannot stat {}", dest.display()))?
        .len();
    let binary_size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "xtask: image {reference} in {} ({:.1} MiB archive, {:.1} MiB stripped static binary; compile {:.0} s, total {:.0} s)",
        dest.display(),
        size as f64 / (1024.0 * 1024.0),
        binary_size as f64 / (1024.0 * 1024.0),
        compiled.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    let _ = std::fs::remove_dir_all(&work);
    Ok(dest)
}

/// buildah with a private storage (vfs: works on any file system, and the
/// image is one small layer).
struct Storage {
    root: PathBuf,
    runroot: PathBuf,
}

impl Storage {
    fn new(work: &Path) -> Storage {
        Storage {
            root: work.join("storage"),
            runroot: work.join("run"),
        }
    }

    fn buildah(&self) -> Command {
        let mut cmd = Command::new("buildah");
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(["--storage-driver", "vfs"]);
        cmd
    }

    fn remove(&self) {
        // Working containers first, then the storage itself.
        let _ = self
            .buildah()
            .args(["rm", "--all"])
            .stdout(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_dir_all(&self.runroot);
    }
}

/// Whether an x86-64 ELF file has a PT_INTERP program header (a dynamic
/// loader). `None` if it is not a 64-bit little-endian ELF file.
fn has_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..4)? != b"\x7fELF" || *elf.get(4)? != 2 || *elf.get(5)? != 1 {
        return None;
    }
    let u16_at = |at: usize| -> Option<u16> {
        Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?))
    };
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?))
    };
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        if u32_at(phoff.checked_add(i.checked_mul(phentsize)?)?)? == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_static_from_dynamic_binaries() {
        // /bin/sh on any Debian machine is dynamically linked.
        let sh = std::fs::read("/bin/sh").unwrap();
        assert_eq!(has_interpreter(&sh), Some(true));
        assert_eq!(has_interpreter(b"not an elf file"), None);
        assert_eq!(has_interpreter(&sh[..0x40]), None, "truncated headers");
    }
}
