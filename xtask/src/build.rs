//! Building the eBPF objects and the userspace binaries that embed them.

use std::{path::PathBuf, process::Command};

use anyhow::{Context, bail};

use crate::bootstrap::{ensure_build_chain, workspace_root};

/// Builds the eBPF objects (`lb`, `aux`, `probes`); returns the directory holding them.
pub fn ebpf() -> anyhow::Result<PathBuf> {
    ensure_build_chain()?;
    let crate_dir = workspace_root().join("lb-ebpf");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&crate_dir)
        .args([
            "+nightly",
            "build",
            "-Z",
            "build-std=core",
            "--target",
            "bpfel-unknown-none",
            "--release",
        ])
        // BTF for maps and programs: `bpftool map dump` then shows field names.
        .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf");
    // Settings of the outer (stable) cargo must not leak into the nightly build.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().context("running cargo +nightly")?;
    if !status.success() {
        bail!("building the eBPF objects failed");
    }
    Ok(crate_dir.join("target/bpfel-unknown-none/release"))
}

/// `cargo` for userspace, with the eBPF objects to embed.
pub fn cargo(ebpf_dir: &PathBuf) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root())
        .env("LB_EBPF_DIR", ebpf_dir);
    cmd
}

/// Builds `lbd` (and everything the tests need) and returns the binary's path.
pub fn lbd(ebpf_dir: &PathBuf, release: bool) -> anyhow::Result<PathBuf> {
    let mut cmd = cargo(ebpf_dir);
    cmd.args(["build", "-q", "-p", "lb-daemon", "-p", "lb-tests", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    if !cmd.status()?.success() {
        bail!("building lbd failed");
    }
    Ok(workspace_root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("lbd"))
}
