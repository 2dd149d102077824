//! What a restart and an upgrade cost the traffic through the VIP: a bounded stream of
//! requests on held connections runs across each, and the client's own TCP counters say how
//! many segments it had to send again (each one a packet lost somewhere on the way).

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use lb_tests::{
    lab::{self, Lab},
    lbd::Lbd,
    resp,
};

const TIMEOUT: Duration = Duration::from_secs(3);
/// Connections carrying the request stream.
const STREAMS: u16 = 8;
/// Idle connections held across each event, checked afterwards.
const HELD: u16 = 200;
const TRIALS: usize = 5;
/// How long the stream runs around each event (and in the control window).
const WINDOW: Duration = Duration::from_secs(3);

/// TCP segments the client namespace retransmitted so far (`RetransSegs`).
fn retransmits(lab: &Lab) -> u64 {
    lab.client.run(|| {
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default();
        let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
        let (names, values) = (tcp.next().unwrap_or(""), tcp.next().unwrap_or(""));
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(name, _)| *name == "RetransSegs")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    })
}

/// One trial's outcome.
#[derive(Default)]
struct Trial {
    requests: u64,
    failed: u64,
    retransmits: u64,
    slowest: Duration,
    held_broken: usize,
}

/// Runs `event` while PINGs stream over `STREAMS` connections for `WINDOW`; checks the held
/// connections afterwards.
fn trial(lab: &Lab, base_port: u16, event: impl FnOnce()) -> Trial {
    let mut held: Vec<(String, resp::Connection)> = lab.client.run(|| {
        (0..HELD)
            .map(|i| {
                let mut conn = lab::connect_vip(base_port + i, TIMEOUT).expect("connect");
                (lab::whoami(&mut conn).expect("whoami"), conn)
            })
            .collect()
    });
    let conns: Vec<resp::Connection> = lab.client.run(|| {
        (0..STREAMS)
            .map(|i| lab::connect_vip(base_port + HELD + i, TIMEOUT).expect("connect"))
            .collect()
    });
    let before = retransmits(lab);
    let stop = Arc::new(AtomicBool::new(false));
    let (requests, failed, slowest_us) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU32::new(0)),
    );
    let stream = {
        let (stop, requests, failed, slowest_us) = (
            stop.clone(),
            requests.clone(),
            failed.clone(),
            slowest_us.clone(),
        );
        std::thread::spawn(move || {
            let mut conns = conns;
            // Bounded in count and time whatever `stop` says.
            let deadline = Instant::now() + WINDOW * 4;
            while !stop.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && requests.load(Ordering::Relaxed) < 2_000_000
            {
                for conn in &mut conns {
                    let started = Instant::now();
                    let ok = matches!(conn.command(&["PING"]), Ok(resp::Reply::Simple(ref s)) if s == "PONG");
                    let took = started.elapsed().as_micros() as u32;
                    slowest_us.fetch_max(took, Ordering::Relaxed);
                    requests.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let started = Instant::now();
    std::thread::sleep(WINDOW / 4);
    event();
    if let Some(rest) = WINDOW.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = stream.join();
    let mut held_broken = 0;
    for (who, conn) in &mut held {
        if lab::whoami(conn).ok().as_deref() != Some(who.as_str()) {
            held_broken += 1;
        }
    }
    Trial {
        requests: requests.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        retransmits: retransmits(lab) - before,
        slowest: Duration::from_micros(slowest_us.load(Ordering::Relaxed) as u64),
        held_broken,
    }
}

pub fn restart_benchmarks(out: &mut String) {
    let _ = writeln!(out, "## Restart and upgrade\n");
    let _ = writeln!(
        out,
        "Reproduce with `cargo xtask bench --restart-only`. Three real servers behind a VIP \
         with a Redis health check (0.2 s). In each trial {STREAMS} connections send PINGs back \
         to back for {} s while the event happens {} ms in, and {HELD} idle connections are \
         held across it. \"Retransmitted\" is the client's `RetransSegs` over the window: each \
         one a segment lost on the way (a forwarding gap). Sum over {TRIALS} trials; slowest \
         request is the worst single PING. The control window has no event.\n",
        WINDOW.as_secs_f64(),
        (WINDOW / 4).as_millis()
    );
    let _ = writeln!(
        out,
        "| event | requests | failed | retransmitted | slowest request | held broken | target |\n|---|---:|---:|---:|---:|---:|---|"
    );
    let lab = Lab::new("brs", 3);
    let even = lab.checked_config(&[(0, 1), (1, 1), (2, 1)]);
    let skewed = lab.checked_config(&[(0, 1), (1, 1), (2, 4)]);
    let mut lbd = Some(Lbd::start(&lab, &even));
    lbd.as_ref().unwrap().wait_serving(3);
    let kinds = [
        "none (control window)",
        "`kill -9`, then `lbd run` with one weight changed",
        "`lbd stop --keep-datapath`, then `lbd run` (an upgrade)",
        "`lbd stop` (full), then `lbd run`: no adoption, for comparison",
    ];
    for (k, kind) in kinds.iter().enumerate() {
        let mut sum = Trial::default();
        for t in 0..TRIALS {
            // Fresh source ports each trial: no old flow or TIME_WAIT in the way.
            let base = 20000 + (k * TRIALS + t) as u16 * (HELD + STREAMS + 8);
            let config = if t % 2 == 0 { &skewed } else { &even };
            let result = trial(&lab, base, || {
                let mut old = lbd.take().expect("a running lbd");
                match k {
                    0 => {
                        lbd = Some(old);
                        return;
                    }
                    1 => {
                        old.kill();
                        old.leave_pins();
                    }
                    2 => {
                        let said =
                            old.cli(&["stop", "--instance", &old.instance, "--keep-datapath"]);
                        assert!(said.status.success(), "{said:?}");
                        old.leave_pins();
                    }
                    _ => {
                        assert!(old.stop(), "lbd did not stop");
                    }
                }
                drop(old);
                lbd = Some(Lbd::start(&lab, config));
            });
            lbd.as_ref().unwrap().wait_serving(3);
            sum.requests += result.requests;
            sum.failed += result.failed;
            sum.retransmits += result.retransmits;
            sum.slowest = sum.slowest.max(result.slowest);
            sum.held_broken += result.held_broken;
        }
        let target = if k == 3 {
            "(reference)"
        } else {
            "0 lost, 0 broken"
        };
        let _ = writeln!(
            out,
            "| {kind} | {} | {} | {} | {} ms | {} of {} | {target} |",
            sum.requests,
            sum.failed,
            sum.retransmits,
            sum.slowest.as_millis(),
            sum.held_broken,
            HELD as usize * TRIALS
        );
        print!("{}", out.lines().last().unwrap_or_default());
        println!();
    }
    let _ = writeln!(out);
}
