//! `cargo xtask package`: a Debian package of lbd (the binary, with its eBPF objects
//! embedded), its systemd unit, an example config, the Grafana dashboard and the docs.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::bootstrap::workspace_root;

/// Kept after an upgrade restart: `systemctl restart` sends SIGUSR2 (the unit's
/// RestartKillSignal), so the new lbd takes over the running datapath.
const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    # An upgrade restarts a running lbd without dropping a connection (see the unit).
    if systemctl is-active --quiet lbd.service; then
        # A failed start leaves the previous datapath forwarding; the package is installed.
        systemctl restart lbd.service ||
            echo "lbd: the restart failed; the previous datapath keeps forwarding (journalctl -u lbd)" >&2
    fi
fi
exit 0
"#;

/// A removal stops lbd fully (detached, unpinned); an upgrade leaves it to postinst.
const PRERM: &str = r#"#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop lbd.service || true
fi
exit 0
"#;

const POSTRM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
"#;

/// How hard dpkg-deb compresses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// dpkg-deb's default (xz): for packages that ship.
    Default,
    /// None: for the package `cargo xtask test` inspects (xz takes a minute on a debug lbd).
    None,
}

/// Builds `<out>/lbd_<version>_<arch>.deb` around the `lbd` binary at `lbd`.
pub fn deb(lbd: &Path, out: &Path, compression: Compression) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let version = Command::new(lbd).arg("--version").output()?;
    let version = String::from_utf8(version.stdout)?
        .trim()
        .strip_prefix("lbd ")
        .context("lbd --version says no version")?
        .to_owned();
    let arch = Command::new("dpkg").arg("--print-architecture").output()?;
    let arch = String::from_utf8(arch.stdout)?.trim().to_owned();
    if arch.is_empty() {
        bail!("dpkg --print-architecture said nothing: is this Debian?");
    }
    let stage = out.join(format!("lbd_{version}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    let install = |from: &Path, to: &str, mode: u32| -> anyhow::Result<()> {
        let target = stage.join(to);
        fs::create_dir_all(target.parent().expect("a file under the stage"))?;
        fs::copy(from, &target).with_context(|| format!("copying {}", from.display()))?;
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    let write = |to: &str, text: &str, mode: u32| -> anyhow::Result<()> {
        let target = stage.join(to);
        fs::create_dir_all(target.parent().expect("a file under the stage"))?;
        fs::write(&target, text)?;
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    install(lbd, "usr/sbin/lbd", 0o755)?;
    install(
        &root.join("packaging/lbd.service"),
        "lib/systemd/system/lbd.service",
        0o644,
    )?;
    install(
        &root.join("packaging/lbd.toml.example"),
        "usr/share/doc/lbd/examples/lbd.toml",
        0o644,
    )?;
    install(
        &root.join("packaging/grafana/lbd-dashboard.json"),
        "usr/share/doc/lbd/grafana/lbd-dashboard.json",
        0o644,
    )?;
    install(
        &root.join("README.md"),
        "usr/share/doc/lbd/README.md",
        0o644,
    )?;
    for entry in fs::read_dir(root.join("docs"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md") {
            let name = path.file_name().expect("a file").to_string_lossy();
            install(&path, &format!("usr/share/doc/lbd/{name}"), 0o644)?;
        }
    }
    let size_kib = dir_size(&stage)? / 1024;
    write(
        "DEBIAN/control",
        &format!(
            "Package: lbd\n\
             Version: {version}\n\
             Architecture: {arch}\n\
             Maintainer: lbd developers <lbd@localhost>\n\
             Installed-Size: {size_kib}\n\
             Depends: libc6, iproute2\n\
             Recommends: bpftool\n\
             Section: net\n\
             Priority: optional\n\
             Description: XDP direct-routing load balancer for Redis (LVS-DR + keepalived replacement)\n \
             lbd balances connections for virtual IPs over Redis servers in direct-routing\n \
             mode with an XDP program (Maglev and IPVS schedulers, connection tracking),\n \
             Redis-aware health checks (AUTH, PING, role), VRRP failover interoperating\n \
             with keepalived, flow sync, Prometheus metrics, and restarts and upgrades\n \
             that keep every connection.\n"
        ),
        0o644,
    )?;
    write("DEBIAN/postinst", POSTINST, 0o755)?;
    write("DEBIAN/prerm", PRERM, 0o755)?;
    write("DEBIAN/postrm", POSTRM, 0o755)?;
    fs::create_dir_all(out)?;
    let deb = out.join(format!("lbd_{version}_{arch}.deb"));
    let mut build = Command::new("dpkg-deb");
    build.args(["--build", "--root-owner-group"]);
    if compression == Compression::None {
        build.arg("-Znone");
    }
    let status = build
        .arg(&stage)
        .arg(&deb)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("dpkg-deb --build failed");
    }
    fs::remove_dir_all(&stage)?;
    Ok(deb)
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
