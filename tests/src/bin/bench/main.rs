//! `cargo xtask bench`: datapath cost per packet through BPF_PROG_TEST_RUN next to floor
//! programs built in the same run, then redis-benchmark in the lab: direct to a real
//! server, through lbd's VIP, and through a minimal MAC-rewrite XDP forwarder. All variants
//! are interleaved round by round, so machine noise hits them alike; ratios are reported.
//! Then the health checks: a frozen backend's removal, a Sentinel failover reaching the maps,
//! and the cost of checking 1,000 backends. Writes docs/benchmarks.md.

mod health;
mod restart;
mod scale;
mod vrrp;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::Ipv4Addr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::Array,
    programs::{Xdp, XdpMode},
};
use lb_common::Interface;
use lb_daemon::{
    apply::Applier,
    config::Config,
    daemon::{desired_state, settings},
    dataplane::{Dataplane, LoadOptions, object, snapshot},
    netdev,
};
use lb_tests::{
    frame::{Ipv4Frame, TCP_ACK, TCP_SYN},
    lab::{Lab, VIP},
    lbd::Lbd,
    netns::Netns,
};

const DIRECTOR_MAC: [u8; 6] = [0x02, 0xd1, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x01];
const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 7;
/// Distinct SYNs per round for the new-flow measurement (all fit in the flow table).
const NEW_FLOWS_PER_ROUND: u32 = 20_000;

fn main() {
    if !lb_tests::require_root("bench") {
        std::process::exit(1);
    }
    let no_lab = std::env::args().any(|a| a == "--no-lab");
    let health_only = std::env::args().any(|a| a == "--health-only");
    let vrrp_only = std::env::args().any(|a| a == "--vrrp-only");
    if let Some(seconds) = std::env::args()
        .skip_while(|a| a != "--soak")
        .nth(1)
        .and_then(|s| s.parse::<u64>().ok())
    {
        let mut section = String::new();
        vrrp::soak(&mut section, seconds);
        print!("{section}");
        splice_section("docs/benchmarks.md", "### 20 ms adverts", &section);
        println!("\n(--soak: that part of docs/benchmarks.md replaced)");
        return;
    }
    if std::env::args().any(|a| a == "--restart-only") {
        let mut section = String::new();
        restart::restart_benchmarks(&mut section);
        print!("{section}");
        splice_section("docs/benchmarks.md", "## Restart and upgrade", &section);
        println!("\n(--restart-only: the restart section of docs/benchmarks.md replaced)");
        return;
    }
    if std::env::args().any(|a| a == "--sync-only") {
        let mut section = String::new();
        vrrp::sync_cost(&mut section);
        print!("{section}");
        splice_section("docs/benchmarks.md", "### Flow sync", &section);
        println!("\n(--sync-only: the flow sync part of docs/benchmarks.md replaced)");
        return;
    }
    if vrrp_only {
        let mut section = String::new();
        vrrp::vrrp_benchmarks(&mut section);
        print!("{section}");
        splice_section("docs/benchmarks.md", "## VRRP failover", &section);
        println!("\n(--vrrp-only: the VRRP section of docs/benchmarks.md replaced)");
        return;
    }
    let mut report = String::new();
    let _ = writeln!(report, "# Benchmarks\n");
    let _ = writeln!(
        report,
        "Reproduce with `cargo xtask bench` (root; release build). Measured {} on {}, kernel {}.\n",
        today(),
        cpu_model(),
        kernel()
    );
    if !health_only {
        datapath(&mut report);
        scale::datapath_scale(&mut report);
    }
    if !no_lab {
        if !health_only {
            lab_redis_benchmark(&mut report);
        }
        health::health_benchmarks(&mut report);
        vrrp::vrrp_benchmarks(&mut report);
        restart::restart_benchmarks(&mut report);
    }
    print!("{report}");
    // Only a complete run replaces the committed report.
    if health_only {
        println!("\n(--health-only: docs/benchmarks.md left as it was)");
    } else if no_lab {
        let heading = "## Datapath, BPF_PROG_TEST_RUN";
        let section = &report[report.find(heading).expect("datapath section")..];
        splice_section("docs/benchmarks.md", heading, section);
        println!("\n(--no-lab: the datapath section of docs/benchmarks.md replaced)");
    } else {
        std::fs::write("docs/benchmarks.md", &report).expect("write docs/benchmarks.md");
        println!("\nwritten to docs/benchmarks.md");
    }
}

/// Probe programs (in the `probes` object) and what each measures.
const PROBES: [(&str, &str); 5] = [
    (
        "probe_lru_lookup",
        "LRU hash lookup, hit (FLOWS-sized, 262,144 entries)",
    ),
    (
        "probe_hash_lookup",
        "hash lookup, hit (VIPS-sized, 64 entries)",
    ),
    ("probe_ktime", "bpf_ktime_get_ns()"),
    ("probe_ktime_coarse", "bpf_ktime_get_coarse_ns()"),
    ("probe_jiffies", "bpf_jiffies64() (inlined by the verifier)"),
];

/// Kernel-measured ns per run of `program` on `frame`, repeated `repeat` times.
fn ns_per_packet(program: &Xdp, frame: &[u8], repeat: u32) -> f64 {
    lb_tests::xdp::test_run(program, frame, 1, repeat).ns_per_run
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Packet `flags` of the `i`th distinct client: distinct clients from 198.18.128.0/17 and
/// distinct ports, so every SYN starts a new connection.
fn client_packet(i: u32, flags: u8) -> Vec<u8> {
    client_packet_to(6379, i, flags)
}

/// [`client_packet`] to the VIP's `port`.
fn client_packet_to(port: u16, i: u32, flags: u8) -> Vec<u8> {
    let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 0)) + (i / 50_000));
    Ipv4Frame::tcp(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (src, 10_000 + (i % 50_000) as u16),
        (VIP, port),
        flags,
    )
    .build()
}

/// VIPs beside :6379 (Maglev) whose schedulers keep state, and what each new flow pays
/// for it: (port, config keys, what the row says).
const SCHEDULER_VIPS: [(u16, &str, &str); 3] = [
    (
        6381,
        "scheduler = \"rr\"",
        "rr: the per-CPU position, and the SYN's choice remembered in HALF_OPEN for its ACK",
    ),
    (
        6382,
        "scheduler = \"wlc\"",
        "wlc: two ring slots and two active counts; HALF_OPEN; the ACK counts the flow",
    ),
    (
        6383,
        "persistence_timeout = 60",
        "Maglev with persistence: the client's template in PERSIST",
    ),
];
/// New connections per round for each of [`SCHEDULER_VIPS`] (fewer than for :6379: the
/// flow table holds them all).
const SCHEDULER_FLOWS_PER_ROUND: u32 = 4_000;

fn datapath(report: &mut String) {
    // The backends get the director's own MAC: with `repeat`, the kernel reruns the program
    // on the frame as the last run left it, so the rewritten frame must still be addressed to
    // the director for every run to take the full forwarding path (checked below).
    let mac = DIRECTOR_MAC.map(|b| format!("{b:02x}")).join(":");
    let backends = (11..14)
        .map(|i| format!("[[vip.backend]]\naddress = \"198.18.0.{i}\"\nmac = \"{mac}\"\n"))
        .collect::<String>();
    let mut text = format!(
        "[director]\ninterfaces = [\"lo\"]\n[[vip]]\naddress = \"{VIP}\"\nport = 6379\n{backends}"
    );
    for (port, keys, _) in SCHEDULER_VIPS {
        text.push_str(&format!(
            "[[vip]]\naddress = \"{VIP}\"\nport = {port}\n{keys}\n{backends}"
        ));
    }
    let config = Config::parse(Path::new("bench.toml"), &text).expect("bench config");
    let mut lb = Dataplane::load(
        object::lb().expect("object"),
        &LoadOptions {
            max_flows: 262_144,
            ..Default::default()
        },
    )
    .expect("load lb");
    {
        let mut w = lb.writer();
        w.set_settings(settings(&config)).unwrap();
        w.set_interface(1, DIRECTOR_MAC).unwrap();
    }
    Applier::new()
        .apply(&mut lb, &desired_state(&config).unwrap())
        .unwrap();
    let mut aux = Ebpf::load(object::aux().expect("aux object")).expect("load aux");
    for name in ["pass", "mac_swap"] {
        let p: &mut Xdp = aux.program_mut(name).unwrap().try_into().unwrap();
        p.load().unwrap();
    }
    let mut probes = Ebpf::load(object::probes().expect("probes object")).expect("load probes");
    {
        use lb_common::{Flow, FlowKey, VipInfo, VipKey};
        // The probes look up key 0 (frames are shorter than 64 KiB): make both lookups hit.
        let key = FlowKey {
            src_addr: 0,
            dst_addr: 1,
            src_port: 2,
            dst_port: 3,
            proto: 6,
            _pad0: 0,
            _pad1: 0,
        };
        let flow = Flow {
            backend_id: 1,
            vip_id: 0,
            flags: 0,
            backend_generation: 1,
            last_seen: 0,
        };
        let mut flows: aya::maps::HashMap<_, FlowKey, Flow> =
            aya::maps::HashMap::try_from(probes.map_mut("PROBE_FLOWS").unwrap()).unwrap();
        flows.insert(key, flow, 0).unwrap();
        let mut vips: aya::maps::HashMap<_, VipKey, VipInfo> =
            aya::maps::HashMap::try_from(probes.map_mut("PROBE_VIPS").unwrap()).unwrap();
        vips.insert(
            VipKey {
                addr: lb_common::ipv4_mapped(0),
                port: 3,
                proto: 6,
                _pad: 0,
            },
            VipInfo::default(),
            0,
        )
        .unwrap();
    }
    for (name, _) in PROBES {
        let p: &mut Xdp = probes.program_mut(name).unwrap().try_into().unwrap();
        p.load().unwrap();
    }
    let pass: &Xdp = aux.program("pass").unwrap().try_into().unwrap();
    let mac_swap: &Xdp = aux.program("mac_swap").unwrap().try_into().unwrap();

    let established = Ipv4Frame::tcp(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (Ipv4Addr::new(198, 18, 1, 1), 40000),
        (VIP, 6379),
        TCP_ACK,
    )
    .build();
    let non_vip = Ipv4Frame::tcp(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (Ipv4Addr::new(198, 18, 1, 1), 40000),
        (Ipv4Addr::new(198, 18, 0, 200), 6379),
        TCP_SYN,
    )
    .build();
    ns_per_packet(lb.program(), &established, 1); // tracks the flow

    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut next_syn = 0u32;
    for round in 0..ROUNDS {
        let tx_before = snapshot::read(&lb).unwrap().verdicts.tx;
        samples
            .entry("established")
            .or_default()
            .push(ns_per_packet(lb.program(), &established, REPEAT));
        let tx = snapshot::read(&lb).unwrap().verdicts.tx - tx_before;
        assert_eq!(
            tx, REPEAT as u64,
            "every established run must take the forwarding path"
        );
        samples
            .entry("non_vip")
            .or_default()
            .push(ns_per_packet(lb.program(), &non_vip, REPEAT));
        samples
            .entry("pass")
            .or_default()
            .push(ns_per_packet(pass, &non_vip, REPEAT));
        samples
            .entry("mac_swap")
            .or_default()
            .push(ns_per_packet(mac_swap, &established, REPEAT));
        for (name, _) in PROBES {
            let p: &Xdp = probes.program(name).unwrap().try_into().unwrap();
            let ns = ns_per_packet(p, &established, REPEAT);
            samples.entry(name).or_default().push(ns);
        }
        // New connections: a distinct SYN, then its first ACK, one call each (repeat = 1),
        // next to PASS called the same way.
        let (mut syn_once, mut ack_once, mut pass_once) = (Vec::new(), Vec::new(), Vec::new());
        let before = snapshot::read(&lb).unwrap().vips[0].counters.new_flows;
        for _ in 0..NEW_FLOWS_PER_ROUND {
            let syn = client_packet(next_syn, TCP_SYN);
            let ack = client_packet(next_syn, TCP_ACK);
            next_syn += 1;
            syn_once.push(ns_per_packet(lb.program(), &syn, 1));
            ack_once.push(ns_per_packet(lb.program(), &ack, 1));
            pass_once.push(ns_per_packet(pass, &syn, 1));
        }
        let created = snapshot::read(&lb).unwrap().vips[0].counters.new_flows - before;
        assert_eq!(
            created, NEW_FLOWS_PER_ROUND as u64,
            "every first ACK must create a flow (and no SYN)"
        );
        samples
            .entry("syn_once")
            .or_default()
            .push(median(syn_once));
        samples
            .entry("ack_once")
            .or_default()
            .push(median(ack_once));
        samples
            .entry("pass_once")
            .or_default()
            .push(median(pass_once));
        for (i, (port, _, _)) in SCHEDULER_VIPS.iter().enumerate() {
            let (mut syn_once, mut ack_once) = (Vec::new(), Vec::new());
            let base = 1_000_000 * (i as u32 + 1) + round as u32 * SCHEDULER_FLOWS_PER_ROUND;
            for n in base..base + SCHEDULER_FLOWS_PER_ROUND {
                let (syn, ack) = (
                    client_packet_to(*port, n, TCP_SYN),
                    client_packet_to(*port, n, TCP_ACK),
                );
                syn_once.push(ns_per_packet(lb.program(), &syn, 1));
                ack_once.push(ns_per_packet(lb.program(), &ack, 1));
            }
            samples
                .entry(["rr_syn", "wlc_syn", "persist_syn"][i])
                .or_default()
                .push(median(syn_once));
            samples
                .entry(["rr_ack", "wlc_ack", "persist_ack"][i])
                .or_default()
                .push(median(ack_once));
        }
        eprintln!("datapath round {}/{ROUNDS} done", round + 1);
    }
    let m = |k: &str| median(samples[k].clone());
    let (pass_ns, swap_ns) = (m("pass"), m("mac_swap"));
    // Per-call overhead removed, the PASS floor added back (see "How" below).
    let once = |k: &str| m(k) - m("pass_once") + pass_ns;
    let (syn_ns, ack_ns) = (once("syn_once"), once("ack_once"));
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let rows = [
        ("floor: XDP_PASS", pass_ns, "", ""),
        ("floor: MAC swap + XDP_TX", swap_ns, "", ""),
        (
            "established flow (conntrack hit, XDP_TX)",
            m("established"),
            "<= 2.0x MAC-swap floor",
            met(m("established") / swap_ns <= 2.0),
        ),
        (
            "new connection: SYN (Maglev, not tracked, XDP_TX)",
            syn_ns,
            "<= 13x PASS floor",
            met(syn_ns / pass_ns <= 13.0),
        ),
        (
            "new connection: first ACK (Maglev + conntrack insert, XDP_TX)",
            ack_ns,
            "",
            "",
        ),
        ("new connection: SYN + first ACK", syn_ns + ack_ns, "", ""),
        (
            "non-VIP (XDP_PASS)",
            m("non_vip"),
            "<= 1.3x PASS floor",
            met(m("non_vip") / pass_ns <= 1.3),
        ),
    ];
    let _ = writeln!(report, "## Datapath, BPF_PROG_TEST_RUN\n");
    let _ = writeln!(
        report,
        "Median of {ROUNDS} interleaved rounds; each round runs every variant once with repeat = {REPEAT} (kernel-measured ns per run).\n"
    );
    let _ = writeln!(
        report,
        "| case | ns/packet | x PASS floor | x MAC-swap floor | target | |\n|---|---:|---:|---:|---|---|"
    );
    for (name, ns, target, met) in rows {
        let _ = writeln!(
            report,
            "| {name} | {ns:.1} | {:.2} | {:.2} | {target} | {met} |",
            ns / pass_ns,
            ns / swap_ns
        );
    }
    let _ = writeln!(
        report,
        "\nReading it: an established packet is parse + prefilter + the interface's MAC + one \
per-CPU flow-cache slot (the LRU lookup is skipped) + MAC rewrite + counters, every field read \
at its full width (`wire.rs`). A non-VIP packet stops after the prefilter, one inlined array \
read, before its MAC is looked at. A bare SYN pays an LRU lookup (a miss), a VIP hash lookup, \
the backend-MAC guard's prefilter (an array read; its hash lookup only for a MAC sharing a slot \
with a backend's) and a Maglev ring read, and is not tracked (so a flood of spoofed SYNs cannot \
evict established flows); the connection's first ACK pays the same again plus the LRU insert \
(htab_lru_map_update_elem). With repeat = 1 every call starts with cold caches and TLB, which \
subtracting the PASS-once overhead does not remove; the primitives below put numbers on those \
parts. On this shared machine, whole runs drift by 10-30% within minutes (the same commit \
measured a SYN at 663 ns one hour and 1,008 ns the next). Compare figures within one run; \
across runs, compare the ratios, and only as far as they repeat."
    );
    let _ = writeln!(
        report,
        "\nNew connections to VIPs whose schedulers keep state, measured the same way in the same rounds \
({SCHEDULER_FLOWS_PER_ROUND} per round each), beside Maglev above:\n"
    );
    let _ = writeln!(
        report,
        "| scheduler | SYN ns | x PASS floor | first ACK ns | x PASS floor | what a new flow pays beyond Maglev |\n|---|---:|---:|---:|---:|---|"
    );
    let _ = writeln!(
        report,
        "| maglev | {syn_ns:.1} | {:.2} | {ack_ns:.1} | {:.2} | |",
        syn_ns / pass_ns,
        ack_ns / pass_ns
    );
    for (i, (_, _, what)) in SCHEDULER_VIPS.iter().enumerate() {
        let (syn, ack) = (
            once(["rr_syn", "wlc_syn", "persist_syn"][i]),
            once(["rr_ack", "wlc_ack", "persist_ack"][i]),
        );
        let name = ["rr", "wlc", "maglev + persistence"][i];
        let _ = writeln!(
            report,
            "| {name} | {syn:.1} | {:.2} | {ack:.1} | {:.2} | {what} |",
            syn / pass_ns,
            ack / pass_ns
        );
    }
    let _ = writeln!(
        report,
        "\nWhat the kernel primitives cost here, each alone in a program, measured in the same rounds:\n"
    );
    let _ = writeln!(
        report,
        "| primitive | ns/packet | ns above the PASS floor |\n|---|---:|---:|"
    );
    for (name, what) in PROBES {
        let _ = writeln!(
            report,
            "| {what} | {:.1} | {:.1} |",
            m(name),
            m(name) - pass_ns
        );
    }
    let _ = writeln!(
        report,
        "\nHow: `established` and `non-VIP` rerun one frame {REPEAT} times (the established frame's flow is tracked first; the \
backends carry the director's MAC so each rerun is still addressed to the director, and the TX counter is checked to equal \
the repeat count). `repeat` would rerun one tracked 5-tuple, so the new-connection rows instead feed {NEW_FLOWS_PER_ROUND} \
distinct SYNs per round, each followed by its first ACK, one call each (repeat = 1; the new-flow counter is checked to \
grow by one per ACK), take the medians, subtract the median of XDP_PASS called the same way (the per-call timing \
overhead) and add back the PASS floor: SYN {:.1} - {:.1} + {pass_ns:.1} ns, ACK {:.1} - {:.1} + {pass_ns:.1} ns.\n",
        m("syn_once"),
        m("pass_once"),
        m("ack_once"),
        m("pass_once")
    );
}

/// Requests per second of SET and GET from `redis-benchmark` in the client namespace.
fn redis_benchmark(client: &Netns, host: Ipv4Addr) -> (f64, f64) {
    let out = client.exec(
        "redis-benchmark",
        &[
            "-h",
            &host.to_string(),
            "-p",
            "6379",
            "-n",
            "100000",
            "-c",
            "50",
            "-t",
            "set,get",
            "--csv",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = |test: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(&format!("\"{test}\"")))
            .and_then(|l| l.split(',').nth(1))
            .and_then(|v| v.trim_matches('"').parse().ok())
            .unwrap_or_else(|| panic!("no {test} result in redis-benchmark output:\n{text}"))
    };
    (rps("SET"), rps("GET"))
}

/// Attaches the aux `l2_forward` program to the director: every IPv4 frame to the director's
/// MAC goes to `backend_mac`. The least a DR forwarder can do.
fn attach_l2_forward(director: &Netns, backend_mac: [u8; 6]) -> Ebpf {
    director.run(move || {
        let own = netdev::interface("eth0").expect("director eth0");
        let mut ebpf = Ebpf::load(object::aux().expect("aux")).expect("load aux");
        let mut slots: Array<_, Interface> =
            Array::try_from(ebpf.map_mut("L2_FORWARD").unwrap()).unwrap();
        slots
            .set(
                0,
                Interface {
                    mac: own.mac,
                    _pad: [0; 2],
                    ifindex: 0,
                },
                0,
            )
            .unwrap();
        slots
            .set(
                1,
                Interface {
                    mac: backend_mac,
                    _pad: [0; 2],
                    ifindex: 0,
                },
                0,
            )
            .unwrap();
        let p: &mut Xdp = ebpf.program_mut("l2_forward").unwrap().try_into().unwrap();
        p.load().unwrap();
        p.attach("eth0", XdpMode::Driver).unwrap();
        ebpf
    })
}

fn lab_redis_benchmark(report: &mut String) {
    eprintln!("lab: building (client, director, one real server)");
    let lab = Lab::new("bench", 1);
    let rs1 = &lab.servers[0];
    let rs1_mac = rs1
        .ns
        .run(|| netdev::interface("eth0").expect("rs1 eth0").mac);
    let config = lab.config(&[(0, 1)]);
    let started = Instant::now();
    let mut results: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for round in 1..=3 {
        results
            .entry("direct")
            .or_default()
            .push(redis_benchmark(&lab.client, rs1.addr));
        {
            let _lbd = Lbd::start(&lab, &config);
            results
                .entry("lbd")
                .or_default()
                .push(redis_benchmark(&lab.client, VIP));
        }
        {
            let _floor = attach_l2_forward(&lab.director, rs1_mac);
            results
                .entry("floor")
                .or_default()
                .push(redis_benchmark(&lab.client, VIP));
        }
        eprintln!("lab round {round}/3 done ({:?})", started.elapsed());
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "lab benchmark exceeded its time bound"
        );
    }
    let med = |k: &str, get: bool| {
        median(
            results[k]
                .iter()
                .map(|r| if get { r.1 } else { r.0 })
                .collect(),
        )
    };
    let _ = writeln!(report, "## Lab: redis-benchmark through the director\n");
    let _ = writeln!(
        report,
        "`redis-benchmark -n 100000 -c 50 -t set,get` from the client namespace; one real server running redis-server; \
veth + bridge, native XDP. 3 interleaved rounds (direct, lbd, floor), medians in requests/s.\n"
    );
    let _ = writeln!(
        report,
        "| path | SET rps | GET rps | SET vs floor | GET vs floor |\n|---|---:|---:|---:|---:|"
    );
    for (key, label) in [
        ("direct", "client -> real server (no director)"),
        (
            "floor",
            "client -> VIP -> minimal MAC-rewrite XDP forwarder",
        ),
        (
            "lbd",
            "client -> VIP -> lbd (parse, VIP, conntrack, Maglev)",
        ),
    ] {
        let _ = writeln!(
            report,
            "| {label} | {:.0} | {:.0} | {:.3} | {:.3} |",
            med(key, false),
            med(key, true),
            med(key, false) / med("floor", false),
            med(key, true) / med("floor", true)
        );
    }
    let _ = writeln!(
        report,
        "\nOn veth everything shares the host's 2 CPUs with redis-server and redis-benchmark, so these figures say whether the \
director is in the way, not what a NIC would do.\n"
    );
}

fn today() -> String {
    String::from_utf8_lossy(
        &Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d")
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default(),
    )
    .trim()
    .to_owned()
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_owned();
    let cpus = info.lines().filter(|l| l.starts_with("processor")).count();
    format!("{model} ({cpus} CPUs)")
}

/// Replaces the section starting at `heading` (up to the next `## ` heading) of the report
/// at `path` with `section`, or appends it.
fn splice_section(path: &str, heading: &str, section: &str) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let out = match text.find(heading) {
        Some(start) => {
            let rest = &text[start + heading.len()..];
            let end = rest
                .find("\n## ")
                .map_or(text.len(), |i| start + heading.len() + i + 1);
            format!("{}{section}{}", &text[..start], &text[end..])
        }
        None => format!("{}\n\n{section}", text.trim_end()),
    };
    std::fs::write(path, out).expect("write the report");
}
