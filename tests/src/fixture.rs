//! Datapath fixtures' harness: a loaded `lb` program provisioned through the daemon's own
//! path (TOML -> Config -> desired state -> Applier), frames to run through it with
//! BPF_PROG_TEST_RUN, and the daemon's own prediction of where each flow should go.

use std::{net::Ipv4Addr, path::Path};

use lb_common::{FlowKey, RING_SIZE, Settings, VipKey, hash::ring_slot};
use lb_daemon::{
    apply::Applier,
    config::Config,
    daemon::{desired_state, settings},
    dataplane::{Dataplane, LoadOptions, object, snapshot},
    reconcile::Reconciler,
};

use crate::frame::*;

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0xd1, 0, 0, 0, 0x02];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x01];
pub const OTHER_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0x99];
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 100);
/// BPF_PROG_TEST_RUN without a device runs on the namespace's loopback (ifindex 1).
pub const TEST_IFINDEX: u32 = 1;

pub fn backend_mac(last: u8) -> [u8; 6] {
    [0x02, 0xbb, 0, 0, 0, last]
}

/// Backends .11 .. for the TCP VIP :6379, with weights; a UDP VIP :5353 with one backend;
/// a TCP VIP :6380 whose only backend is drained.
pub fn config(tcp_backends: &[(u8, u32)]) -> Config {
    config_with(tcp_backends, "")
}

/// [`config`] with `extra` TOML appended (more `[[vip]]` tables).
pub fn config_with(tcp_backends: &[(u8, u32)], extra: &str) -> Config {
    Config::parse(Path::new("fixture.toml"), &config_text(tcp_backends, extra))
        .expect("fixture config")
}

/// The TOML of [`config_with`].
pub fn config_text(tcp_backends: &[(u8, u32)], extra: &str) -> String {
    let mut text = String::from("instance = \"fixture\"\n[director]\ninterfaces = [\"lo\"]\n");
    text.push_str(&format!("[[vip]]\naddress = \"{VIP}\"\nport = 6379\n"));
    for &(last, weight) in tcp_backends {
        let mac = backend_mac(last).map(|b| format!("{b:02x}")).join(":");
        text.push_str(&format!(
            "[[vip.backend]]\naddress = \"198.18.1.{last}\"\nweight = {weight}\nmac = \"{mac}\"\n"
        ));
    }
    text.push_str(&format!(
        "[[vip]]\naddress = \"{VIP}\"\nport = 5353\nprotocol = \"udp\"\n[[vip.backend]]\naddress = \"198.18.1.31\"\nmac = \"02:bb:00:00:00:1f\"\n"
    ));
    text.push_str(&format!(
        "[[vip]]\naddress = \"{VIP}\"\nport = 6380\n[[vip.backend]]\naddress = \"198.18.1.41\"\nweight = 0\nmac = \"02:bb:00:00:00:29\"\n"
    ));
    text.push_str(extra);
    text
}

/// A loaded datapath plus the daemon's owner of its writes.
pub struct Datapath {
    pub dataplane: Dataplane,
    pub applier: Applier,
}

impl Datapath {
    pub fn new(tcp_backends: &[(u8, u32)]) -> Option<Datapath> {
        if !crate::require_root("datapath fixtures") {
            return None;
        }
        Some(Datapath::with_config(&config(tcp_backends)))
    }

    /// A datapath serving `config` (the caller checked for root).
    pub fn with_config(config: &Config) -> Datapath {
        Datapath::with_options(config, &LoadOptions::default())
    }

    /// [`Datapath::with_config`] with load options (a flow table's size).
    pub fn with_options(config: &Config, options: &LoadOptions) -> Datapath {
        let mut dataplane =
            Dataplane::load(object::lb().expect("eBPF object"), options).expect("load");
        let mut writer = dataplane.writer();
        writer.set_settings(settings(config)).unwrap();
        writer.set_interface(TEST_IFINDEX, DIRECTOR_MAC).unwrap();
        let mut applier = Applier::new();
        applier
            .apply(&mut dataplane, &desired_state(config).unwrap())
            .unwrap();
        Datapath { dataplane, applier }
    }

    /// Applies a new backend set for the TCP VIP, as a reload would.
    pub fn reconfigure(&mut self, tcp_backends: &[(u8, u32)]) {
        self.apply(&config(tcp_backends)).unwrap();
    }

    /// Applies `config` as a reload would.
    pub fn apply(&mut self, config: &Config) -> lb_daemon::error::Result<usize> {
        self.applier
            .apply(&mut self.dataplane, &desired_state(config).unwrap())
    }

    /// The daemon's applied state.
    pub fn reconciler(&self) -> &Reconciler {
        self.applier.reconciler()
    }

    pub fn set_settings(&mut self, settings: Settings) {
        self.dataplane.writer().set_settings(settings).unwrap();
    }

    /// Runs one frame; returns the verdict and the frame as the program left it.
    pub fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let result = crate::xdp::test_run(self.dataplane.program(), frame, TEST_IFINDEX, 1);
        (result.verdict, result.frame)
    }

    /// Opens a TCP connection from `CLIENT:src_port` to the VIP's :6379 as a client does
    /// (SYN, then the first ACK, which is what the datapath tracks); returns its backend.
    pub fn connect(&mut self, src_port: u16) -> [u8; 6] {
        let (verdict, syn) = self.run(&tcp(src_port, TCP_SYN));
        assert_eq!(verdict, XDP_TX, "SYN from port {src_port}");
        let (verdict, ack) = self.run(&tcp(src_port, TCP_ACK));
        assert_eq!(verdict, XDP_TX, "first ACK from port {src_port}");
        assert_eq!(backend_of(&syn), backend_of(&ack), "SYN and ACK split");
        backend_of(&ack)
    }

    /// The MAC of the backend the daemon's ring gives this flow, computed here from the
    /// daemon's applied state and the shared flow hash.
    pub fn maglev_choice(&self, vip_port: u16, key: &FlowKey) -> [u8; 6] {
        maglev_choice(self.reconciler(), vip_port, key)
    }

    pub fn snapshot(&self) -> snapshot::Snapshot {
        snapshot::read(&self.dataplane).expect("snapshot")
    }

    /// The TCP VIP :6379 as the daemon reads it: counters, backends, tracked flows.
    pub fn redis_vip(&self) -> snapshot::VipStatus {
        self.snapshot()
            .vips
            .into_iter()
            .find(|v| v.port() == 6379 && v.key.proto == 6)
            .expect("the TCP VIP :6379")
    }

    /// Live flows tracked to the TCP VIP :6379's backends.
    pub fn redis_flows(&self) -> u64 {
        self.redis_vip()
            .backends
            .iter()
            .map(|b| b.active_flows)
            .sum()
    }
}

/// The MAC of the backend `reconciler`'s ring gives this flow, from the daemon's applied
/// state and the shared flow hash.
pub fn maglev_choice(reconciler: &Reconciler, vip_port: u16, key: &FlowKey) -> [u8; 6] {
    ring_choice(reconciler, vip_port, key.proto, ring_slot(key))
}

/// The MAC of the backend at `slot` of the ring of VIP :`vip_port`, as the daemon applied it.
pub fn ring_choice(reconciler: &Reconciler, vip_port: u16, proto: u8, slot: u32) -> [u8; 6] {
    let vip = VipKey::new(VIP.into(), vip_port, proto);
    let ring = reconciler.ring(&vip).expect("vip applied");
    assert_eq!(ring.len(), RING_SIZE as usize);
    let id = ring[slot as usize];
    (1..=255u8)
        .find(|&last| {
            reconciler.backend_id(&vip, Ipv4Addr::new(198, 18, 1, last).into()) == Some(id)
        })
        .map(backend_mac)
        .unwrap_or_else(|| {
            panic!("ring slot points at backend id {id}, which no configured backend has")
        })
}

pub fn flow_key(src_port: u16, dst_port: u16, proto: u8) -> FlowKey {
    FlowKey {
        src_addr: u32::from_ne_bytes(CLIENT.octets()),
        dst_addr: u32::from_ne_bytes(VIP.octets()),
        src_port: src_port.to_be(),
        dst_port: dst_port.to_be(),
        proto,
        _pad0: 0,
        _pad1: 0,
    }
}

pub fn tcp(src_port: u16, flags: u8) -> Vec<u8> {
    Ipv4Frame::tcp(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, src_port),
        (VIP, 6379),
        flags,
    )
    .build()
}

/// `frame` with only its MACs rewritten as DR forwarding must: dst = backend, src = director.
pub fn forwarded(frame: &[u8], backend: [u8; 6]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[0..6].copy_from_slice(&backend);
    out[6..12].copy_from_slice(&DIRECTOR_MAC);
    out
}

pub fn backend_of(out: &[u8]) -> [u8; 6] {
    out[0..6].try_into().unwrap()
}

/// Each frame of `kinds` (named) is forwarded whole, and cut at every length from the
/// Ethernet header on is never forwarded: dropped, or passed unchanged.
pub fn assert_cuts_are_never_forwarded(dp: &mut Datapath, kinds: &[(&str, Vec<u8>)]) {
    for (kind, whole) in kinds {
        assert_eq!(dp.run(whole).0, XDP_TX, "{kind} whole is forwarded");
        for len in 14..whole.len() {
            let cut = &whole[..len];
            let (verdict, out) = dp.run(cut);
            assert!(
                verdict == XDP_DROP || (verdict == XDP_PASS && out == cut),
                "{kind} cut to {len} of {} bytes: verdict {verdict}",
                whole.len()
            );
        }
    }
}
