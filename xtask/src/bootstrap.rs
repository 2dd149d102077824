//! Installs what a fresh Debian 12 machine lacks, idempotently, saying what it does.
//! Stops with the exact missing step when it cannot do it itself.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

/// Debian packages and a file each one provides (present = installed).
const PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "/usr/lib/llvm-22/lib/libLLVM.so"),
    ("libpolly-22-dev", "/usr/lib/llvm-22/lib/libPolly.a"),
    ("libzstd-dev", "/usr/include/zstd.h"),
    ("redis-server", "/usr/bin/redis-server"),
    ("redis-tools", "/usr/bin/redis-benchmark"),
    ("bpftool", "/usr/sbin/bpftool"),
    ("iproute2", "/usr/sbin/ip"),
    ("ethtool", "/usr/sbin/ethtool"),
    ("procps", "/usr/sbin/sysctl"),
    // The VRRP interop tests: keepalived 2.2.7 as the peer, tshark to decode our adverts.
    ("keepalived", "/usr/sbin/keepalived"),
    ("tshark", "/usr/bin/tshark"),
];

/// Nightly that `-Z build-std` uses, and a copy of its rust-src shipped beside the project.
const RUST_SRC_TARBALL: &str = "rust-src-nightly-1.97.0-e50aa6fba.tar.xz";

pub fn ensure_all() -> anyhow::Result<()> {
    ensure_root()?;
    ensure_packages()?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    ensure_bpffs()?;
    Ok(())
}

/// Only what building the eBPF objects needs (no root).
pub fn ensure_build_chain() -> anyhow::Result<()> {
    if is_root() {
        ensure_packages()?;
    }
    ensure_rust_src()?;
    ensure_bpf_linker()
}

pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn ensure_root() -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "this task needs root (XDP, network namespaces, bpffs): run it as root, e.g. `sudo -E cargo xtask ...`"
        );
    }
    Ok(())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn ensure_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: run `apt-get update && apt-get install -y {}` as root",
            missing.join(" ")
        );
    }
    println!("xtask: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    // The Debian packages start system instances; the labs run their own.
    for service in ["redis-server", "keepalived"] {
        if missing.contains(&service) {
            let _ = Command::new("systemctl")
                .args(["disable", "--now", service])
                .status();
        }
    }
    Ok(())
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .context("running rustc +nightly")?;
    if !out.status.success() {
        bail!("no nightly toolchain: run `rustup toolchain install nightly`");
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn ensure_rust_src() -> anyhow::Result<()> {
    let sysroot = nightly_sysroot()?;
    let library = sysroot.join("lib/rustlib/src/rust/library");
    if library.join("core").is_dir() {
        return Ok(());
    }
    println!("xtask: adding rust-src to the nightly toolchain");
    let added = Command::new("rustup")
        .args(["component", "add", "rust-src", "--toolchain", "nightly"])
        .status();
    if added.is_ok_and(|s| s.success()) && library.join("core").is_dir() {
        return Ok(());
    }
    let tarball = workspace_root()
        .join("../shared/toolchain")
        .join(RUST_SRC_TARBALL);
    if !tarball.exists() {
        bail!(
            "rust-src for nightly is missing and `rustup component add rust-src --toolchain nightly` failed"
        );
    }
    let version = Command::new("rustc").args(["+nightly", "-vV"]).output()?;
    if !String::from_utf8_lossy(&version.stdout).contains("e50aa6fba") {
        bail!(
            "rust-src is missing, and {} is for nightly e50aa6fba, not this nightly",
            tarball.display()
        );
    }
    println!(
        "xtask: unpacking {} into the nightly sysroot",
        tarball.display()
    );
    run(Command::new("tar")
        .arg("-xJf")
        .arg(&tarball)
        .arg("-C")
        .arg(sysroot.join("lib/rustlib")))
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    println!("xtask: installing bpf-linker against LLVM 22 (about 2 minutes)");
    // bpf-linker 0.13 defaults to LLVM 23; nightly's LLVM is 22. LLVM_PREFIX stops its build
    // script from picking the older llvm-config on PATH.
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            "0.13.0",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", "/usr/lib/llvm-22")
        .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"))
}

fn ensure_bpffs() -> anyhow::Result<()> {
    let mounted = std::fs::read_to_string("/proc/self/mounts")?
        .lines()
        .any(|l| {
            l.split_whitespace().nth(1) == Some("/sys/fs/bpf")
                && l.split_whitespace().nth(2) == Some("bpf")
        });
    if !mounted {
        println!("xtask: mounting bpffs on /sys/fs/bpf");
        run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    }
    Ok(())
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}
