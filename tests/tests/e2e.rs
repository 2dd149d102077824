//! End to end: a client, a director running `lbd` (native XDP on a veth) and real servers
//! running `redis-server`, each in its own network namespace on one bridge. Needs root.

use std::{collections::HashMap, process::Command, time::Duration};

use lb_tests::{
    lab::{self, Lab, VIP, VIP6, planned, predicted_server, server_addr, server_addr6},
    lbd::Lbd,
    resp::Reply,
};

const TIMEOUT: Duration = Duration::from_secs(3);

#[test]
fn connections_reach_backends_by_weight_and_each_reads_its_own_writes() {
    if !lb_tests::require_root("e2e") {
        return;
    }
    let lab = Lab::new("wt", 3);
    let config = lab.config(&[(0, 1), (1, 2), (2, 3)]);
    let _lbd = Lbd::start(&lab, &config);
    let ring = planned(&[&config]);

    const CONNECTIONS: u16 = 300;
    let served: Vec<(u16, String)> = lab.client.run(|| {
        (0..CONNECTIONS)
            .map(|i| {
                let port = 20000 + i;
                let mut conn = lab::connect_vip(port, TIMEOUT)
                    .unwrap_or_else(|e| panic!("connection {i} via the VIP: {e}"));
                let who = lab::whoami(&mut conn).expect("GET whoami");
                let key = format!("k{i}");
                assert_eq!(
                    conn.command(&["SET", &key, &format!("v{i}")]).unwrap(),
                    Reply::Simple("OK".into())
                );
                assert_eq!(
                    conn.command(&["GET", &key]).unwrap().text(),
                    Some(format!("v{i}")),
                    "GET after SET on connection {i}"
                );
                (port, who)
            })
            .collect()
    });

    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (port, who) in &served {
        assert_eq!(
            *who,
            predicted_server(&ring, &lab, *port),
            "connection from port {port} reached another server than Maglev's choice"
        );
        *counts.entry(who.as_str()).or_default() += 1;
    }
    for (name, weight) in [("rs1", 1.0), ("rs2", 2.0), ("rs3", 3.0)] {
        let expected = CONNECTIONS as f64 * weight / 6.0;
        let got = *counts.get(name).unwrap_or(&0) as f64;
        assert!(
            (got - expected).abs() <= 0.2 * expected,
            "{name}: {got} connections, expected {expected} +-20% ({counts:?})"
        );
    }
}

#[test]
fn long_lived_connections_keep_their_backend_across_a_reload() {
    if !lb_tests::require_root("e2e") {
        return;
    }
    let lab = Lab::new("ll", 4);
    let before = lab.config(&[(0, 1), (1, 1), (2, 1)]);
    let after = lab.config(&[(0, 1), (1, 1), (3, 1)]);
    let lbd = Lbd::start(&lab, &before);
    let ring_after = planned(&[&before, &after]);

    let mut conns = lab.client.run(|| {
        (0..45u16)
            .map(|i| {
                let mut conn = lab::connect_vip(30000 + i, TIMEOUT).expect("connect");
                let who = lab::whoami(&mut conn).expect("whoami");
                (30000 + i, who, conn)
            })
            .collect::<Vec<_>>()
    });
    assert!(
        conns.iter().any(|(_, who, _)| who == "rs3"),
        "some connections must start on rs3"
    );

    // rs3 leaves, rs4 joins.
    let out = lbd.reload(&after);
    assert!(
        out.status.success(),
        "lbd reload: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let mut moved_by_ring = 0;
    lab.client.run(|| {
        for (port, who, conn) in &mut conns {
            let now = lab::whoami(conn);
            if who == "rs3" {
                // Its backend left: the flow is rescheduled, and the new server resets it.
                assert!(
                    now.as_ref().map_or(true, |n| n != "rs3"),
                    "port {port} still reaches removed rs3"
                );
                continue;
            }
            assert_eq!(
                now.as_deref().ok(),
                Some(who.as_str()),
                "port {port} left {who} after the reload"
            );
            assert_eq!(
                conn.command(&["SET", "after", "reload"]).unwrap(),
                Reply::Simple("OK".into())
            );
            assert_eq!(
                conn.command(&["GET", "after"]).unwrap().text().as_deref(),
                Some("reload")
            );
            if predicted_server(&ring_after, &lab, *port) != *who {
                moved_by_ring += 1;
            }
        }
    });
    assert!(
        moved_by_ring > 0,
        "no kept connection would have moved by the new ring alone: the test proves nothing"
    );

    let fresh: Vec<String> = lab.client.run(|| {
        (0..30)
            .map(|_| {
                lab::whoami(&mut lab::connect_vip(0, TIMEOUT).expect("connect")).expect("whoami")
            })
            .collect()
    });
    assert!(
        !fresh.iter().any(|w| w == "rs3"),
        "new connections reach removed rs3: {fresh:?}"
    );
    assert!(
        fresh.iter().any(|w| w == "rs4"),
        "new connections never reach added rs4: {fresh:?}"
    );
}

#[test]
fn bad_reload_is_rejected_and_the_running_config_kept() {
    if !lb_tests::require_root("e2e") {
        return;
    }
    let lab = Lab::new("br", 3);
    let good = lab.config(&[(0, 1), (1, 1), (2, 1)]);
    let lbd = Lbd::start(&lab, &good);

    // Invalid file: refused by `lbd reload` itself, naming file, line and key.
    let invalid =
        good.replacen("weight = 1", "weight = -1", 2)
            .replacen("weight = -1", "weight = 1", 1);
    let out = lbd.reload(&invalid);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = invalid.lines().position(|l| l == "weight = -1").unwrap() + 1;
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "{}:{line}: vip[0].backend[1].weight",
            lbd.config_path.display()
        )),
        "{stderr}"
    );

    // Valid file the daemon cannot apply (a backend nobody answers ARP for): refused by lbd.
    let unresolvable = format!("{good}\n[[vip.backend]]\naddress = \"198.18.0.99\"\n");
    let out = lbd.reload(&unresolvable);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "reload with an unresolvable backend must fail"
    );
    assert!(stderr.contains("198.18.0.99"), "{stderr}");

    // A valid file the daemon does not read: refused, since the daemon would re-read its own.
    let other = lab.dir.join("other.toml");
    std::fs::write(&other, &good).unwrap();
    let out = Command::new(lb_tests::lbd::bin())
        .arg("reload")
        .arg("--config")
        .arg(&other)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("reads"),
        "{stderr}"
    );

    let status = lbd.status();
    assert!(!status.contains("198.18.0.99"), "{status}");
    let served: Vec<String> = lab.client.run(|| {
        (0..60)
            .map(|_| {
                lab::whoami(&mut lab::connect_vip(0, TIMEOUT).expect("connect")).expect("whoami")
            })
            .collect()
    });
    for name in ["rs1", "rs2", "rs3"] {
        assert!(
            served.iter().any(|w| w == name),
            "{name} no longer served after rejected reloads: {served:?}"
        );
    }
}

#[test]
fn status_and_bpftool_show_the_vip_and_its_backends() {
    if !lb_tests::require_root("e2e") {
        return;
    }
    let lab = Lab::new("st", 3);
    let lbd = Lbd::start(&lab, &lab.config(&[(0, 1), (1, 2), (2, 1)]));
    lab.client.run(|| {
        for _ in 0..20 {
            lab::whoami(&mut lab::connect_vip(0, TIMEOUT).expect("connect")).expect("whoami");
        }
    });

    let status = lbd.status();
    assert!(status.contains(&format!("TCP  {VIP}:6379")), "{status}");
    let mut forwarded = 0;
    for (i, weight) in [(0, 1), (1, 2), (2, 1)] {
        let line = status
            .lines()
            .find(|l| l.contains(&format!("-> {}:6379", server_addr(i))))
            .unwrap_or_else(|| panic!("no line for {}:\n{status}", server_addr(i)));
        let fields: Vec<&str> = line.split_whitespace().collect();
        // ->, addr:port, mac, weight, active, inactive, packets, bytes, new flows
        assert_eq!(fields[3], weight.to_string(), "{line}");
        forwarded += fields[8].parse::<u64>().unwrap();
    }
    assert_eq!(forwarded, 20, "new flows over all backends:\n{status}");

    let dump = |map: &str| {
        let path = lbd.pin_layout().map(map);
        let out = Command::new("bpftool")
            .args(["map", "dump", "pinned"])
            .arg(&path)
            .output()
            .expect("bpftool");
        assert!(
            out.status.success(),
            "bpftool {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let vips = dump("VIPS");
    let vip_bytes = format!("{}", u32::from_ne_bytes(VIP.octets()));
    assert!(
        vips.contains("\"vip_id\"") && vips.contains(&vip_bytes),
        "VIPS dump lacks named fields or the VIP:\n{vips}"
    );
    let backends = dump("BACKENDS");
    assert!(
        backends.contains("\"mac\"") && backends.contains("\"weight\": 2"),
        "BACKENDS dump:\n{backends}"
    );
}

#[test]
fn stop_detaches_and_removes_every_pin_and_run_file() {
    if !lb_tests::require_root("e2e") {
        return;
    }
    let lab = Lab::new("sp", 1);
    let mut lbd = Lbd::start(&lab, &lab.config(&[(0, 1)]));
    let link =
        String::from_utf8_lossy(&lab.director.ip(&["link", "show", "eth0"]).stdout).into_owned();
    assert!(
        link.contains(" xdp"),
        "XDP not attached while running: {link}"
    );
    assert!(lbd.pin_layout().dir.exists());

    // A second daemon for the same instance is refused and leaves the first one alone.
    let second = Command::new(lb_tests::lbd::bin())
        .args(["--netns", &lab.director.name, "run", "--config"])
        .arg(&lbd.config_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && stderr.contains("already running"),
        "{stderr}"
    );
    assert!(
        lbd.pin_layout().map("VIPS").exists(),
        "the running instance lost its pins"
    );
    lbd.status();

    assert!(
        lbd.stop(),
        "lbd must exit cleanly on SIGTERM:\n{}",
        lbd.log()
    );
    assert!(!lbd.pin_layout().dir.exists(), "pins left behind");
    let left = lbd.run_files_left();
    assert!(left.is_empty(), "left behind in /run/lbd: {left:?}");
    let link =
        String::from_utf8_lossy(&lab.director.ip(&["link", "show", "eth0"]).stdout).into_owned();
    assert!(
        !link.contains(" xdp"),
        "XDP still attached after stop: {link}"
    );
    // With the program gone, the VIP is the director's own address again: nothing listens.
    let refused = lab
        .client
        .run(|| lab::connect_vip(0, TIMEOUT).err().map(|e| e.kind()));
    assert_eq!(refused, Some(std::io::ErrorKind::ConnectionRefused));
}

#[test]
fn datapath_log_events_reach_the_daemon_log() {
    if !lb_tests::require_root("e2e") {
        return;
    }
    let lab = Lab::new("lg", 1);
    let lbd = Lbd::start_with(&lab, &lab.config(&[(0, 1)]), &["--datapath-log", "debug"]);
    let port = lab.client.run(|| {
        let mut conn = lab::connect_vip(0, TIMEOUT).expect("connect");
        lab::whoami(&mut conn).expect("whoami");
        conn.local_addr().expect("local addr").port()
    });
    let wanted = format!("new flow from port {port} to vip");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !lbd.log().contains(&wanted) {
        assert!(
            std::time::Instant::now() < deadline,
            "no datapath event {wanted:?} in the lbd log:\n{}",
            lbd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn generic_skb_mode_forwards_too_and_says_it_is_slower() {
    if !lb_tests::require_root("e2e") {
        return;
    }
    let lab = Lab::new("skb", 2);
    let lbd = Lbd::start_with(&lab, &lab.config(&[(0, 1), (1, 1)]), &["--xdp-mode", "skb"]);
    assert!(
        lbd.log().contains("generic (skb) XDP"),
        "no warning about skb mode:\n{}",
        lbd.log()
    );
    let link =
        String::from_utf8_lossy(&lab.director.ip(&["link", "show", "eth0"]).stdout).into_owned();
    assert!(
        link.contains("xdpgeneric"),
        "not attached in generic mode: {link}"
    );
    let served: Vec<String> = lab.client.run(|| {
        (0..40)
            .map(|_| {
                lab::whoami(&mut lab::connect_vip(0, TIMEOUT).expect("connect")).expect("whoami")
            })
            .collect()
    });
    for name in ["rs1", "rs2"] {
        assert!(
            served.iter().any(|w| w == name),
            "{name} never served in skb mode: {served:?}"
        );
    }
}

/// Path MTU discovery through DR. The real servers answer a client behind a 1280-byte hop
/// with 1500-byte packets; the router's "fragmentation needed" goes to the VIP, which is
/// the director, and only reaches the server that sent them if the director passes it on.
/// Without that, the large replies are black-holed and the GET times out.
#[test]
fn a_client_behind_a_smaller_mtu_hop_gets_large_replies() {
    if !lb_tests::require_root("e2e") {
        return;
    }
    let lab = Lab::new("mtu", 2);
    let far = lab.far_client(1280);
    let lbd = Lbd::start(&lab, &lab.config(&[(0, 1), (1, 1)]));
    let value = "x".repeat(256 * 1024);
    // Stored on each real server directly: the far client's requests stay small.
    for i in 0..2 {
        assert_eq!(
            lab.redis(i, None, &["SET", "big", &value]),
            Reply::Simple("OK".into())
        );
    }
    let served: Vec<String> = far.client.run(|| {
        (0..6u16)
            .map(|i| {
                let mut conn = lab::connect_service_from(
                    lab::FAR_CLIENT,
                    lab::vip_socket(),
                    41000 + i,
                    TIMEOUT,
                )
                .expect("connect via the VIP");
                let got = conn
                    .command(&["GET", "big"])
                    .unwrap_or_else(|e| panic!("GET of 256 KiB across the 1280-byte hop: {e}"));
                assert_eq!(got.text().map(|t| t.len()), Some(value.len()));
                lab::whoami(&mut conn).expect("whoami")
            })
            .collect()
    });
    assert!(
        served.iter().any(|s| s == "rs1") && served.iter().any(|s| s == "rs2"),
        "both servers answered: {served:?}"
    );
    let status = lbd.status();
    let sent_on: u64 = status
        .split_whitespace()
        .skip_while(|w| *w != "icmp-error")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no icmp-error counter in:\n{status}"));
    assert!(
        sent_on >= 2,
        "one error per server at least, got {sent_on}:\n{status}"
    );
}

/// A UDP service behind a UDP VIP: small datagrams, and 4,000-byte ones, which the client
/// sends in three fragments (only the first carries the ports). Every datagram comes back
/// whole from one server, whose name prefixes the echo, and both servers answer.
#[test]
fn a_udp_echo_service_answers_through_a_udp_vip_whole_datagrams_and_fragmented_ones() {
    if !lb_tests::require_root("e2e") {
        return;
    }
    const PORT: u16 = 5300;
    let lab = Lab::new("udp", 2);
    let mut config = lab.config(&[(0, 1), (1, 1)]);
    config.push_str(&format!(
        "\n[[vip]]\naddress = \"{VIP}\"\nport = {PORT}\nprotocol = \"udp\"\n"
    ));
    for i in 0..2 {
        config.push_str(&format!(
            "[[vip.backend]]\naddress = \"{}\"\n",
            server_addr(i)
        ));
    }
    let _echo: Vec<_> = (0..2).map(|i| lab.udp_echo(i, VIP, PORT)).collect();
    let lbd = Lbd::start(&lab, &config);
    let mut served: HashMap<String, usize> = HashMap::new();
    lab.client.run(|| {
        for i in 0..40u16 {
            let size = if i % 2 == 0 { 64 } else { 4_000 };
            let payload: Vec<u8> = (0..size).map(|b| (b as u16 ^ i) as u8).collect();
            let socket = std::net::UdpSocket::bind((lab::CLIENT, 24000 + i)).expect("bind");
            socket.set_read_timeout(Some(TIMEOUT)).unwrap();
            socket.send_to(&payload, (VIP, PORT)).expect("send");
            let mut buf = vec![0u8; 65_536];
            let len = socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("datagram {i} ({size} bytes): no echo: {e}"));
            let reply = &buf[..len];
            let colon = reply.iter().position(|&b| b == b':').expect("name:");
            assert_eq!(
                &reply[colon + 1..],
                &payload[..],
                "datagram {i} came back whole"
            );
            *served
                .entry(String::from_utf8_lossy(&reply[..colon]).into_owned())
                .or_default() += 1;
        }
    });
    assert_eq!(served.len(), 2, "both servers answer: {served:?}");
    let status = lbd.status();
    let later: u64 = status
        .split_whitespace()
        .skip_while(|w| *w != "fragment")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no fragment counter in:\n{status}"));
    assert_eq!(
        later, 40,
        "two later fragments each of 20 large datagrams:\n{status}"
    );
}

/// Least connections in the lab: 90 connections held open through an `lc` VIP whose
/// weights would skew Maglev 1:1:4 end up within 20% of even over three servers.
#[test]
fn least_connections_spreads_held_connections_evenly() {
    if !lb_tests::require_root("e2e") {
        return;
    }
    let lab = Lab::new("lc", 3);
    let config = lab
        .config(&[(0, 1), (1, 1), (2, 4)])
        .replace("scheduler = \"maglev\"", "scheduler = \"lc\"");
    let _lbd = Lbd::start(&lab, &config);
    let (held, served): (Vec<_>, Vec<String>) = lab.client.run(|| {
        (0..90u16)
            .map(|i| {
                let mut conn = lab::connect_vip(33000 + i, TIMEOUT).expect("connect via the VIP");
                let who = lab::whoami(&mut conn).expect("whoami");
                (conn, who)
            })
            .unzip()
    });
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for who in &served {
        *counts.entry(who.as_str()).or_default() += 1;
    }
    for name in ["rs1", "rs2", "rs3"] {
        let got = counts.get(name).copied().unwrap_or(0);
        assert!(
            got.abs_diff(30) <= 6,
            "{name}: {got} of 90 held connections ({counts:?})"
        );
    }
    drop(held);
}

/// `lbd status --stats` and `--rate`, as `ipvsadm -L -n --stats` / `--rate`: the VIP's
/// connections and packets since it was created, every verdict by name, and their growth
/// per second while a client keeps connecting.
#[test]
fn status_stats_and_rate_show_counters_and_their_growth_per_second() {
    if !lb_tests::require_root("e2e") {
        return;
    }
    let lab = Lab::new("st", 2);
    let lbd = Lbd::start(&lab, &lab.config(&[(0, 1), (1, 1)]));
    lab.client.run(|| {
        for i in 0..20u16 {
            let mut conn = lab::connect_vip(35000 + i, TIMEOUT).expect("connect");
            lab::whoami(&mut conn).expect("whoami");
        }
    });
    let field = |text: &str, starts: &str, column: usize| -> u64 {
        text.lines()
            .find(|l| l.trim_start().starts_with(starts))
            .and_then(|l| l.split_whitespace().nth(column))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {starts} column {column} in:\n{text}"))
    };
    let out = lbd.cli(&["status", "--instance", &lbd.instance, "--stats"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(field(&stats, "TCP", 2), 20, "Conns:\n{stats}");
    assert!(
        field(&stats, "TCP", 3) >= 60,
        "InPkts (SYN, ACK, request each):\n{stats}"
    );
    assert!(field(&stats, "tx ", 1) >= 60, "the tx verdict:\n{stats}");

    // A client connecting in a loop while --rate measures over 1 s.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let rate = std::thread::scope(|scope| {
        scope.spawn(|| {
            lab.client.run(|| {
                let mut i = 0u16;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 5_000 {
                    if let Ok(mut conn) = lab::connect_vip(36000 + i, TIMEOUT) {
                        let _ = lab::whoami(&mut conn);
                    }
                    i += 1;
                }
            })
        });
        let out = lbd.cli(&[
            "status",
            "--instance",
            &lbd.instance,
            "--rate",
            "--interval",
            "1",
        ]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        out
    });
    assert!(
        rate.status.success(),
        "{}",
        String::from_utf8_lossy(&rate.stderr)
    );
    let rate = String::from_utf8_lossy(&rate.stdout).into_owned();
    assert!(field(&rate, "TCP", 2) > 0, "CPS while connecting:\n{rate}");
    assert!(
        field(&rate, "TCP", 3) > field(&rate, "TCP", 2),
        "InPPS above CPS:\n{rate}"
    );
    let bad = lbd.cli(&[
        "status",
        "--instance",
        &lbd.instance,
        "--rate",
        "--interval",
        "0",
    ]);
    assert!(!bad.status.success(), "an interval of 0 is refused");
}

/// An IPv6 VIP beside the IPv4 one: `redis-cli -h <VIP6>` from the client reaches the real
/// servers (each answers with its own name, from the VIP on its `lo`), spread over all of
/// them, and `lbd status` shows the IPv6 VIP and its backends with their counters.
#[test]
fn an_ipv6_vip_is_reached_with_redis_cli_over_ipv6() {
    if !lb_tests::require_root("e2e") {
        return;
    }
    let lab = Lab::new("v6", 3);
    let mut config = lab.config(&[(0, 1), (1, 1), (2, 1)]);
    config.push_str(&format!("\n[[vip]]\naddress = \"{VIP6}\"\nport = 6379\n"));
    for i in 0..3 {
        config.push_str(&format!(
            "[[vip.backend]]\naddress = \"{}\"\n",
            server_addr6(i)
        ));
    }
    let lbd = lb_tests::lbd::Lbd::start(&lab, &config);

    const CONNECTIONS: usize = 30;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..CONNECTIONS {
        let out = lab.client.exec(
            "redis-cli",
            &[
                "-h",
                &VIP6.to_string(),
                "-p",
                "6379",
                "GET",
                lab::WHOAMI_KEY,
            ],
        );
        let who = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            out.status.success() && who.starts_with("rs"),
            "redis-cli over IPv6, connection {i}: {who:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        *counts.entry(who).or_default() += 1;
    }
    assert_eq!(
        counts.len(),
        3,
        "30 connections reach every server: {counts:?}"
    );

    let status = lbd.status();
    assert!(status.contains(&format!("TCP  [{VIP6}]:6379")), "{status}");
    let mut new_flows = 0;
    for i in 0..3 {
        let line = status
            .lines()
            .find(|l| l.contains(&format!("-> [{}]:6379", server_addr6(i))))
            .unwrap_or_else(|| panic!("no line for {}:\n{status}", server_addr6(i)));
        new_flows += line
            .split_whitespace()
            .nth(8)
            .unwrap()
            .parse::<u64>()
            .unwrap();
    }
    assert_eq!(
        new_flows, CONNECTIONS as u64,
        "new flows over the IPv6 backends:\n{status}"
    );
}

/// `lbd run` holds the instance lock until the very end, released only once its pins are
/// gone, also when it fails after attaching (here: its pid file cannot be written) and
/// returns early: otherwise a starter waiting for the lock would take the live pins for
/// stale and remove them, and the old daemon would then unpin the new one's.
#[test]
fn a_daemon_failing_after_attach_releases_its_lock_only_after_its_pins() {
    if !lb_tests::require_root("e2e") {
        return;
    }
    use lb_daemon::{instance, paths};
    use std::os::fd::AsRawFd;
    let lab = Lab::new("rl", 1);
    let instance_name = lab.prefix.clone();
    let config_path = lab.dir.join("lbd.toml");
    std::fs::write(&config_path, lab.config(&[(0, 1)])).unwrap();
    // The pid file cannot be written: a directory stands at its path (`start` only tries
    // remove_file on it).
    let pid_path = paths::pid_file(&instance_name);
    std::fs::create_dir_all(&pid_path).unwrap();
    let lock_path = paths::lock_file(&instance_name);
    let layout = lb_daemon::paths::PinLayout::for_instance(&instance_name);
    let log_path = lab.dir.join("lbd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(lb_tests::lbd::bin())
        .args(["--netns", &lab.director.name, "run", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut child = lb_tests::process::ChildGuard::new("lbd", child);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while instance::lock_holder(&lock_path).ok().flatten() != Some(child.pid()) {
        assert!(
            child.try_status().is_none(),
            "lbd exited before we saw it hold the lock:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        assert!(std::time::Instant::now() < deadline, "lbd never locked");
        std::thread::sleep(Duration::from_millis(1));
    }
    // A starter waiting on the same file: it wakes the moment the daemon lets go.
    let waiter = std::fs::File::open(&lock_path).unwrap();
    // SAFETY: flock on an open descriptor (blocking).
    assert_eq!(unsafe { libc::flock(waiter.as_raw_fd(), libc::LOCK_EX) }, 0);
    let pins_when_released = layout.dir.exists();
    let named = std::fs::metadata(&lock_path).is_ok();
    drop(waiter);
    let status = child.stop(Duration::from_secs(10));
    let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_dir(&pid_path);
    let _ = std::fs::remove_file(&lock_path);
    let _ = lb_daemon::dataplane::pins::remove_stale(&layout);
    assert!(
        !status.is_some_and(|s| s.success()),
        "lbd was expected to fail writing its pid file:\n{log_text}"
    );
    assert!(
        !pins_when_released,
        "the instance lock was free (file still named: {named}) while {} still held the \
         failing daemon's pins: a new `lbd run` would take them for stale\n{log_text}",
        layout.dir.display()
    );
}
