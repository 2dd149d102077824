//! `cargo xtask run` with no config: a self-contained DR lab on this host.
//!
//! Builds a client, a director running `lbd` with Redis health checks, and three real
//! servers running `redis-server` (each in its own network namespace, on one bridge), then
//! opens bounded batches of Redis connections to the VIP and shows, live, which real server
//! answered each. Along the way it freezes rs2 (`kill -STOP`: it accepts connections and
//! never answers, which a TCP check would not notice), shows it leave the rotation, thaws it
//! and shows it return, then reloads the config with rs3 at weight 2. Ctrl-C stops it early;
//! the lab is torn down either way.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use lb_tests::{
    lab::{self, Lab, VIP},
    lbd::Lbd,
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

const ROUNDS: usize = 8;
/// The lab's health check: the `redis` check, quick enough to watch.
const CHECK: &str = "\n[vip.check]\ntype = \"redis\"   # AUTH (if set), PING, ...\ninterval = 0.5\ntimeout = 0.5\nfall = 2\nrise = 2\n";

/// The lab's config for these weights, with the health check.
fn config(lab: &Lab, weights: [u32; 3]) -> String {
    let backends: Vec<(usize, u32)> = weights.into_iter().enumerate().collect();
    lab.config(&backends).replacen(
        "scheduler = \"maglev\"\n",
        &format!("scheduler = \"maglev\"\n{CHECK}"),
        1,
    )
}

/// The Health column and reason of `server`'s line in `lbd status`, if listed, and whether
/// the maps give it new flows (a weight above 0).
fn health_of(status: &str, server: std::net::Ipv4Addr) -> Option<(String, bool)> {
    let prefix = format!("-> {server}:");
    let line = status
        .lines()
        .find(|l| l.trim_start().starts_with(&prefix))?;
    let tokens: Vec<&str> = line.split_whitespace().collect();
    (tokens.len() >= 13).then(|| {
        (
            format!("{} ({})", tokens[9], tokens[12..].join(" ")),
            tokens[3].parse::<u32>().is_ok_and(|w| w > 0),
        )
    })
}

/// Polls `lbd status` until `server`'s health starts with `state` and the maps agree (in
/// the rotation when up, out of it otherwise); prints how long it took.
fn await_health(lbd: &Lbd, server: std::net::Ipv4Addr, state: &str, what: &str) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) && !STOP.load(Ordering::Relaxed) {
        if let Some((health, in_rotation)) = health_of(&lbd.status(), server)
            && health.starts_with(state)
            && in_rotation == (state == "up")
        {
            println!(
                "   {what} after {} ms: {server} {health}",
                started.elapsed().as_millis()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("   {what}: not seen within 20 s");
}
const CONNECTIONS_PER_ROUND: usize = 60;
const TIME_LIMIT: Duration = Duration::from_secs(120);

fn main() {
    if !lb_tests::require_root("lab") {
        std::process::exit(1);
    }
    // SAFETY: installs an async-signal-safe handler (one atomic store).
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };

    println!("== Building the lab: client, director, three real servers running redis-server ==");
    let lab = Lab::new("lab", 3);
    for s in &lab.servers {
        println!(
            "   {} {}  (VIP {VIP}/32 on lo, arp_ignore=1, arp_announce=2, redis-server :6379)",
            s.name, s.addr
        );
    }
    let first = config(&lab, [1, 1, 1]);
    println!(
        "\n== Director config ({}) ==\n{first}",
        lab.dir.join("lbd.toml").display()
    );
    let lbd = Lbd::start(&lab, &first);
    println!(
        "== lbd is running on the director (pid {}); log: {} ==",
        lbd.pid(),
        lbd.log_path.display()
    );
    for s in &lab.servers {
        await_health(&lbd, s.addr, "up", "first check");
    }
    println!();

    let started = Instant::now();
    let mut phase_counts: BTreeMap<String, usize> = BTreeMap::new();
    for round in 1..=ROUNDS {
        if STOP.load(Ordering::Relaxed) || started.elapsed() > TIME_LIMIT {
            break;
        }
        let rs2 = lab.servers[1].addr;
        if round == 3 {
            println!(
                "\n== Freezing rs2 (kill -STOP): it still accepts connections, but never answers =="
            );
            lab.signal_redis(1, libc::SIGSTOP);
            await_health(&lbd, rs2, "down", "rs2 out of the rotation");
            println!();
            phase_counts.clear();
        }
        if round == 5 {
            println!("\n== Thawing rs2 (kill -CONT) ==");
            lab.signal_redis(1, libc::SIGCONT);
            await_health(&lbd, rs2, "up", "rs2 back (rise = 2)");
            println!();
            phase_counts.clear();
        }
        if round == 7 {
            let out = lbd.reload(&config(&lab, [1, 1, 2]));
            println!(
                "\n== Reload: rs3 now has weight 2 (`lbd reload`: {}) ==\n",
                String::from_utf8_lossy(&out.stdout).trim()
            );
            phase_counts.clear();
        }
        let round_counts = lab.client.run(|| {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for i in 0..CONNECTIONS_PER_ROUND {
                let name = match lab::connect_vip(0, Duration::from_secs(2)).and_then(|mut conn| {
                    let who = lab::whoami(&mut conn)?;
                    // A write and a read on the same connection land on the same server.
                    let key = format!("demo:{round}:{i}");
                    conn.command(&["SET", &key, &who])?;
                    let back = conn.command(&["GET", &key])?.text().unwrap_or_default();
                    Ok(if back == who {
                        who
                    } else {
                        format!("{who}(mismatch)")
                    })
                }) {
                    Ok(name) => name,
                    Err(err) => format!("error: {err}"),
                };
                *counts.entry(name).or_default() += 1;
            }
            counts
        });
        for (name, n) in round_counts {
            *phase_counts.entry(name).or_default() += n;
        }
        let total: usize = phase_counts.values().sum();
        println!("round {round}/{ROUNDS}: {total} connections to {VIP}:6379 since the last change");
        for (name, n) in &phase_counts {
            let share = *n as f64 / total as f64;
            println!(
                "   {name:<6} {:<40} {n:>4} ({:>5.1}%)",
                "#".repeat((share * 40.0).round() as usize),
                share * 100.0
            );
        }
    }
    println!("\n== lbd status ==\n{}", lbd.status());
    println!("== Tearing down (lbd stops and unpins, redis-servers stop, namespaces go) ==");
    drop(lbd);
    drop(lab);
}
