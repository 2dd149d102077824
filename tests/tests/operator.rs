//! What an operator sees from `lbd status`, `lbd reload` and `lbd run` when things are not
//! simple: a stale pid file, a crashed daemon, a busy interface, a symlinked config,
//! `ip netns exec`, no privileges, a log file. Each runs the real binary, mostly against a
//! real lab (namespaces, redis-server). Needs root.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use lb_daemon::{instance, paths};
use lb_tests::{
    lab::Lab,
    lbd::{Lbd, bin},
    process::ChildGuard,
};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Removes an instance's run files (pid, lock) on drop.
struct RunFiles(String);

impl Drop for RunFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(paths::pid_file(&self.0));
        let _ = std::fs::remove_file(paths::lock_file(&self.0));
        let _ = std::fs::remove_file(paths::reload_status_file(&self.0));
    }
}

/// A crashed daemon's pid file names a pid now used by another process, while a new
/// `lbd run` holds the lock and is still starting: `lbd reload` must not signal that pid.
#[test]
fn reload_never_signals_a_pid_that_does_not_hold_the_instance_lock() {
    if !lb_tests::require_root("stale pid file") {
        return;
    }
    let name = lb_tests::unique_name("stale");
    let _files = RunFiles(name.clone());
    let dir = std::env::temp_dir().join(format!("lbd-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("lbd.toml");
    std::fs::write(
        &config,
        format!(
            "instance = \"{name}\"\n[director]\ninterfaces = [\"lo\"]\n[[vip]]\naddress = \
             \"198.18.0.100\"\nport = 6379\n[[vip.backend]]\naddress = \"198.18.0.11\"\n"
        ),
    )
    .unwrap();
    let mut bystander = ChildGuard::new(
        "sleep",
        Command::new("sleep").arg("60").spawn().expect("sleep"),
    );
    std::fs::create_dir_all(paths::RUN_DIR).unwrap();
    std::fs::write(
        paths::pid_file(&name),
        format!("{}\n{}\n", bystander.pid(), config.display()),
    )
    .unwrap();
    // This test process plays the starting daemon: it holds the lock.
    let lock = instance::lock_file(&paths::lock_file(&name)).expect("lock");
    let reload = || {
        Command::new(bin())
            .args(["reload", "--config"])
            .arg(&config)
            .output()
            .expect("lbd reload")
    };
    let out = reload();
    assert!(
        bystander.try_status().is_none(),
        "lbd reload signalled a stranger: {}",
        describe(&out)
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("is starting"),
        "{}",
        describe(&out)
    );

    drop(lock);
    let out = reload();
    assert!(
        text(&out.stderr).contains("not running"),
        "{}",
        describe(&out)
    );
    assert!(
        bystander.try_status().is_none(),
        "lbd reload signalled a stranger"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// After `kill -9`, status and reload tell the same, true story: the datapath is still
/// attached and forwarding, the daemon is not running, and what to do.
#[test]
fn after_a_crash_status_and_reload_say_the_daemon_is_gone_but_the_datapath_attached() {
    if !lb_tests::require_root("crash story") {
        return;
    }
    let lab = Lab::new("cr", 1);
    let mut lbd = Lbd::start(&lab, &lab.config(&[(0, 1)]));
    lbd.kill();
    let status = lbd.cli(&["status", "--instance", &lbd.instance]);
    assert_eq!(status.status.code(), Some(3), "{}", describe(&status));
    assert!(
        text(&status.stdout).contains("198.18.0.100:6379"),
        "the table is still shown: {}",
        describe(&status)
    );
    let reload = lbd.cli(&["reload", "--config", lbd.config_path.to_str().unwrap()]);
    assert!(!reload.status.success(), "{}", describe(&reload));
    for out in [&status, &reload] {
        let err = text(&out.stderr);
        assert!(
            err.contains("daemon is not running") && err.contains("still attached"),
            "{}",
            describe(out)
        );
        assert!(err.contains("lbd run --config"), "says what to do: {err}");
    }
}

/// A second instance on an interface that already has XDP: the error says the interface
/// is busy and with what, keeps the errno's meaning, and does not send the operator to
/// `xdp_mode = "skb"`, which fails the same way.
#[test]
fn a_busy_interface_is_reported_with_its_holder() {
    if !lb_tests::require_root("busy interface") {
        return;
    }
    let lab = Lab::new("bz", 1);
    let lbd = Lbd::start(&lab, &lab.config(&[(0, 1)]));
    let second = lab.dir.join("second.toml");
    let config = lab.config(&[(0, 1)]).replace(
        &format!("\"{}\"", lab.prefix),
        &format!("\"{}b\"", lab.prefix),
    );
    std::fs::write(&second, config).unwrap();
    let _files = RunFiles(format!("{}b", lab.prefix));
    let out = lbd.cli(&[
        "--netns",
        &lab.director.name,
        "run",
        "--config",
        second.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(err.contains("eth0 is busy"), "{}", describe(&out));
    assert!(
        err.contains(&format!("lbd instance {:?}", lbd.instance)),
        "names the holder: {err}"
    );
    assert!(
        !err.contains("skb"),
        "no skb advice for a busy interface: {err}"
    );
}

/// The config is a symlink: `lbd reload` through the link applies the file it points to
/// now and says so; naming the new target directly is the same file; naming another file
/// is refused, naming the file the daemon would really read.
#[test]
fn reload_through_a_symlink_applies_and_reports_the_file_it_points_to() {
    if !lb_tests::require_root("symlinked config") {
        return;
    }
    let lab = Lab::new("sy", 2);
    let lbd = Lbd::start(&lab, &lab.config(&[(0, 1)]));
    let (v1, v2) = (lab.dir.join("v1.toml"), lab.dir.join("v2.toml"));
    std::fs::write(&v1, lab.config(&[(0, 1)])).unwrap();
    std::fs::write(&v2, lab.config(&[(0, 1), (1, 1)])).unwrap();
    // lbd.toml (the daemon's file) becomes a link to v2.
    std::fs::remove_file(&lbd.config_path).unwrap();
    std::os::unix::fs::symlink(&v2, &lbd.config_path).unwrap();

    let out = lbd.cli(&["reload", "--config", lbd.config_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!("-> {}", v2.display())),
        "reports the link's target: {said}"
    );
    assert!(
        lbd.status()
            .contains(&lb_tests::lab::server_addr(1).to_string()),
        "v2 was applied"
    );

    let out = lbd.cli(&["reload", "--config", v2.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "the link's target is the same file: {}",
        describe(&out)
    );

    let out = lbd.cli(&["reload", "--config", v1.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains(&lbd.config_path.display().to_string()) && err.contains("v2.toml"),
        "names the file the daemon reads and where it leads: {err}"
    );
}

/// `ip netns exec` hides the host's bpffs: say so and point to `--netns`, instead of
/// "not running" (status) or "mount a bpffs" (run).
#[test]
fn ip_netns_exec_is_pointed_to_the_netns_option() {
    if !lb_tests::require_root("ip netns exec") {
        return;
    }
    let lab = Lab::new("nx", 1);
    let lbd = Lbd::start(&lab, &lab.config(&[(0, 1)]));
    let in_ns = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &lab.director.name])
            .arg(bin())
            .args(args)
            .output()
            .expect("ip netns exec lbd")
    };
    let status = in_ns(&["status", "--instance", &lbd.instance]);
    let second = lab.dir.join("other.toml");
    std::fs::write(
        &second,
        lab.config(&[(0, 1)]).replace(
            &format!("\"{}\"", lab.prefix),
            &format!("\"{}n\"", lab.prefix),
        ),
    )
    .unwrap();
    let _files = RunFiles(format!("{}n", lab.prefix));
    let run = in_ns(&["run", "--config", second.to_str().unwrap()]);
    for out in [&status, &run] {
        assert!(!out.status.success(), "{}", describe(out));
        let err = text(&out.stderr);
        assert!(
            err.contains("ip netns exec") && err.contains("--netns"),
            "{}",
            describe(out)
        );
    }
}

/// A user without privileges is told what is needed, not "Permission denied", "not
/// running" or a bare "BPF_OBJ_GET failed".
#[test]
fn an_unprivileged_user_is_told_what_is_needed() {
    if !lb_tests::require_root("unprivileged user") {
        return;
    }
    let lab = Lab::new("np", 1);
    let lbd = Lbd::start(&lab, &lab.config(&[(0, 1)]));
    let dir = world_readable_dir(&lab.dir.join("np"));
    let config = dir.join("lbd.toml");
    std::fs::copy(&lbd.config_path, &config).unwrap();
    set_mode(&config, 0o644);
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(bin())
            .args(args)
            .output()
            .expect("setpriv lbd")
    };
    let run = as_nobody(&["run", "--config", config.to_str().unwrap()]);
    let status = as_nobody(&["status", "--instance", &lbd.instance]);
    let reload = as_nobody(&["reload", "--config", lbd.config_path.to_str().unwrap()]);
    for out in [&run, &status, &reload] {
        assert!(!out.status.success(), "{}", describe(out));
        assert!(
            text(&out.stderr).contains("needs root (or CAP_BPF"),
            "{}",
            describe(out)
        );
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `dir`, created and readable by everyone (with its parents up to the temp dir).
fn world_readable_dir(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d == std::env::temp_dir() {
            break;
        }
        set_mode(d, 0o755);
        at = d.parent();
    }
    dir.to_owned()
}

/// A log written to a file has no colour codes, and a rejected reload is one event on one
/// line with its time and level.
#[test]
fn a_log_file_is_plain_text_and_a_rejected_reload_is_one_line() {
    if !lb_tests::require_root("log file") {
        return;
    }
    let lab = Lab::new("lf", 1);
    let lbd = Lbd::start(&lab, &lab.config(&[(0, 1)]));
    let bad = lab
        .config(&[(0, 1)])
        .replace("scheduler = \"maglev\"", "scheduler = \"nope\"")
        .replace("weight = 1", "weight = 70000");
    // Straight to the daemon: `lbd reload` would refuse the file before signalling.
    std::fs::write(&lbd.config_path, bad).unwrap();
    // SAFETY: signals the lbd this test started.
    unsafe { libc::kill(lbd.pid(), libc::SIGHUP) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        if let Some(line) = lbd.log().lines().find(|l| l.contains("reload not applied")) {
            break line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rejected-reload event:\n{}",
            lbd.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let log = lbd.log();
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    assert!(
        line.contains("ERROR") && line.contains("nope") && line.contains("weight"),
        "one line with level and every cause: {line}"
    );
}

/// lbd instance A serves `eth0` in one namespace; in another namespace, an unrelated XDP
/// program holds another interface also called `eth0`. `lbd run` there says the interface
/// is busy without naming A (pins live in the host's bpffs, shared by every namespace).
#[test]
fn a_busy_interface_is_not_blamed_on_an_lbd_in_another_namespace() {
    if !lb_tests::require_root("busy interface, other namespace") {
        return;
    }
    let lab = Lab::new("bq", 1);
    let lbd = Lbd::start(&lab, &lab.config(&[(0, 1)]));
    let other = lb_tests::netns::Netns::new(&format!("{}-o", lab.prefix));
    other.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    other.ip(&["link", "set", "eth0", "up"]);
    other.ip(&["link", "set", "eth1", "up"]);
    let _pass = lb_tests::lab::attach_pass(&other, "eth0"); // not lbd
    let name = format!("{}c", lab.prefix);
    let _files = RunFiles(name.clone());
    let config = lab.dir.join("other.toml");
    std::fs::write(
        &config,
        format!(
            "instance = \"{name}\"\n[director]\ninterfaces = [\"eth0\"]\n[[vip]]\naddress = \
             \"198.18.0.100\"\nport = 6379\n[[vip.backend]]\naddress = \"198.18.0.11\"\n\
             mac = \"02:00:00:00:00:0b\"\n"
        ),
    )
    .unwrap();
    let out = lbd.cli(&[
        "--netns",
        &other.name,
        "run",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(err.contains("eth0 is busy"), "{}", describe(&out));
    assert!(
        !err.contains(&format!("lbd instance {:?}", lbd.instance)),
        "blames lbd instance {:?}, which serves an eth0 in another namespace: {err}",
        lbd.instance
    );
}

/// A reload whose apply failed and whose roll-back failed too leaves the maps half-applied;
/// `lbd reload` must not tell the operator the running configuration was kept. (A stand-in
/// daemon: this process holds the lock, wrote the pid file, and answers the SIGHUP with
/// the status line `lbd run` writes for that case.)
#[test]
fn reload_does_not_claim_the_configuration_was_kept_when_restoring_failed() {
    if !lb_tests::require_root("reload verdict") {
        return;
    }
    let name = lb_tests::unique_name("rv");
    let _files = RunFiles(name.clone());
    let dir = std::env::temp_dir().join(format!("lbd-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("lbd.toml");
    std::fs::write(&config, "").unwrap();
    let _lock = instance::lock(&name).expect("lock");
    std::fs::write(
        paths::pid_file(&name),
        format!("{}\n{}\n", std::process::id(), config.display()),
    )
    .unwrap();
    // SAFETY: ignoring SIGHUP in this test process (the stand-in daemon).
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    let failed = lb_daemon::error::Error::ApplyFailed {
        cause: Box::new(lb_daemon::error::Error::Io(std::io::Error::other("ENOMEM"))),
        restored: false,
    };
    let status = paths::reload_status_file(&name);
    let answer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let verdict = lb_daemon::daemon::reload_verdict(&Err(failed), Path::new("lbd.toml"));
        std::fs::write(status, format!("1 {verdict}\n")).unwrap();
    });
    let err = lb_daemon::control::reload(&name, &config, std::time::Duration::from_secs(5))
        .expect_err("the reload failed")
        .to_string();
    answer.join().unwrap();
    assert!(
        !err.contains("kept its running configuration") && err.contains("failed too"),
        "says the configuration was kept, or not that restoring failed: {err}"
    );
}

/// The privilege check accepts only capability sets that can load the datapath: without
/// CAP_PERFMON (or CAP_SYS_ADMIN) the verifier refuses its pointer arithmetic on map values,
/// so CAP_BPF + CAP_NET_ADMIN alone get "needs root (or ...)", not a verifier dump; with
/// CAP_PERFMON added, lbd serves.
#[test]
fn only_capability_sets_that_can_load_the_program_pass_the_check() {
    if !lb_tests::require_root("capabilities") {
        return;
    }
    let name = lb_tests::unique_name("cp");
    let _files = RunFiles(name.clone());
    let ns = lb_tests::netns::Netns::new(&name);
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "eth1", "up"]);
    let dir = std::env::temp_dir().join(format!("lbd-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("lbd.toml");
    std::fs::write(
        &config,
        format!(
            "instance = \"{name}\"\n[director]\ninterfaces = [\"eth0\"]\nxdp_mode = \"skb\"\n\
             [[vip]]\naddress = \"198.18.0.100\"\nport = 6379\n[[vip.backend]]\naddress = \
             \"198.18.0.11\"\nmac = \"02:00:00:00:00:0b\"\n"
        ),
    )
    .unwrap();
    // Uid 0 with only these capabilities, inside the namespace; `timeout` stops an lbd
    // that comes up (SIGTERM: it removes its pins).
    let run_with = |caps: &str| {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{name}"))
            .args([
                "setpriv",
                "--inh-caps",
                caps,
                "--ambient-caps",
                caps,
                "--bounding-set",
                caps,
            ])
            .args(["timeout", "5"])
            .arg(bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = run_with("-all,+bpf,+net_admin");
    let err = text(&out.stderr);
    assert!(
        err.contains("needs root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"),
        "{}",
        &err[..err.len().min(600)]
    );
    let out = run_with("-all,+bpf,+net_admin,+perfmon");
    let err = text(&out.stderr);
    assert!(
        err.contains("running instance"),
        "did not serve with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON:\n{}",
        &err[..err.len().min(600)]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
