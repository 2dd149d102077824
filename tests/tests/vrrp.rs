//! VRRP end to end: two directors running `lbd` (or `lbd` and keepalived 2.2.7) on one
//! bridge with real redis-servers behind them. Only the master holds the VIP and forwards;
//! a crash or a stop moves it, and connections opened through the old master keep working
//! through the new one (both build the same Maglev ring). Needs root.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use lb_tests::{
    lab::{self, DIRECTOR, DIRECTOR2, Lab, VIP},
    lbd::Lbd,
    netns::Netns,
    resp,
    vrrp::{config, config_with, hold, holds_vip, keepalived, state, wait_state, wait_vip},
};

const TIMEOUT: Duration = Duration::from_secs(3);
/// Advert interval of the lbd-only tests (version 3: centiseconds).
const ADVERT: Duration = Duration::from_millis(100);

const FAST: &str = "advert_int = 0.1\n";

/// Every held connection still answers, from the same server, without reconnecting.
fn still_served(held: &mut [(resp::Connection, String)]) {
    let broken: Vec<String> = held
        .iter_mut()
        .enumerate()
        .filter_map(|(i, (conn, server))| match lab::whoami(conn) {
            Ok(now) if now == *server => None,
            Ok(now) => Some(format!("{i}: moved from {server} to {now}")),
            Err(err) => Some(format!("{i} (to {server}): {err}")),
        })
        .collect();
    assert!(
        broken.is_empty(),
        "{} of {} held connections broke: {broken:?}",
        broken.len(),
        held.len()
    );
}

fn new_connection_works(lab: &Lab) {
    lab.client.run(|| {
        let mut conn = lab::connect_vip(0, TIMEOUT).expect("a new connection through the VIP");
        lab::whoami(&mut conn).expect("served");
    });
}

/// Master-down interval of a backup of `priority` at 0.1 s adverts, plus slack for a
/// shared, noisy host.
fn takeover_bound(priority: u8) -> Duration {
    let skew = ADVERT.as_secs_f64() * (256.0 - f64::from(priority)) / 256.0;
    Duration::from_secs_f64(3.0 * ADVERT.as_secs_f64() + skew) + Duration::from_millis(700)
}

fn pair(lab: &Lab, vrrp_a: &str, vrrp_b: &str) -> (Lbd, Lbd) {
    let dr2 = lab.director2.as_ref().expect("pair lab");
    let a_name = format!("{}a", lab.prefix);
    let b_name = format!("{}b", lab.prefix);
    let a = Lbd::start_in(
        lab,
        &lab.director,
        &a_name,
        &config(lab, &a_name, 150, vrrp_a),
        &[],
    );
    let b = Lbd::start_in(lab, dr2, &b_name, &config(lab, &b_name, 100, vrrp_b), &[]);
    wait_state(&a, "master", Duration::from_secs(5));
    wait_state(&b, "backup", Duration::from_secs(5));
    wait_vip(&lab.director, true, TIMEOUT);
    assert!(!holds_vip(dr2), "the backup holds the VIP");
    (a, b)
}

#[test]
fn the_higher_priority_director_is_master_and_a_crash_moves_the_vip_with_held_connections() {
    if !lb_tests::require_root("VRRP end to end") {
        return;
    }
    let lab = Lab::pair("vrc", 2);
    let dr2 = lab.director2.as_ref().unwrap();
    let (mut a, b) = pair(&lab, FAST, FAST);
    let deadline = Instant::now() + TIMEOUT;
    while state(&b).unwrap().master != Some(DIRECTOR) {
        assert!(
            Instant::now() < deadline,
            "the backup does not name the master: {:?}",
            state(&b)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut held = hold(&lab, 20);
    assert!(
        a.status().contains("VI_1"),
        "status shows the instance:\n{}",
        a.status()
    );

    a.kill();
    let gap = wait_state(&b, "master", Duration::from_secs(5));
    assert!(
        gap <= takeover_bound(100),
        "takeover after a crash took {gap:?} (bound {:?})",
        takeover_bound(100)
    );
    wait_vip(dr2, true, TIMEOUT);
    let reason = state(&b).unwrap().reason;
    assert!(reason.contains("no advert"), "reason: {reason}");
    still_served(&mut held);
    new_connection_works(&lab);
    // And it stays master, advertising: nobody else is left to elect.
    let sent = state(&b).unwrap().sent;
    std::thread::sleep(10 * ADVERT);
    let s = state(&b).unwrap();
    assert!(
        s.state == "master" && s.sent >= sent + 5 && s.reason.contains("no advert"),
        "{s:?}\n{}",
        b.log()
    );
}

#[test]
fn a_stopping_master_hands_over_at_once_and_takes_its_vip_away() {
    if !lb_tests::require_root("VRRP end to end") {
        return;
    }
    let lab = Lab::pair("vrs", 2);
    let dr2 = lab.director2.as_ref().unwrap();
    let (mut a, b) = pair(&lab, FAST, FAST);
    let mut held = hold(&lab, 20);

    // New connections every 10 ms through the hand-over: the stopping director forwards
    // until the new master has announced itself, so none fails.
    let probing = std::sync::atomic::AtomicBool::new(true);
    let (gap, failed) = std::thread::scope(|scope| {
        let prober = scope.spawn(|| {
            lab.client.run(|| {
                let mut failed = 0;
                for _ in 0..300 {
                    if !probing.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let ok = lab::connect_vip(0, Duration::from_millis(200))
                        .and_then(|mut c| c.command(&["PING"]))
                        .is_ok();
                    failed += usize::from(!ok);
                    std::thread::sleep(Duration::from_millis(10));
                }
                failed
            })
        });
        std::thread::sleep(Duration::from_millis(200));
        a.signal(libc::SIGTERM);
        let gap = wait_state(&b, "master", Duration::from_secs(5));
        // Until the old director is gone and some probes went through the new one.
        while !a.exited() {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
        probing.store(false, std::sync::atomic::Ordering::Relaxed);
        (gap, prober.join().unwrap())
    });
    assert_eq!(
        failed, 0,
        "{failed} new connections failed during the hand-over"
    );
    // Priority 0 makes the backup wait only its skew (61 ms at priority 100), not 3 adverts.
    assert!(
        gap < 3 * ADVERT,
        "hand-over took {gap:?}: the backup waited for the master-down timer"
    );
    assert!(state(&b).unwrap().reason.contains("priority 0"));
    assert!(a.stop(), "lbd did not stop cleanly:\n{}", a.log());
    assert!(
        !holds_vip(&lab.director),
        "the stopped director kept the VIP"
    );
    wait_vip(dr2, true, TIMEOUT);
    still_served(&mut held);
    new_connection_works(&lab);
}

#[test]
fn a_returning_higher_priority_director_preempts_unless_preempt_is_off() {
    if !lb_tests::require_root("VRRP end to end") {
        return;
    }
    for preempt in [true, false] {
        let lab = Lab::pair(if preempt { "vrp" } else { "vrn" }, 2);
        let vrrp = format!("{FAST}preempt = {preempt}\n");
        let (mut a, b) = pair(&lab, &vrrp, &vrrp);
        assert!(a.stop());
        wait_state(&b, "master", Duration::from_secs(5));
        let a_name = a.instance.clone();
        drop(a);
        let a = Lbd::start_in(
            &lab,
            &lab.director,
            &a_name,
            &config(&lab, &a_name, 150, &vrrp),
            &[],
        );
        if preempt {
            wait_state(&a, "master", Duration::from_secs(5));
            wait_state(&b, "backup", Duration::from_secs(5));
        } else {
            wait_state(&a, "backup", Duration::from_secs(5));
            // Several master-down intervals: the returning director stays a backup.
            std::thread::sleep(10 * ADVERT);
            assert_eq!(state(&a).unwrap().state, "backup");
            assert_eq!(state(&b).unwrap().state, "master");
        }
        let masters = [
            holds_vip(&lab.director),
            holds_vip(lab.director2.as_ref().unwrap()),
        ];
        assert_eq!(masters, [preempt, !preempt], "preempt = {preempt}");
        new_connection_works(&lab);
    }
}

#[test]
fn unicast_peers_elect_fail_over_and_ignore_strangers() {
    if !lb_tests::require_root("VRRP end to end") {
        return;
    }
    let lab = Lab::pair("vru", 2);
    let dr2 = lab.director2.as_ref().unwrap();
    let a_side = format!("{FAST}unicast_src = \"{DIRECTOR}\"\nunicast_peers = [\"{DIRECTOR2}\"]\n");
    let b_side = format!("{FAST}unicast_src = \"{DIRECTOR2}\"\nunicast_peers = [\"{DIRECTOR}\"]\n");
    let (mut a, b) = pair(&lab, &a_side, &b_side);
    let mut held = hold(&lab, 10);

    // A stranger claiming priority 254 to the master's address changes nothing.
    let forged = advert(3, 254, None);
    send_advert(&lab.client, lab::CLIENT, DIRECTOR, &forged, 255);
    wait_rejected(&a, "peer", 1);
    assert_eq!(state(&a).unwrap().state, "master");

    a.kill();
    let gap = wait_state(&b, "master", Duration::from_secs(5));
    assert!(gap <= takeover_bound(100), "unicast takeover took {gap:?}");
    wait_vip(dr2, true, TIMEOUT);
    still_served(&mut held);
}

/// An interface `name` in `ns` that is up with a carrier until set down: one end of a veth
/// pair stands for an uplink (this kernel has no dummy driver).
fn add_uplink(ns: &Netns, name: &str) {
    let peer = format!("{name}-peer");
    ns.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
    ns.ip(&["link", "set", &peer, "up"]);
    ns.ip(&["link", "set", name, "up"]);
}

/// The datapath's verdict counters of a running instance.
fn verdicts(lbd: &Lbd) -> lb_common::VerdictCounters {
    let maps = lb_daemon::dataplane::pins::PinnedMaps::open(&lbd.pin_layout(), &lbd.instance)
        .expect("pinned maps");
    lb_daemon::dataplane::snapshot::read(&maps)
        .expect("snapshot")
        .verdicts
}

/// The state of each of an instance's VRRP instances, in config order.
fn states(lbd: &Lbd) -> Vec<String> {
    lb_daemon::vrrp::report::read(&lb_daemon::paths::vrrp_file(&lbd.instance))
        .unwrap_or_default()
        .into_iter()
        .map(|l| l.state)
        .collect()
}

/// Waits until `states` is `want`.
fn wait_states(lbd: &Lbd, want: [&str; 2]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while states(lbd) != want {
        assert!(
            Instant::now() < deadline,
            "{}: {:?}, not {want:?}",
            lbd.instance,
            states(lbd)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn mac_of(ns: &Netns) -> String {
    let out = ns.ip(&["-o", "link", "show", "eth0"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("link/ether")
        .to_owned()
}

/// The MAC the client's neighbour table has for the VIP.
fn client_sees(lab: &Lab) -> String {
    let out = lab.client.ip(&["neigh", "show", &VIP.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or("none")
        .to_owned()
}

fn isolate(lab: &Lab, on: bool) {
    for port in ["dr", "dr2"] {
        lab.switch.exec(
            "bridge",
            &[
                "link",
                "set",
                "dev",
                port,
                "isolated",
                if on { "on" } else { "off" },
            ],
        );
    }
}

#[test]
fn after_a_split_brain_one_master_remains_and_wins_the_clients_back() {
    if !lb_tests::require_root("VRRP end to end") {
        return;
    }
    let lab = Lab::pair("vrb", 2);
    let dr2 = lab.director2.as_ref().unwrap();
    let (a, b) = pair(&lab, FAST, FAST);
    new_connection_works(&lab);
    let (a_mac, b_mac) = (mac_of(&lab.director), mac_of(dr2));
    assert_eq!(client_sees(&lab), a_mac);

    // The directors cannot hear each other; both still reach the client.
    isolate(&lab, true);
    wait_state(&b, "master", Duration::from_secs(5));
    assert_eq!(state(&a).unwrap().state, "master", "both are masters now");
    let deadline = Instant::now() + TIMEOUT;
    while client_sees(&lab) != b_mac {
        assert!(
            Instant::now() < deadline,
            "the client never followed the second master's ARP"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    new_connection_works(&lab);

    isolate(&lab, false);
    wait_state(&b, "backup", Duration::from_secs(5));
    wait_vip(dr2, false, TIMEOUT);
    assert_eq!(state(&a).unwrap().state, "master");
    // The remaining master announced itself again: the client is back with it at once,
    // not after its neighbour entry goes stale (tens of seconds).
    let deadline = Instant::now() + TIMEOUT;
    while client_sees(&lab) != a_mac {
        assert!(
            Instant::now() < deadline,
            "the client still sends the VIP's traffic to the old second master ({})",
            client_sees(&lab)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    new_connection_works(&lab);
}

/// A version 2 or 3 advert of router 51 for the VIP.
fn advert(version: u8, priority: u8, password: Option<&str>) -> lb_daemon::vrrp::packet::Advert {
    lb_daemon::vrrp::packet::Advert {
        version,
        vrid: 51,
        priority,
        interval_cs: if version == 2 { 100 } else { 10 },
        addresses: vec![VIP],
        password: password.map(lb_daemon::vrrp::packet::password),
    }
}

/// Sends one advert from `ns` (source `src`) to `dst` with IP TTL `ttl`; `mangle` may
/// spoil the encoded message first.
fn send_raw(ns: &Netns, src: Ipv4Addr, dst: Ipv4Addr, message: Vec<u8>, ttl: u32) {
    ns.run(move || {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112))).unwrap();
        socket
            .bind(&SockAddr::from(std::net::SocketAddrV4::new(src, 0)))
            .unwrap();
        socket.set_ttl(ttl).unwrap();
        socket.set_multicast_ttl_v4(ttl).unwrap();
        socket.set_multicast_if_v4(&src).unwrap();
        socket
            .send_to(
                &message,
                &SockAddr::from(std::net::SocketAddrV4::new(dst, 0)),
            )
            .unwrap();
    });
}

fn send_advert(
    ns: &Netns,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    advert: &lb_daemon::vrrp::packet::Advert,
    ttl: u32,
) {
    send_raw(ns, src, dst, advert.encode(src, dst), ttl);
}

fn wait_rejected(lbd: &Lbd, reason: &str, count: u64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let seen = state(lbd)
            .and_then(|s| s.rejected.get(reason).copied())
            .unwrap_or(0);
        if seen >= count {
            assert_eq!(seen, count, "{reason} counted more than sent");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{reason}: {seen} rejected of {count} sent: {:?}",
            state(lbd)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn forged_adverts_change_nothing_and_are_counted() {
    if !lb_tests::require_root("VRRP end to end") {
        return;
    }
    let lab = Lab::pair("vrf", 2);
    let name = format!("{}a", lab.prefix);
    // Version 2 with a password: keepalived's setup, where every check applies.
    let vrrp = "version = 2\nadvert_int = 1\nauth_pass = \"s3cret\"\n";
    let a = Lbd::start_in(
        &lab,
        &lab.director,
        &name,
        &config(&lab, &name, 100, vrrp),
        &[],
    );
    wait_state(&a, "master", Duration::from_secs(8));
    let group = lb_daemon::vrrp::packet::MULTICAST;
    let (client, from) = (&lab.client, lab::CLIENT);
    let good = advert(2, 254, Some("s3cret"));

    send_advert(client, from, group, &good, 64);
    wait_rejected(&a, "ttl", 1);
    send_advert(client, from, group, &advert(2, 254, Some("wrong")), 255);
    wait_rejected(&a, "auth", 1);
    send_advert(client, from, group, &advert(2, 254, None), 255);
    wait_rejected(&a, "auth", 2);
    send_advert(
        client,
        from,
        group,
        &lb_daemon::vrrp::packet::Advert {
            vrid: 52,
            ..good.clone()
        },
        255,
    );
    wait_rejected(&a, "vrid", 1);
    let mut spoiled = good.encode(from, group);
    spoiled[6] ^= 0xff;
    send_raw(client, from, group, spoiled, 255);
    wait_rejected(&a, "checksum", 1);
    send_advert(
        client,
        from,
        group,
        &lb_daemon::vrrp::packet::Advert {
            interval_cs: 200,
            ..good.clone()
        },
        255,
    );
    wait_rejected(&a, "interval", 1);
    let s = state(&a).unwrap();
    assert_eq!((s.state.as_str(), s.received), ("master", 0), "{s:?}");
    assert!(holds_vip(&lab.director));

    // The same advert, well formed, is obeyed: the checks above are what stopped the others.
    send_advert(client, from, group, &good, 255);
    wait_state(&a, "backup", TIMEOUT);
    assert_eq!(state(&a).unwrap().master, Some(from));
    wait_vip(&lab.director, false, TIMEOUT);
}

/// Exactly one of the two directors holds the VIP, and it is `holder` (checked a few
/// times over a second: a split brain would show).
fn only_holder(lab: &Lab, holder: &Netns) {
    let dr2 = lab.director2.as_ref().unwrap();
    let other = if holder.name == lab.director.name {
        dr2
    } else {
        &lab.director
    };
    wait_vip(holder, true, Duration::from_secs(6));
    wait_vip(other, false, Duration::from_secs(6));
    for _ in 0..10 {
        assert!(
            holds_vip(holder) && !holds_vip(other),
            "split brain or no master"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn lbd_and_keepalived_take_turns_as_master_without_split_brain() {
    if !lb_tests::require_root("VRRP interop") {
        return;
    }
    // keepalived's version 2 with PASS, and version 3 at 0.1 s.
    for (ours, theirs) in [
        (
            "version = 2\nadvert_int = 1\nauth_pass = \"s3cret\"\n",
            "advert_int 1\n  authentication {\n    auth_type PASS\n    auth_pass s3cret\n  }",
        ),
        ("version = 3\nadvert_int = 0.1\n", "advert_int 0.1"),
    ] {
        let lab = Lab::pair("vrk", 2);
        let dr2 = lab.director2.as_ref().unwrap();
        let name = format!("{}a", lab.prefix);
        // lbd above keepalived.
        let mut a = Lbd::start_in(
            &lab,
            &lab.director,
            &name,
            &config(&lab, &name, 150, ours),
            &[],
        );
        let mut peer = keepalived(&lab, dr2, 100, theirs);
        wait_state(&a, "master", Duration::from_secs(8));
        only_holder(&lab, &lab.director);
        assert_eq!(
            state(&a).unwrap().rejected,
            Default::default(),
            "keepalived's adverts were rejected"
        );
        new_connection_works(&lab);

        // lbd leaves: keepalived takes over.
        assert!(a.stop());
        only_holder(&lab, dr2);

        // lbd returns below keepalived: it stays a backup and hears keepalived.
        drop(a);
        let a = Lbd::start_in(
            &lab,
            &lab.director,
            &name,
            &config(&lab, &name, 50, ours),
            &[],
        );
        wait_state(&a, "backup", Duration::from_secs(5));
        std::thread::sleep(Duration::from_secs(4));
        let s = state(&a).unwrap();
        assert_eq!(
            (s.state.as_str(), s.master),
            ("backup", Some(DIRECTOR2)),
            "{s:?}"
        );
        assert!(s.received > 0 && s.rejected.is_empty(), "{s:?}");
        only_holder(&lab, dr2);

        // keepalived leaves: lbd takes over.
        peer.stop(Duration::from_secs(5));
        wait_state(&a, "master", Duration::from_secs(5));
        only_holder(&lab, &lab.director);
        new_connection_works(&lab);
    }
}

#[test]
fn tshark_decodes_our_adverts_as_valid_vrrp() {
    if !lb_tests::require_root("VRRP adverts on the wire") {
        return;
    }
    let lab = Lab::pair("vrt", 2);
    for (version, vrrp) in [
        (2, "version = 2\nadvert_int = 1\nauth_pass = \"s3cret\"\n"),
        (3, FAST),
    ] {
        let name = format!("{}{version}", lab.prefix);
        let a = Lbd::start_in(
            &lab,
            &lab.director,
            &name,
            &config(&lab, &name, 255, vrrp),
            &[],
        );
        wait_state(&a, "master", Duration::from_secs(5));
        let out = lab
            .switch
            .command("timeout")
            .args([
                "10",
                "tshark",
                "-i",
                "dr",
                "-c",
                "3",
                "-f",
                "ip proto 112",
                "-V",
            ])
            .output()
            .expect("tshark");
        let text = String::from_utf8_lossy(&out.stdout);
        let adverts = text
            .matches(&format!("Version {version}, Packet type 1 (Advertisement)"))
            .count();
        let good = text.matches("[Checksum Status: Good]").count();
        assert_eq!(
            (adverts, good),
            (3, 3),
            "tshark should decode 3 version {version} adverts with good checksums:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for bad in ["Malformed", "Expert Info (Error", "Expert Info (Warning"] {
            assert!(
                !text.contains(bad),
                "tshark flags our version {version} adverts ({bad}):\n{text}"
            );
        }
        drop(a);
    }
}

/// Weights of the synced tests before and after the change that moves flows.
const BEFORE_SYNC: [(usize, u32); 3] = [(0, 1), (1, 1), (2, 1)];
const AFTER_SYNC: [(usize, u32); 3] = [(0, 1), (1, 1), (2, 4)];

/// A director config with `[sync]` to `peer`, then `extra` tables.
fn synced_config(
    lab: &Lab,
    instance: &str,
    priority: u8,
    weights: &[(usize, u32)],
    vrrp: &str,
    peer: Ipv4Addr,
    extra: &str,
) -> String {
    let sync = format!("[sync]\npeers = [\"{peer}\"]\n{extra}");
    config_with(lab, instance, priority, weights, vrrp, &sync)
}

/// Two directors with `[sync]` (and `extra`) over three servers; 200 connections held
/// through dr1; then both reloaded with weights whose ring moves at least 20 of them
/// elsewhere, so only sync can keep them.
fn synced_pair(lab: &Lab, extra: &str) -> (Lbd, Lbd, Vec<(resp::Connection, String)>) {
    let dr2 = lab.director2.as_ref().unwrap();
    let (a_name, b_name) = (format!("{}a", lab.prefix), format!("{}b", lab.prefix));
    let a_conf = |w: &[(usize, u32)]| synced_config(lab, &a_name, 150, w, FAST, DIRECTOR2, extra);
    let b_conf = |w: &[(usize, u32)]| synced_config(lab, &b_name, 100, w, FAST, DIRECTOR, extra);
    let a = Lbd::start_in(lab, &lab.director, &a_name, &a_conf(&BEFORE_SYNC), &[]);
    let b = Lbd::start_in(lab, dr2, &b_name, &b_conf(&BEFORE_SYNC), &[]);
    wait_state(&a, "master", Duration::from_secs(5));
    wait_state(&b, "backup", Duration::from_secs(5));
    wait_vip(&lab.director, true, TIMEOUT);

    let held = hold(lab, 200);
    // Both directors get the new weights (as a reload or a health change would).
    for (lbd, text) in [(&a, a_conf(&AFTER_SYNC)), (&b, b_conf(&AFTER_SYNC))] {
        let out = lbd.reload(&text);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ring = lab::planned(&[&b_conf(&AFTER_SYNC)]);
    let moved = held
        .iter()
        .filter(|(conn, server)| {
            let port = conn.local_addr().unwrap().port();
            lab::predicted_server(&ring, lab, port) != *server
        })
        .count();
    assert!(
        moved >= 20,
        "only {moved} of 200 held flows would move: the test proves nothing"
    );
    (a, b, held)
}

#[test]
fn synced_flows_survive_a_failover_after_the_ring_changed() {
    if !lb_tests::require_root("VRRP end to end") {
        return;
    }
    let lab = Lab::pair("vry", 3);
    let dr2 = lab.director2.as_ref().unwrap();
    let (mut a, b, mut held) = synced_pair(&lab, "");
    // The backup's status counts what it installed (at least the 200 held flows; the
    // counters are written once a second).
    let installed = |status: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("flow sync: "))
            .and_then(|l| {
                l.split_whitespace()
                    .skip_while(|w| *w != "installed")
                    .nth(1)
            })
            .and_then(|n| n.parse::<u64>().ok())
    };
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let status = b.status();
        if installed(&status).is_some_and(|n| n >= 200) {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(100));
    }

    a.kill();
    wait_state(&b, "master", Duration::from_secs(5));
    wait_vip(dr2, true, TIMEOUT);
    still_served(&mut held);
    new_connection_works(&lab);
}

#[test]
fn a_tracked_interface_going_down_faults_the_master_until_it_returns() {
    if !lb_tests::require_root("VRRP end to end") {
        return;
    }
    let lab = Lab::pair("vri", 2);
    let dr2 = lab.director2.as_ref().unwrap();
    add_uplink(&lab.director, "uplink");
    let tracked = format!("{FAST}track_interface = [\"uplink\"]\n");
    let (a, b) = pair(&lab, &tracked, FAST);

    lab.director.ip(&["link", "set", "uplink", "down"]);
    let gap = wait_state(&b, "master", Duration::from_secs(5));
    assert!(gap < takeover_bound(100), "took {gap:?}");
    wait_state(&a, "fault", TIMEOUT);
    let s = state(&a).unwrap();
    assert!(s.reason.contains("uplink"), "{s:?}");
    wait_vip(&lab.director, false, TIMEOUT);
    wait_vip(dr2, true, TIMEOUT);
    new_connection_works(&lab);

    lab.director.ip(&["link", "set", "uplink", "up"]);
    // Back as a backup, then it preempts the lower-priority master.
    wait_state(&a, "master", Duration::from_secs(5));
    wait_state(&b, "backup", TIMEOUT);
    wait_vip(&lab.director, true, TIMEOUT);
    new_connection_works(&lab);
}

#[test]
fn a_director_whose_pool_is_down_lowers_its_priority_and_the_peer_takes_over() {
    if !lb_tests::require_root("VRRP end to end") {
        return;
    }
    let lab = Lab::pair("vrh", 2);
    let dr2 = lab.director2.as_ref().unwrap();
    let (a_name, b_name) = (format!("{}a", lab.prefix), format!("{}b", lab.prefix));
    // The same pool, but dr1's check is pointed at a closed port: to dr1 every backend is
    // down, to dr2 every one is up.
    let check = |port: u16| {
        format!(
            "[vip.check]\ntype = \"tcp\"\nconnect_port = {port}\ninterval = 0.2\ntimeout = 0.2\nfall = 1\nrise = 1\n"
        )
    };
    let with_check = |instance: &str, priority: u8, port: u16| {
        config(
            &lab,
            instance,
            priority,
            &format!("{FAST}track_pool_weight = 60\n"),
        )
        .replacen("[[vrrp]]", &format!("{}\n[[vrrp]]", check(port)), 1)
    };
    let a = Lbd::start_in(
        &lab,
        &lab.director,
        &a_name,
        &with_check(&a_name, 150, 1),
        &[],
    );
    let b = Lbd::start_in(
        &lab,
        dr2,
        &b_name,
        &with_check(&b_name, 100, lab::REDIS_PORT),
        &[],
    );
    // dr1 starts at 150 but its pool is empty: 90, below dr2's 100.
    wait_state(&b, "master", Duration::from_secs(5));
    wait_state(&a, "backup", Duration::from_secs(5));
    let s = state(&a).unwrap();
    assert_eq!(s.priority, 90, "{s:?}");
    wait_vip(dr2, true, TIMEOUT);
    new_connection_works(&lab);

    // Its check fixed, dr1's pool is back: 150 again, and it preempts.
    let out = a.reload(&with_check(&a_name, 150, lab::REDIS_PORT));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_state(&a, "master", Duration::from_secs(5));
    assert_eq!(state(&a).unwrap().priority, 150);
    wait_state(&b, "backup", TIMEOUT);
    new_connection_works(&lab);
}

#[test]
fn directors_that_are_also_real_servers_serve_their_share_locally() {
    if !lb_tests::require_root("VRRP end to end") {
        return;
    }
    let lab = Lab::pair("vrl", 2);
    let dr2 = lab.director2.as_ref().unwrap();
    let _redis_dr1 = lab.serve_on_director(&lab.director, "dr1", DIRECTOR);
    let _redis_dr2 = lab.serve_on_director(dr2, "dr2", DIRECTOR2);
    // Every director is a backend of the VIP, beside the two real servers.
    let with_directors = |instance: &str, priority: u8| {
        config(&lab, instance, priority, FAST).replacen(
            "\n[[vrrp]]",
            &format!(
                "\n[[vip.backend]]\naddress = \"{DIRECTOR}\"\n\n[[vip.backend]]\naddress = \"{DIRECTOR2}\"\n\n[[vrrp]]"
            ),
            1,
        )
    };
    let (a_name, b_name) = (format!("{}a", lab.prefix), format!("{}b", lab.prefix));
    let a = Lbd::start_in(
        &lab,
        &lab.director,
        &a_name,
        &with_directors(&a_name, 150),
        &[],
    );
    let b = Lbd::start_in(&lab, dr2, &b_name, &with_directors(&b_name, 100), &[]);
    wait_state(&a, "master", Duration::from_secs(5));
    wait_state(&b, "backup", Duration::from_secs(5));
    let status = a.status();
    assert!(
        status.contains(&format!("-> {DIRECTOR}:6379")) && status.contains(" local "),
        "the master lists itself as a local backend:\n{status}"
    );

    let mut served = std::collections::BTreeMap::<String, usize>::new();
    lab.client.run(|| {
        for i in 0..200 {
            let mut conn = lab::connect_vip(0, TIMEOUT)
                .unwrap_or_else(|err| panic!("connection {i} through the VIP: {err}"));
            let who = lab::whoami(&mut conn).expect("served");
            *served.entry(who).or_default() += 1;
        }
    });
    for server in ["rs1", "rs2", "dr1", "dr2"] {
        assert!(
            served.get(server).is_some_and(|n| *n >= 20),
            "{server} served too little of 200: {served:?}"
        );
    }
    // The master passed its own share to its stack; the backup passed what the master
    // sent it (it does not forward). Nothing went around in circles.
    let (va, vb) = (verdicts(&a), verdicts(&b));
    assert!(va.pass_local > 0, "{va:?}");
    assert_eq!(vb.tx, 0, "the backup forwarded: {vb:?}");
    assert!(vb.pass_not_forwarding > 0, "{vb:?}");
}

/// Flow sync installs a peer's flow once (last_seen = now) and never refreshes it: the
/// master refreshes its own copy with every packet, but the backup sees no packet of the
/// flow, so its copy expires after `timeouts.tcp` while the connection is alive and busy.
/// A long-lived connection (a Redis client pool's) is then scheduled by the new master's
/// ring after a failover, exactly what `[sync]` is there to prevent. Here tcp = 3 s and
/// the connections stay busy for 7 s before the failover.
#[test]
fn synced_flows_of_busy_long_lived_connections_survive_a_failover_and_a_failback() {
    if !lb_tests::require_root("VRRP end to end") {
        return;
    }
    let lab = Lab::pair("vrl", 3);
    let dr2 = lab.director2.as_ref().unwrap();
    let tcp_3 = "\n[timeouts]\ntcp = 3\n";
    let (mut a, b, mut held) = synced_pair(&lab, tcp_3);
    // The connections are in use all along (never idle for more than 0.5 s), longer than
    // the TCP idle timeout.
    let busy_until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < busy_until {
        still_served(&mut held);
        std::thread::sleep(Duration::from_millis(500));
    }

    a.kill();
    wait_state(&b, "master", Duration::from_secs(5));
    wait_vip(dr2, true, TIMEOUT);
    still_served(&mut held);

    // Failback: dr1 restarts with an empty connection table and learns the live flows from
    // dr2's refreshes (every second here: a third of tcp = 3) before it preempts.
    let a_name = a.instance.clone();
    drop(a);
    let delayed = synced_config(
        &lab,
        &a_name,
        150,
        &AFTER_SYNC,
        &format!("{FAST}preempt_delay = 4\n"),
        DIRECTOR2,
        tcp_3,
    );
    let a = Lbd::start_in(&lab, &lab.director, &a_name, &delayed, &[]);
    let preempt_at = Instant::now() + Duration::from_secs(8);
    while state(&a).is_none_or(|s| s.state != "master") {
        assert!(
            Instant::now() < preempt_at,
            "dr1 never took back: {:?}",
            state(&a)
        );
        still_served(&mut held);
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_state(&b, "backup", TIMEOUT);
    wait_vip(&lab.director, true, TIMEOUT);
    still_served(&mut held);
}

/// A backup that takes over for a moment while the master is alive (its adverts were late,
/// or a priority-0 advert arrived) sends its gratuitous ARPs from its transition task
/// after the master already answered (the master's Reassert ARPs go out at once; the
/// backup's wait for the daemon's Forward answer and the netlink add). The backup then
/// stands down (VIP off, forwarding off), but the clients follow its late ARPs, and the
/// master never announces itself again (no garp_master_refresh by default): the VIP's
/// traffic goes to a director that neither holds nor forwards it until the clients'
/// neighbour entries go stale (tens of seconds).
///
/// The transient takeover is provoked with a priority-0 advert sent to the backup only
/// (VRRPv3 has no authentication; a master's advert late by more than 3 intervals + skew,
/// e.g. a CPU stall at 0.1 s adverts, does the same); each attempt gives the backup its
/// skew (61 ms) against the master's next advert.
#[test]
fn after_a_backups_transient_takeover_the_clients_stay_with_the_master() {
    if !lb_tests::require_root("VRRP end to end") {
        return;
    }
    let lab = Lab::pair("vrt", 2);
    let dr2 = lab.director2.as_ref().unwrap();
    let (a, b) = pair(&lab, FAST, FAST);
    new_connection_works(&lab);
    let (a_mac, b_mac) = (mac_of(&lab.director), mac_of(dr2));
    assert_eq!(client_sees(&lab), a_mac);
    let mut transients = 0;
    for attempt in 0..10 {
        let took_over_before = state(&b).unwrap().sent;
        // To B alone: A would answer a multicast one at once and so reset B's timer.
        send_advert(
            &lab.client,
            lab::CLIENT,
            DIRECTOR2,
            &advert(3, 0, None),
            255,
        );
        std::thread::sleep(Duration::from_millis(400));
        // One master remains, A, and only it holds the VIP.
        wait_state(&a, "master", TIMEOUT);
        wait_state(&b, "backup", TIMEOUT);
        wait_vip(dr2, false, TIMEOUT);
        if state(&b).unwrap().sent > took_over_before {
            transients += 1;
        }
        // The clients must be with the master (give stray ARPs a second to settle).
        std::thread::sleep(Duration::from_millis(1000));
        let seen = client_sees(&lab);
        assert!(
            seen == a_mac,
            "attempt {attempt}: A ({a_mac}) is master and holds the VIP, B ({b_mac}) is a \
             backup without it, but the client sends the VIP's traffic to {seen} \
             (B's late gratuitous ARP); B's log:\n{}",
            b.log()
        );
        new_connection_works(&lab);
    }
    // Else the race this test is about never ran.
    assert!(transients > 0, "B never took over, even for a moment");
}

/// A careless operator's typo in `track_interface` (here "eht0" for "eth0"): lbd starts
/// without a word of complaint, and the instance sits in FAULT for ever ("interface eht0 is
/// down"), so this director never becomes master. keepalived's trap from seed 000 (a
/// broken config starting silently) in a new place: a name that is no interface at start
/// should be refused with file, line and key, as `director.interfaces` and
/// `[[vrrp]].interface` are.
#[test]
fn a_track_interface_that_does_not_exist_is_refused_at_start() {
    if !lb_tests::require_root("VRRP end to end") {
        return;
    }
    let lab = Lab::new("vrx", 1);
    let name = lab.prefix.clone();
    let text = config_with(
        &lab,
        &name,
        150,
        &[(0, 1)],
        &format!("{FAST}track_interface = [\"eht0\"]\n"),
        "",
    );
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Lbd::start_in(&lab, &lab.director, &name, &text, &[])
    }));
    match started {
        Ok(lbd) => {
            std::thread::sleep(Duration::from_secs(1));
            panic!(
                "lbd started with track_interface = [\"eht0\"] (no such interface); its \
                 instance: {:?}",
                state(&lbd)
            );
        }
        Err(_) => {
            let log = std::fs::read_to_string(lab.dir.join("lbd.log")).unwrap_or_default();
            // `FILE:LINE: KEY: MESSAGE`, like every config error.
            let named = log.lines().any(|l| {
                l.split_once(".toml:").is_some_and(|(_, rest)| {
                    rest.split_once(": vrrp[0].track_interface[0]: ")
                        .is_some_and(|(line, _)| line.parse::<usize>().is_ok())
                })
            });
            assert!(
                named,
                "refused, but without naming the key and line:\n{log}"
            );
        }
    }
}

/// Seed 004's "localnode" loop: two directors that are also real servers, both masters
/// (their adverts never reach each other: each names a peer that does not exist). A flow one
/// of them balances to the other must be served there, not balanced again (and perhaps sent
/// straight back, for ever).
#[test]
fn two_masters_that_are_also_real_servers_never_bounce_a_flow_between_them() {
    if !lb_tests::require_root("VRRP end to end") {
        return;
    }
    let lab = Lab::pair("vrd", 2);
    let dr2 = lab.director2.as_ref().unwrap();
    let _redis_dr1 = lab.serve_on_director(&lab.director, "dr1", DIRECTOR);
    let _redis_dr2 = lab.serve_on_director(dr2, "dr2", DIRECTOR2);
    // Their rings differ too (as when their health views differ): one may send a flow to
    // the other that the other's ring would send straight back.
    let deaf = |instance: &str, src: Ipv4Addr, nobody: &str, weights: (u32, u32)| {
        config(
            &lab,
            instance,
            150,
            &format!("{FAST}unicast_src = \"{src}\"\nunicast_peers = [\"{nobody}\"]\n"),
        )
        .replacen(
            "\n[[vrrp]]",
            &format!(
                "\n[[vip.backend]]\naddress = \"{DIRECTOR}\"\nweight = {}\n\n[[vip.backend]]\naddress = \"{DIRECTOR2}\"\nweight = {}\n\n[[vrrp]]",
                weights.0, weights.1
            ),
            1,
        )
    };
    let (a_name, b_name) = (format!("{}a", lab.prefix), format!("{}b", lab.prefix));
    let a_conf = deaf(&a_name, DIRECTOR, "198.18.0.98", (1, 4));
    let b_conf = deaf(&b_name, DIRECTOR2, "198.18.0.99", (4, 1));
    let a = Lbd::start_in(&lab, &lab.director, &a_name, &a_conf, &[]);
    let b = Lbd::start_in(&lab, dr2, &b_name, &b_conf, &[]);
    wait_state(&a, "master", Duration::from_secs(5));
    wait_state(&b, "master", Duration::from_secs(5));

    let mut served = std::collections::BTreeMap::<String, usize>::new();
    let failed = lab.client.run(|| {
        let mut failed = 0;
        for _ in 0..200 {
            match lab::connect_vip(0, TIMEOUT).and_then(|mut c| lab::whoami(&mut c)) {
                Ok(who) => *served.entry(who).or_default() += 1,
                Err(_) => failed += 1,
            }
        }
        failed
    });
    let (va, vb) = (verdicts(&a), verdicts(&b));
    assert_eq!(
        failed, 0,
        "{failed} of 200 connections failed: {va:?} {vb:?}"
    );
    // Whichever master the client reached sent a share to the other, which served it.
    let from_backend = va.pass_from_backend + vb.pass_from_backend;
    assert!(from_backend > 0, "{served:?} {va:?} {vb:?}");
    for server in ["rs1", "rs2", "dr1", "dr2"] {
        assert!(
            served.contains_key(server),
            "{server} served nothing: {served:?}"
        );
    }
    // Each frame crossed the directors at most once: 200 short connections are a few
    // thousand frames, not a storm.
    assert!(va.tx + vb.tx < 10_000, "a loop: {va:?} {vb:?}");
}

/// Seed 002's `vrrp_sync_group`: two instances (a write VIP and a read VIP) move together.
/// dr1's read instance tracks an uplink; when it faults, the write instance follows, so
/// dr2 holds both VIPs, and both come back together.
#[test]
fn a_sync_group_moves_its_instances_together() {
    if !lb_tests::require_root("VRRP end to end") {
        return;
    }
    let lab = Lab::pair("vrg", 2);
    let dr2 = lab.director2.as_ref().unwrap();
    add_uplink(&lab.director, "uplink");
    let grouped = |instance: &str, priority: u8, track: &str| {
        format!(
            "{}\n[[vrrp]]\nname = \"VI_2\"\ninterface = \"eth0\"\nvirtual_router_id = 52\npriority = {priority}\nvips = [\"{}\"]\n{FAST}{track}\n[[vrrp_sync_group]]\nname = \"VG_1\"\ninstances = [\"VI_1\", \"VI_2\"]\n",
            config(&lab, instance, priority, FAST),
            lab::VIP2
        )
    };
    let (a_name, b_name) = (format!("{}a", lab.prefix), format!("{}b", lab.prefix));
    let a = Lbd::start_in(
        &lab,
        &lab.director,
        &a_name,
        &grouped(&a_name, 150, "track_interface = [\"uplink\"]\n"),
        &[],
    );
    let b = Lbd::start_in(&lab, dr2, &b_name, &grouped(&b_name, 100, ""), &[]);
    // The VIPs move a moment after the state: wait for each.
    let holds = |ns: &Netns, vip: Ipv4Addr, want: bool| {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let held =
                String::from_utf8_lossy(&ns.ip(&["-4", "addr", "show", "dev", "eth0"]).stdout)
                    .contains(&format!("{vip}/32"));
            if held == want {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_states(&a, ["master", "master"]);
    wait_states(&b, ["backup", "backup"]);

    lab.director.ip(&["link", "set", "uplink", "down"]);
    // VI_2 faults for its uplink, VI_1 for the group: dr2 takes both.
    wait_states(&a, ["fault", "fault"]);
    wait_states(&b, ["master", "master"]);
    let reason = &lb_daemon::vrrp::report::read(&lb_daemon::paths::vrrp_file(&a.instance)).unwrap()
        [0]
    .reason;
    assert!(reason.contains("sync group VG_1"), "{reason}");
    wait_vip(dr2, true, TIMEOUT);
    assert!(holds(dr2, lab::VIP2, true));
    assert!(holds(&lab.director, VIP, false) && holds(&lab.director, lab::VIP2, false));
    new_connection_works(&lab);

    lab.director.ip(&["link", "set", "uplink", "up"]);
    wait_states(&a, ["master", "master"]);
    wait_states(&b, ["backup", "backup"]);
    wait_vip(&lab.director, true, TIMEOUT);
    assert!(holds(&lab.director, lab::VIP2, true));
    assert!(holds(dr2, VIP, false) && holds(dr2, lab::VIP2, false));
    new_connection_works(&lab);
}

/// dr1's VI_1 tracks uplink1 and VI_2 tracks uplink2. uplink2 fails
/// (both fault, dr2 takes both), then uplink1 fails too, then uplink2 returns: VI_1 is still
/// faulted, so the group is (keepalived keeps every member in FAULT while any member is) and
/// dr2 must keep both VIPs. Here dr1's VI_2 leaves FAULT on its own link's return, preempts
/// dr2's VI_2 (150 > 100), dr2's VI_2 stands down and its group partner VI_1 with it: the
/// group is split and the write VIP loses its master.
#[test]
fn a_sync_group_stays_faulted_while_any_member_is() {
    if !lb_tests::require_root("VRRP end to end") {
        return;
    }
    let lab = Lab::pair("vrf", 2);
    let dr2 = lab.director2.as_ref().unwrap();
    for up in ["up1", "up2"] {
        add_uplink(&lab.director, up);
    }
    let grouped = |instance: &str, priority: u8, track1: &str, track2: &str| {
        format!(
            "{}\n[[vrrp]]\nname = \"VI_2\"\ninterface = \"eth0\"\nvirtual_router_id = 52\npriority = {priority}\nvips = [\"{}\"]\n{FAST}{track2}\n[[vrrp_sync_group]]\nname = \"VG_1\"\ninstances = [\"VI_1\", \"VI_2\"]\n",
            config(&lab, instance, priority, &format!("{FAST}{track1}")),
            lab::VIP2
        )
    };
    let (a_name, b_name) = (format!("{}a", lab.prefix), format!("{}b", lab.prefix));
    let a = Lbd::start_in(
        &lab,
        &lab.director,
        &a_name,
        &grouped(
            &a_name,
            150,
            "track_interface = [\"up1\"]\n",
            "track_interface = [\"up2\"]\n",
        ),
        &[],
    );
    let b = Lbd::start_in(&lab, dr2, &b_name, &grouped(&b_name, 100, "", ""), &[]);
    wait_states(&a, ["master", "master"]);
    wait_states(&b, ["backup", "backup"]);
    lab.director.ip(&["link", "set", "up2", "down"]);
    wait_states(&a, ["fault", "fault"]);
    wait_states(&b, ["master", "master"]);
    lab.director.ip(&["link", "set", "up1", "down"]);
    std::thread::sleep(Duration::from_millis(500));
    lab.director.ip(&["link", "set", "up2", "up"]);
    // VI_1 is still faulted (uplink1): the whole group stays on dr2.
    let mut seen = std::collections::BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        seen.insert((states(&a), states(&b)));
        std::thread::sleep(Duration::from_millis(10));
    }
    let want = (
        vec!["fault".to_string(), "fault".to_string()],
        vec!["master".to_string(), "master".to_string()],
    );
    assert!(
        seen.len() == 1 && seen.contains(&want),
        "with dr1's VI_1 still faulted, the group left (dr1, dr2) = (fault, master): seen {seen:?}"
    );
}
