//! Health checks against real `redis-server`s in a DR lab: frozen, killed, busy, demoted
//! and promoted backends, passwords, scripts. Every wait polls `lbd status` with a deadline.
//! Needs root.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::unix::fs::OpenOptionsExt,
    time::{Duration, Instant},
};

use lb_tests::{
    lab::{self, Lab, REDIS_PORT, VIP, VIP2, WHOAMI_KEY, server_addr},
    lbd::Lbd,
    resp::{Connection, Reply},
};

const TIMEOUT: Duration = Duration::from_secs(3);
/// Long enough for several check rounds at the short test intervals, on a busy machine.
const WITHIN: Duration = Duration::from_secs(20);
const FAST_CHECK: &str = "interval = 0.2\ntimeout = 0.3\nfall = 2\nrise = 2";

/// A config with one `[[vip]]` per entry: (address, extra VIP keys, `[vip.check]` body,
/// backend server indices).
fn config(lab: &Lab, vips: &[(Ipv4Addr, &str, &str, &[usize])]) -> String {
    let mut text = format!(
        "instance = \"{}\"\n\n[director]\ninterfaces = [\"eth0\"]\n",
        lab.prefix
    );
    for (address, extra, check, backends) in vips {
        text.push_str(&format!(
            "\n[[vip]]\naddress = \"{address}\"\nport = {REDIS_PORT}\n{extra}\n\n[vip.check]\n{check}\n"
        ));
        for &i in backends.iter() {
            text.push_str(&format!(
                "\n[[vip.backend]]\naddress = \"{}\"\n",
                server_addr(i)
            ));
        }
    }
    text
}

/// One backend row of `lbd status`.
#[derive(Debug)]
struct Row {
    /// `None` when the maps do not hold the backend (a failed check removed it).
    weight: Option<u32>,
    health: String,
    reason: String,
}

/// The backend rows of `vip` in a status table.
fn rows(status: &str, vip: Ipv4Addr) -> BTreeMap<Ipv4Addr, Row> {
    let mut out = BTreeMap::new();
    let mut in_vip = false;
    let service = format!("{vip}:{REDIS_PORT}");
    for line in status.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("TCP ") || line.starts_with("UDP ") {
            in_vip = tokens.get(1) == Some(&service.as_str());
        } else if in_vip && tokens.first() == Some(&"->") && tokens.len() >= 12 {
            let Some(addr) = tokens[1]
                .split(':')
                .next()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            out.insert(
                addr,
                Row {
                    weight: tokens[3].parse().ok(),
                    health: tokens[9].to_owned(),
                    reason: tokens[12..].join(" "),
                },
            );
        }
    }
    out
}

/// Polls `lbd status` until `done` holds; `None` (with the last table) at the deadline.
fn poll(
    lbd: &Lbd,
    vip: Ipv4Addr,
    within: Duration,
    done: impl Fn(&BTreeMap<Ipv4Addr, Row>) -> bool,
) -> Result<BTreeMap<Ipv4Addr, Row>, String> {
    let deadline = Instant::now() + within;
    loop {
        let status = lbd.status();
        let rows = rows(&status, vip);
        if done(&rows) {
            return Ok(rows);
        }
        if Instant::now() >= deadline {
            return Err(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `lbd status` until `done` holds for `vip`'s rows; panics with the table and the
/// log at the deadline.
fn wait_rows(
    lbd: &Lbd,
    vip: Ipv4Addr,
    what: &str,
    done: impl Fn(&BTreeMap<Ipv4Addr, Row>) -> bool,
) -> BTreeMap<Ipv4Addr, Row> {
    let deadline = Instant::now() + WITHIN;
    loop {
        let status = lbd.status();
        let rows = rows(&status, vip);
        if done(&rows) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WITHIN:?}\n{status}\n--- lbd log ---\n{}",
            lbd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn row(rows: &BTreeMap<Ipv4Addr, Row>, server: usize) -> Option<&Row> {
    rows.get(&server_addr(server))
}

/// Whether server `i` is up and in the maps with a positive weight.
fn serving(rows: &BTreeMap<Ipv4Addr, Row>, i: usize) -> bool {
    row(rows, i).is_some_and(|r| r.health == "up" && r.weight.is_some_and(|w| w > 0))
}

/// Whether server `i` is out of the maps.
fn removed(rows: &BTreeMap<Ipv4Addr, Row>, i: usize) -> bool {
    row(rows, i).is_some_and(|r| r.weight.is_none())
}

/// Which servers `count` new connections to `service` reach (by their RDB file name, which
/// replication does not copy). Every connection must be served.
fn served(lab: &Lab, service: Ipv4Addr, password: Option<&str>, count: usize) -> BTreeSet<String> {
    let service = SocketAddr::V4(SocketAddrV4::new(service, REDIS_PORT));
    lab.client.run(|| {
        (0..count)
            .map(|_| {
                let mut conn = lab::connect_service(service, 0, TIMEOUT)
                    .unwrap_or_else(|err| panic!("connect {service}: {err}"));
                name(&mut conn, password)
            })
            .collect()
    })
}

/// Authenticates when asked and returns which server a connection reached (`rs1`, ...).
fn name(conn: &mut Connection, password: Option<&str>) -> String {
    if let Some(password) = password {
        assert_eq!(
            conn.command(&["AUTH", password]).expect("AUTH"),
            Reply::Simple("OK".into())
        );
    }
    match conn
        .command(&["CONFIG", "GET", "dbfilename"])
        .expect("CONFIG GET")
    {
        Reply::Array(items) => items[1]
            .text()
            .expect("dbfilename")
            .trim_end_matches(".rdb")
            .to_owned(),
        other => panic!("CONFIG GET dbfilename: {other:?}"),
    }
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_frozen_busy_or_killed_backend_leaves_the_rotation_and_returns() {
    if !lb_tests::require_root("health") {
        return;
    }
    let mut lab = Lab::new("hf", 3);
    let notified = lab.dir.join("notify.log");
    let notify = |state: &str| {
        format!(
            "notify_{state} = [\"/bin/sh\", \"-c\", \"echo {state} \\\"$@\\\" >> {}\", \"notify\"]",
            notified.display()
        )
    };
    let check = format!("{FAST_CHECK}\n{}\n{}", notify("up"), notify("down"));
    let lbd = Lbd::start(&lab, &config(&lab, &[(VIP, "", &check, &[0, 1, 2])]));
    wait_rows(&lbd, VIP, "all three up", |r| (0..3).all(|i| serving(r, i)));
    assert_eq!(served(&lab, VIP, None, 40), names(&["rs1", "rs2", "rs3"]));

    // Frozen: accepts connections (the kernel does) but never answers.
    lab.signal_redis(1, libc::SIGSTOP);
    let rows = wait_rows(&lbd, VIP, "rs2 removed when frozen", |r| {
        removed(r, 1) && row(r, 1).is_some_and(|r| r.health == "down")
    });
    assert!(
        row(&rows, 1).unwrap().reason.contains("timed out"),
        "{rows:?}"
    );
    assert_eq!(served(&lab, VIP, None, 40), names(&["rs1", "rs3"]));
    lab.signal_redis(1, libc::SIGCONT);
    wait_rows(&lbd, VIP, "rs2 back after rise", |r| serving(r, 1));
    // notify_down and notify_up ran, with backend, VIP and reason.
    let deadline = Instant::now() + WITHIN;
    loop {
        let log = std::fs::read_to_string(&notified).unwrap_or_default();
        let rs2 = format!("{}:{REDIS_PORT} {VIP}:{REDIS_PORT}", server_addr(1));
        let down = format!("down {rs2} ");
        if log
            .lines()
            .any(|l| l.starts_with(&down) && l.contains("timed out"))
            && log.contains(&format!("up {rs2} PONG"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "notify commands:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Killed: refused; restarted: back (with its identity set again).
    lab.signal_redis(2, libc::SIGKILL);
    let rows = wait_rows(&lbd, VIP, "rs3 removed when killed", |r| removed(r, 2));
    assert!(
        row(&rows, 2).unwrap().reason.contains("refused"),
        "{rows:?}"
    );
    lab.restart_redis(2);
    lab.redis(2, None, &["SET", WHOAMI_KEY, "rs3"]);
    wait_rows(&lbd, VIP, "rs3 back after restart", |r| serving(r, 2));

    // Busy: a script that never ends makes every other client get -BUSY.
    lab.redis(0, None, &["CONFIG", "SET", "busy-reply-threshold", "100"]);
    let busy = {
        let server = &lab.servers[0];
        let addr = SocketAddr::V4(SocketAddrV4::new(server.addr, REDIS_PORT));
        // A socket keeps the namespace it was made in.
        let mut conn = server
            .ns
            .run(|| Connection::connect(addr, Duration::from_secs(30)).expect("connect"));
        // Ends when SCRIPT KILL stops it.
        std::thread::spawn(move || conn.command(&["EVAL", "while true do end", "0"]))
    };
    let rows = wait_rows(&lbd, VIP, "rs1 removed while busy", |r| removed(r, 0));
    assert!(row(&rows, 0).unwrap().reason.contains("BUSY"), "{rows:?}");
    assert_eq!(served(&lab, VIP, None, 30), names(&["rs2", "rs3"]));
    lab.redis(0, None, &["SCRIPT", "KILL"]);
    let _ = busy.join();
    wait_rows(&lbd, VIP, "rs1 back after the script", |r| serving(r, 0));
    let log = lbd.log();
    for needle in ["backend down", "backend up"] {
        assert!(log.contains(needle), "{needle:?} not logged:\n{log}");
    }
}

const PASSWORD: &str = "lab-secret";

/// Sets `requirepass` and `masterauth` on every server, and makes servers 1.. replicas of
/// server 0; returns once every replica's link is up.
fn replicated_set(lab: &Lab) {
    for i in 0..lab.servers.len() {
        lab.redis(i, None, &["CONFIG", "SET", "masterauth", PASSWORD]);
        lab.redis(i, None, &["CONFIG", "SET", "requirepass", PASSWORD]);
    }
    let master = server_addr(0).to_string();
    for i in 1..lab.servers.len() {
        replica_of(lab, i, Some(&master));
    }
}

/// `REPLICAOF master 6379` (or `NO ONE`) on server `i`; waits for the link when following.
fn replica_of(lab: &Lab, i: usize, master: Option<&str>) {
    let port = REDIS_PORT.to_string();
    let args = match master {
        Some(master) => ["REPLICAOF", master, port.as_str()],
        None => ["REPLICAOF", "NO", "ONE"],
    };
    assert_eq!(
        lab.redis(i, Some(PASSWORD), &args),
        Reply::Simple("OK".into())
    );
    if master.is_none() {
        return;
    }
    let deadline = Instant::now() + WITHIN;
    loop {
        let info = lab
            .redis(i, Some(PASSWORD), &["INFO", "replication"])
            .text()
            .unwrap_or_default();
        if info.contains("master_link_status:up") && info.contains("master_sync_in_progress:0") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica {i} never synced:\n{info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_write_vip_follows_the_one_master_and_the_read_vip_takes_synced_replicas() {
    if !lb_tests::require_root("health") {
        return;
    }
    let lab = Lab::new("hr", 3);
    replicated_set(&lab);
    let check = format!("{FAST_CHECK}\npassword = \"{PASSWORD}\"");
    let lbd = Lbd::start(
        &lab,
        &config(
            &lab,
            &[
                (VIP, "role = \"master\"", &check, &[0, 1, 2]),
                (VIP2, "role = \"replica\"", &check, &[0, 1, 2]),
            ],
        ),
    );
    wait_rows(&lbd, VIP, "write VIP on rs1 only", |r| {
        serving(r, 0) && removed(r, 1) && removed(r, 2)
    });
    let rows = wait_rows(&lbd, VIP2, "read VIP on rs2 and rs3", |r| {
        removed(r, 0) && serving(r, 1) && serving(r, 2)
    });
    assert_eq!(row(&rows, 0).unwrap().health, "standby", "{rows:?}");
    assert_eq!(served(&lab, VIP, Some(PASSWORD), 20), names(&["rs1"]));
    assert_eq!(
        served(&lab, VIP2, Some(PASSWORD), 30),
        names(&["rs2", "rs3"])
    );

    // A client holding the write VIP, on rs1.
    let mut held = lab.client.run(|| {
        let mut conn = lab::connect_service(
            SocketAddr::V4(SocketAddrV4::new(VIP, REDIS_PORT)),
            0,
            TIMEOUT,
        )
        .expect("connect write VIP");
        assert_eq!(name(&mut conn, Some(PASSWORD)), "rs1");
        conn
    });

    // rs2 promoted before rs1 is demoted: two masters. The write VIP keeps rs1.
    replica_of(&lab, 1, None);
    wait_rows(&lbd, VIP2, "rs2 leaves the read VIP", |r| removed(r, 1));
    let rows = wait_rows(&lbd, VIP, "rs2 is a master on standby", |r| {
        row(r, 1)
            .is_some_and(|r| r.health == "standby" && r.reason.contains("is the master in service"))
    });
    assert!(serving(&rows, 0) && removed(&rows, 1), "{rows:?}");
    assert_eq!(served(&lab, VIP, Some(PASSWORD), 20), names(&["rs1"]));
    assert!(
        lbd.log()
            .contains("report role:master; keeping 198.18.0.11"),
        "{}",
        lbd.log()
    );

    // rs1 demoted (and rs3 follows rs2): the write VIP moves to rs2.
    let new_master = server_addr(1).to_string();
    replica_of(&lab, 0, Some(&new_master));
    replica_of(&lab, 2, Some(&new_master));
    wait_rows(&lbd, VIP, "write VIP on rs2 only", |r| {
        serving(r, 1) && removed(r, 0) && removed(r, 2)
    });
    assert_eq!(served(&lab, VIP, Some(PASSWORD), 20), names(&["rs2"]));
    wait_rows(&lbd, VIP2, "read VIP on rs1 and rs3", |r| {
        serving(r, 0) && serving(r, 2) && removed(r, 1)
    });

    // The held client is not left writing to a replica, nor hanging: its next segment goes
    // to rs2, which knows no such connection and resets it.
    let write = lab.client.run(|| held.command(&["SET", "k", "v"]));
    match write {
        Err(err) => assert_ne!(err.kind(), std::io::ErrorKind::TimedOut, "hung: {err}"),
        Ok(reply) => assert!(
            matches!(&reply, Reply::Error(e) if e.starts_with("READONLY")),
            "a write on the demoted master went through: {reply:?}"
        ),
    }
}

#[test]
fn a_wrong_password_is_down_with_the_reason_the_sorry_server_stands_in_and_a_reload_fixes_it() {
    if !lb_tests::require_root("health") {
        return;
    }
    // rs2 is the sorry server: it takes the VIP's clients while rs1 is down.
    let lab = Lab::new("hp", 2);
    lab.redis(0, None, &["CONFIG", "SET", "requirepass", PASSWORD]);
    let sorry = format!("sorry_server = \"{}\"", server_addr(1));
    let wrong = format!("{FAST_CHECK}\npassword = \"not-the-password\"");
    let lbd = Lbd::start(&lab, &config(&lab, &[(VIP, &sorry, &wrong, &[0])]));
    let rows = wait_rows(&lbd, VIP, "rs1 down", |r| {
        row(r, 0).is_some_and(|r| r.health == "down" && r.reason.contains("WRONGPASS"))
    });
    assert!(removed(&rows, 0), "{rows:?}");
    let rows = wait_rows(&lbd, VIP, "the sorry server standing in", |r| {
        row(r, 1).is_some_and(|r| r.health == "sorry" && r.weight == Some(1))
    });
    assert!(
        row(&rows, 1).unwrap().reason.contains("standing in"),
        "{rows:?}"
    );
    assert_eq!(served(&lab, VIP, None, 5), names(&["rs2"]));
    assert!(!lbd.log().contains(PASSWORD), "a password in the log");

    // The right password from a file: a changed check restarts it.
    let secret = lab.dir.join("redis.pass");
    std::fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
    let right = format!("{FAST_CHECK}\npassword_file = \"{}\"", secret.display());
    let out = lbd.reload(&config(&lab, &[(VIP, &sorry, &right, &[0])]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_rows(&lbd, VIP, "rs1 up, the sorry server idle", |r| {
        serving(r, 0) && row(r, 1).is_some_and(|r| r.weight.is_none())
    });
    assert_eq!(served(&lab, VIP, Some(PASSWORD), 5), names(&["rs1"]));
}

#[test]
fn script_checks_follow_exit_codes_and_dynamic_weights_and_are_killed_at_the_timeout() {
    if !lb_tests::require_root("health") {
        return;
    }
    let lab = Lab::new("hs", 2);
    // The script exits with the code written in code-<backend>, or hangs (with a child of
    // its own) when the file says so.
    let script = lab.dir.join("check.sh");
    std::fs::write(
        &script,
        format!(
            "code=$(cat {dir}/code-$LBD_BACKEND)\n\
             if [ \"$code\" = hang ]; then sleep 1000 & echo $! > {dir}/sleeper-$LBD_BACKEND; wait; fi\n\
             exit $code\n",
            dir = lab.dir.display()
        ),
    )
    .unwrap();
    let code = |i: usize, code: &str| {
        std::fs::write(lab.dir.join(format!("code-{}", server_addr(i))), code).unwrap()
    };
    code(0, "0");
    code(1, "1");
    let check = format!(
        "type = \"script\"\nscript = [\"/bin/sh\", \"{}\"]\ndynamic_weight = true\n{FAST_CHECK}",
        script.display()
    );
    let lbd = Lbd::start(&lab, &config(&lab, &[(VIP, "", &check, &[0, 1])]));
    let rows = wait_rows(&lbd, VIP, "rs1 up, rs2 never up", |r| {
        serving(r, 0) && row(r, 1).is_some_and(|r| r.reason == "exit 1")
    });
    assert!(removed(&rows, 1), "{rows:?}");

    // misc_dynamic: exit 2 + weight.
    code(1, "7");
    wait_rows(&lbd, VIP, "rs2 up with weight 5", |r| {
        row(r, 1).is_some_and(|r| r.health == "up" && r.weight == Some(5))
    });
    code(1, "2");
    wait_rows(&lbd, VIP, "rs2 drained by weight 0", |r| {
        row(r, 1).is_some_and(|r| r.health == "up" && r.weight == Some(0))
    });

    // A script that hangs is killed at the timeout, with what it started.
    code(0, "hang");
    let rows = wait_rows(&lbd, VIP, "rs1 removed after hanging", |r| removed(r, 0));
    assert!(
        row(&rows, 0).unwrap().reason.contains("timed out"),
        "{rows:?}"
    );
    let sleeper = std::fs::read_to_string(lab.dir.join(format!("sleeper-{}", server_addr(0))))
        .expect("the hanging script wrote its child's pid");
    let sleeper = sleeper.trim();
    let deadline = Instant::now() + WITHIN;
    // Gone, or a zombie of an exited parent on its way out: never left running.
    while std::fs::read_to_string(format!("/proc/{sleeper}/stat"))
        .is_ok_and(|stat| stat.contains("(sleep)") && !stat.contains(") Z "))
    {
        assert!(
            Instant::now() < deadline,
            "the script's child {sleeper} survived the timeout"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_write_vip_follows_a_sentinel_failover_with_no_scripts() {
    if !lb_tests::require_root("health") {
        return;
    }
    let lab = Lab::new("hn", 3);
    replicated_set(&lab);
    // Declared after the lab: stopped before it goes.
    let _sentinels: Vec<_> = (0..3)
        .map(|i| lab.start_sentinel(i, "lab", server_addr(0), 2, Some(PASSWORD)))
        .collect();
    // Each Sentinel must know the other two before a failover can be voted.
    for i in 0..3 {
        let addr = SocketAddr::V4(SocketAddrV4::new(server_addr(i), lab::SENTINEL_PORT));
        let deadline = Instant::now() + Duration::from_secs(40);
        lab.servers[i].ns.run(|| {
            loop {
                let known = Connection::connect(addr, TIMEOUT)
                    .and_then(|mut c| c.command(&["SENTINEL", "SENTINELS", "lab"]))
                    .map(|r| matches!(r, Reply::Array(ref a) if a.len() == 2))
                    .unwrap_or(false);
                if known {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "Sentinel {i} never met the others"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
    let check = format!("{FAST_CHECK}\npassword = \"{PASSWORD}\"");
    let sentinel = format!(
        "role = \"master\"\n\n[vip.sentinel]\nmaster_name = \"lab\"\naddresses = [{}]",
        (0..3)
            .map(|i| format!("\"{}:{}\"", server_addr(i), lab::SENTINEL_PORT))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let lbd = Lbd::start(&lab, &config(&lab, &[(VIP, &sentinel, &check, &[0, 1, 2])]));
    wait_rows(&lbd, VIP, "write VIP on rs1", |r| {
        serving(r, 0) && removed(r, 1) && removed(r, 2)
    });

    lab.signal_redis(0, libc::SIGKILL);
    // Sentinel votes and promotes a replica; the VIP follows. Never two at once meanwhile.
    let deadline = Instant::now() + Duration::from_secs(40);
    let new_master = loop {
        let status = lbd.status();
        let rows = rows(&status, VIP);
        let up: Vec<usize> = (0..3).filter(|&i| serving(&rows, i)).collect();
        assert!(up.len() <= 1, "two backends serve the write VIP:\n{status}");
        if let [i] = up[..]
            && i != 0
        {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "the write VIP did not follow the failover:\n{status}\n{}",
            lbd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let name = format!("rs{}", new_master + 1);
    assert_eq!(served(&lab, VIP, Some(PASSWORD), 10), names(&[&name]));
    // Asking again may find the promoted replica before Sentinel announces the switch (it
    // answers with it as soon as the failover reconfigures replicas); the announcement,
    // through the subscription, comes in any case.
    let deadline = Instant::now() + Duration::from_secs(40);
    while !lbd.log().contains("+switch-master lab") {
        assert!(
            Instant::now() < deadline,
            "no +switch-master seen:\n{}",
            lbd.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(lbd.log().contains("Sentinel names the master"));
}

// Found by review: each failed before its fix.
/// Two stand-alone redis-servers both report `role:master` (a restarted old master that
/// Sentinel has not demoted yet looks exactly like this). Docs: "if none of the claimants
/// was in service (at start, ...), it sends to none and logs an error naming them".
/// lbd gives the write VIP to whichever its checker happens to reach first.
#[test]
fn two_masters_at_start_get_no_flows() {
    if !lb_tests::require_root("health") {
        return;
    }
    let lab = Lab::new("rv1", 2);
    let check = "interval = 0.2\ntimeout = 0.3\nfall = 2\nrise = 2";
    let lbd = Lbd::start(
        &lab,
        &config(&lab, &[(VIP, "role = \"master\"", check, &[0, 1])]),
    );
    let rows = wait_rows(&lbd, VIP, "both checked", |r| {
        (0..2).all(|i| row(r, i).is_some_and(|r| r.health != "pending"))
    });
    assert!(
        !serving(&rows, 0) && !serving(&rows, 1),
        "two claimants at start, one got the write VIP: {rows:?}\n--- lbd log ---\n{}",
        lbd.log()
    );
}

/// `fall = 10` at a 0.2 s interval: a master must survive one slow check, even while a
/// second claimant (a promoted replica) waits on standby: one failed check must neither
/// take the master out nor hand the write VIP to the other.
#[test]
fn one_slow_check_does_not_move_the_write_vip() {
    if !lb_tests::require_root("health") {
        return;
    }
    let lab = Lab::new("rv2", 2);
    let master = server_addr(0).to_string();
    let port = REDIS_PORT.to_string();
    lab.redis(1, None, &["REPLICAOF", &master, &port]);
    let check = "interval = 0.2\ntimeout = 0.3\nfall = 10\nrise = 2";
    let lbd = Lbd::start(
        &lab,
        &config(&lab, &[(VIP, "role = \"master\"", check, &[0, 1])]),
    );
    wait_rows(&lbd, VIP, "rs1 in service", |r| {
        serving(r, 0) && removed(r, 1)
    });
    lab.redis(1, None, &["REPLICAOF", "NO", "ONE"]);
    wait_rows(&lbd, VIP, "rs2, a second master, on standby", |r| {
        row(r, 1)
            .is_some_and(|r| r.health == "standby" && r.reason.contains("is the master in service"))
    });
    let (kept, other) = (0, 1);
    // One slow answer (well under fall x interval = 2 s).
    lab.signal_redis(kept, libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(450));
    lab.signal_redis(kept, libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(2));
    let after = rows(&lbd.status(), VIP);
    assert!(
        serving(&after, kept) && removed(&after, other),
        "a 0.45 s stall of the master (fall = 10) moved the write VIP: {after:?}\n--- lbd log ---\n{}",
        lbd.log()
    );
}

/// dynamic_weight: a backend that asked to be drained (exit 2 = weight 0) and then starts
/// failing (fewer than `fall` times) goes back to its configured weight: new flows go to it.
#[test]
fn a_drained_backend_that_fails_gets_no_flows() {
    if !lb_tests::require_root("health") {
        return;
    }
    let lab = Lab::new("rv3", 1);
    let script = lab.dir.join("check.sh");
    let code = lab.dir.join("code");
    std::fs::write(&script, format!("exit $(cat {})\n", code.display())).unwrap();
    std::fs::write(&code, "2").unwrap();
    let check = format!(
        "type = \"script\"\nscript = [\"/bin/sh\", \"{}\"]\ndynamic_weight = true\ninterval = 0.2\ntimeout = 1\nfall = 100\nrise = 1",
        script.display()
    );
    let lbd = Lbd::start(&lab, &config(&lab, &[(VIP, "", &check, &[0])]));
    wait_rows(&lbd, VIP, "rs1 up, drained to weight 0", |r| {
        row(r, 0).is_some_and(|r| r.health == "up" && r.weight == Some(0))
    });
    std::fs::write(&code, "1").unwrap();
    let failing = poll(&lbd, VIP, Duration::from_secs(3), |r| {
        row(r, 0).is_some_and(|r| r.reason == "exit 1" && r.weight != Some(0))
    });
    if let Ok(rows) = failing {
        panic!("the failing, drained backend takes new flows again: {rows:?}");
    }
}

/// A reload that changes a check restarts its checkers "from the initial state". Reports the
/// old checker queued while the reload ran are counted for the new one: here the new check
/// always fails (/bin/false), yet a stale success of the old check (/bin/true) brings the
/// backend up, where `fall = 100` keeps it. (Neighbours are flushed so the reload's MAC
/// resolution takes a few tens of ms, as on any reload that must ARP.)
#[test]
fn a_changed_check_does_not_count_the_old_checkers_reports() {
    if !lb_tests::require_root("health") {
        return;
    }
    let lab = Lab::new("rv4", 3);
    let old = "type = \"script\"\nscript = [\"/bin/true\"]\ninterval = 0.01\ntimeout = 1\nfall = 100\nrise = 1";
    let new = "type = \"script\"\nscript = [\"/bin/false\"]\ninterval = 5\ntimeout = 1\nfall = 100\nrise = 1";
    let lbd = Lbd::start(&lab, &config(&lab, &[(VIP, "", old, &[0, 1, 2])]));
    for round in 0..3 {
        let out = lbd.reload(&config(&lab, &[(VIP, "", old, &[0, 1, 2])]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_rows(&lbd, VIP, "all up with /bin/true", |r| {
            (0..3).all(|i| serving(r, i))
        });
        lab.director.ip(&["neigh", "flush", "all"]);
        let out = lbd.reload(&config(&lab, &[(VIP, "", new, &[0, 1, 2])]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // /bin/false never succeeds: nothing may come up under the new check.
        let up = poll(&lbd, VIP, Duration::from_secs(2), |r| {
            (0..3).any(|i| row(r, i).is_some_and(|r| r.health == "up"))
        });
        if let Ok(rows) = up {
            panic!(
                "round {round}: a backend is up under a check that always fails (a stale report of the old checker): {rows:?}"
            );
        }
    }
}

/// A `password_file` that blocks on open (a FIFO here; a hung NFS/FUSE mount alike) is read
/// with blocking std::fs inside the async check: `timeout` cannot bound it, and two such
/// checks occupy both runtime workers, so *every other* check stops: rs3 on an unrelated
/// VIP (tcp check) is not taken out when it dies.
#[test]
fn a_blocking_password_file_does_not_stop_other_checks() {
    if !lb_tests::require_root("health") {
        return;
    }
    let lab = Lab::new("rv5", 3);
    let fifo = lab.dir.join("pass.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let redis = format!(
        "interval = 0.2\ntimeout = 0.3\nfall = 2\nrise = 1\npassword_file = \"{}\"",
        fifo.display()
    );
    let tcp = "type = \"tcp\"\ninterval = 0.2\ntimeout = 0.3\nfall = 2\nrise = 1";
    let lbd = Lbd::start(
        &lab,
        &config(&lab, &[(VIP, "", &redis, &[0, 1]), (VIP2, "", tcp, &[2])]),
    );
    // rs3 may be seen up before both blocking checks have started; then it dies.
    let _ = poll(&lbd, VIP2, Duration::from_secs(5), |r| serving(r, 2));
    std::thread::sleep(Duration::from_secs(1));
    lab.signal_redis(2, libc::SIGKILL);
    let rs3 = poll(&lbd, VIP2, Duration::from_secs(10), |r| removed(r, 2));
    let status = lbd.status();
    // Unblock the checkers (a writer opens the FIFO) so lbd can stop.
    for _ in 0..4 {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
        if let Ok(mut f) = f {
            use std::io::Write;
            let _ = f.write_all(b"x\n");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        rs3.is_ok(),
        "rs3 (tcp check, other VIP) killed, still in service 10 s later: checks stopped:\n{status}"
    );
}

#[test]
fn load_aware_weights_steer_new_clients_away_and_a_full_backend_is_drained() {
    if !lb_tests::require_root("health") {
        return;
    }
    let lab = Lab::new("hl", 2);
    let check =
        format!("{FAST_CHECK}\nload_weights = \"connected_clients\"\nmax_memory_share = 0.5");
    let lbd = Lbd::start(&lab, &config(&lab, &[(VIP, "", &check, &[0, 1])]));
    wait_rows(&lbd, VIP, "both up at full weight", |r| {
        (0..2).all(|i| row(r, i).is_some_and(|r| r.health == "up" && r.weight == Some(100)))
    });

    // 80 long-lived clients on rs1 (straight to it, as clients of an earlier day would be).
    let rs1 = SocketAddr::V4(SocketAddrV4::new(server_addr(0), REDIS_PORT));
    let held: Vec<Connection> = lab.client.run(|| {
        (0..80)
            .map(|_| {
                let mut conn = Connection::connect(rs1, TIMEOUT).expect("connect rs1");
                conn.command(&["PING"]).expect("PING");
                conn
            })
            .collect()
    });
    let rows = wait_rows(&lbd, VIP, "rs1's weight scaled down", |r| {
        row(r, 0).is_some_and(|r| r.weight.is_some_and(|w| w <= 20))
            && row(r, 1).is_some_and(|r| r.weight == Some(100))
    });
    assert!(
        row(&rows, 0).unwrap().reason.contains("load factor"),
        "{rows:?}"
    );
    // New clients through the VIP now go mostly to rs2 (about 100 : 10).
    let sample: Vec<String> = {
        let service = SocketAddr::V4(SocketAddrV4::new(VIP, REDIS_PORT));
        lab.client.run(|| {
            (0..40)
                .map(|_| {
                    let mut conn = lab::connect_service(service, 0, TIMEOUT).expect("connect");
                    name(&mut conn, None)
                })
                .collect()
        })
    };
    let to_rs2 = sample.iter().filter(|n| *n == "rs2").count();
    assert!(
        to_rs2 >= 30,
        "{to_rs2} of 40 new clients went to the idle rs2:\n{}\n{}",
        lbd.status(),
        lbd.log()
    );
    drop(held);
    wait_rows(&lbd, VIP, "rs1 back to full weight", |r| {
        row(r, 0).is_some_and(|r| r.weight == Some(100))
    });

    // rs1 over half its maxmemory: drained (weight 0, tracked flows stay), then back.
    let used: u64 = match lab.redis(0, None, &["INFO", "memory"]).text() {
        Some(info) => info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory"),
        None => panic!("INFO memory"),
    };
    let maxmemory = |bytes: u64| {
        lab.redis(0, None, &["CONFIG", "SET", "maxmemory", &bytes.to_string()]);
    };
    maxmemory(used * 3 / 2);
    let rows = wait_rows(&lbd, VIP, "rs1 drained", |r| {
        row(r, 0).is_some_and(|r| r.health == "drained" && r.weight == Some(0))
    });
    assert!(
        row(&rows, 0).unwrap().reason.contains("maxmemory"),
        "{rows:?}"
    );
    assert_eq!(served(&lab, VIP, None, 10), names(&["rs2"]));
    maxmemory(used * 4);
    wait_rows(&lbd, VIP, "rs1 back", |r| {
        row(r, 0).is_some_and(|r| r.health == "up" && r.weight == Some(100))
    });
}

/// A password set on a checked Redis while lbd has none configured: the checker's kept
/// connection stays authenticated, but every new client gets NOAUTH. The connection is
/// renewed every 20 intervals (at least 5 s), so the check sees it within that.
#[test]
fn a_password_set_on_a_checked_redis_is_noticed() {
    if !lb_tests::require_root("health") {
        return;
    }
    let lab = Lab::new("rq", 1);
    let lbd = Lbd::start(&lab, &config(&lab, &[(VIP, "", FAST_CHECK, &[0])]));
    wait_rows(&lbd, VIP, "rs1 up", |r| serving(r, 0));
    lab.redis(0, None, &["CONFIG", "SET", "requirepass", PASSWORD]);
    let fresh = lab.redis(0, None, &["PING"]);
    assert!(
        matches!(&fresh, Reply::Error(e) if e.starts_with("NOAUTH")),
        "a new connection: {fresh:?}"
    );
    let got = poll(&lbd, VIP, Duration::from_secs(10), |r| {
        row(r, 0).is_some_and(|r| r.health == "down" && r.reason.contains("NOAUTH"))
    });
    assert!(
        got.is_ok(),
        "10 s after requirepass was set, a new connection gets {fresh:?} but rs1 is still shown up and serving:\n{}",
        got.unwrap_err()
    );
}

/// A reload that resolves MACs (ARP waits up to 3 s for an address nobody has) runs off the
/// daemon's loop: a backend frozen meanwhile is taken out while the reload still waits.
#[test]
fn checks_and_their_applies_go_on_while_a_reload_resolves_macs() {
    if !lb_tests::require_root("health") {
        return;
    }
    let lab = Lab::new("hw", 2);
    let lbd = Lbd::start(&lab, &config(&lab, &[(VIP, "", FAST_CHECK, &[0, 1])]));
    wait_rows(&lbd, VIP, "both up", |r| serving(r, 0) && serving(r, 1));
    // Nobody holds 198.18.0.99: resolving it waits out the ARP timeout, then fails.
    let unresolvable = config(&lab, &[(VIP, "", FAST_CHECK, &[0, 1])]).replace(
        "\n[[vip.backend]]\naddress = \"198.18.0.11\"\n",
        "\n[[vip.backend]]\naddress = \"198.18.0.11\"\n\n[[vip.backend]]\naddress = \"198.18.0.99\"\n",
    );
    let reloaded = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reload = scope.spawn(|| {
            let out = lbd.reload(&unresolvable);
            reloaded.store(true, std::sync::atomic::Ordering::SeqCst);
            out
        });
        // Give the reload a moment to start resolving, then freeze rs2.
        wait_rows(&lbd, VIP, "still serving during the reload", |r| {
            serving(r, 1)
        });
        lab.signal_redis(1, libc::SIGSTOP);
        wait_rows(&lbd, VIP, "rs2 removed", |r| removed(r, 1));
        assert!(
            !reloaded.load(std::sync::atomic::Ordering::SeqCst),
            "rs2 was only removed after the reload ended: health waited for it"
        );
        let out = reload.join().expect("reload thread");
        assert!(
            !out.status.success(),
            "the reload cannot resolve 198.18.0.99"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("198.18.0.99"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    lab.signal_redis(1, libc::SIGCONT);
}
