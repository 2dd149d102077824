//! `lbd status`: an `ipvsadm -L -n --stats`-like table from the pinned maps, with each
//! checked backend's health from the daemon's state file.

use std::{fmt::Write as _, time::SystemTime};

use lb_common::{PROTO_TCP, VerdictCounters};

use crate::{
    config::{Scheduler, format_mac},
    dataplane::snapshot::{Snapshot, VipStatus},
    health::report::HealthLine,
    vrrp::report::VrrpLine,
};

/// Width of the descriptive columns; counters follow, right-aligned.
const LEFT: usize = 78;
/// `255.255.255.255:65535`: the widest IPv4 address and port. Wider (IPv6) addresses widen
/// the column for the whole table.
const ADDR: usize = 21;

/// One table row: the left part padded, then packets, bytes, new flows. Every column is
/// followed by at least one space, so a value as wide as its column never runs into the next.
fn row(
    out: &mut String,
    addr: usize,
    left: &str,
    packets: impl ToString,
    bytes: impl ToString,
    new_flows: impl ToString,
    health: &str,
) {
    let width = LEFT + addr - ADDR;
    let line = format!(
        "{left:<width$} {:>12} {:>14} {:>10} {health}",
        packets.to_string(),
        bytes.to_string(),
        new_flows.to_string()
    );
    let _ = writeln!(out, "{}", line.trim_end());
}

/// The health columns of a checked backend: state, role, age of the last check, reason.
fn health_columns(line: &HealthLine, now: SystemTime) -> String {
    let age = line.checked.map_or("-".to_owned(), |t| {
        let secs = now.duration_since(t).unwrap_or_default().as_secs_f64();
        format!("{secs:.1}s")
    });
    format!(
        "{:<7} {:<18} {:>7} {}",
        line.state, line.role, age, line.reason
    )
}

/// The backend part of a row: address, MAC, weight and flow counts.
fn backend_columns(
    addr: usize,
    remote: &str,
    mac: &str,
    weight: &str,
    active: &str,
    inactive: &str,
) -> String {
    format!("  -> {remote:<addr$} {mac:<17} {weight:>6} {active:>10} {inactive:>10}")
}

/// The address column's width: the widest `address:port` in the table, at least [`ADDR`].
fn address_width(snapshot: &Snapshot, health: &[HealthLine]) -> usize {
    let vips = snapshot.vips.iter().flat_map(|vip| {
        std::iter::once(vip.address())
            .chain(vip.backends.iter().map(|b| b.address()))
            .map(|addr| std::net::SocketAddr::new(addr, vip.port()))
    });
    let checked = health
        .iter()
        .map(|h| std::net::SocketAddr::new(h.backend, h.port));
    vips.chain(checked)
        .map(|socket| socket.to_string().len())
        .fold(ADDR, usize::max)
}

/// Renders a snapshot as a table; `health` adds the columns of checked backends (and rows
/// for backends a failed check took out of the maps).
pub fn render(
    instance: &str,
    snapshot: &Snapshot,
    health: &[HealthLine],
    vrrp: &[VrrpLine],
    sync: Option<&str>,
    now: SystemTime,
) -> String {
    let mut out = String::new();
    let addr = address_width(snapshot, health);
    let _ = writeln!(
        out,
        "lbd instance {instance}: {} VIP(s), forwarding {}",
        snapshot.vips.len(),
        if snapshot.settings.forwarding != 0 {
            "on"
        } else {
            "off"
        }
    );
    render_vrrp(&mut out, vrrp, now);
    if let Some(sync) = sync {
        let _ = writeln!(out, "flow sync: {sync}");
    }
    row(
        &mut out,
        addr,
        &format!(
            "{:<4} {:<addr$} {:<9}",
            "Prot", "LocalAddress:Port", "Scheduler"
        ),
        "Packets",
        "Bytes",
        "NewFlows",
        if health.is_empty() {
            ""
        } else {
            "Health  Role               Checked Reason"
        },
    );
    let _ = writeln!(
        out,
        "{}",
        backend_columns(
            addr,
            "RemoteAddress:Port",
            "MAC",
            "Weight",
            "ActiveConn",
            "InActConn"
        )
    );
    for vip in &snapshot.vips {
        render_vip(&mut out, addr, vip, health, now, snapshot.settings.jiffy_ns);
    }
    let v: &VerdictCounters = &snapshot.verdicts;
    let _ = writeln!(
        out,
        "datapath: rx {} tx {} icmp-error {} fragment {} fragment-hashed {} | pass: not-for-us {} not-balanced {} not-vip {} fragment {} \
         not-forwarding {} local {} from-backend {} | drop: malformed {} no-backend {}",
        v.rx(),
        v.tx,
        v.tx_icmp_error,
        v.tx_fragment,
        v.tx_fragment_hashed,
        v.pass_not_for_us,
        v.pass_not_balanced,
        v.pass_not_vip,
        v.pass_fragment,
        v.pass_not_forwarding,
        v.pass_local,
        v.pass_from_backend,
        v.drop_malformed,
        v.drop_no_backend
    );
    out
}

/// One line per VRRP instance: who is master, since when and why, and what was dropped.
fn render_vrrp(out: &mut String, vrrp: &[VrrpLine], now: SystemTime) {
    if vrrp.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "{:<16} {:<15} {:>4} {:<8} {:>4} {:<15} {:>8} {:>8} {:>8} {:<12} Reason",
        "VRRP",
        "Interface",
        "VRID",
        "State",
        "Prio",
        "Master",
        "Since",
        "Sent",
        "Received",
        "Rejected"
    );
    for l in vrrp {
        let since = now
            .duration_since(l.since)
            .unwrap_or_default()
            .as_secs_f64();
        let rejected =
            crate::vrrp::report::rejected_text(&l.rejected).unwrap_or_else(|| "0".to_owned());
        let _ = writeln!(
            out,
            "{:<16} {:<15} {:>4} {:<8} {:>4} {:<15} {:>7.1}s {:>8} {:>8} {:<12} {}",
            l.name,
            l.interface,
            l.vrid,
            l.state,
            l.priority,
            l.master.map_or("-".to_owned(), |a| a.to_string()),
            since,
            l.sent,
            l.received,
            rejected,
            l.reason
        );
    }
}

/// The scheduler's name, and `-p SECONDS` with persistence (as `ipvsadm -p`).
fn scheduler_text(vip: &VipStatus, jiffy_ns: u64) -> String {
    let name = Scheduler::ALL
        .iter()
        .find(|(s, _, _)| s.datapath_value() == vip.info.scheduler)
        .map_or("?", |(_, name, _)| name);
    if vip.info.persist_timeout == 0 {
        return name.to_owned();
    }
    let secs = vip.info.persist_timeout.saturating_mul(jiffy_ns.max(1)) / 1_000_000_000;
    format!("{name} -p {secs}")
}

fn render_vip(
    out: &mut String,
    addr: usize,
    vip: &VipStatus,
    health: &[HealthLine],
    now: SystemTime,
    jiffy_ns: u64,
) {
    let proto = if vip.key.proto == PROTO_TCP {
        "TCP"
    } else {
        "UDP"
    };
    let local = std::net::SocketAddr::new(vip.address(), vip.port()).to_string();
    let c = &vip.counters;
    row(
        out,
        addr,
        &format!(
            "{proto:<4} {local:<addr$} {:<9}",
            scheduler_text(vip, jiffy_ns)
        ),
        c.packets,
        c.bytes,
        c.new_flows,
        "",
    );
    let proto_name = if vip.key.proto == PROTO_TCP {
        "TCP"
    } else {
        "UDP"
    };
    let checked: Vec<&HealthLine> = health
        .iter()
        .filter(|h| h.vip == vip.address() && h.port == vip.port() && h.protocol == proto_name)
        .collect();
    for b in &vip.backends {
        let remote = std::net::SocketAddr::new(b.address(), vip.port()).to_string();
        // A local backend (this director) has no MAC: its flows go to the local stack.
        let mac = if b.entry.flags & lb_common::BACKEND_F_LOCAL != 0 {
            "local".to_owned()
        } else {
            format_mac(&b.entry.mac)
        };
        let left = backend_columns(
            addr,
            &remote,
            &mac,
            &b.entry.weight.to_string(),
            &b.active_flows.to_string(),
            &b.closing_flows.to_string(),
        );
        row(
            out,
            addr,
            &left,
            b.counters.packets,
            b.counters.bytes,
            b.counters.new_flows,
            &checked
                .iter()
                .find(|h| h.backend == b.address())
                .map_or(String::new(), |h| health_columns(h, now)),
        );
    }
    // Checked backends the maps do not hold: taken out by their check.
    for h in checked.iter().filter(|h| vip.backend(h.backend).is_none()) {
        let remote = std::net::SocketAddr::new(h.backend, vip.port()).to_string();
        let left = backend_columns(addr, &remote, "-", "-", "-", "-");
        row(out, addr, &left, "-", "-", "-", &health_columns(h, now));
    }
}

#[cfg(test)]
mod tests {
    use lb_common::{BACKEND_F_ACTIVE, Backend, TrafficCounters, VipInfo, VipKey};

    use super::*;
    use crate::dataplane::snapshot::BackendStatus;

    /// A snapshot of one TCP VIP at `addr`:65535 with one backend at the same address, both
    /// with `counters`; the backend of weight `weight` holding `flows` open and closing.
    fn one_vip(
        addr: std::net::IpAddr,
        counters: TrafficCounters,
        weight: u32,
        flows: u64,
    ) -> Snapshot {
        let words = lb_common::ip_words(addr);
        Snapshot {
            vips: vec![VipStatus {
                key: VipKey::new(addr, 65535, PROTO_TCP),
                info: VipInfo::default(),
                counters,
                backends: vec![BackendStatus {
                    id: 1,
                    entry: Backend {
                        mac: [0xaa; 6],
                        addr: words,
                        flags: BACKEND_F_ACTIVE,
                        weight,
                        ..Backend::default()
                    },
                    counters,
                    active_flows: flows,
                    closing_flows: flows,
                }],
            }],
            ..Snapshot::default()
        }
    }

    const HUGE: TrafficCounters = TrafficCounters {
        packets: u64::MAX,
        bytes: u64::MAX,
        new_flows: u64::MAX,
    };

    #[test]
    fn the_widest_address_and_counters_never_run_into_the_next_column() {
        let snapshot = one_vip(
            "100.100.100.100".parse().unwrap(),
            HUGE,
            65535,
            4_294_967_295,
        );
        let table = render("x", &snapshot, &[], &[], None, SystemTime::now());
        for needle in [
            "100.100.100.100:65535 maglev",
            "100.100.100.100:65535 aa:aa:aa:aa:aa:aa  65535 4294967295 4294967295",
        ] {
            assert!(table.contains(needle), "{needle:?} not in\n{table}");
        }
        let max = u64::MAX.to_string();
        assert!(
            table.contains(&format!(" {max} {max} {max}\n")),
            "counters apart:\n{table}"
        );
    }

    /// The widest IPv6 address widens the address column; every column still has its space.
    #[test]
    fn an_ipv6_address_widens_the_address_column_for_every_row() {
        let wide: std::net::IpAddr = "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        let mut snapshot = one_vip(wide, HUGE, 65535, 4_294_967_295);
        let narrow = VipStatus {
            key: VipKey::new("198.18.0.1".parse().unwrap(), 80, PROTO_TCP),
            backends: vec![],
            ..snapshot.vips[0].clone()
        };
        snapshot.vips.push(narrow);
        let table = render("x", &snapshot, &[], &[], None, SystemTime::now());
        let wide_socket = format!("[{wide}]:65535");
        for needle in [
            format!("TCP  {wide_socket} maglev"),
            format!("  -> {wide_socket} aa:aa:aa:aa:aa:aa  65535 4294967295 4294967295"),
            format!(
                "TCP  {:<width$} maglev",
                "198.18.0.1:80",
                width = wide_socket.len()
            ),
        ] {
            assert!(table.contains(&needle), "{needle:?} not in\n{table}");
        }
        let max = u64::MAX.to_string();
        let columns: Vec<usize> = table
            .lines()
            .filter(|l| l.ends_with(&format!(" {max} {max} {max}")))
            .map(|l| l.len())
            .collect();
        assert_eq!(columns.len(), 3, "{table}");
        assert!(
            columns.iter().all(|&w| w == columns[0]),
            "counters line up:\n{table}"
        );
    }

    /// An IPv6 VIP and backend at the widest address: every row's counters stay under their
    /// headings, as they do for the widest IPv4 address.
    #[test]
    fn ipv6_rows_keep_the_counters_under_their_headings() {
        let counters = TrafficCounters {
            packets: 7,
            bytes: 8,
            new_flows: 9,
        };
        let addr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe".parse().unwrap();
        let snapshot = one_vip(addr, counters, 1, 1);
        let table = render("x", &snapshot, &[], &[], None, SystemTime::now());
        let end_of = |line: &str, word: &str| line.find(word).map(|at| at + word.len());
        let heading = table.lines().find(|l| l.contains("Packets")).unwrap();
        let packets_end = end_of(heading, "Packets").unwrap();
        for row in table.lines().filter(|l| l.contains("]:65535")) {
            assert_eq!(
                end_of(row, " 7 ").map(|e| e - 1),
                Some(packets_end),
                "the packet count is not under \"Packets\":\n{table}"
            );
        }
    }
}
