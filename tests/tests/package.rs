//! The Debian package `cargo xtask package` builds (here from the test build's lbd, which
//! `cargo xtask test` packs into `LBD_DEB`): its metadata, files, a working binary with
//! the example config, a valid systemd unit, and maintainer scripts that restart (keeping
//! connections) on upgrade and stop fully on removal.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The .deb under test, or `None` (skipped) outside `cargo xtask test`.
fn deb() -> Option<PathBuf> {
    match std::env::var_os("LBD_DEB") {
        Some(path) => Some(PathBuf::from(path)),
        None if std::env::var_os("CI").is_some() => {
            panic!("LBD_DEB is not set and CI is: run through `cargo xtask test`")
        }
        None => {
            eprintln!("package: skipped, run through `cargo xtask test` (it builds the .deb)");
            None
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(lb_tests::unique_name(tag));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn extract(deb: &Path, dir: &Path) {
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir));
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(deb)
        .arg(dir.join("DEBIAN")));
}

#[test]
fn the_package_holds_a_working_lbd_its_unit_example_config_dashboard_and_docs() {
    let Some(deb) = deb() else { return };
    let info = run(Command::new("dpkg-deb").args(["-f"]).arg(&deb).args([
        "Package",
        "Version",
        "Architecture",
        "Depends",
    ]));
    let version = run(Command::new(lb_tests::lbd::bin()).arg("--version"));
    assert!(info.contains("Package: lbd"), "{info}");
    assert!(
        info.contains(&format!(
            "Version: {}",
            version.trim().trim_start_matches("lbd ")
        )),
        "{info} vs {version}"
    );
    let files = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/sbin/lbd",
        "./lib/systemd/system/lbd.service",
        "./usr/share/doc/lbd/examples/lbd.toml",
        "./usr/share/doc/lbd/grafana/lbd-dashboard.json",
        "./usr/share/doc/lbd/README.md",
        "./usr/share/doc/lbd/operations.md",
        "./usr/share/doc/lbd/configuration.md",
    ] {
        assert!(
            files.lines().any(|l| l.ends_with(path)),
            "{path} missing:\n{files}"
        );
    }
    assert!(
        files
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x root/root") && l.ends_with("./usr/sbin/lbd")),
        "lbd is not an executable owned by root:\n{files}"
    );

    let dir = TempDir::new("deb");
    extract(&deb, &dir.0);
    let lbd = dir.0.join("usr/sbin/lbd");
    let example = dir.0.join("usr/share/doc/lbd/examples/lbd.toml");
    let checked = run(Command::new(&lbd).args(["check", "--config"]).arg(&example));
    assert!(checked.contains(": ok"), "{checked}");
    // The eBPF objects are inside the binary: `lbd run` would not say they are missing.
    let strings = std::fs::read(&lbd).unwrap();
    assert!(
        strings.windows(4).any(|w| w == b"\x7fELF") && strings.len() > 1 << 20,
        "a suspiciously small lbd"
    );

    // The unit is valid for this systemd, with the extracted lbd in place of /usr/sbin/lbd.
    let unit = std::fs::read_to_string(dir.0.join("lib/systemd/system/lbd.service")).unwrap();
    for line in [
        "KillSignal=SIGTERM",
        "RestartKillSignal=SIGUSR2",
        "ExecReload=/usr/sbin/lbd reload --config /etc/lbd/lbd.toml",
    ] {
        assert!(unit.contains(line), "unit lacks {line}");
    }
    let local = dir.0.join("lbd.service");
    std::fs::write(&local, unit.replace("/usr/sbin/lbd", lbd.to_str().unwrap())).unwrap();
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&local)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !said.contains("lbd.service") || said.trim().is_empty(),
            "systemd-analyze verify: {said}"
        );
    }
}

/// The maintainer scripts, run with a `systemctl` that records what it is asked (systemd
/// is not PID 1 here): an upgrade restarts a running lbd (RestartKillSignal keeps its
/// connections), a removal stops it fully, and nothing is started that was not running.
#[test]
fn maintainer_scripts_restart_on_upgrade_and_stop_on_removal() {
    let Some(deb) = deb() else { return };
    let dir = TempDir::new("debscripts");
    extract(&deb, &dir.0);
    let bin = dir.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = dir.0.join("calls");
    let active = dir.0.join("active");
    std::fs::write(
        bin.join("systemctl"),
        format!(
            "#!/bin/sh\necho \"$*\" >> {calls}\n\
             if [ \"$1\" = is-active ]; then test -e {active}; exit $?; fi\nexit 0\n",
            calls = calls.display(),
            active = active.display()
        ),
    )
    .unwrap();
    run(Command::new("chmod").arg("+x").arg(bin.join("systemctl")));
    let script = |name: &str, arg: &str| -> Vec<String> {
        let _ = std::fs::remove_file(&calls);
        // The scripts act only where systemd runs; pretend it does by giving them a
        // /run/systemd/system check that passes: run under a shell that defines `[` as usual
        // and a PATH whose systemctl records.
        let text = std::fs::read_to_string(dir.0.join("DEBIAN").join(name)).unwrap();
        let text = text.replace("[ -d /run/systemd/system ]", "true");
        let path = dir.0.join(format!("{name}.sh"));
        std::fs::write(&path, text).unwrap();
        run(Command::new("sh")
            .arg(&path)
            .arg(arg)
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display())));
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    std::fs::write(&active, "").unwrap();
    assert_eq!(
        script("postinst", "configure"),
        [
            "daemon-reload",
            "is-active --quiet lbd.service",
            "restart lbd.service"
        ]
    );
    std::fs::remove_file(&active).unwrap();
    assert_eq!(
        script("postinst", "configure"),
        ["daemon-reload", "is-active --quiet lbd.service"],
        "a stopped lbd must not be started"
    );
    assert_eq!(script("prerm", "remove"), ["stop lbd.service"]);
    assert_eq!(
        script("prerm", "upgrade"),
        Vec::<String>::new(),
        "an upgrade must not stop lbd (postinst restarts it, keeping connections)"
    );
}
