//! The `lbd` binary's refusals, which need no root: a bad config is reported with file,
//! line and key, and nothing is started.

use std::process::Command;

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
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 VIPs, 1 backends)"));
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
