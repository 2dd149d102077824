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
            // This VIP's health lines (the protocol too: 53/tcp and 53/udp are two VIPs).
            let checked: Vec<&HealthLine> = health
                .iter()
                .filter(|h| {
                    h.vip == addr && h.port == port && h.protocol.eq_ignore_ascii_case(proto)
                })
                .collect();
            let health_of = |backend: std::net::IpAddr| {
                checked.iter().find(|h| h.backend == backend).map(|h| {
                    json!({
                        "state": h.state,
                        "role": h.role,
                        "checked": h.checked.map(unix_secs),
                        "since": unix_secs(h.since),
                        "reason": h.reason,
                    })
                })
            };
            let mut backends: Vec<Value> = vip
                .backends
                .iter()
                .map(|b| {
                    json!({
                        "address": b.address().to_string(),
                        "in_maps": true,
                        "mac": format_mac(&b.entry.mac),
                        "weight": b.entry.weight,
                        "local": b.entry.flags & lb_common::BACKEND_F_LOCAL != 0,
                        "active_flows": b.active_flows,
                        "inactive_flows": b.closing_flows,
                        "packets": b.counters.packets,
                        "bytes": b.counters.bytes,
                        "new_flows": b.counters.new_flows,
                        "health": health_of(b.address()),
                    })
                })
                .collect();
            // Checked backends the maps no longer hold (taken out by their check), as the
            // table lists them.
            for line in checked
                .iter()
                .filter(|h| !vip.backends.iter().any(|b| b.address() == h.backend))
            {
                backends.push(json!({
                    "address": line.backend.to_string(),
                    "in_maps": false,
                    "health": health_of(line.backend),
                }));
            }
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

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, time::SystemTime};

    use lb_common::{BACKEND_F_ACTIVE, Backend, PROTO_TCP, PROTO_UDP, VipInfo, VipKey};

    use super::*;
    use crate::dataplane::snapshot::{BackendStatus, VipStatus};

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn vip(proto: u8, backends: &[&str]) -> VipStatus {
        VipStatus {
            key: VipKey::new(ip("198.18.0.100"), 53, proto),
            info: VipInfo::default(),
            counters: Default::default(),
            backends: backends
                .iter()
                .enumerate()
                .map(|(i, b)| BackendStatus {
                    id: i as u32 + 1,
                    entry: Backend {
                        mac: [0xaa; 6],
                        addr: lb_common::ip_words(ip(b)),
                        flags: BACKEND_F_ACTIVE,
                        weight: 1,
                        ..Backend::default()
                    },
                    counters: Default::default(),
                    active_flows: 0,
                    closing_flows: 0,
                })
                .collect(),
        }
    }

    fn line(protocol: &str, backend: &str, state: &str) -> HealthLine {
        HealthLine {
            vip: ip("198.18.0.100"),
            port: 53,
            protocol: protocol.to_owned(),
            backend: ip(backend),
            state: state.to_owned(),
            role: "-".to_owned(),
            checked: Some(SystemTime::now()),
            since: SystemTime::now(),
            reason: format!("{protocol} {state}"),
        }
    }

    fn document(snapshot: &Snapshot, health: &[HealthLine]) -> Value {
        serde_json::from_str(&render("x", &Liveness::Stopped, snapshot, health, &[])).unwrap()
    }

    /// Found by review: 53/tcp and 53/udp on one address are two VIPs with a health line
    /// each; each VIP's backend shows its own.
    #[test]
    fn json_health_of_a_udp_vip_is_not_its_tcp_twins() {
        let snapshot = Snapshot {
            vips: vec![vip(PROTO_TCP, &["10.0.0.1"]), vip(PROTO_UDP, &["10.0.0.1"])],
            ..Snapshot::default()
        };
        let health = [
            line("TCP", "10.0.0.1", "up"),
            line("UDP", "10.0.0.1", "down"),
        ];
        let doc = document(&snapshot, &health);
        let udp = &doc["vips"][1];
        assert_eq!(udp["protocol"], "udp", "{doc:#}");
        assert_eq!(
            udp["backends"][0]["health"]["state"], "down",
            "the UDP VIP's backend shows the TCP check's health: {udp:#}"
        );
    }

    /// Found by review: a backend its check took out of the maps is listed, down, as the
    /// table lists it.
    #[test]
    fn json_lists_a_down_backend_the_maps_no_longer_hold() {
        let snapshot = Snapshot {
            vips: vec![vip(PROTO_TCP, &["10.0.0.1"])],
            ..Snapshot::default()
        };
        let health = [
            line("TCP", "10.0.0.1", "up"),
            line("TCP", "10.0.0.2", "down"),
        ];
        let table = crate::status::render("x", &snapshot, &health, &[], None, SystemTime::now());
        assert!(table.contains("10.0.0.2"), "the table lists it:\n{table}");
        let doc = document(&snapshot, &health);
        let listed: Vec<&str> = doc["vips"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["address"].as_str())
            .collect();
        assert!(
            listed.contains(&"10.0.0.2"),
            "the down backend is missing from --json (only {listed:?}):\n{doc:#}"
        );
    }
}
