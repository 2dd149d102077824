//! The tasks behind `cargo xtask run | test | bench`.

use std::process::Command;

use anyhow::bail;

use crate::{bootstrap, build};

/// `cargo xtask run`: the lab with no arguments, else `lbd <args>`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    bootstrap::ensure_all()?;
    let ebpf = build::ebpf()?;
    let lbd = build::lbd(&ebpf, true)?;
    if args.is_empty() {
        let lab = lbd.with_file_name("lb-lab");
        let status = Command::new(lab).env("LBD_BIN", &lbd).status()?;
        if !status.success() {
            bail!("the lab exited with {status}");
        }
        return Ok(());
    }
    // `lbd` speaks for itself: its exit code (2 for a bad config) and nothing added.
    let status = Command::new(&lbd).args(args).status()?;
    std::process::exit(status.code().unwrap_or(1));
}

/// `cargo xtask test`: every test, root-only ones included.
pub fn test(args: &[String]) -> anyhow::Result<()> {
    test_with(args, &[])
}

/// [`test`] with extra environment for the tests.
fn test_with(args: &[String], envs: &[(&str, String)]) -> anyhow::Result<()> {
    if !bootstrap::is_root() {
        bail!(
            "`cargo xtask test` runs datapath and namespace tests, which need root: run it as root \
             (`cargo test` alone runs the unit tests without root)"
        );
    }
    bootstrap::ensure_all()?;
    let ebpf = build::ebpf()?;
    let lbd = build::lbd(&ebpf, false)?;
    // The package test inspects a .deb built the way `cargo xtask package` builds one
    // (from this debug lbd, to spare a release build).
    let deb = crate::package::deb(
        &lbd,
        &bootstrap::workspace_root().join("target/package-test"),
        crate::package::Compression::None,
    )?;
    let status = build::cargo(&ebpf)
        .args(["test", "--workspace"])
        .args(args)
        .env("LBD_BIN", &lbd)
        .env("LBD_DEB", &deb)
        .env("RUST_BACKTRACE", "1")
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .status()?;
    if !status.success() {
        bail!("tests failed");
    }
    Ok(())
}

/// `cargo xtask package`: the .deb, from a release build.
pub fn package(out: &std::path::Path) -> anyhow::Result<()> {
    bootstrap::ensure_all()?;
    let ebpf = build::ebpf()?;
    let lbd = build::lbd(&ebpf, true)?;
    let out = if out.is_absolute() {
        out.to_owned()
    } else {
        bootstrap::workspace_root().join(out)
    };
    let deb = crate::package::deb(&lbd, &out, crate::package::Compression::Default)?;
    println!("{}", deb.display());
    Ok(())
}

/// `cargo xtask fuzz`: the fuzz test alone, with `frames` frames from `seed`.
pub fn fuzz(frames: u64, seed: Option<u64>) -> anyhow::Result<()> {
    let args = ["-p", "lb-tests", "--test", "fuzz", "--", "--nocapture"].map(String::from);
    let mut envs = vec![("LBD_FUZZ_FRAMES", frames.to_string())];
    envs.extend(seed.map(|seed| ("LBD_FUZZ_SEED", seed.to_string())));
    test_with(&args, &envs)
}

/// `cargo xtask bench`: release build, then the benchmark driver.
pub fn bench(
    no_lab: bool,
    health_only: bool,
    vrrp_only: bool,
    sync_only: bool,
    restart_only: bool,
    soak: Option<u64>,
) -> anyhow::Result<()> {
    bootstrap::ensure_all()?;
    let ebpf = build::ebpf()?;
    let lbd = build::lbd(&ebpf, true)?;
    let mut cmd = Command::new(lbd.with_file_name("lb-bench"));
    cmd.env("LBD_BIN", &lbd)
        .current_dir(bootstrap::workspace_root());
    if no_lab {
        cmd.arg("--no-lab");
    }
    if health_only {
        cmd.arg("--health-only");
    }
    if vrrp_only {
        cmd.arg("--vrrp-only");
    }
    if sync_only {
        cmd.arg("--sync-only");
    }
    if restart_only {
        cmd.arg("--restart-only");
    }
    if let Some(seconds) = soak {
        cmd.arg("--soak").arg(seconds.to_string());
    }
    if !cmd.status()?.success() {
        bail!("benchmark failed");
    }
    Ok(())
}
