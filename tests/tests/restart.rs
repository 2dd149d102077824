//! Restarts and upgrades keep every connection: a new `lbd run` takes over the datapath an
//! earlier one left attached (after `kill -9`, or `lbd stop --keep-datapath`), with its
//! connection table, and swaps its program in without detaching. Needs root.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use lb_tests::{
    lab::{self, Lab, planned, predicted_server},
    lbd::Lbd,
    resp,
};

const TIMEOUT: Duration = Duration::from_secs(3);
const HELD: u16 = 200;

/// `HELD` connections through the VIP from fixed source ports, each with its server.
fn hold(lab: &Lab) -> Vec<(u16, String, resp::Connection)> {
    lab.client.run(|| {
        (0..HELD)
            .map(|i| {
                let port = 32000 + i;
                let mut conn = lab::connect_vip(port, TIMEOUT).expect("connect through the VIP");
                let who = lab::whoami(&mut conn).expect("whoami");
                (port, who, conn)
            })
            .collect()
    })
}

/// Every held connection still answers, from its first server: returns the broken ones.
fn broken(held: &mut [(u16, String, resp::Connection)]) -> Vec<String> {
    held.iter_mut()
        .filter_map(|(port, who, conn)| match lab::whoami(conn) {
            Ok(now) if now == *who => None,
            Ok(now) => Some(format!("port {port}: {who} -> {now}")),
            Err(err) => Some(format!("port {port} ({who}): {err}")),
        })
        .collect()
}

/// Requests on a few held connections, over and over, until stopped: counts failures, so a
/// gap in forwarding while the daemon is away or starting shows.
struct Stream {
    first_error: Arc<std::sync::Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU32>,
    failures: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<Vec<resp::Connection>>>,
}

impl Stream {
    fn start(mut conns: Vec<resp::Connection>) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU32::new(0));
        let failures = Arc::new(AtomicU32::new(0));
        let (s, r, f) = (stop.clone(), requests.clone(), failures.clone());
        let first_error = Arc::new(std::sync::Mutex::new(None));
        let e = first_error.clone();
        let thread = std::thread::spawn(move || {
            // Bounded: at most 200,000 requests or 120 s, whichever first.
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !s.load(Ordering::Relaxed)
                && r.load(Ordering::Relaxed) < 200_000
                && std::time::Instant::now() < deadline
            {
                for conn in &mut conns {
                    r.fetch_add(1, Ordering::Relaxed);
                    let reply = conn.command(&["PING"]);
                    if !matches!(reply, Ok(resp::Reply::Simple(ref s)) if s == "PONG") {
                        f.fetch_add(1, Ordering::Relaxed);
                        e.lock().unwrap().get_or_insert(format!("{reply:?}"));
                    }
                }
            }
            conns
        });
        Stream {
            first_error,
            stop,
            requests,
            failures,
            thread: Some(thread),
        }
    }

    /// Stops; returns (requests, failures, the first failure).
    fn finish(mut self) -> (u32, u32, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.take().unwrap().join();
        (
            self.requests.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
            self.first_error.lock().unwrap().take(),
        )
    }
}

/// The case: `kill -9`, then a restart after changing one backend's weight. The
/// new process adopts the connection table, so none of the held connections moves, though
/// the new ring alone would move some.
#[test]
fn held_connections_survive_kill_9_and_a_restart_with_a_changed_weight() {
    if !lb_tests::require_root("restart") {
        return;
    }
    let lab = Lab::new("rk", 3);
    let before = lab.checked_config(&[(0, 1), (1, 1), (2, 1)]);
    let after = lab.checked_config(&[(0, 1), (1, 1), (2, 4)]);
    let mut first = Lbd::start(&lab, &before);
    first.wait_serving(3);
    let mut held = hold(&lab);
    let ring_after = planned(&[&after]);
    let would_move = held
        .iter()
        .filter(|(port, who, _)| predicted_server(&ring_after, &lab, *port) != *who)
        .count();
    assert!(
        would_move > 0,
        "no held connection would move by the new ring alone: the test proves nothing"
    );

    first.kill();
    first.leave_pins();
    // No daemon: the datapath goes on forwarding what it tracks.
    assert_eq!(
        broken(&mut held),
        Vec::<String>::new(),
        "while no daemon ran"
    );
    let stream = Stream::start(lab.client.run(|| {
        (0..8)
            .map(|i| lab::connect_vip(33000 + i, TIMEOUT).unwrap())
            .collect()
    }));
    let second = Lbd::start(&lab, &after);
    let (requests, failures, first_error) = stream.finish();
    assert_eq!(
        failures,
        0,
        "{failures} of {requests} requests failed across the restart, first {first_error:?}; held broken: {:?}\n{}",
        broken(&mut held),
        second.log()
    );
    let log = second.log();
    assert!(
        log.contains("taking over the datapath"),
        "the new daemon did not adopt:\n{log}"
    );
    assert_eq!(
        broken(&mut held),
        Vec::<String>::new(),
        "after the restart ({would_move} would have moved by the ring)"
    );
    // Once the checks answered, the held connections are still where they were, and the
    // new weight applies to new connections.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !second.log().contains("health decides from now on") {
        assert!(
            std::time::Instant::now() < deadline,
            "the hold never ended:\n{}",
            second.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        broken(&mut held),
        Vec::<String>::new(),
        "after the first checks"
    );
    let fresh: Vec<String> = lab.client.run(|| {
        (0..60u16)
            .map(|i| {
                let mut conn = lab::connect_vip(34000 + i, TIMEOUT).expect("connect");
                lab::whoami(&mut conn).expect("whoami")
            })
            .collect()
    });
    let expected: Vec<String> = (0..60u16)
        .map(|i| predicted_server(&ring_after, &lab, 34000 + i))
        .collect();
    assert_eq!(
        fresh, expected,
        "new connections do not follow the new ring"
    );
}

/// An upgrade: `lbd stop --keep-datapath` leaves the program forwarding; the next `lbd run`
/// (here loading a different program: datapath debug logging compiles other code in)
/// switches the same link to its program. No request fails in between.
#[test]
fn an_upgrade_swaps_the_program_on_the_same_link_and_breaks_no_connection() {
    if !lb_tests::require_root("restart") {
        return;
    }
    let lab = Lab::new("ru", 3);
    let config = lab.checked_config(&[(0, 1), (1, 1), (2, 1)]);
    let mut first = Lbd::start(&lab, &config);
    first.wait_serving(3);
    let mut held = hold(&lab);
    let link_path = first.pin_layout().link("eth0");
    let link_before = link_ids(&link_path);

    let stream = Stream::start(lab.client.run(|| {
        (0..8)
            .map(|i| lab::connect_vip(35000 + i, TIMEOUT).unwrap())
            .collect()
    }));
    let out = first.cli(&["stop", "--instance", &first.instance, "--keep-datapath"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("goes on forwarding"),
        "lbd stop --keep-datapath: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !first.exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.leave_pins();
    assert_eq!(
        link_ids(&link_path),
        link_before,
        "the stop touched the link"
    );
    assert_eq!(
        broken(&mut held),
        Vec::<String>::new(),
        "while no daemon ran"
    );
    // Nothing of the stopped daemon but its pins.
    let left = first.run_files_left();
    assert!(left.is_empty(), "left in /run/lbd: {left:?}");

    let mut second = Lbd::start_with(&lab, &config, &["--datapath-log", "debug"]);
    let (requests, failures, first_error) = stream.finish();
    assert_eq!(
        failures,
        0,
        "{failures} of {requests} requests failed across the upgrade, first {first_error:?}; held broken: {:?}\n{}",
        broken(&mut held),
        second.log()
    );
    let (link, program) = link_ids(&link_path);
    assert_eq!(link, link_before.0, "the link was replaced, not updated");
    assert_ne!(
        program, link_before.1,
        "the link still runs the old program"
    );
    assert_eq!(broken(&mut held), Vec::<String>::new(), "after the upgrade");

    // A full stop from the command line leaves nothing.
    let out = second.cli(&["stop", "--instance", &second.instance]);
    assert!(
        out.status.success(),
        "lbd stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !second.exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !second.pin_layout().dir.exists(),
        "pins left after a full stop"
    );
    let xdp =
        String::from_utf8_lossy(&lab.director.ip(&["link", "show", "eth0"]).stdout).into_owned();
    assert!(!xdp.contains(" xdp"), "XDP still attached: {xdp}");
}

/// Pins of another layout version are not taken over: the new daemon refuses, saying why,
/// and the old program goes on forwarding until `lbd stop` removes it.
#[test]
fn a_datapath_of_another_layout_is_left_forwarding_and_not_adopted() {
    if !lb_tests::require_root("restart") {
        return;
    }
    let lab = Lab::new("rl", 2);
    let config = lab.config(&[(0, 1), (1, 1)]);
    let mut first = Lbd::start(&lab, &config);
    let mut held = hold(&lab);
    first.kill();
    first.leave_pins();
    let layout = first.pin_layout();
    set_layout(&layout, lb_common::LAYOUT_VERSION + 1);

    let out = std::process::Command::new(lb_tests::lbd::bin())
        .args(["--netns", &lab.director.name, "run", "--config"])
        .arg(&first.config_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a foreign layout was adopted: {stderr}"
    );
    assert!(
        stderr.contains(&format!("layout {}", lb_common::LAYOUT_VERSION + 1))
            && stderr.contains("left forwarding"),
        "{stderr}"
    );
    assert_eq!(
        broken(&mut held),
        Vec::<String>::new(),
        "the refused start disturbed forwarding"
    );

    let out = first.cli(&["stop", "--instance", &first.instance]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("detached"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!layout.dir.exists(), "pins left after lbd stop");
    let left = first.run_files_left();
    assert!(
        left.is_empty(),
        "the crashed daemon's files are left: {left:?}"
    );
}

/// (link id, program id) of a pinned XDP link.
fn link_ids(path: &std::path::Path) -> (u32, u32) {
    let link = aya::programs::links::PinnedLink::from_pin(path).expect("pinned link");
    let info = aya::programs::links::FdLink::from(link)
        .info()
        .expect("link info");
    (info.id(), info.program_id())
}

/// Writes `layout` into an instance's pinned `PIN_INFO`, as an lbd of another version would
/// have created it.
fn set_layout(pins: &lb_daemon::paths::PinLayout, layout: u32) {
    let data = aya::maps::MapData::from_pin(pins.map(lb_common::MAP_PIN_INFO)).expect("PIN_INFO");
    let mut map = aya::maps::Map::Array(data);
    let mut array: aya::maps::Array<&mut aya::maps::MapData, lb_common::PinInfo> =
        aya::maps::Array::try_from(&mut map).unwrap();
    let mut info = array.get(&0, 0).unwrap();
    info.layout = layout;
    array.set(0, info, 0).unwrap();
}

/// A start that fails after it took the pins over (here flow sync cannot bind its port)
/// leaves the datapath it took over forwarding, for the next start, and no lock file.
#[test]
fn a_start_that_fails_after_taking_over_leaves_the_datapath_forwarding_and_no_lock_file() {
    if !lb_tests::require_root("restart") {
        return;
    }
    let lab = Lab::new("rf", 2);
    const SYNC_PORT: u16 = 18848;
    let config = format!(
        "{}\n[sync]\npeers = [\"198.18.0.3\"]\nport = {SYNC_PORT}\n",
        lab.config(&[(0, 1), (1, 1)])
    );
    let mut first = Lbd::start(&lab, &config);
    let mut held = hold(&lab);
    first.kill();
    first.leave_pins();
    let layout = first.pin_layout();
    assert_eq!(
        broken(&mut held),
        Vec::<String>::new(),
        "while no daemon ran"
    );

    // Something else holds the sync port now: the next start fails once it has adopted.
    let squatter = lab
        .director
        .run(|| std::net::UdpSocket::bind(("0.0.0.0", SYNC_PORT)).expect("bind the sync port"));
    let out = std::process::Command::new(lb_tests::lbd::bin())
        .args(["--netns", &lab.director.name, "run", "--config"])
        .arg(&first.config_path)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "started though the sync port is taken: {stderr}"
    );
    drop(squatter);
    let lock = lb_daemon::paths::lock_file(&first.instance);
    assert!(
        !lock.exists(),
        "the failed start left its lock file {}",
        lock.display()
    );
    let pins_left = layout.dir.exists() && layout.link("eth0").exists();
    let broken_after = broken(&mut held);
    let _ = first.cli(&["stop", "--instance", &first.instance]);
    assert!(
        pins_left && broken_after.is_empty(),
        "the failed start destroyed the adopted datapath: pins left {pins_left}, held \
         connections broken {}/{HELD} (first: {:?})\n{stderr}",
        broken_after.len(),
        broken_after.first()
    );
}

/// An interface renamed between runs (same device, the config names it anew): its link is
/// switched to the new program and pinned under the new name.
#[test]
fn a_renamed_interface_is_taken_over() {
    if !lb_tests::require_root("restart") {
        return;
    }
    let lab = Lab::new("rn", 2);
    let config = lab.config(&[(0, 1), (1, 1)]);
    let mut first = Lbd::start(&lab, &config);
    let mut held = hold(&lab);
    first.kill();
    first.leave_pins();
    lab.director.ip(&["link", "set", "eth0", "down"]);
    lab.director.ip(&["link", "set", "eth0", "name", "lb0"]);
    lab.director.ip(&["link", "set", "lb0", "up"]);
    let renamed = config.replace("interfaces = [\"eth0\"]", "interfaces = [\"lb0\"]");
    assert_ne!(renamed, config);
    let second = Lbd::start(&lab, &renamed);
    assert!(
        second.log().contains("taking over the datapath"),
        "{}",
        second.log()
    );
    assert_eq!(broken(&mut held), Vec::<String>::new(), "after the restart");
}

/// A VRRP master killed (-9) and restarted: the new daemon leaves the adopted forwarding
/// switch alone (the old program still forwards, the VIP is still on the interface, where
/// passed frames would be answered with RST) until its router's Backup step removes the VIP
/// first. Requests stall until it is master again; none fails.
#[test]
fn a_vrrp_master_restart_resets_no_connection() {
    if !lb_tests::require_root("restart") {
        return;
    }
    let lab = Lab::pair("rv", 2);
    let name = format!("{}a", lab.prefix);
    let config = lb_tests::vrrp::config(&lab, &name, 150, "advert_int = 0.1\n");
    let mut first = Lbd::start_in(&lab, &lab.director, &name, &config, &[]);
    lb_tests::vrrp::wait_state(&first, "master", Duration::from_secs(5));
    lb_tests::vrrp::wait_vip(&lab.director, true, TIMEOUT);
    let mut held = hold(&lab);
    first.kill();
    first.leave_pins();
    assert!(lb_tests::vrrp::holds_vip(&lab.director));
    let stream = Stream::start(lab.client.run(|| {
        (0..8)
            .map(|i| lab::connect_vip(33000 + i, TIMEOUT).unwrap())
            .collect()
    }));
    let second = Lbd::start_in(&lab, &lab.director, &name, &config, &[]);
    lb_tests::vrrp::wait_state(&second, "master", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    let (requests, failures, first_error) = stream.finish();
    let broken_after = broken(&mut held);
    assert!(
        failures == 0 && broken_after.is_empty(),
        "{failures} of {requests} requests failed across the restart (first {first_error:?}); \
         held broken {}/{HELD} (first {:?})\n{}",
        broken_after.len(),
        broken_after.first(),
        second.log()
    );
    // The restarted daemon counts its own forwarding changes from the adopted state: off at
    // its first Backup step (the adopted master forwarded), on again as master.
    let metrics = lb_tests::lbd::scrape_metrics(&lab.director);
    assert!(
        metrics.contains("lbd_vrrp_transitions_total{vrrp=\"VI_1\"} 2.0\n"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("vrrp"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Whether `interface` in `ns` has an XDP program attached (any mode).
fn has_xdp(ns: &lb_tests::netns::Netns, interface: &str) -> bool {
    let out = ns.ip(&["-d", "link", "show", "dev", interface]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains("xdp") && text.contains("prog/xdp")
}

/// Runs `lbd run` on `config_path` in the director namespace: `Ok(())` once it serves (then
/// stopped with `lbd stop --keep-datapath`, so the pins stay for inspection), `Err(log)` when
/// it exits during start.
fn try_start(lab: &Lab, instance: &str, config_path: &std::path::Path) -> Result<(), String> {
    let log_path = lab.dir.join(format!("{instance}-try.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(lb_tests::lbd::bin())
        .args(["--netns", &lab.director.name, "run", "--config"])
        .arg(config_path)
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            return Err(std::fs::read_to_string(&log_path).unwrap_or_default());
        }
        if lb_daemon::instance::running_pid(instance) == Some(child.id() as i32) {
            let _ = std::process::Command::new(lb_tests::lbd::bin())
                .args(["stop", "--keep-datapath", "--instance", instance])
                .output();
            let _ = child.wait();
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("did not come up within 20 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Found by review: a start in another XDP mode used to re-attach interface by interface,
/// so one that could not attach (native XDP on a bridge) failed after earlier links were gone.
/// Changing the mode now needs a full stop: the start is refused before touching anything,
/// and the adopted datapath stays attached everywhere.
#[test]
fn a_start_in_another_xdp_mode_is_refused_and_leaves_the_adopted_links_attached() {
    if !lb_tests::require_root("restart") {
        return;
    }
    let lab = Lab::new("rxm", 2);
    lab.director.ip(&["link", "add", "br9", "type", "bridge"]);
    lab.director.ip(&["link", "set", "br9", "up"]);
    let base = lab.config(&[(0, 1), (1, 1)]).replace(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\", \"br9\"]\nxdp_mode = \"skb\"",
    );
    let mut first = Lbd::start(&lab, &base);
    first.kill();
    first.leave_pins();
    let layout = first.pin_layout();
    assert!(layout.link("br9").exists() && has_xdp(&lab.director, "br9"));

    let native = base.replace("xdp_mode = \"skb\"", "xdp_mode = \"native\"");
    std::fs::write(&first.config_path, &native).unwrap();
    let started = try_start(&lab, &first.instance, &first.config_path);
    let (pin_left, attached) = (layout.link("br9").exists(), has_xdp(&lab.director, "br9"));
    let _ = first.cli(&["stop", "--instance", &first.instance]);
    let log = started.expect_err("a start in another XDP mode was accepted");
    assert!(
        log.contains("XDP mode") && log.contains("left forwarding"),
        "{log}"
    );
    assert!(
        pin_left && attached,
        "the refused start took the adopted datapath off br9: link pin left {pin_left}, XDP \
         attached {attached}\n{log}"
    );
}

/// Found by review: two configured interfaces that swapped names between runs (same
/// devices) are taken over: each device keeps its link, pinned under its new name.
#[test]
fn interfaces_that_swapped_names_are_taken_over() {
    if !lb_tests::require_root("restart") {
        return;
    }
    let lab = Lab::new("rsw", 2);
    for d in ["d0", "d1"] {
        lab.director.ip(&["link", "add", d, "type", "bridge"]);
        lab.director.ip(&["link", "set", d, "up"]);
    }
    let config = lab.config(&[(0, 1), (1, 1)]).replace(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\", \"d0\", \"d1\"]\nxdp_mode = \"skb\"",
    );
    let mut first = Lbd::start(&lab, &config);
    first.kill();
    first.leave_pins();
    let layout = first.pin_layout();
    for (from, to) in [("d0", "swap"), ("d1", "d0"), ("swap", "d1")] {
        lab.director.ip(&["link", "set", from, "down"]);
        lab.director.ip(&["link", "set", from, "name", to]);
    }
    for d in ["d0", "d1"] {
        lab.director.ip(&["link", "set", d, "up"]);
    }
    let started = try_start(&lab, &first.instance, &first.config_path);
    let attached: Vec<bool> = ["d0", "d1"]
        .iter()
        .map(|d| has_xdp(&lab.director, d))
        .collect();
    let pins: Vec<bool> = ["d0", "d1"]
        .iter()
        .map(|d| layout.link(d).exists())
        .collect();
    let _ = first.cli(&["stop", "--instance", &first.instance]);
    assert!(
        started.is_ok(),
        "the start after swapping d0 and d1 failed; XDP attached (d0, d1) {attached:?}, link \
         pins {pins:?}\n{}",
        started.err().unwrap_or_default()
    );
}
