//! `lbd status --json`: the same state as the table, as one JSON document for scripts.
//! Field names are stable; counters are totals since the datapath was loaded.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::{
    config::{Scheduler, format_mac},
    dataplane::snapshot::Snapshot,
    health::report::HealthLine,
    instance::Liveness,
    metrics::render::service,
    vrrp::report::VrrpLine,
};

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn protocol(proto: u8) -> &'static str {
    match proto {
        6 => "tcp",
        17 => "udp",
        _ => "other",
    }
}

/// The document: instance, daemon, VIPs with backends and health, VRRP, verdicts.
pub fn render(
    instance: &str,
    daemon: &Liveness,
    snapshot: &Snapshot,
    health: &[HealthLine],
    vrrp: &[VrrpLine],
) -> String {
    let daemon = match daemon {
        Liveness::Running { pid, config } => {
            json!({"state": "running", "pid": pid, "config": config.display().to_string()})
        }
        Liveness::Starting { pid } => json!({"state": "starting", "pid": pid}),
        Liveness::Stopped => json!({"state": "stopped", "datapath_attached": true}),
    };
    let vips: Vec<Value> = snapshot
        .vips
        .iter()
        .map(|vip| {
            let (addr, port, proto) = (
                vip.key.address(),
                u16::from_be(vip.key.port),
                protocol(vip.key.proto),
            );
            let scheduler = Scheduler::ALL
                .iter()
                .find(|(s, _, _)| s.datapath_value() == vip.info.scheduler)
                .map_or("?", |(_, name, _)| name);
            let backends: Vec<Value> = vip
                .backends
                .iter()
                .map(|b| {
                    let line = health
                        .iter()
                        .find(|h| h.vip == addr && h.port == port && h.backend == b.address());
                    json!({
                        "address": b.address().to_string(),
                        "mac": format_mac(&b.entry.mac),
                        "weight": b.entry.weight,
                        "local": b.entry.flags & lb_common::BACKEND_F_LOCAL != 0,
                        "active_flows": b.active_flows,
                        "inactive_flows": b.closing_flows,
                        "packets": b.counters.packets,
                        "bytes": b.counters.bytes,
                        "new_flows": b.counters.new_flows,
                        "health": line.map(|h| json!({
                            "state": h.state,
                            "role": h.role,
                            "checked": h.checked.map(unix_secs),
                            "since": unix_secs(h.since),
                            "reason": h.reason,
                        })),
                    })
                })
                .collect();
            json!({
                "service": service(addr, port, proto),
                "address": addr.to_string(),
                "port": port,
                "protocol": proto,
                "scheduler": scheduler,
                "group": vip.info.group,
                "packets": vip.counters.packets,
                "bytes": vip.counters.bytes,
                "new_flows": vip.counters.new_flows,
                "backends": backends,
            })
        })
        .collect();
    let vrrp: Vec<Value> = vrrp
        .iter()
        .map(|v| {
            json!({
                "name": v.name,
                "interface": v.interface,
                "vrid": v.vrid,
                "state": v.state,
                "priority": v.priority,
                "master": v.master.map(|m| m.to_string()),
                "since": unix_secs(v.since),
                "adverts_sent": v.sent,
                "adverts_received": v.received,
                "adverts_rejected": v.rejected,
                "reason": v.reason,
            })
        })
        .collect();
    let verdicts: serde_json::Map<String, Value> = snapshot
        .verdicts
        .named()
        .iter()
        .map(|(name, count)| ((*name).to_owned(), json!(count)))
        .collect();
    let document = json!({
        "instance": instance,
        "daemon": daemon,
        "forwarding": snapshot.settings.forwarding != 0,
        "vips": vips,
        "vrrp": vrrp,
        "verdicts": verdicts,
    });
    let mut text = serde_json::to_string_pretty(&document).expect("JSON of plain values");
    text.push('\n');
    text
}
