//! Schedulers and persistence through BPF_PROG_TEST_RUN, provisioned like every fixture
//! (TOML -> Config -> desired state -> Applier). Each scheduler's choice on a known backend
//! set is checked against what the daemon's applied ring predicts, or by its counts. Needs
//! root.

use std::{collections::BTreeMap, net::Ipv4Addr, thread::sleep, time::Duration};

use lb_common::{RING_SIZE, hash::mix64};
use lb_tests::{fixture::*, frame::*};

/// Backends .11, .12, .13 with `weights`, on a TCP VIP at `port` with `keys` (scheduler,
/// persistence).
fn vip(port: u16, keys: &str, weights: [u32; 3]) -> String {
    let mut text = format!("[[vip]]\naddress = \"{VIP}\"\nport = {port}\n{keys}\n");
    for (last, weight) in [11u8, 12, 13].into_iter().zip(weights) {
        let mac = backend_mac(last).map(|b| format!("{b:02x}")).join(":");
        text.push_str(&format!(
            "[[vip.backend]]\naddress = \"198.18.1.{last}\"\nweight = {weight}\nmac = \"{mac}\"\n"
        ));
    }
    text
}

fn datapath(vips: &[String]) -> Option<Datapath> {
    if !lb_tests::require_root("scheduler fixtures") {
        return None;
    }
    Some(Datapath::with_config(&config_with(
        &[(11, 1)],
        &vips.concat(),
    )))
}

/// A connection (SYN, then its first ACK) from `client:port` to VIP :`vip_port`; the
/// backend both went to.
fn connect(dp: &mut Datapath, client: Ipv4Addr, port: u16, vip_port: u16) -> [u8; 6] {
    let frame = |flags| {
        Ipv4Frame::tcp(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (client, port),
            (VIP, vip_port),
            flags,
        )
        .build()
    };
    let (verdict, syn) = dp.run(&frame(TCP_SYN));
    assert_eq!(verdict, XDP_TX, "SYN {client}:{port} -> :{vip_port}");
    let (verdict, ack) = dp.run(&frame(TCP_ACK));
    assert_eq!(verdict, XDP_TX, "ACK {client}:{port} -> :{vip_port}");
    assert_eq!(backend_of(&syn), backend_of(&ack), "the handshake split");
    backend_of(&ack)
}

fn close(dp: &mut Datapath, client: Ipv4Addr, port: u16, vip_port: u16) {
    let fin = Ipv4Frame::tcp(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (client, port),
        (VIP, vip_port),
        TCP_FIN | TCP_ACK,
    )
    .build();
    assert_eq!(dp.run(&fin).0, XDP_TX);
}

fn client(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 2, i)
}

fn counts(backends: impl IntoIterator<Item = [u8; 6]>) -> [usize; 3] {
    let mut out = [0; 3];
    for mac in backends {
        out[usize::from(mac[5] - 11)] += 1;
    }
    out
}

/// The per-CPU round-robin position makes a sequence per CPU: stay on one.
fn on_one_cpu() {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

#[test]
fn source_hashing_sends_a_client_always_to_the_ring_slot_of_its_address() {
    let Some(mut dp) = datapath(&[vip(7001, "scheduler = \"sh\"", [1, 1, 1])]) else {
        return;
    };
    let mut seen = BTreeMap::new();
    for i in 1..=20 {
        let want = ring_choice(
            dp.reconciler(),
            7001,
            6,
            (mix64(u32::from_ne_bytes(client(i).octets()) as u64) % RING_SIZE as u64) as u32,
        );
        for port in [40000, 40001, 51234] {
            assert_eq!(
                connect(&mut dp, client(i), port, 7001),
                want,
                "{} :{port}",
                client(i)
            );
        }
        *seen.entry(want).or_insert(0) += 1;
    }
    assert!(seen.len() > 1, "20 clients all on one backend: {seen:?}");
}

#[test]
fn destination_hashing_sends_every_client_to_the_ring_slot_of_the_vip() {
    let Some(mut dp) = datapath(&[vip(7002, "scheduler = \"dh\"", [1, 1, 1])]) else {
        return;
    };
    let want = ring_choice(
        dp.reconciler(),
        7002,
        6,
        (mix64(u32::from_ne_bytes(VIP.octets()) as u64) % RING_SIZE as u64) as u32,
    );
    for i in 1..=10 {
        assert_eq!(
            connect(&mut dp, client(i), 40000 + u16::from(i), 7002),
            want
        );
    }
}

#[test]
fn round_robin_takes_backends_in_turn_and_weighted_round_robin_by_weight() {
    let Some(mut dp) = datapath(&[
        vip(7003, "scheduler = \"rr\"", [1, 5, 1]),
        vip(7004, "scheduler = \"wrr\"", [1, 2, 3]),
    ]) else {
        return;
    };
    on_one_cpu();
    let rr: Vec<[u8; 6]> = (0..9)
        .map(|i| connect(&mut dp, client(1), 30000 + i, 7003))
        .collect();
    assert_eq!(
        counts(rr.iter().copied()),
        [3, 3, 3],
        "rr ignores weights: {rr:02x?}"
    );
    for turn in rr.chunks(3) {
        assert_eq!(
            counts(turn.iter().copied()),
            [1, 1, 1],
            "each turn visits all: {rr:02x?}"
        );
    }
    let wrr = (0..12).map(|i| connect(&mut dp, client(1), 31000 + i, 7004));
    assert_eq!(counts(wrr), [2, 4, 6], "wrr by weight 1:2:3");
}

#[test]
fn least_connections_keeps_open_flows_even_and_counts_closes() {
    let Some(mut dp) = datapath(&[
        vip(7005, "scheduler = \"lc\"", [1, 9, 1]),
        vip(7006, "scheduler = \"wlc\"", [1, 1, 2]),
    ]) else {
        return;
    };
    let open: Vec<(u16, [u8; 6])> = (0..300)
        .map(|i| (30000 + i, connect(&mut dp, client(1), 30000 + i, 7005)))
        .collect();
    let spread = counts(open.iter().map(|&(_, mac)| mac));
    assert_eq!(
        active_counts(&dp, 7005),
        spread.map(|c| c as u64),
        "BACKEND_ACTIVE counts the open flows"
    );
    let (min, max) = (spread.iter().min().unwrap(), spread.iter().max().unwrap());
    assert!(
        max - min <= 3,
        "lc ignores weights and stays even: {spread:?}"
    );
    // Close every flow of the busiest backend: of the next ones, it takes the most (it is
    // chosen whenever it is one of the two candidates).
    let busiest = open
        .iter()
        .map(|&(_, mac)| mac)
        .max_by_key(|mac| spread[usize::from(mac[5] - 11)])
        .unwrap();
    let closed: Vec<u16> = open
        .iter()
        .filter(|(_, mac)| *mac == busiest)
        .map(|&(p, _)| p)
        .collect();
    for &port in &closed {
        close(&mut dp, client(1), port, 7005);
    }
    let refill =
        counts((0..closed.len() as u16).map(|i| connect(&mut dp, client(1), 32000 + i, 7005)));
    assert_eq!(
        refill.iter().max(),
        Some(&refill[usize::from(busiest[5] - 11)]),
        "after its {} flows closed, {busiest:02x?} took {refill:?}",
        closed.len()
    );
    let open_now: [u64; 3] = std::array::from_fn(|i| (spread[i] + refill[i]) as u64);
    let mut open_now = open_now;
    open_now[usize::from(busiest[5] - 11)] = refill[usize::from(busiest[5] - 11)] as u64;
    assert_eq!(
        active_counts(&dp, 7005),
        open_now,
        "closes are counted down"
    );
    let wlc = counts((0..300).map(|i| connect(&mut dp, client(2), 30000 + i, 7006)));
    for (got, want) in wlc.iter().zip([75, 75, 150]) {
        assert!(got.abs_diff(want) <= 6, "wlc by weight 1:1:2: {wlc:?}");
    }
}

/// A spoofed-SYN flood on a round-robin VIP: its SYNs are remembered in the half-open
/// table, never in the flow table, so established flows stay.
#[test]
fn a_spoofed_syn_flood_on_a_round_robin_vip_leaves_established_flows_alone() {
    if !lb_tests::require_root("scheduler fixtures") {
        return;
    }
    let options = lb_daemon::dataplane::LoadOptions {
        max_flows: 4_096,
        ..Default::default()
    };
    let config = config_with(&[(11, 1)], &vip(7003, "scheduler = \"rr\"", [1, 1, 1]));
    let mut dp = Datapath::with_options(&config, &options);
    let held: Vec<(u16, [u8; 6])> = (0..100)
        .map(|i| (30000 + i, connect(&mut dp, client(1), 30000 + i, 7003)))
        .collect();
    for i in 0..20_000u32 {
        let source = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i);
        let syn = Ipv4Frame::tcp(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (source, 1024),
            (VIP, 7003),
            TCP_SYN,
        )
        .build();
        assert_eq!(dp.run(&syn).0, XDP_TX);
    }
    for (port, mac) in held {
        let ack = Ipv4Frame::tcp(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (client(1), port),
            (VIP, 7003),
            TCP_ACK,
        )
        .build();
        assert_eq!(
            dp.run(&ack),
            (XDP_TX, forwarded(&ack, mac)),
            "held flow {port}"
        );
    }
}

#[test]
fn persistence_keeps_a_client_and_its_netmask_on_one_backend_while_busy_and_for_the_timeout() {
    let Some(mut dp) = datapath(&[vip(
        7007,
        "persistence_timeout = 1\npersistence_granularity = \"255.255.255.0\"",
        [1, 1, 1],
    )]) else {
        return;
    };
    let first = connect(&mut dp, client(1), 40000, 7007);
    // Ports whose own Maglev choice is another backend still go to the first one, as do
    // other clients of the same /24.
    let mut others = 0;
    for port in 40001..40100 {
        let own = ring_choice(
            dp.reconciler(),
            7007,
            6,
            lb_common::hash::ring_slot(&flow_key_to(client(1), port, 7007)),
        );
        if own != first {
            others += 1;
            assert_eq!(
                connect(&mut dp, client(1), port, 7007),
                first,
                "port {port}"
            );
        }
    }
    assert!(others > 10, "the ring would have spread them");
    for i in [2, 77, 254] {
        assert_eq!(
            connect(&mut dp, client(i), 41000, 7007),
            first,
            "{} in the same /24",
            client(i)
        );
    }
    // Another /24 is another client.
    let far = Ipv4Addr::new(198, 18, 3, 1);
    let far_own = |dp: &Datapath, port| {
        ring_choice(
            dp.reconciler(),
            7007,
            6,
            lb_common::hash::ring_slot(&flow_key_to(far, port, 7007)),
        )
    };
    let port = (42000..43000).find(|&p| far_own(&dp, p) != first).unwrap();
    let want = far_own(&dp, port);
    assert_eq!(connect(&mut dp, far, port, 7007), want);
    // Past the timeout, but the first connection is busy: it keeps the template alive (as
    // IPVS keeps a template while its connections are in use).
    let other_port = |dp: &Datapath, from: u16| {
        (from..from + 1000)
            .find(|&p| {
                ring_choice(
                    dp.reconciler(),
                    7007,
                    6,
                    lb_common::hash::ring_slot(&flow_key_to(client(1), p, 7007)),
                ) != first
            })
            .unwrap()
    };
    let busy = std::time::Instant::now();
    while busy.elapsed() < Duration::from_millis(1_600) {
        let ack = Ipv4Frame::tcp(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (client(1), 40000),
            (VIP, 7007),
            TCP_ACK,
        )
        .build();
        assert_eq!(dp.run(&ack), (XDP_TX, forwarded(&ack, first)));
        sleep(Duration::from_millis(100));
    }
    let port = other_port(&dp, 43000);
    assert_eq!(
        connect(&mut dp, client(1), port, 7007),
        first,
        "a busy connection's template lapsed"
    );
    // Idle for longer than the timeout: the template lapses.
    sleep(Duration::from_millis(1_300));
    let port = other_port(&dp, 44000);
    assert_ne!(
        connect(&mut dp, client(1), port, 7007),
        first,
        "persistence outlived its timeout"
    );
}

/// `BACKEND_ACTIVE` of the VIP's backends .11, .12, .13.
fn active_counts(dp: &Datapath, vip_port: u16) -> [u64; 3] {
    use lb_daemon::dataplane::snapshot::MapSource;
    let map: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(dp.dataplane.map(lb_common::MAP_BACKEND_ACTIVE).unwrap())
            .unwrap();
    let key = lb_common::VipKey::new(VIP.into(), vip_port, 6);
    [11u8, 12, 13].map(|last| {
        let id = dp
            .reconciler()
            .backend_id(&key, Ipv4Addr::new(198, 18, 1, last).into())
            .unwrap();
        map.get(&id, 0).unwrap()
    })
}

fn flow_key_to(client: Ipv4Addr, port: u16, vip_port: u16) -> lb_common::FlowKey {
    lb_common::FlowKey {
        src_addr: u32::from_ne_bytes(client.octets()),
        dst_addr: u32::from_ne_bytes(VIP.octets()),
        src_port: port.to_be(),
        dst_port: vip_port.to_be(),
        proto: 6,
        _pad0: 0,
        _pad1: 0,
    }
}

/// an ICMP error about a flow in its handshake (SYN seen, not yet tracked) must go
/// where the SYN went. `icmp::forward_error` falls back to `pick(ring_slot(5-tuple))`, the
/// Maglev 5-tuple slot, whatever the VIP's scheduler: sh/dh hash other keys, rr/wrr's ring is
/// a sequence, lc/wlc compare two slots, rr/lc remember the SYN in HALF_OPEN and a persistent
/// VIP in PERSIST. None of these is consulted, so the error reaches another backend.
#[test]
fn an_icmp_error_during_a_handshake_goes_where_the_syn_went_whatever_the_scheduler() {
    let Some(mut dp) = datapath(&[
        vip(7001, "scheduler = \"sh\"", [1, 1, 1]),
        vip(7003, "scheduler = \"rr\"", [1, 1, 1]),
        vip(7005, "scheduler = \"lc\"", [1, 1, 1]),
        vip(7007, "persistence_timeout = 300", [1, 1, 1]),
    ]) else {
        return;
    };
    on_one_cpu();
    const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 254);
    const ROUTER_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0xfe];
    // Some open flows on the lc VIP, so its two choices are not always a tie.
    for port in 0..10 {
        connect(&mut dp, client(200), 20000 + port, 7005);
    }
    let mut wrong = Vec::new();
    for (name, vip_port) in [
        ("sh", 7001u16),
        ("rr", 7003),
        ("lc", 7005),
        ("persistent", 7007),
    ] {
        for i in 1..=12u8 {
            // An earlier connection of the client (a persistent VIP's template comes from it).
            let earlier = Ipv4Frame::tcp(
                CLIENT_MAC,
                DIRECTOR_MAC,
                (client(i), 30000),
                (VIP, vip_port),
                TCP_SYN,
            )
            .build();
            assert_eq!(dp.run(&earlier).0, XDP_TX);
            let port = 40000 + u16::from(i);
            let syn = Ipv4Frame::tcp(
                CLIENT_MAC,
                DIRECTOR_MAC,
                (client(i), port),
                (VIP, vip_port),
                TCP_SYN,
            )
            .build();
            let (verdict, out) = dp.run(&syn);
            assert_eq!(verdict, XDP_TX, "SYN");
            let syn_backend = backend_of(&out);
            // The backend's SYN-ACK, which a router on the way to the client rejects.
            let syn_ack = Ipv4Frame::tcp(
                backend_mac(11),
                ROUTER_MAC,
                (VIP, vip_port),
                (client(i), port),
                TCP_SYN | TCP_ACK,
            )
            .build();
            let error = icmp_error(
                ROUTER_MAC,
                DIRECTOR_MAC,
                ROUTER,
                VIP,
                (3, 1, [0; 4]),
                &syn_ack,
            );
            let (verdict, out) = dp.run(&error);
            assert_eq!(verdict, XDP_TX, "{name}: error about {}:{port}", client(i));
            if backend_of(&out) != syn_backend {
                wrong.push(format!(
                    "{name} {}:{port}: SYN to {:02x}, error to {:02x}",
                    client(i),
                    syn_backend[5],
                    backend_of(&out)[5]
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "ICMP errors about handshakes went to another backend than their SYN ({} of 48): {wrong:#?}",
        wrong.len()
    );
}

/// Flows announced by another director (flow sync) keep what their VIP's scheduler needs:
/// a least-connection VIP's counts (once per flow, however often it is refreshed, down when
/// it closes) and a persistent VIP's client template, so after a failover new connections
/// of that client go to the same backend.
#[test]
fn synced_flows_carry_least_connection_counts_and_persistence_templates() {
    use lb_common::{FLOW_EVENT_CLOSING, FLOW_EVENT_NEW, FlowEvent};
    let Some(mut dp) = datapath(&[
        vip(7005, "scheduler = \"lc\"", [1, 1, 1]),
        vip(7007, "persistence_timeout = 300", [1, 1, 1]),
    ]) else {
        return;
    };
    let event = |port: u16, vip_port: u16, to: u8, kind: u32| FlowEvent {
        key: flow_key_to(client(5), port, vip_port),
        backend_addr: u32::from_ne_bytes([198, 18, 1, to]),
        kind,
    };
    let install = |dp: &mut Datapath, events: &[FlowEvent]| {
        let now = lb_daemon::dataplane::clock::now(dp.dataplane.clock_program()).unwrap();
        lb_daemon::sync::install::install(
            &mut dp.dataplane.writer(),
            dp.applier.reconciler(),
            events,
            now,
        )
        .unwrap()
    };
    let opened: Vec<FlowEvent> = (0..10)
        .map(|i| event(30000 + i, 7005, 12, FLOW_EVENT_NEW))
        .collect();
    assert_eq!(install(&mut dp, &opened).installed, 10);
    assert_eq!(active_counts(&dp, 7005), [0, 10, 0]);
    install(&mut dp, &opened); // the periodic refresh of the same flows
    assert_eq!(
        active_counts(&dp, 7005),
        [0, 10, 0],
        "a refresh counts nothing again"
    );
    let closed: Vec<FlowEvent> = (0..4)
        .map(|i| event(30000 + i, 7005, 12, FLOW_EVENT_CLOSING))
        .collect();
    install(&mut dp, &closed);
    assert_eq!(
        active_counts(&dp, 7005),
        [0, 6, 0],
        "closing flows are counted down"
    );
    // The next new flows mostly avoid the busy backend (it wins only when it is both
    // candidates), as they would on the director that synced: a fair share would be 4.
    let next = counts((0..12).map(|i| connect(&mut dp, client(6), 31000 + i, 7005)));
    assert!(next[1] <= 2, "the synced flows' backend took {next:?}");

    // Persistence: one synced flow of client 5 to .13 is its template here.
    install(&mut dp, &[event(40000, 7007, 13, FLOW_EVENT_NEW)]);
    for port in 41000..41010 {
        assert_eq!(
            connect(&mut dp, client(5), port, 7007),
            backend_mac(13),
            "port {port}"
        );
    }
    let unknown = FlowEvent {
        backend_addr: u32::from_ne_bytes([198, 18, 1, 99]),
        ..event(42000, 7007, 13, FLOW_EVENT_NEW)
    };
    assert_eq!(
        install(&mut dp, &[unknown]).skipped,
        1,
        "a backend unknown here is skipped"
    );
}
