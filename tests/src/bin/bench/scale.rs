//! Established-packet cost as the datapath's state grows (IPv6, a tagged frame, a VIP with
//! 1,000 backends, 100k and 1M tracked flows), each as a ratio to the MAC-swap floor measured in
//! the same rounds; then a spoofed-SYN flood of 1M distinct sources against held flows.

use std::{fmt::Write as _, net::Ipv4Addr, path::Path};

use aya::{Ebpf, programs::Xdp};
use lb_common::{Flow, FlowKey};
use lb_daemon::{
    apply::Applier,
    config::Config,
    daemon::{desired_state, settings},
    dataplane::{Dataplane, LoadOptions, object, snapshot},
};
use lb_tests::{
    frame::{Ipv4Frame, TCP_ACK, TCP_SYN},
    frame6::Ipv6Frame,
    lab::{VIP, VIP6},
};

use crate::{CLIENT_MAC, DIRECTOR_MAC, REPEAT, ROUNDS, median, ns_per_packet};

const WIDE_BACKENDS: u32 = 1_000;
const HELD: u32 = 1_000;
const FLOOD: u32 = 1_000_000;

/// VIP :6379 with three backends and :6380 with [`WIDE_BACKENDS`], all carrying the
/// director's MAC so a rerun frame stays addressed to the director.
fn config() -> Config {
    let mac = DIRECTOR_MAC.map(|b| format!("{b:02x}")).join(":");
    let backend =
        |addr: Ipv4Addr| format!("[[vip.backend]]\naddress = \"{addr}\"\nmac = \"{mac}\"\n");
    let mut text =
        format!("[director]\ninterfaces = [\"lo\"]\n[[vip]]\naddress = \"{VIP}\"\nport = 6379\n");
    for i in 11..14 {
        text.push_str(&backend(Ipv4Addr::new(198, 18, 0, i)));
    }
    text.push_str(&format!("[[vip]]\naddress = \"{VIP}\"\nport = 6380\n"));
    for i in 0..WIDE_BACKENDS {
        text.push_str(&backend(offset(Ipv4Addr::new(198, 18, 8, 0), i)));
    }
    text.push_str(&format!("[[vip]]\naddress = \"{VIP6}\"\nport = 6379\n"));
    for i in 0x11..0x14 {
        text.push_str(&format!(
            "[[vip.backend]]\naddress = \"2001:2::{i:x}\"\nmac = \"{mac}\"\n"
        ));
    }
    Config::parse(Path::new("bench.toml"), &text).expect("bench config")
}

fn load(config: &Config, max_flows: u32) -> Dataplane {
    let mut lb = Dataplane::load(
        object::lb().expect("object"),
        &LoadOptions {
            max_flows,
            ..Default::default()
        },
    )
    .expect("load lb");
    let mut w = lb.writer();
    w.set_settings(settings(config)).unwrap();
    w.set_interface(1, DIRECTOR_MAC).unwrap();
    Applier::new()
        .apply(&mut lb, &desired_state(config).unwrap())
        .unwrap();
    lb
}

fn offset(base: Ipv4Addr, by: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + by)
}

/// The `i`th of up to 4M distinct (address, port) sources in 198.19.0.0/16.
fn spoofed(i: u32) -> (Ipv4Addr, u16) {
    (
        offset(Ipv4Addr::new(198, 19, 0, 0), i % 65_536),
        1024 + (i / 65_536) as u16,
    )
}

fn packet(src: (Ipv4Addr, u16), port: u16, flags: u8) -> Vec<u8> {
    Ipv4Frame::tcp(CLIENT_MAC, DIRECTOR_MAC, src, (VIP, port), flags).build()
}

/// One 802.1Q tag (VLAN 7) after the MAC addresses.
fn tagged(frame: &[u8]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
    out
}

/// Fills the flow table with `count` more flows of other clients, as sync would install them.
fn fill(lb: &mut Dataplane, from: u32, count: u32) {
    let backend_id = 1; // ids are allocated from 1: one of :6379's backends
    let generation = {
        let snap = snapshot::read(lb).unwrap();
        let vip = snap.vips.iter().find(|v| v.port() == 6379).unwrap();
        vip.backends
            .iter()
            .find(|b| b.id == backend_id)
            .unwrap()
            .entry
            .generation
    };
    let mut w = lb.writer();
    for i in from..from + count {
        let key = FlowKey {
            src_addr: u32::from_ne_bytes(spoofed(i).0.octets()),
            dst_addr: u32::from_ne_bytes(VIP.octets()),
            src_port: (spoofed(i).1 + 20_000).to_be(),
            dst_port: 6379u16.to_be(),
            proto: 6,
            _pad0: 0,
            _pad1: 0,
        };
        let flow = Flow {
            backend_id,
            vip_id: 0,
            flags: 0,
            backend_generation: generation,
            last_seen: u64::MAX / 2, // never expires during the run
        };
        w.install_flow(&key, &flow).unwrap();
    }
}

pub fn datapath_scale(report: &mut String) {
    let config = config();
    let mut lb = load(&config, 1_100_000);
    let mut aux = Ebpf::load(object::aux().expect("aux object")).expect("load aux");
    let p: &mut Xdp = aux.program_mut("mac_swap").unwrap().try_into().unwrap();
    p.load().unwrap();
    let mac_swap: &Xdp = aux.program("mac_swap").unwrap().try_into().unwrap();

    let client = (Ipv4Addr::new(198, 18, 1, 1), 40000);
    let plain = packet(client, 6379, TCP_ACK);
    let vlan = tagged(&plain);
    let wide = packet(client, 6380, TCP_ACK);
    let ipv6 = Ipv6Frame::tcp(
        CLIENT_MAC,
        DIRECTOR_MAC,
        ("2001:2:0:1::1".parse().unwrap(), 40000),
        (VIP6, 6379),
        TCP_ACK,
    )
    .build();
    for frame in [&plain, &vlan, &wide, &ipv6] {
        let (verdict, _) = {
            let r = lb_tests::xdp::test_run(lb.program(), frame, 1, 1);
            (r.verdict, r.frame)
        };
        assert_eq!(
            verdict, 3,
            "each case's first packet is forwarded (and tracked)"
        );
    }
    // Ratio of a case to the MAC-swap floor, median over interleaved rounds.
    let ratios =
        |lb: &mut Dataplane, cases: &[(&str, &[u8])], into: &mut Vec<(String, f64, f64)>| {
            let mut per_case: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
            let mut floor = Vec::new();
            for _ in 0..ROUNDS {
                floor.push(ns_per_packet(mac_swap, &plain, REPEAT));
                for (i, (_, frame)) in cases.iter().enumerate() {
                    let before = snapshot::read(lb).unwrap().verdicts.tx;
                    per_case[i].push(ns_per_packet(lb.program(), frame, REPEAT));
                    let tx = snapshot::read(lb).unwrap().verdicts.tx - before;
                    assert_eq!(tx, REPEAT as u64, "every run takes the forwarding path");
                }
            }
            let floor = median(floor);
            for ((name, _), samples) in cases.iter().zip(per_case) {
                let ns = median(samples);
                into.push((name.to_string(), ns, ns / floor));
            }
        };
    let mut rows = Vec::new();
    ratios(
        &mut lb,
        &[
            ("IPv4 established (reference)", &plain),
            ("IPv6 established", &ipv6),
            ("802.1Q-tagged established", &vlan),
            ("established, VIP with 1,000 backends", &wide),
        ],
        &mut rows,
    );
    fill(&mut lb, 0, 100_000);
    ratios(
        &mut lb,
        &[("established, 100k flows tracked", &plain)],
        &mut rows,
    );
    fill(&mut lb, 100_000, 900_000);
    ratios(
        &mut lb,
        &[("established, 1M flows tracked", &plain)],
        &mut rows,
    );
    let reference = rows[0].2;

    let _ = writeln!(report, "\n### Established packets as the state grows\n");
    let _ = writeln!(
        report,
        "Median of {ROUNDS} rounds of {REPEAT} reruns, each round next to the MAC-swap floor; compared by \
their ratios to the floor, so rounds measured at different times compare fairly.\n"
    );
    let _ = writeln!(
        report,
        "| case | ns/packet | x MAC-swap floor | vs IPv4 established | target | |\n|---|---:|---:|---:|---|---|"
    );
    for (i, (name, ns, ratio)) in rows.iter().enumerate() {
        let change = ratio / reference - 1.0;
        let (target, met) = if i == 0 {
            ("", "")
        } else {
            (
                "within 10%",
                if change.abs() <= 0.10 {
                    "met"
                } else {
                    "NOT met"
                },
            )
        };
        let _ = writeln!(
            report,
            "| {name} | {ns:.1} | {ratio:.2} | {:+.1}% | {target} | {met} |",
            change * 100.0
        );
    }
    let _ = writeln!(
        report,
        "\nThe flows are installed as flow sync installs them (`MapWriter::install_flow`); the measured flow is one more."
    );
    drop(lb);
    flood(report);
}

/// [`HELD`] connections are opened (SYN, first ACK) on a director with the default table
/// (262,144 flows); then [`FLOOD`] SYNs from distinct spoofed sources; then the held flows
/// still tracked are counted.
fn flood(report: &mut String) {
    let config = config();
    let mut lb = load(&config, lb_common::DEFAULT_MAX_FLOWS);
    let held = |i: u32, flags| {
        let src = offset(Ipv4Addr::new(198, 18, 2, 0), i / 50_000);
        packet((src, 10_000 + (i % 50_000) as u16), 6379, flags)
    };
    for i in 0..HELD {
        for flags in [TCP_SYN, TCP_ACK] {
            assert_eq!(
                lb_tests::xdp::test_run(lb.program(), &held(i, flags), 1, 1).verdict,
                3
            );
        }
    }
    let tracked = |lb: &Dataplane| -> u64 {
        let snap = snapshot::read(lb).unwrap();
        let vip = snap.vips.iter().find(|v| v.port() == 6379).unwrap();
        vip.backends.iter().map(|b| b.active_flows).sum()
    };
    assert_eq!(tracked(&lb), HELD as u64);
    let mut forwarded = 0u64;
    for i in 0..FLOOD {
        let syn = packet(spoofed(i), 6379, TCP_SYN);
        forwarded += (lb_tests::xdp::test_run(lb.program(), &syn, 1, 1).verdict == 3) as u64;
    }
    let after = tracked(&lb);
    let _ = writeln!(report, "\n### A spoofed-SYN flood against held flows\n");
    let _ = writeln!(
        report,
        "| held flows | spoofed SYNs (distinct source address:port, 65,536 addresses) | SYNs forwarded | flow table | held flows still tracked | evicted | target | |\n|---:|---:|---:|---:|---:|---:|---|---|"
    );
    let _ = writeln!(
        report,
        "| {HELD} | {FLOOD} | {forwarded} | {} | {after} | {} | 0 evicted | {} |",
        lb_common::DEFAULT_MAX_FLOWS,
        HELD as u64 - after,
        if after == HELD as u64 {
            "met"
        } else {
            "NOT met"
        }
    );
    let _ = writeln!(
        report,
        "\nA bare SYN is scheduled by the ring and not tracked; the flow is tracked from its first ACK, which a \
spoofed source never sends. Held flows are counted from the flow table (live entries of the VIP's backends)."
    );
}
