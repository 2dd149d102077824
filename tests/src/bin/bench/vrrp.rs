//! VRRP failover as a client sees it: a probe opens a new connection to the VIP and PINGs
//! every 10 ms while the master crashes (`kill -9` and its link gone, as a host that dies)
//! or stops (`SIGTERM`); the gap is the longest time without a successful probe. The same
//! lab runs lbd's VRRP, then keepalived 2.2.7 moving the VIP between two lbds without VRRP
//! (this kernel has no IPVS), with the same priorities (150/100) and advert interval. Also
//! counted: connections opened through the old master that break.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use lb_tests::{
    lab::{self, Lab, VIP},
    lbd::Lbd,
    process::ChildGuard,
    vrrp::{config, hold, holds_vip, keepalived, wait_state, wait_vip},
};

const TRIALS: usize = 5;
const PROBE_EVERY: Duration = Duration::from_millis(10);
const HELD: usize = 50;

#[derive(Clone, Copy, PartialEq)]
enum Failure {
    Crash,
    Stop,
}

#[derive(Clone, Copy, PartialEq)]
enum Vrrp {
    Lbd,
    Keepalived,
}

/// One setting: lbd's `[[vrrp]]` lines and keepalived's.
struct Setting {
    label: &'static str,
    lbd: &'static str,
    keepalived: &'static str,
    /// Longest wait for the first master.
    settle: Duration,
}

const SETTINGS: [Setting; 2] = [
    Setting {
        label: "v3, advert 0.1 s",
        lbd: "version = 3\nadvert_int = 0.1\n",
        keepalived: "advert_int 0.1",
        settle: Duration::from_secs(5),
    },
    Setting {
        label: "v2, advert 1 s",
        lbd: "version = 2\nadvert_int = 1\n",
        keepalived: "advert_int 1\n  authentication {\n    auth_type PASS\n    auth_pass s3cret\n  }",
        settle: Duration::from_secs(10),
    },
];

/// Probers, each starting a probe every `PROBERS * PROBE_EVERY`, staggered: together one
/// probe every `PROBE_EVERY`, however long a failing one waits for its timeout.
const PROBERS: u32 = 10;
/// How long one probe waits for the connect and for PONG.
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);

/// Probes until `stop`; returns the times of successful probes, in order.
fn probe(lab: &Lab, stop: &AtomicBool) -> Vec<Instant> {
    let start = Instant::now();
    let mut ok: Vec<Instant> = std::thread::scope(|scope| {
        let probers: Vec<_> = (0..PROBERS)
            .map(|i| {
                scope.spawn(move || {
                    lab.client.run(|| {
                        let period = PROBE_EVERY * PROBERS;
                        let mut next = start + PROBE_EVERY * i;
                        let mut ok = Vec::new();
                        let deadline = start + Duration::from_secs(30);
                        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                            next += period;
                            let served = lab::connect_vip(0, PROBE_TIMEOUT)
                                .and_then(|mut c| c.command(&["PING"]))
                                .is_ok();
                            if served {
                                ok.push(Instant::now());
                            }
                            // A probe that timed out skipped slots: catch up, do not burst.
                            while next < Instant::now() {
                                next += period;
                            }
                        }
                        ok
                    })
                })
            })
            .collect();
        probers
            .into_iter()
            .flat_map(|p| p.join().expect("prober"))
            .collect()
    });
    ok.sort();
    ok
}

/// The longest time without a successful probe, from just before `event` on.
fn gap(ok: &[Instant], event: Instant) -> Duration {
    let mut last = ok
        .iter()
        .rev()
        .find(|t| **t <= event)
        .copied()
        .unwrap_or(event);
    let mut longest = Duration::ZERO;
    for t in ok.iter().filter(|t| **t > event) {
        longest = longest.max(*t - last);
        last = *t;
    }
    longest
}

/// Directors running for one trial.
struct Pair {
    a: Lbd,
    /// Kept running until the trial ends.
    _b: Lbd,
    /// keepalived on dr1 and dr2 (the keepalived runs).
    peers: Option<(ChildGuard, ChildGuard)>,
}

fn start_pair(lab: &Lab, vrrp: Vrrp, setting: &Setting, trial: usize) -> Pair {
    let dr2 = lab.director2.as_ref().unwrap();
    let (a_name, b_name) = (
        format!("{}a{trial}", lab.prefix),
        format!("{}b{trial}", lab.prefix),
    );
    match vrrp {
        Vrrp::Lbd => {
            let a = Lbd::start_in(
                lab,
                &lab.director,
                &a_name,
                &config(lab, &a_name, 150, setting.lbd),
                &[],
            );
            let b = Lbd::start_in(
                lab,
                dr2,
                &b_name,
                &config(lab, &b_name, 100, setting.lbd),
                &[],
            );
            wait_state(&a, "master", setting.settle);
            wait_state(&b, "backup", setting.settle);
            Pair {
                a,
                _b: b,
                peers: None,
            }
        }
        Vrrp::Keepalived => {
            // Both lbds forward whatever reaches them; keepalived decides who gets it.
            let plain = |name: &str| {
                lab.config(&[(0, 1), (1, 1)]).replacen(
                    &format!("instance = \"{}\"", lab.prefix),
                    &format!("instance = \"{name}\""),
                    1,
                )
            };
            let a = Lbd::start_in(lab, &lab.director, &a_name, &plain(&a_name), &[]);
            let b = Lbd::start_in(lab, dr2, &b_name, &plain(&b_name), &[]);
            let ka = keepalived(lab, &lab.director, 150, setting.keepalived);
            let kb = keepalived(lab, dr2, 100, setting.keepalived);
            wait_vip(&lab.director, true, setting.settle);
            Pair {
                a,
                _b: b,
                peers: Some((ka, kb)),
            }
        }
    }
}

/// Runs one trial; returns the client's gap and how many held connections broke.
fn trial(
    lab: &Lab,
    vrrp: Vrrp,
    setting: &Setting,
    failure: Failure,
    n: usize,
) -> (Duration, usize) {
    let dr2 = lab.director2.as_ref().unwrap();
    let mut pair = start_pair(lab, vrrp, setting, n);
    let mut held = hold(lab, HELD);
    let stop = AtomicBool::new(false);
    let (event, ok) = std::thread::scope(|scope| {
        let prober = scope.spawn(|| probe(lab, &stop));
        std::thread::sleep(Duration::from_millis(300));
        let event = Instant::now();
        match (failure, &mut pair.peers) {
            (Failure::Crash, peers) => {
                match peers {
                    None => pair.a.kill(),
                    // SAFETY: the process group of the keepalived this bench started.
                    Some((ka, _)) => unsafe {
                        libc::kill(-ka.pid(), libc::SIGKILL);
                    },
                }
                // The host is gone: its link with it.
                lab.switch.ip(&["link", "set", "dr", "down"]);
            }
            (Failure::Stop, None) => pair.a.signal(libc::SIGTERM),
            (Failure::Stop, Some((ka, _))) => ka.signal(libc::SIGTERM),
        }
        // Until dr2 holds the VIP and the client has been served for a while again.
        wait_vip(dr2, true, setting.settle);
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        (event, prober.join().expect("probe"))
    });
    let kept = lab.client.run(|| {
        held.iter_mut()
            .filter_map(|(conn, who)| lab::whoami(conn).ok().filter(|now| now == who))
            .count()
    });
    // Back to the start: link up, directors and peers stopped, no VIP left on dr1.
    lab.switch.ip(&["link", "set", "dr", "up"]);
    drop(held);
    drop(pair);
    if holds_vip(&lab.director) {
        lab.director
            .ip(&["addr", "del", &format!("{VIP}/32"), "dev", "eth0"]);
    }
    if holds_vip(dr2) {
        dr2.ip(&["addr", "del", &format!("{VIP}/32"), "dev", "eth0"]);
    }
    (gap(&ok, event), HELD - kept)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(gaps: &mut [f64]) -> String {
    gaps.sort_by(f64::total_cmp);
    format!(
        "{:.0} ms ({:.0}-{:.0})",
        gaps[gaps.len() / 2],
        gaps[0],
        gaps[gaps.len() - 1]
    )
}

/// Flow sync at 10,000 new flows a second: the master's datapath runs distinct SYNs through
/// its pinned program (BPF_PROG_TEST_RUN, paced), its lbd sends the announcements to the
/// backup, which installs them. Reported: flows the backup holds afterwards, UDP bytes
/// a second on the backup's link (adverts included), and both lbds' CPU.
pub fn sync_cost(report: &mut String) {
    use lb_tests::vrrp::config_with;
    const RATE: u32 = 10_000;
    const SECONDS: u32 = 5;
    let lab = Lab::pair("bs", 2);
    let dr2 = lab.director2.as_ref().unwrap();
    let (a_name, b_name) = (format!("{}a", lab.prefix), format!("{}b", lab.prefix));
    let sync = |peer: std::net::Ipv4Addr| format!("[sync]\npeers = [\"{peer}\"]\n");
    let fast = "version = 3\nadvert_int = 0.1\n";
    let a = Lbd::start_in(
        &lab,
        &lab.director,
        &a_name,
        &config_with(
            &lab,
            &a_name,
            150,
            &[(0, 1), (1, 1)],
            fast,
            &sync(lab::DIRECTOR2),
        ),
        &[],
    );
    let b = Lbd::start_in(
        &lab,
        dr2,
        &b_name,
        &config_with(
            &lab,
            &b_name,
            100,
            &[(0, 1), (1, 1)],
            fast,
            &sync(lab::DIRECTOR),
        ),
        &[],
    );
    wait_state(&a, "master", Duration::from_secs(5));
    wait_state(&b, "backup", Duration::from_secs(5));
    let program = lb_daemon::dataplane::pins::pinned_program(&a.pin_layout())
        .expect("the master's pinned program");
    let iface = lab
        .director
        .run(|| lb_daemon::netdev::interface("eth0").expect("eth0"));
    let rx_bytes = |ns: &lb_tests::netns::Netns| -> u64 {
        let out = ns.ip(&["-s", "-j", "link", "show", "eth0"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split("\"rx\":{\"bytes\":")
            .nth(1)
            .and_then(|t| t.split(',').next())
            .and_then(|n| n.parse().ok())
            .expect("rx bytes")
    };
    let (a_cpu, b_cpu, b_rx) = (
        super::health::cpu_ticks(a.pid()),
        super::health::cpu_ticks(b.pid()),
        rx_bytes(dr2),
    );
    let started = Instant::now();
    lab.director.run(|| {
        for tick in 0..(SECONDS * 100) {
            for i in 0..(RATE / 100) {
                let n = tick * (RATE / 100) + i;
                let frame = lb_tests::frame::Ipv4Frame::tcp(
                    [0x02, 0xc1, 0, 0, 0, 0x01],
                    iface.mac,
                    (
                        std::net::Ipv4Addr::from(0xc612_8000 | (n / 60_000)),
                        1024 + (n % 60_000) as u16,
                    ),
                    (VIP, lab::REDIS_PORT),
                    lb_tests::frame::TCP_SYN,
                )
                .build();
                lb_tests::xdp::test_run(&program, &frame, iface.ifindex, 1);
            }
            let due = started + PROBE_EVERY * (tick + 1);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let ticks_per_sec = 100.0; // USER_HZ
    let cpu = |before: (u64, u64), pid: i32| {
        let after = super::health::cpu_ticks(pid);
        ((after.0 + after.1) - (before.0 + before.1)) as f64 / ticks_per_sec / elapsed * 100.0
    };
    let (a_pct, b_pct) = (cpu(a_cpu, a.pid()), cpu(b_cpu, b.pid()));
    let bytes_per_sec = (rx_bytes(dr2) - b_rx) as f64 / elapsed;
    let snapshot = lb_daemon::dataplane::snapshot::read(
        &lb_daemon::dataplane::pins::PinnedMaps::open(&b.pin_layout(), &b.instance).unwrap(),
    )
    .unwrap();
    let installed: u64 = snapshot
        .vips
        .iter()
        .flat_map(|v| &v.backends)
        .map(|b| b.active_flows + b.closing_flows)
        .sum();
    let sent = u64::from(SECONDS * RATE);
    println!(
        "sync bench: {sent} flows in {elapsed:.1} s; backup holds {installed}; {bytes_per_sec:.0} B/s; CPU master {a_pct:.1}%, backup {b_pct:.1}%"
    );
    let _ = writeln!(
        report,
        "### Flow sync at {RATE} new flows a second\n\n\
         {sent} distinct SYNs run through the master's pinned program over {elapsed:.1} s \
         (BPF_PROG_TEST_RUN, paced every 10 ms). The backup then held {installed} flows. \
         UDP into the backup: {:.0} KB/s (adverts included; 20 bytes a flow plus 8 per \
         datagram of up to 64). CPU of one core: master's lbd {a_pct:.1} %, backup's lbd \
         {b_pct:.1} %.\n",
        bytes_per_sec / 1000.0
    );
}

/// 20 ms adverts (v3) under full redis-benchmark load through the VIP for `seconds`: the
/// backup must never take over (no false failover); then the master crashes and the
/// client's gap is measured as above.
pub fn soak(report: &mut String, seconds: u64) {
    let lab = Lab::pair("bk", 2);
    let dr2 = lab.director2.as_ref().unwrap();
    let (a_name, b_name) = (format!("{}a", lab.prefix), format!("{}b", lab.prefix));
    let fast = "version = 3\nadvert_int = 0.02\n";
    let a = Lbd::start_in(
        &lab,
        &lab.director,
        &a_name,
        &config(&lab, &a_name, 150, fast),
        &[],
    );
    let b = Lbd::start_in(&lab, dr2, &b_name, &config(&lab, &b_name, 100, fast), &[]);
    wait_state(&a, "master", Duration::from_secs(5));
    wait_state(&b, "backup", Duration::from_secs(5));
    let since = lb_tests::vrrp::state(&b).expect("backup state").since;
    let started = Instant::now();
    let mut rounds = 0;
    let mut false_failovers = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        // Bounded: one redis-benchmark run (about 2 s), then the backup is looked at.
        super::redis_benchmark(&lab.client, VIP);
        rounds += 1;
        let s = lb_tests::vrrp::state(&b).expect("backup state");
        if s.state != "backup" || s.since != since {
            false_failovers += 1;
            println!("soak: the backup changed state: {s:?}");
        }
    }
    let soaked = started.elapsed();
    // Then a crash, measured like the table above.
    let setting = Setting {
        label: "v3, advert 0.02 s",
        lbd: fast,
        keepalived: "advert_int 0.02",
        settle: Duration::from_secs(5),
    };
    drop((a, b));
    let (gap, lost) = trial(&lab, Vrrp::Lbd, &setting, Failure::Crash, 99);
    println!(
        "soak: {:.0} s, {rounds} redis-benchmark runs, {false_failovers} false failovers; crash gap {:.0} ms, {lost} held lost",
        soaked.as_secs_f64(),
        ms(gap)
    );
    let _ = writeln!(
        report,
        "### 20 ms adverts under load\n\n\
         `advert_int = 0.02` (v3, priorities 150/100) for {:.0} s while redis-benchmark \
         (`-c 50 -t set,get`, {rounds} runs back to back) loads the VIP through the master: \
         {false_failovers} false failovers. Then the master crashes (as above): client gap \
         {:.0} ms, {lost} of {HELD} held connections lost.\n",
        soaked.as_secs_f64(),
        ms(gap)
    );
}

pub fn vrrp_benchmarks(report: &mut String) {
    let _ = writeln!(report, "## VRRP failover\n");
    let _ = writeln!(
        report,
        "A client probes the VIP every 10 ms with a new connection and a PING (ten staggered \
         probers, each waiting at most 100 ms). \
         The master (priority 150) crashes (`kill -9` of the VRRP process and its link taken \
         down, as a host that dies) or stops (`SIGTERM`); the gap is the longest time without \
         a successful probe, median of {TRIALS} trials (min-max). keepalived 2.2.7 runs in the \
         same lab with the same settings, moving the VIP between two lbds without `[[vrrp]]` \
         (this kernel has no IPVS). \"Held lost\": of {HELD} connections opened through the old \
         master, how many broke (sum over the trials). 10 ms probe resolution.\n"
    );
    let _ = writeln!(
        report,
        "| setting | failure | lbd gap | keepalived gap | held lost (lbd / keepalived) |\n|---|---|---:|---:|---:|"
    );
    for setting in &SETTINGS {
        for failure in [Failure::Crash, Failure::Stop] {
            let mut cells = Vec::new();
            let mut lost = Vec::new();
            for vrrp in [Vrrp::Lbd, Vrrp::Keepalived] {
                let lab = Lab::pair("bv", 2);
                let mut gaps = Vec::new();
                let mut broken = 0;
                for n in 0..TRIALS {
                    let (g, b) = trial(&lab, vrrp, setting, failure, n);
                    println!(
                        "vrrp bench: {} {} {}: gap {:.0} ms, {b} held lost",
                        setting.label,
                        if failure == Failure::Crash {
                            "crash"
                        } else {
                            "stop"
                        },
                        if vrrp == Vrrp::Lbd {
                            "lbd"
                        } else {
                            "keepalived"
                        },
                        ms(g)
                    );
                    gaps.push(ms(g));
                    broken += b;
                }
                cells.push(summary(&mut gaps));
                lost.push(broken);
            }
            let _ = writeln!(
                report,
                "| {} | {} | {} | {} | {} / {} |",
                setting.label,
                if failure == Failure::Crash {
                    "crash"
                } else {
                    "stop"
                },
                cells[0],
                cells[1],
                lost[0],
                lost[1]
            );
        }
    }
    let _ = writeln!(report);
    sync_cost(report);
}
