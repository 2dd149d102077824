//! `lbd status --stats` and `--rate`: the datapath's counters, and their rates over an
//! interval, in `ipvsadm -L -n --stats` / `--rate` columns. In direct routing the replies
//! bypass the director, so the Out columns are always 0; they are kept so scripts written
//! for ipvsadm find their columns.

use std::{fmt::Write as _, time::Duration};

use lb_common::{PROTO_TCP, TrafficCounters, VerdictCounters};

use crate::dataplane::snapshot::{Snapshot, VipStatus};

/// Width of the label column for IPv4 addresses; a wider (IPv6) label widens it.
const LEFT: usize = 33;

/// The label column's width for `snapshot`: its widest label, at least [`LEFT`].
fn label_width(snapshot: &Snapshot) -> usize {
    snapshot
        .vips
        .iter()
        .flat_map(|vip| {
            std::iter::once(vip_label(vip))
                .chain(vip.backends.iter().map(|b| backend_label(vip, b.address())))
        })
        .map(|label| label.len())
        .fold(LEFT, usize::max)
}

fn header(out: &mut String, width: usize, columns: [&str; 5]) {
    let _ = writeln!(
        out,
        "{:<width$} {:>10} {:>12} {:>8} {:>14} {:>8}",
        "Prot LocalAddress:Port", columns[0], columns[1], columns[2], columns[3], columns[4]
    );
    let _ = writeln!(out, "  -> RemoteAddress:Port");
}

fn line(out: &mut String, width: usize, left: &str, [conns, packets, bytes]: [String; 3]) {
    let _ = writeln!(
        out,
        "{left:<width$} {conns:>10} {packets:>12} {:>8} {bytes:>14} {:>8}",
        0, 0
    );
}

fn vip_label(vip: &VipStatus) -> String {
    let proto = if vip.key.proto == PROTO_TCP {
        "TCP"
    } else {
        "UDP"
    };
    format!(
        "{proto:<4} {}",
        std::net::SocketAddr::new(vip.address(), vip.port())
    )
}

fn backend_label(vip: &VipStatus, backend: std::net::IpAddr) -> String {
    format!("  -> {}", std::net::SocketAddr::new(backend, vip.port()))
}

fn verdicts(
    out: &mut String,
    title: &str,
    values: impl IntoIterator<Item = (&'static str, String)>,
) {
    let _ = writeln!(out, "{title}");
    for (name, value) in values {
        let _ = writeln!(out, "  {name:<22} {value:>14}");
    }
}

/// Counters since each VIP and backend was created: connections (new flows), packets and
/// bytes in; then every datapath verdict since the program was loaded.
pub fn render_stats(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let width = label_width(snapshot);
    header(
        &mut out,
        width,
        ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"],
    );
    let totals = |c: &TrafficCounters| [c.new_flows, c.packets, c.bytes].map(|n| n.to_string());
    for vip in &snapshot.vips {
        line(&mut out, width, &vip_label(vip), totals(&vip.counters));
        for b in &vip.backends {
            line(
                &mut out,
                width,
                &backend_label(vip, b.address()),
                totals(&b.counters),
            );
        }
    }
    verdicts(
        &mut out,
        "datapath verdicts (frames):",
        snapshot.verdicts.named().map(|(n, v)| (n, v.to_string())),
    );
    out
}

/// Per second between two snapshots `elapsed` apart: connections, packets and bytes in per
/// VIP and backend (a backend that was replaced in between is shown from its new start),
/// then every verdict.
pub fn render_rate(before: &Snapshot, after: &Snapshot, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    // A counter below its earlier value was reset in between (its VIP or backend made
    // anew): it grew by what it holds now.
    let per_sec = |now: u64, then: u64| {
        let grown = if now >= then { now - then } else { now };
        format!("{:.0}", grown as f64 / secs)
    };
    let rates = |now: &TrafficCounters, then: &TrafficCounters| {
        [
            per_sec(now.new_flows, then.new_flows),
            per_sec(now.packets, then.packets),
            per_sec(now.bytes, then.bytes),
        ]
    };
    let zero = TrafficCounters::default();
    let mut out = String::new();
    let width = label_width(after);
    header(
        &mut out,
        width,
        ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"],
    );
    for vip in &after.vips {
        let old = before
            .vips
            .iter()
            .find(|v| v.key == vip.key && v.info.vip_id == vip.info.vip_id);
        line(
            &mut out,
            width,
            &vip_label(vip),
            rates(&vip.counters, old.map_or(&zero, |v| &v.counters)),
        );
        for b in &vip.backends {
            let then = old
                .and_then(|v| {
                    v.backends
                        .iter()
                        .find(|o| o.id == b.id && o.entry.generation == b.entry.generation)
                })
                .map_or(&zero, |o| &o.counters);
            line(
                &mut out,
                width,
                &backend_label(vip, b.address()),
                rates(&b.counters, then),
            );
        }
    }
    let then: VerdictCounters = before.verdicts;
    verdicts(
        &mut out,
        &format!("datapath verdicts (frames per second, over {secs:.1} s):"),
        after
            .verdicts
            .named()
            .into_iter()
            .zip(then.named())
            .map(|((name, now), (_, old))| (name, per_sec(now, old))),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::snapshot::BackendStatus;
    use lb_common::{Backend, Settings, VipInfo, VipKey};

    fn snapshot(packets: u64, tx: u64, generation: u32) -> Snapshot {
        let counters = TrafficCounters {
            packets,
            bytes: packets * 100,
            new_flows: packets / 10,
        };
        Snapshot {
            vips: vec![VipStatus {
                key: VipKey {
                    addr: lb_common::ipv4_mapped(u32::from_ne_bytes([198, 18, 0, 100])),
                    port: 6379u16.to_be(),
                    proto: PROTO_TCP,
                    _pad: 0,
                },
                info: VipInfo::default(),
                counters,
                backends: vec![BackendStatus {
                    id: 1,
                    entry: Backend {
                        addr: lb_common::ipv4_mapped(u32::from_ne_bytes([198, 18, 0, 11])),
                        generation,
                        ..Backend::default()
                    },
                    counters,
                    active_flows: 0,
                    closing_flows: 0,
                }],
            }],
            verdicts: VerdictCounters {
                tx,
                ..VerdictCounters::default()
            },
            settings: Settings::default(),
        }
    }

    fn row<'a>(text: &'a str, starts: &str) -> Vec<&'a str> {
        text.lines()
            .find(|l| l.trim_start().starts_with(starts))
            .unwrap_or_else(|| panic!("no {starts} in\n{text}"))
            .split_whitespace()
            .collect()
    }

    #[test]
    fn stats_show_connections_packets_and_bytes_and_every_verdict_by_name() {
        let text = render_stats(&snapshot(1000, 1234, 1));
        assert_eq!(
            row(&text, "TCP"),
            [
                "TCP",
                "198.18.0.100:6379",
                "100",
                "1000",
                "0",
                "100000",
                "0"
            ]
        );
        assert_eq!(
            row(&text, "-> 198"),
            ["->", "198.18.0.11:6379", "100", "1000", "0", "100000", "0"]
        );
        assert_eq!(row(&text, "tx "), ["tx", "1234"]);
        for name in ["drop_no_backend", "pass_fragment", "tx_icmp_error"] {
            assert_eq!(row(&text, name)[1], "0", "{name}");
        }
    }

    #[test]
    fn rates_divide_the_growth_by_the_interval_and_restart_a_replaced_backend() {
        let text = render_rate(
            &snapshot(1000, 0, 1),
            &snapshot(3000, 500, 1),
            Duration::from_secs(2),
        );
        assert_eq!(
            row(&text, "TCP"),
            [
                "TCP",
                "198.18.0.100:6379",
                "100",
                "1000",
                "0",
                "100000",
                "0"
            ]
        );
        assert_eq!(row(&text, "tx "), ["tx", "250"]);
        // Generation 2: another allocation of the id, counted from 0.
        let text = render_rate(
            &snapshot(1000, 0, 1),
            &snapshot(3000, 0, 2),
            Duration::from_secs(1),
        );
        assert_eq!(row(&text, "-> 198")[2..4], ["300", "3000"]);
        // The VIP removed and made anew with the same id: its counters restarted lower.
        let text = render_rate(
            &snapshot(5000, 0, 1),
            &snapshot(200, 0, 1),
            Duration::from_secs(1),
        );
        assert_eq!(row(&text, "TCP")[2..4], ["20", "200"]);
    }
}
