//! `lbd status`: an `ipvsadm -L -n --stats`-like table from the pinned maps.

use std::fmt::Write as _;

use lb_common::{PROTO_TCP, VerdictCounters};

use crate::{
    config::format_mac,
    dataplane::snapshot::{Snapshot, VipStatus},
};

/// Renders a snapshot as a table.
pub fn render(instance: &str, snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lbd instance {instance}: {} VIP(s), forwarding {}",
        snapshot.vips.len(),
        on_off(snapshot.settings.forwarding)
    );
    let _ = writeln!(
        out,
        "{:<5}{:<24}{:<10}{:>8}{:>11}{:>11}{:>12}{:>14}{:>10}",
        "Prot", "LocalAddress:Port", "Scheduler", "", "", "", "Packets", "Bytes", "NewFlows"
    );
    let _ = writeln!(
        out,
        "  -> {:<22}{:<19}{:>8}{:>11}{:>11}",
        "RemoteAddress:Port", "MAC", "Weight", "ActiveConn", "InActConn"
    );
    for vip in &snapshot.vips {
        render_vip(&mut out, vip);
    }
    let v: &VerdictCounters = &snapshot.verdicts;
    let _ = writeln!(
        out,
        "datapath: rx {} tx {} | pass: not-for-us {} not-balanced {} not-vip {} fragment {} not-forwarding {} | drop: malformed {} no-backend {}",
        v.rx,
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
    let _ = writeln!(
        out,
        "{:<5}{:<24}{:<10}{:>8}{:>11}{:>11}{:>12}{:>14}{:>10}",
        proto,
        format!("{}:{}", vip.address(), vip.port()),
        "maglev",
        "",
        "",
        "",
        vip.counters.packets,
        vip.counters.bytes,
        vip.counters.new_flows
    );
    for b in &vip.backends {
        let _ = writeln!(
            out,
            "  -> {:<22}{:<19}{:>8}{:>11}{:>11}{:>12}{:>14}{:>10}",
            format!("{}:{}", b.address(), vip.port()),
            format_mac(&b.entry.mac),
            b.entry.weight,
            b.active_flows,
            b.closing_flows,
            b.counters.packets,
            b.counters.bytes,
            b.counters.new_flows
        );
    }
}

fn on_off(flag: u32) -> &'static str {
    if flag != 0 { "on" } else { "off" }
}
