//! `lbd status`: an `ipvsadm -L -n --stats`-like table from the pinned maps.

use std::fmt::Write as _;

use lb_common::{PROTO_TCP, VerdictCounters};

use crate::{
    config::format_mac,
    dataplane::snapshot::{Snapshot, VipStatus},
};

/// Width of the descriptive columns; counters follow, right-aligned.
const LEFT: usize = 72;

/// One table row: the left part padded, then packets, bytes, new flows.
fn row(
    out: &mut String,
    left: &str,
    packets: impl ToString,
    bytes: impl ToString,
    new_flows: impl ToString,
) {
    let _ = writeln!(
        out,
        "{left:<LEFT$}{:>12}{:>14}{:>10}",
        packets.to_string(),
        bytes.to_string(),
        new_flows.to_string()
    );
}

/// Renders a snapshot as a table.
pub fn render(instance: &str, snapshot: &Snapshot) -> String {
    let mut out = String::new();
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
    row(
        &mut out,
        &format!(
            "{:<5}{:<23}{:<10}",
            "Prot", "LocalAddress:Port", "Scheduler"
        ),
        "Packets",
        "Bytes",
        "NewFlows",
    );
    let _ = writeln!(
        out,
        "  -> {:<21}{:<18}{:>7}{:>11}{:>10}",
        "RemoteAddress:Port", "MAC", "Weight", "ActiveConn", "InActConn"
    );
    for vip in &snapshot.vips {
        render_vip(&mut out, vip);
    }
    let v: &VerdictCounters = &snapshot.verdicts;
    let _ = writeln!(
        out,
        "datapath: rx {} tx {} | pass: not-for-us {} not-balanced {} not-vip {} fragment {} \
         not-forwarding {} | drop: malformed {} no-backend {}",
        v.rx(),
        v.tx,
        v.pass_not_for_us,
        v.pass_not_balanced,
        v.pass_not_vip,
        v.pass_fragment,
        v.pass_not_forwarding,
        v.drop_malformed,
        v.drop_no_backend
    );
    out
}

fn render_vip(out: &mut String, vip: &VipStatus) {
    let proto = if vip.key.proto == PROTO_TCP {
        "TCP"
    } else {
        "UDP"
    };
    let local = format!("{}:{}", vip.address(), vip.port());
    let c = &vip.counters;
    row(
        out,
        &format!("{proto:<5}{local:<23}{:<10}", "maglev"),
        c.packets,
        c.bytes,
        c.new_flows,
    );
    for b in &vip.backends {
        let remote = format!("{}:{}", b.address(), vip.port());
        let left = format!(
            "  -> {remote:<21}{:<18}{:>7}{:>11}{:>10}",
            format_mac(&b.entry.mac),
            b.entry.weight,
            b.active_flows,
            b.closing_flows
        );
        row(
            out,
            &left,
            b.counters.packets,
            b.counters.bytes,
            b.counters.new_flows,
        );
    }
}
