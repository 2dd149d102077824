//! `cargo xtask run` with no config: a self-contained DR lab on this host.
//!
//! Builds a client, two directors running `lbd` with VRRP and Redis health checks, and three
//! real servers running `redis-server` (each in its own network namespace, on one bridge),
//! then opens bounded batches of Redis connections to the VIP and shows, live, which real
//! server answered each. Along the way it freezes rs2 (`kill -STOP`: it accepts connections
//! and never answers, which a TCP check would not notice), shows it leave the rotation, thaws
//! it and shows it return, kills the VRRP master (`kill -9`) and shows the other director take
//! the VIP while connections opened before keep working, then reloads the config with rs3 at
//! weight 2. Ctrl-C stops it early; the lab is torn down either way.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use lb_tests::{
    lab::{self, Lab, VIP},
    lbd::Lbd,
    resp,
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

const ROUNDS: usize = 8;
/// The lab's health check: the `redis` check, quick enough to watch.
const CHECK: &str = "\n[vip.check]\ntype = \"redis\"   # AUTH (if set), PING, ...\ninterval = 0.5\ntimeout = 0.5\nfall = 2\nrise = 2\n";

/// A director's config for these weights, with the health check and the VRRP instance
/// that moves the VIP between the two directors.
fn config(lab: &Lab, instance: &str, priority: u8, weights: [u32; 3]) -> String {
    let backends: Vec<(usize, u32)> = weights.into_iter().enumerate().collect();
    let text = lab
        .config(&backends)
        .replacen(
            &format!("instance = \"{}\"", lab.prefix),
            &format!("instance = \"{instance}\""),
            1,
        )
        .replacen(
            "scheduler = \"maglev\"\n",
            &format!("scheduler = \"maglev\"\n{CHECK}"),
            1,
        );
    format!(
        "{text}\n[[vrrp]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\npriority = {priority}\nadvert_int = 0.1\nvips = [\"{VIP}\"]\n"
    )
}

/// The VRRP state `lbd status` shows for the instance.
fn vrrp_state(lbd: &Lbd) -> String {
    lbd.status()
        .lines()
        .find(|l| l.starts_with("VI_1"))
        .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .unwrap_or_default()
}

/// Waits until `lbd` is VRRP master; prints how long it took.
fn await_master(lbd: &Lbd, what: &str) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) && !STOP.load(Ordering::Relaxed) {
        if vrrp_state(lbd) == "master" {
            println!("   {what} after {} ms", started.elapsed().as_millis());
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("   {what}: not seen within 10 s");
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

    println!(
        "== Building the lab: client, two directors, three real servers running redis-server =="
    );
    let lab = Lab::pair("lab", 3);
    for s in &lab.servers {
        println!(
            "   {} {}  (VIP {VIP}/32 on lo, arp_ignore=1, arp_announce=2, redis-server :6379)",
            s.name, s.addr
        );
    }
    let dr2 = lab.director2.as_ref().expect("a pair of directors");
    let (a_name, b_name) = (format!("{}a", lab.prefix), format!("{}b", lab.prefix));
    let first = config(&lab, &a_name, 150, [1, 1, 1]);
    println!(
        "\n== Director dr1 config ({}; dr2 has priority 100) ==\n{first}",
        lab.dir.join(format!("{a_name}.toml")).display()
    );
    let mut dr1 = Lbd::start_in(&lab, &lab.director, &a_name, &first, &[]);
    let dr2 = Lbd::start_in(
        &lab,
        dr2,
        &b_name,
        &config(&lab, &b_name, 100, [1, 1, 1]),
        &[],
    );
    println!(
        "== lbd runs on dr1 (pid {}, log {}) and dr2 (pid {}, log {}) ==",
        dr1.pid(),
        dr1.log_path.display(),
        dr2.pid(),
        dr2.log_path.display()
    );
    await_master(&dr1, "dr1 (priority 150) is VRRP master and holds the VIP");
    println!("   dr2 is {}", vrrp_state(&dr2));
    for s in &lab.servers {
        await_health(&dr1, s.addr, "up", "first check");
    }
    println!();
    // Opened through dr1; checked again after dr1 is killed.
    let mut held: Vec<(resp::Connection, String)> = lab.client.run(|| {
        (0..20)
            .filter_map(|_| {
                let mut conn = lab::connect_vip(0, Duration::from_secs(2)).ok()?;
                let who = lab::whoami(&mut conn).ok()?;
                Some((conn, who))
            })
            .collect()
    });
    let mut active = &dr1;

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
            await_health(active, rs2, "down", "rs2 out of the rotation");
            println!();
            phase_counts.clear();
        }
        if round == 5 {
            println!("\n== Thawing rs2 (kill -CONT) ==");
            lab.signal_redis(1, libc::SIGCONT);
            await_health(active, rs2, "up", "rs2 back (rise = 2)");
            println!();
            phase_counts.clear();
        }
        if round == 6 {
            println!("\n== Killing the VRRP master, dr1 (kill -9) ==");
            dr1.kill();
            await_master(&dr2, "dr2 took the VIP (3 missed adverts of 0.1 s + skew)");
            active = &dr2;
            let kept = lab.client.run(|| {
                held.iter_mut()
                    .filter_map(|(conn, who)| lab::whoami(conn).ok().filter(|now| now == who))
                    .count()
            });
            println!(
                "   {kept} of {} connections opened through dr1 still answer, from the same server",
                held.len()
            );
            println!();
            phase_counts.clear();
        }
        if round == 7 {
            let out = active.reload(&config(&lab, &active.instance, 100, [1, 1, 2]));
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
    println!(
        "\n== lbd status on {} ==\n{}",
        active.director_ns,
        active.status()
    );
    println!("== Tearing down (lbd stops and unpins, redis-servers stop, namespaces go) ==");
    drop(held);
    drop(dr2);
    drop(dr1);
    drop(lab);
}
