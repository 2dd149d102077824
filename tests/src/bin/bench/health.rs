//! Health-check benchmarks in the lab: how fast a frozen backend leaves the maps, how fast a
//! Sentinel failover reaches them, and what checking 1,000 backends costs the daemon.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use aya::maps::{Array, MapData};
use lb_common::{BACKEND_F_ACTIVE, Backend, MAP_BACKENDS};
use lb_daemon::{
    config::format_mac,
    dataplane::{pins::PinnedMaps, snapshot::MapSource},
    netdev,
};
use lb_tests::{
    lab::{Lab, REDIS_PORT, SENTINEL_PORT, VIP, server_addr},
    lbd::Lbd,
    resp::{Connection, Reply},
};

use super::median;

const RUNS: usize = 5;
/// Every wait in here gives up after this long.
const WITHIN: Duration = Duration::from_secs(30);

/// The live entries of the BACKENDS map, as (id, entry).
fn backends(maps: &PinnedMaps) -> Vec<(u32, Backend)> {
    let array: Array<&MapData, Backend> =
        Array::try_from(maps.map(MAP_BACKENDS).expect("BACKENDS")).expect("BACKENDS array");
    (1..array.len())
        .filter_map(|id| {
            let entry = array.get(&id, 0).ok()?;
            (entry.flags & BACKEND_F_ACTIVE != 0).then_some((id, entry))
        })
        .collect()
}

fn addr_of(entry: &Backend) -> Ipv4Addr {
    Ipv4Addr::from(entry.addr[3].to_ne_bytes())
}

/// Polls (every millisecond) until `done` holds for the live backend entries; returns when.
fn await_maps(maps: &PinnedMaps, what: &str, done: impl Fn(&[(u32, Backend)]) -> bool) -> Instant {
    let deadline = Instant::now() + WITHIN;
    loop {
        if done(&backends(maps)) {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{what}: not within {WITHIN:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether `addr` is in the maps with a positive weight.
fn in_rotation(entries: &[(u32, Backend)], addr: Ipv4Addr) -> bool {
    entries
        .iter()
        .any(|(_, b)| addr_of(b) == addr && b.weight > 0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn health_benchmarks(report: &mut String) {
    let _ = writeln!(report, "## Health checks\n");
    frozen_backend_removal(report);
    sentinel_switch(report);
    checker_cost(report);
}

/// `kill -STOP` of a backend to its removal from the maps.
fn frozen_backend_removal(report: &mut String) {
    let (interval, timeout, fall) = (0.5, 0.5, 2u32);
    eprintln!("health: kill -STOP to removal, {RUNS} runs");
    let lab = Lab::new("bhs", 2);
    let config = lab.config(&[(0, 1), (1, 1)]).replacen(
        "scheduler = \"maglev\"\n",
        &format!(
            "scheduler = \"maglev\"\n\n[vip.check]\ninterval = {interval}\ntimeout = {timeout}\nfall = {fall}\nrise = 1\n"
        ),
        1,
    );
    let lbd = Lbd::start(&lab, &config);
    let maps = PinnedMaps::open(&lbd.pin_layout(), &lbd.instance).expect("pinned maps");
    let rs2 = server_addr(1);
    let mut latencies = Vec::new();
    for _ in 0..RUNS {
        await_maps(&maps, "both in rotation", |e| {
            in_rotation(e, server_addr(0)) && in_rotation(e, rs2)
        });
        // Let a check pass after the return, so each run starts from a steady state.
        std::thread::sleep(Duration::from_secs_f64(interval * 2.0));
        let frozen = Instant::now();
        lab.signal_redis(1, libc::SIGSTOP);
        let removed = await_maps(&maps, "rs2 removed", |e| !in_rotation(e, rs2));
        latencies.push(ms(removed - frozen));
        lab.signal_redis(1, libc::SIGCONT);
    }
    let bound = ms(Duration::from_secs_f64(fall as f64 * interval + timeout)) + 50.0;
    let med = median(latencies.clone());
    let _ = writeln!(
        report,
        "### A frozen backend leaves the maps\n\n`kill -STOP` of one of two redis-servers, then polling the pinned BACKENDS map every \
millisecond until its entry is retired; {RUNS} runs, the backend thawed and back in between. Check: redis, \
interval {interval} s, timeout {timeout} s, fall {fall}.\n"
    );
    let _ = writeln!(
        report,
        "| measure | median | runs | target (fall x interval + timeout + 50 ms) | |\n|---|---:|---|---:|---|"
    );
    let _ = writeln!(
        report,
        "| kill -STOP -> removed from the maps | {med:.0} ms | {} | {bound:.0} ms | {} |\n",
        latencies
            .iter()
            .map(|l| format!("{l:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        if med <= bound { "met" } else { "NOT met" }
    );
}

/// Sentinel's `+switch-master` (seen by a subscriber of our own) to the write VIP's map update.
fn sentinel_switch(report: &mut String) {
    eprintln!("health: Sentinel switch to map update, {RUNS} runs");
    let lab = Lab::new("bhn", 2);
    // rs2 replicates rs1; one Sentinel per server, quorum 1 (manual failovers need no vote).
    let master = server_addr(0).to_string();
    let port = REDIS_PORT.to_string();
    lab.redis(1, None, &["REPLICAOF", &master, &port]);
    let _sentinels: Vec<_> = (0..2)
        .map(|i| lab.start_sentinel(i, "lab", server_addr(0), 1, None))
        .collect();
    let sentinel = SocketAddr::V4(SocketAddrV4::new(server_addr(0), SENTINEL_PORT));
    // Retried while the Sentinel starts listening.
    let ask = |args: &[&str]| -> Reply {
        let deadline = Instant::now() + WITHIN;
        lab.servers[0].ns.run(|| {
            loop {
                match Connection::connect(sentinel, Duration::from_secs(3))
                    .and_then(|mut c| c.command(args))
                {
                    Ok(reply) => return reply,
                    Err(err) => assert!(Instant::now() < deadline, "Sentinel: {err}"),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Sentinel must see rs2 as a replica before it can fail over to it.
    let deadline = Instant::now() + WITHIN;
    while !matches!(ask(&["SENTINEL", "REPLICAS", "lab"]), Reply::Array(ref a) if !a.is_empty()) {
        assert!(
            Instant::now() < deadline,
            "Sentinel never found the replica"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let addresses = format!("[\"{sentinel}\"]");
    let config = lab.config(&[(0, 1), (1, 1)]).replacen(
        "scheduler = \"maglev\"\n",
        &format!(
            "scheduler = \"maglev\"\nrole = \"master\"\n\n[vip.check]\ninterval = 0.5\ntimeout = 0.5\nfall = 2\nrise = 1\n\n\
             [vip.sentinel]\naddresses = {addresses}\nmaster_name = \"lab\"\n"
        ),
        1,
    );
    let lbd = Lbd::start(&lab, &config);
    let maps = PinnedMaps::open(&lbd.pin_layout(), &lbd.instance).expect("pinned maps");
    // Our own subscriber: when the announcement reaches a client.
    let mut subscriber = lab.servers[0].ns.run(|| {
        let mut c = Connection::connect(sentinel, Duration::from_secs(60)).expect("subscribe");
        c.command(&["SUBSCRIBE", "+switch-master"])
            .expect("SUBSCRIBE");
        c
    });
    let mut latencies = Vec::new();
    let mut current = server_addr(0);
    for run in 0..RUNS {
        let next = if current == server_addr(0) {
            server_addr(1)
        } else {
            server_addr(0)
        };
        await_maps(&maps, "the master alone in rotation", |e| {
            in_rotation(e, current) && !in_rotation(e, next)
        });
        // Sentinel refuses a failover while the last one's timeout runs: retry until taken.
        let deadline = Instant::now() + WITHIN;
        while ask(&["SENTINEL", "FAILOVER", "lab"]) != Reply::Simple("OK".into()) {
            assert!(Instant::now() < deadline, "Sentinel refused to fail over");
            std::thread::sleep(Duration::from_millis(200));
        }
        // The map watcher runs while we wait for the announcement.
        let (announced, moved) = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                await_maps(&maps, "the VIP moved", |e| {
                    in_rotation(e, next) && !in_rotation(e, current)
                })
            });
            loop {
                let message = subscriber.receive().expect("+switch-master within 60 s");
                if let Reply::Array(parts) = message
                    && parts.first().and_then(|p| p.text()).as_deref() == Some("message")
                {
                    break (Instant::now(), watcher.join().expect("watcher"));
                }
            }
        });
        let delta = if moved >= announced {
            ms(moved - announced)
        } else {
            -ms(announced - moved)
        };
        eprintln!("   run {run}: map update {delta:+.0} ms from +switch-master");
        latencies.push(delta);
        current = next;
    }
    let med = median(latencies.clone());
    let _ = writeln!(
        report,
        "### A Sentinel failover reaches the maps\n\n`SENTINEL FAILOVER` between two redis-servers, {RUNS} runs; the time from `+switch-master` \
reaching a subscriber of the bench's own to the write VIP's new master in the pinned maps (polled every millisecond). Negative: \
lbd moved first, on Sentinel's answer to `get-master-addr-by-name`, which names the promoted replica as soon as the failover \
reconfigures the other replicas, before the announcement.\n"
    );
    let _ = writeln!(
        report,
        "| measure | median | runs | target | |\n|---|---:|---|---:|---|"
    );
    let _ = writeln!(
        report,
        "| +switch-master -> write VIP's map update | {med:+.0} ms | {} | <= 100 ms | {} |\n",
        latencies
            .iter()
            .map(|l| format!("{l:+.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        if med <= 100.0 { "met" } else { "NOT met" }
    );
}

/// CPU and memory of the daemon checking 1,000 backends at a 1 s interval.
fn checker_cost(report: &mut String) {
    const BACKENDS: u32 = 1000;
    eprintln!("health: {BACKENDS} backends at a 1 s interval");
    let lab = Lab::new("bhc", 1);
    let rs1 = &lab.servers[0];
    // 1,000 addresses on rs1 (one redis-server answers them all), reachable from the director.
    let addrs: Vec<Ipv4Addr> = (0..BACKENDS)
        .map(|i| Ipv4Addr::new(198, 18, 4 + (i / 250) as u8, 1 + (i % 250) as u8))
        .collect();
    let batch: String = addrs
        .iter()
        .map(|a| format!("addr add {a}/32 dev eth0\n"))
        .collect();
    let file = lab.dir.join("addrs.batch");
    std::fs::write(&file, batch).expect("batch");
    rs1.ns.ip(&["-batch", file.to_str().expect("path")]);
    lab.director
        .ip(&["route", "add", "198.18.4.0/22", "dev", "eth0"]);
    let mac = format_mac(
        &rs1.ns
            .run(|| netdev::interface("eth0").expect("rs1 eth0").mac),
    );
    let mut config = format!(
        "instance = \"{}\"\n\n[director]\ninterfaces = [\"eth0\"]\n\n[[vip]]\naddress = \"{VIP}\"\nport = {REDIS_PORT}\n\n\
         [vip.check]\ninterval = 1\ntimeout = 1\n",
        lab.prefix
    );
    for a in &addrs {
        let _ = write!(
            config,
            "\n[[vip.backend]]\naddress = \"{a}\"\nmac = \"{mac}\"\n"
        );
    }
    let lbd = Lbd::start(&lab, &config);
    let maps = PinnedMaps::open(&lbd.pin_layout(), &lbd.instance).expect("pinned maps");
    await_maps(&maps, "1,000 backends up", |e| e.len() == BACKENDS as usize);
    // Steady state: every backend up; measure over a window of whole intervals.
    std::thread::sleep(Duration::from_secs(2));
    let window = Duration::from_secs(20);
    eprintln!(
        "   all up; measuring lbd (pid {}) for {} s",
        lbd.pid(),
        window.as_secs()
    );
    let ((user0, sys0), t0) = (cpu_ticks(lbd.pid()), Instant::now());
    std::thread::sleep(window);
    let ((user1, sys1), t1) = (cpu_ticks(lbd.pid()), Instant::now());
    // SAFETY: sysconf has no preconditions.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let share = |ticks: u64| ticks as f64 / ticks_per_sec / (t1 - t0).as_secs_f64() * 100.0;
    let (user, sys) = (share(user1 - user0), share(sys1 - sys0));
    let cpu = user + sys;
    let rss_mb = rss_kb(lbd.pid()) as f64 / 1024.0;
    let _ = writeln!(
        report,
        "### Checking 1,000 backends\n\n{BACKENDS} backends (addresses on one redis-server), redis check at a 1 s interval, all up; \
the daemon's CPU (user + system, from /proc) over {} s, and its resident memory at the end.\n",
        window.as_secs()
    );
    let _ = writeln!(
        report,
        "| measure | value | target | |\n|---|---:|---:|---|"
    );
    let _ = writeln!(
        report,
        "| lbd CPU, % of one core (user {user:.1} + system {sys:.1}) | {cpu:.1} | < 5 | {} |",
        if cpu < 5.0 { "met" } else { "NOT met" }
    );
    let _ = writeln!(
        report,
        "| lbd RSS | {rss_mb:.1} MB | < 64 MB | {} |\n",
        if rss_mb < 64.0 { "met" } else { "NOT met" }
    );
}

/// (utime, stime) of a process, in clock ticks.
pub fn cpu_ticks(pid: i32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces), 1-based: utime 14, stime 15.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    (
        fields[11].parse::<u64>().expect("utime"),
        fields[12].parse::<u64>().expect("stime"),
    )
}

fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
