//! The `lbd` binary's refusals, which need no root: a bad config is reported with file,
//! line and key, and nothing is started; a closed stdout and `--help` behave.

use std::{os::fd::FromRawFd, process::Command};

fn lbd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lbd"))
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lbd-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lbd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const BAD: &str = "instance = \"cli-bad\"\n[director]\ninterfaces = [\"eth0\"]\n[[vip]]\naddress = \"198.18.0.100\"\nport = 6379\n[[vip.backend]]\naddress = \"198.18.0.11\"\nweight = 70000\n";

#[test]
fn check_reports_file_line_and_key_and_exits_2() {
    let path = write_config("check", BAD);
    let out = lbd()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        format!(
            "{}:9: vip[0].backend[0].weight: must be between 0 (drain) and 65535",
            path.display()
        )
    );
}

#[test]
fn check_accepts_a_good_config() {
    let path = write_config("good", &BAD.replace("70000", "3"));
    let out = lbd()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 VIPs, 1 backends;"));
}

#[test]
fn run_with_a_bad_config_fails_before_touching_anything() {
    let path = write_config("run", BAD);
    let out = lbd()
        .arg("run")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:9: vip[0].backend[0].weight", path.display())),
        "{stderr}"
    );
    assert!(
        !lb_daemon::paths::PinLayout::for_instance("cli-bad")
            .dir
            .exists(),
        "pins created for a bad config"
    );
}

#[test]
fn run_with_a_missing_config_names_the_file() {
    let out = lbd()
        .args(["run", "--config", "/nonexistent/lbd.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/lbd.toml: cannot read"));
}

const GOOD: &str = "instance = \"cli-good\"\n[director]\ninterfaces = [\"eth0\"]\n[[vip]]\naddress = \"198.18.0.100\"\nport = 6379\n[[vip.backend]]\naddress = \"198.18.0.11\"\n";

/// `lbd check -c FILE | head -c0`: the reader is gone before lbd writes. The command ends
/// quietly (no "failed printing to stdout" panic, no exit 101).
/// The write end of a pipe whose reader is gone: writes fail with EPIPE (Rust ignores
/// SIGPIPE), as when `| head -0` exits.
fn closed_pipe() -> std::process::Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe fills two descriptors; the read end is closed at once and the write end
    // is owned by the returned Stdio.
    let write_end = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        libc::close(fds[0]);
        std::os::fd::OwnedFd::from_raw_fd(fds[1])
    };
    std::process::Stdio::from(write_end)
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let path = write_config("pipe", GOOD);
    let out = lbd()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .stdout(closed_pipe())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn check_says_what_the_conntrack_tables_cost() {
    let path = write_config(
        "mem",
        &GOOD.replace(
            "interfaces = [\"eth0\"]",
            "interfaces = [\"eth0\"]\nmax_flows = 67108864",
        ),
    );
    let out = lbd()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("67108864 flows each (IPv4, IPv6): about 14848 MiB of kernel memory"),
        "{stdout}"
    );
}

#[test]
fn every_option_is_described_in_help() {
    for command in ["run", "check", "reload", "status"] {
        let out = lbd().args([command, "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        for line in help.lines().filter(|l| l.trim_start().starts_with('-')) {
            let described = line
                .split("  ")
                .filter(|part| !part.trim().is_empty())
                .count()
                > 1;
            assert!(
                described,
                "`lbd {command} --help`: no description for {line:?}"
            );
        }
    }
}

/// The reader going away on stderr (`lbd check -c bad.toml 2>&1 | head -0`): the verdict
/// (exit 2, "invalid config") survives.
#[test]
fn a_closed_stderr_keeps_the_exit_code() {
    let path = write_config("pipe-err", &GOOD.replace("port = 6379", "port = 0"));
    let out = lbd()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .stderr(closed_pipe())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a config error exits 2, whoever reads stderr"
    );
}
