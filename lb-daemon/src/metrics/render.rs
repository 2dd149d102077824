//! One scrape's worth of state, rendered as OpenMetrics text with `prometheus-client`.
//! Pure: everything is read beforehand (maps, state files, the daemon's counters).

use std::{collections::BTreeMap, net::SocketAddr};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{dataplane::snapshot::Snapshot, health::report::HealthLine, vrrp::report::VrrpLine};

/// What the daemon itself counts (the rest comes from the maps and state files).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DaemonCounters {
    /// Reloads by result: `ok`, `rejected` (running config kept), `failed` (maps in doubt).
    pub reloads: BTreeMap<&'static str, u64>,
    /// Health state changes (a backend going up or down).
    pub health_transitions: u64,
    /// Duration of each backend's last check, by (VIP service, backend address).
    pub check_seconds: BTreeMap<(String, String), f64>,
    /// Times each VRRP instance started or stopped forwarding, by instance name.
    pub vrrp_transitions: BTreeMap<String, u64>,
}

/// Everything one scrape shows.
#[derive(Debug)]
pub struct Scrape {
    pub snapshot: Snapshot,
    pub health: Vec<HealthLine>,
    pub vrrp: Vec<VrrpLine>,
    pub daemon: DaemonCounters,
}

/// `198.18.0.100:6379/tcp`, `[2001:2::100]:6379/tcp`: one label value per VIP.
pub fn service(addr: std::net::IpAddr, port: u16, protocol: &str) -> String {
    format!(
        "{}/{}",
        SocketAddr::new(addr, port),
        protocol.to_ascii_lowercase()
    )
}

fn protocol_name(proto: u8) -> &'static str {
    match proto {
        6 => "tcp",
        17 => "udp",
        _ => "other",
    }
}

type Labels = Vec<(&'static str, String)>;

/// A family of samples of one metric.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, f64)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str, kind: MetricType) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: Labels, value: f64) {
        self.samples.push((labels, value));
    }
}

#[derive(Debug)]
struct Families(Vec<Family>);

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0 {
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            for (labels, value) in &family.samples {
                let sample = metric.encode_family(labels)?;
                match family.kind {
                    MetricType::Counter => ConstCounter::new(*value).encode(sample)?,
                    _ => ConstGauge::new(*value).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}

/// The scrape as OpenMetrics text (counters get their `_total` suffix from the encoder).
pub fn render(scrape: &Scrape) -> String {
    use MetricType::{Counter, Gauge};
    let mut build = Family::new("lbd_build_info", "lbd version and map layout", Gauge);
    build.add(
        vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("layout", lb_common::LAYOUT_VERSION.to_string()),
        ],
        1.0,
    );
    let mut vip_packets = Family::new(
        "lbd_vip_packets",
        "Packets forwarded to the VIP's backends",
        Counter,
    );
    let mut vip_bytes = Family::new("lbd_vip_bytes", "Bytes forwarded (whole frames)", Counter);
    let mut vip_flows = Family::new(
        "lbd_vip_new_flows",
        "Flows scheduled (new connections)",
        Counter,
    );
    let mut vip_active = Family::new("lbd_vip_active_flows", "Tracked flows not closing", Gauge);
    let mut be_packets = Family::new(
        "lbd_backend_packets",
        "Packets forwarded to the backend",
        Counter,
    );
    let mut be_bytes = Family::new(
        "lbd_backend_bytes",
        "Bytes forwarded to the backend",
        Counter,
    );
    let mut be_flows = Family::new(
        "lbd_backend_new_flows",
        "Flows scheduled to the backend",
        Counter,
    );
    let mut be_active = Family::new(
        "lbd_backend_active_flows",
        "Tracked flows not closing (ipvsadm ActiveConn)",
        Gauge,
    );
    let mut be_closing = Family::new(
        "lbd_backend_inactive_flows",
        "Tracked flows closing (ipvsadm InActConn)",
        Gauge,
    );
    let mut be_weight = Family::new(
        "lbd_backend_weight",
        "Weight in the datapath (0: drained)",
        Gauge,
    );
    for vip in &scrape.snapshot.vips {
        let name = service(
            vip.key.address(),
            u16::from_be(vip.key.port),
            protocol_name(vip.key.proto),
        );
        let labels = vec![("vip", name.clone())];
        vip_packets.add(labels.clone(), vip.counters.packets as f64);
        vip_bytes.add(labels.clone(), vip.counters.bytes as f64);
        vip_flows.add(labels.clone(), vip.counters.new_flows as f64);
        vip_active.add(
            labels,
            vip.backends.iter().map(|b| b.active_flows).sum::<u64>() as f64,
        );
        for backend in &vip.backends {
            let labels = vec![
                ("vip", name.clone()),
                ("backend", backend.address().to_string()),
            ];
            be_packets.add(labels.clone(), backend.counters.packets as f64);
            be_bytes.add(labels.clone(), backend.counters.bytes as f64);
            be_flows.add(labels.clone(), backend.counters.new_flows as f64);
            be_active.add(labels.clone(), backend.active_flows as f64);
            be_closing.add(labels.clone(), backend.closing_flows as f64);
            be_weight.add(labels, f64::from(backend.entry.weight));
        }
    }
    let mut health = Family::new(
        "lbd_backend_health",
        "Health of each checked backend: 1 in the state named by `state` (up, standby, down, pending, sorry)",
        Gauge,
    );
    for line in &scrape.health {
        let name = service(line.vip, line.port, &line.protocol);
        health.add(
            vec![
                ("vip", name),
                ("backend", line.backend.to_string()),
                ("state", line.state.clone()),
            ],
            1.0,
        );
    }
    let mut check_seconds = Family::new(
        "lbd_backend_check_duration_seconds",
        "Duration of the backend's last health check",
        Gauge,
    );
    for ((vip, backend), seconds) in &scrape.daemon.check_seconds {
        check_seconds.add(
            vec![("vip", vip.clone()), ("backend", backend.clone())],
            *seconds,
        );
    }
    let mut transitions = Family::new(
        "lbd_health_transitions",
        "Backends going up or down",
        Counter,
    );
    transitions.add(vec![], scrape.daemon.health_transitions as f64);
    let mut vrrp_master = Family::new(
        "lbd_vrrp_master",
        "1 while this director is the instance's VRRP master",
        Gauge,
    );
    let mut vrrp_state = Family::new(
        "lbd_vrrp_state",
        "1 in the instance's current state (init, backup, master, stopped)",
        Gauge,
    );
    let mut vrrp_sent = Family::new("lbd_vrrp_adverts_sent", "VRRP adverts sent", Counter);
    let mut vrrp_received = Family::new(
        "lbd_vrrp_adverts_received",
        "VRRP adverts received",
        Counter,
    );
    let mut vrrp_rejected = Family::new(
        "lbd_vrrp_adverts_rejected",
        "VRRP adverts dropped, by reason",
        Counter,
    );
    for line in &scrape.vrrp {
        let labels = vec![("vrrp", line.name.clone())];
        vrrp_master.add(labels.clone(), f64::from(u8::from(line.state == "master")));
        let mut with_state = labels.clone();
        with_state.push(("state", line.state.clone()));
        vrrp_state.add(with_state, 1.0);
        vrrp_sent.add(labels.clone(), line.sent as f64);
        vrrp_received.add(labels.clone(), line.received as f64);
        for (reason, count) in &line.rejected {
            let mut with_reason = labels.clone();
            with_reason.push(("reason", reason.clone()));
            vrrp_rejected.add(with_reason, *count as f64);
        }
    }
    let mut vrrp_transitions = Family::new(
        "lbd_vrrp_transitions",
        "Times the instance started or stopped forwarding (became or left master)",
        Counter,
    );
    for (instance, count) in &scrape.daemon.vrrp_transitions {
        vrrp_transitions.add(vec![("vrrp", instance.clone())], *count as f64);
    }
    let mut verdicts = Family::new(
        "lbd_datapath_verdicts",
        "Frames by what the datapath did: tx_* forwarded, pass_* given to the kernel, drop_* dropped (the drop reasons)",
        Counter,
    );
    for (verdict, count) in scrape.snapshot.verdicts.named() {
        verdicts.add(vec![("verdict", verdict.to_owned())], count as f64);
    }
    let mut reloads = Family::new(
        "lbd_reloads",
        "Config reloads by result: ok, rejected (running config kept), failed",
        Counter,
    );
    for result in ["ok", "rejected", "failed"] {
        let count = scrape.daemon.reloads.get(result).copied().unwrap_or(0);
        reloads.add(vec![("result", result.to_owned())], count as f64);
    }
    let families = [
        build,
        vip_packets,
        vip_bytes,
        vip_flows,
        vip_active,
        be_packets,
        be_bytes,
        be_flows,
        be_active,
        be_closing,
        be_weight,
        health,
        check_seconds,
        transitions,
        vrrp_master,
        vrrp_state,
        vrrp_transitions,
        vrrp_sent,
        vrrp_received,
        vrrp_rejected,
        verdicts,
        reloads,
    ];
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Families(families.into())));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    text
}
