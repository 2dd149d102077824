//! `lbd import-keepalived`: every keepalived.conf from the original notes converts and the
//! result passes `lbd check`; what would behave differently is refused naming its line; and
//! one converted file runs in the lab with traffic reaching every real server.

use std::{path::PathBuf, process::Command, time::Duration};

use lb_tests::{
    lab::{self, Lab, server_addr},
    lbd::{Lbd, bin},
};

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/keepalived")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    files
}

fn import(file: &std::path::Path) -> std::process::Output {
    Command::new(bin())
        .arg("import-keepalived")
        .arg(file)
        .output()
        .expect("lbd import-keepalived")
}

#[test]
fn every_keepalived_conf_from_the_notes_converts_and_passes_lbd_check() {
    let files = fixtures("");
    assert!(files.len() >= 10, "fixtures missing: {files:?}");
    let dir = std::env::temp_dir().join(lb_tests::unique_name("import"));
    std::fs::create_dir_all(&dir).unwrap();
    for file in &files {
        let out = import(file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", file.display());
        // Every warning names the file and line it is about.
        for line in stderr.lines() {
            assert!(
                line.starts_with("warning: ") && line.contains(".conf"),
                "{}: a warning without its place: {line}",
                file.display()
            );
        }
        let toml = String::from_utf8(out.stdout).unwrap();
        let converted = dir.join(file.file_name().unwrap()).with_extension("toml");
        std::fs::write(&converted, &toml).unwrap();
        let check = Command::new(bin())
            .args(["check", "--config"])
            .arg(&converted)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}: lbd check: {}\n{toml}",
            file.display(),
            String::from_utf8_lossy(&check.stderr)
        );
        // As many VIPs as the file has virtual_server blocks on an address.
        let text = std::fs::read_to_string(file).unwrap();
        let servers = text
            .lines()
            .map(str::trim_start)
            .filter(|l| l.starts_with("virtual_server ") && !l.contains(" group "))
            .count();
        assert_eq!(
            toml.matches("\n[[vip]]\n").count(),
            servers,
            "{}:\n{toml}",
            file.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn what_lbd_would_do_differently_is_refused_naming_the_line() {
    let files = fixtures("rejected");
    assert!(!files.is_empty());
    for file in &files {
        let out = import(file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", file.display());
        assert!(out.stdout.is_empty(), "a refused file printed TOML");
        let name = file.file_name().unwrap().to_string_lossy();
        assert!(
            stderr.contains(&format!("{name}:")) && stderr.contains("fwmark"),
            "{stderr}"
        );
    }
}

/// A keepalived.conf for the lab's VIP and real servers, converted and run: traffic reaches
/// every real server, by the imported scheduler.
#[test]
fn an_imported_keepalived_conf_runs_in_the_lab_and_balances() {
    if !lb_tests::require_root("import") {
        return;
    }
    let lab = Lab::new("ik", 3);
    let mut conf = String::from(
        "! keepalived.conf for the lab\nvirtual_server 198.18.0.100 6379 {\n    delay_loop 1\n    lb_algo wrr\n    lb_kind DR\n    protocol TCP\n",
    );
    for (i, weight) in [1, 1, 2].into_iter().enumerate() {
        conf.push_str(&format!(
            "    real_server {} 6379 {{\n        weight {weight}\n        TCP_CHECK {{\n            connect_timeout 1\n        }}\n    }}\n",
            server_addr(i)
        ));
    }
    conf.push_str("}\n");
    let path = lab.dir.join("keepalived.conf");
    std::fs::write(&path, &conf).unwrap();
    let out = import(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("interfaces"),
        "no vrrp_instance: the interfaces must be flagged: {stderr}"
    );
    let toml = String::from_utf8(out.stdout).unwrap().replacen(
        "instance = \"lbd\"",
        &format!("instance = \"{}\"", lab.prefix),
        1,
    );
    let lbd = Lbd::start(&lab, &toml);
    let status = lbd.status();
    assert!(status.contains("wrr"), "{status}");
    let seen: Vec<String> = lab.client.run(|| {
        (0..40)
            .map(|_| {
                let mut conn =
                    lab::connect_vip(0, Duration::from_secs(3)).expect("connect through the VIP");
                lab::whoami(&mut conn).expect("whoami")
            })
            .collect()
    });
    for server in &lab.servers {
        assert!(
            seen.contains(&server.name),
            "{} never answered: {seen:?}",
            server.name
        );
    }
    let heaviest = seen.iter().filter(|s| **s == lab.servers[2].name).count();
    assert!(
        heaviest > 40 / 4,
        "weight 2 of 4 got {heaviest} of 40: {seen:?}"
    );
}

/// Found by review: deeply nested blocks once overflowed the reader's stack (SIGABRT); they
/// are refused at the line where nesting goes too deep. A million levels (a 4 MB file) would
/// overflow a release build too.
#[test]
fn deeply_nested_blocks_are_an_error_not_a_stack_overflow() {
    let dir = std::env::temp_dir().join(lb_tests::unique_name("import-deep"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keepalived.conf");
    std::fs::write(&file, "a {\n".repeat(1_000_000)).unwrap();
    let out = import(&file);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.code().is_some(),
        "lbd import-keepalived was killed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A seed's own keepalived.conf (VRRP v2 with unicast peers and PASS authentication, three
/// Redis real servers with TCP_CHECK), its addresses moved onto the lab's: imported, run, the
/// director elects itself master and traffic reaches every real server in turn (rr).
#[test]
fn a_seed_keepalived_conf_runs_in_the_lab_after_only_its_addresses_change() {
    if !lb_tests::require_root("import") {
        return;
    }
    let lab = Lab::new("is", 3);
    let seed = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/keepalived/003-lb01.conf"),
    )
    .unwrap();
    let mut conf = seed
        .replace("ens34", "eth0")
        .replace("10.18.14.93", &lb_tests::lab::VIP.to_string())
        .replace("10.18.14.54", &lb_tests::lab::DIRECTOR.to_string())
        .replace("10.18.14.64", &lb_tests::lab::DIRECTOR2.to_string());
    for (i, seed_server) in ["10.18.14.72", "10.18.13.166", "10.18.14.80"]
        .into_iter()
        .enumerate()
    {
        assert!(
            conf.contains(seed_server),
            "the seed changed: {seed_server}"
        );
        conf = conf.replace(seed_server, &server_addr(i).to_string());
    }
    let path = lab.dir.join("keepalived.conf");
    std::fs::write(&path, &conf).unwrap();
    let out = import(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = String::from_utf8(out.stdout).unwrap().replacen(
        "instance = \"lbd\"",
        &format!("instance = \"{}\"", lab.prefix),
        1,
    );
    let lbd = Lbd::start(&lab, &toml);
    lb_tests::vrrp::wait_state(&lbd, "master", Duration::from_secs(10));
    lb_tests::vrrp::wait_vip(&lab.director, true, Duration::from_secs(3));
    let seen: Vec<String> = lab.client.run(|| {
        (0..30)
            .map(|_| {
                let mut conn =
                    lab::connect_vip(0, Duration::from_secs(3)).expect("connect through the VIP");
                lab::whoami(&mut conn).expect("whoami")
            })
            .collect()
    });
    for server in &lab.servers {
        let count = seen.iter().filter(|s| **s == server.name).count();
        assert!(
            (5..=15).contains(&count),
            "rr: {} answered {count} of 30: {seen:?}",
            server.name
        );
    }
}
