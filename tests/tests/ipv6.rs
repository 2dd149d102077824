//! IPv6 datapath fixtures through BPF_PROG_TEST_RUN, as `datapath.rs` does for IPv4: an
//! IPv6 VIP's frames (with extension headers, under an 802.1Q tag, in fragments, quoted by
//! ICMPv6 errors) are balanced by the daemon's own rings with only the MACs changed, and
//! everything else is passed unchanged or dropped. Addresses from 2001:2::/48 (RFC 5180).
//! Needs root.

use std::net::Ipv6Addr;

use lb_common::{FlowKey6, FlowTuple, RING_SIZE, VipKey, ip_words};
use lb_tests::{
    fixture::*,
    frame::{L4, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN},
    frame6::*,
};

const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0xfe);
const ROUTER_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0xfe];
const BEFORE: [(u8, u32); 3] = [(11, 1), (12, 1), (13, 1)];

/// Backend `2001:2::{last}` (hex digits read as decimal, like the IPv4 fixtures' .11).
fn backend6(last: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, u16::from(last))
}

fn mac6(last: u8) -> [u8; 6] {
    backend_mac(0x60 + last)
}

fn backend_table(last: u8) -> String {
    let mac = mac6(last).map(|b| format!("{b:02x}")).join(":");
    format!(
        "[[vip.backend]]\naddress = \"{}\"\nmac = \"{mac}\"\n",
        backend6(last)
    )
}

/// The IPv4 fixture config plus IPv6 VIPs at [`VIP6`]: TCP :6379 over `tcp6`, UDP :5353
/// over ::31, and a TCP :7007 with persistence by /64 over ::21 .. ::23.
fn config6(tcp6: &[u8]) -> lb_daemon::config::Config {
    let mut extra = format!("[[vip]]\naddress = \"{VIP6}\"\nport = 6379\n");
    for &last in tcp6 {
        extra.push_str(&backend_table(last));
    }
    extra.push_str(&format!(
        "[[vip]]\naddress = \"{VIP6}\"\nport = 5353\nprotocol = \"udp\"\n{}",
        backend_table(31)
    ));
    extra.push_str(&format!(
        "[[vip]]\naddress = \"{VIP6}\"\nport = 7007\npersistence_timeout = 60\n\
         persistence_granularity = 64\n{}{}{}",
        backend_table(21),
        backend_table(22),
        backend_table(23)
    ));
    config_with(&BEFORE, &extra)
}

fn datapath6() -> Option<Datapath> {
    if !lb_tests::require_root("IPv6 datapath fixtures") {
        return None;
    }
    Some(Datapath::with_config(&config6(&[11, 12, 13])))
}

fn key6(src: Ipv6Addr, src_port: u16, dst_port: u16, proto: u8) -> FlowKey6 {
    FlowKey6 {
        src_addr: ip_words(src.into()),
        dst_addr: ip_words(VIP6.into()),
        src_port: src_port.to_be(),
        dst_port: dst_port.to_be(),
        proto,
        _pad0: 0,
        _pad1: 0,
    }
}

/// The MAC of the backend the daemon's ring of VIP6:`port` gives `key`.
fn choice6(dp: &Datapath, port: u16, key: &FlowKey6) -> [u8; 6] {
    let vip = VipKey::new(VIP6.into(), port, key.proto);
    let ring = dp.reconciler().ring(&vip).expect("IPv6 VIP applied");
    let id = ring[(key.flow_hash() % u64::from(RING_SIZE)) as usize];
    (1..=0x3f)
        .find(|&last| dp.reconciler().backend_id(&vip, backend6(last).into()) == Some(id))
        .map(mac6)
        .expect("the ring points at a configured backend")
}

fn syn6(port: u16) -> Ipv6Frame {
    Ipv6Frame::tcp(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT6, port),
        (VIP6, 6379),
        TCP_SYN,
    )
}

fn tcp6(port: u16, flags: u8) -> Vec<u8> {
    Ipv6Frame {
        l4: L4::Tcp {
            src_port: port,
            dst_port: 6379,
            flags,
        },
        ..syn6(port)
    }
    .build()
}

#[test]
fn an_ipv6_syn_goes_to_the_maglev_choice_with_only_macs_changed() {
    let Some(mut dp) = datapath6() else {
        return;
    };
    let mut backends = std::collections::BTreeSet::new();
    for port in 40000..40032 {
        let syn = tcp6(port, TCP_SYN);
        let want = choice6(&dp, 6379, &key6(CLIENT6, port, 6379, 6));
        backends.insert(want);
        // Hop limit, addresses and ports untouched: only the MACs.
        assert_eq!(dp.run(&syn), (XDP_TX, forwarded(&syn, want)), "port {port}");
    }
    assert_eq!(backends.len(), 3, "32 flows reach all three backends");
    // The IPv4 VIP at the same port is another VIP, with its own backends.
    let (verdict, out) = dp.run(&tcp(40000, TCP_SYN));
    assert_eq!(verdict, XDP_TX);
    assert!([11, 12, 13].map(backend_mac).contains(&backend_of(&out)));
}

/// A client port whose flow the ring of `after` sends to another backend that serves in
/// both: only conntrack keeps it where it is.
fn port_that_moves(dp: &Datapath, after: &lb_daemon::config::Config) -> u16 {
    let (_, planned) = lb_daemon::reconcile::Reconciler::default()
        .plan(&lb_daemon::daemon::desired_state(after).unwrap())
        .unwrap();
    let vip = VipKey::new(VIP6.into(), 6379, 6);
    let planned_mac = |key: &FlowKey6| {
        let id = planned.ring(&vip).unwrap()[(key.flow_hash() % u64::from(RING_SIZE)) as usize];
        (1..=0x3f)
            .find(|&l| planned.backend_id(&vip, backend6(l).into()) == Some(id))
            .map(mac6)
    };
    (40000..41000)
        .find(|&p| {
            let key = key6(CLIENT6, p, 6379, 6);
            let now = choice6(dp, 6379, &key);
            let later = planned_mac(&key);
            Some(now) != later
                && after.vips.iter().any(|v| {
                    v.address == VIP6 && v.backends.iter().any(|b| mac6_of(b.address) == Some(now))
                })
        })
        .expect("a flow that moves between surviving backends")
}

fn mac6_of(addr: std::net::IpAddr) -> Option<[u8; 6]> {
    (1..=0x3f)
        .find(|&l| std::net::IpAddr::from(backend6(l)) == addr)
        .map(mac6)
}

#[test]
fn an_ipv6_flow_is_tracked_from_its_first_ack_and_keeps_its_backend_when_the_ring_changes() {
    let Some(mut dp) = datapath6() else {
        return;
    };
    let after = config6(&[11, 12, 14]);
    let port = port_that_moves(&dp, &after);
    let (_, syn) = dp.run(&tcp6(port, TCP_SYN));
    let (verdict, ack) = dp.run(&tcp6(port, TCP_ACK));
    assert_eq!(verdict, XDP_TX);
    assert_eq!(backend_of(&syn), backend_of(&ack), "SYN and first ACK meet");
    let vip = dp
        .snapshot()
        .vips
        .into_iter()
        .find(|v| v.address() == VIP6 && v.port() == 6379)
        .expect("the IPv6 VIP in the snapshot");
    assert_eq!(
        vip.backends.iter().map(|b| b.active_flows).sum::<u64>(),
        1,
        "one tracked flow"
    );
    assert_eq!(vip.counters.new_flows, 1);

    dp.apply(&after).unwrap();
    let data = tcp6(port, TCP_ACK | TCP_PSH);
    assert_eq!(
        dp.run(&data),
        (XDP_TX, forwarded(&data, backend_of(&ack))),
        "a tracked flow stays on its backend"
    );
    // After the client's FIN, a new SYN on the same tuple is a new connection: the new ring.
    dp.run(&tcp6(port, TCP_FIN | TCP_ACK));
    let (_, again) = dp.run(&tcp6(port, TCP_SYN));
    assert_ne!(
        backend_of(&again),
        backend_of(&ack),
        "the new connection follows the new ring"
    );
}

#[test]
fn an_ipv6_udp_datagram_is_forwarded() {
    let Some(mut dp) = datapath6() else {
        return;
    };
    let datagram = Ipv6Frame::udp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT6, 5000), (VIP6, 5353)).build();
    assert_eq!(dp.run(&datagram), (XDP_TX, forwarded(&datagram, mac6(31))));
}

#[test]
fn extension_headers_are_skipped_to_the_ports_or_the_frame_is_passed() {
    let Some(mut dp) = datapath6() else {
        return;
    };
    let port = 40100;
    let want = choice6(&dp, 6379, &key6(CLIENT6, port, 6379, 6));
    for chain in [
        vec![Extension::HopByHop],
        vec![Extension::DestinationOptions],
        vec![Extension::HopByHop, Extension::DestinationOptions],
        vec![Extension::Routing { segments_left: 0 }],
        vec![
            Extension::HopByHop,
            Extension::Routing { segments_left: 0 },
            Extension::DestinationOptions,
        ],
        // An atomic fragment (offset 0, no more fragments) is a whole packet.
        vec![Extension::Fragment {
            offset: 0,
            more: false,
            id: 7,
        }],
    ] {
        let mut frame = syn6(port);
        frame.extensions = chain.clone();
        let syn = frame.build();
        assert_eq!(dp.run(&syn), (XDP_TX, forwarded(&syn, want)), "{chain:?}");
    }
    for (chain, why) in [
        (
            vec![Extension::Routing { segments_left: 1 }],
            "this host is not the final destination",
        ),
        (
            vec![Extension::DestinationOptions; 5],
            "more extension headers than the datapath reads",
        ),
        (
            vec![Extension::Other { next_header: 135 }],
            "an unknown extension header",
        ),
        (
            vec![
                Extension::Fragment {
                    offset: 0,
                    more: true,
                    id: 8,
                },
                Extension::Fragment {
                    offset: 0,
                    more: true,
                    id: 9,
                },
            ],
            "two fragment headers",
        ),
    ] {
        let mut frame = syn6(port);
        frame.extensions = chain;
        let syn = frame.build();
        assert_eq!(dp.run(&syn), (XDP_PASS, syn.clone()), "{why}");
    }
}

#[test]
fn a_vlan_tagged_ipv6_syn_is_balanced_with_its_tag_kept() {
    let Some(mut dp) = datapath6() else {
        return;
    };
    for port in [40200u16, 40201, 52000] {
        let syn = tagged(&tcp6(port, TCP_SYN), 10);
        let want = choice6(&dp, 6379, &key6(CLIENT6, port, 6379, 6));
        assert_eq!(dp.run(&syn), (XDP_TX, forwarded(&syn, want)), "port {port}");
    }
    let qinq = tagged(&tagged(&tcp6(40202, TCP_SYN), 10), 20);
    assert_eq!(
        dp.run(&qinq),
        (XDP_PASS, qinq.clone()),
        "two tags are passed"
    );
}

/// A first fragment of datagram `id` from the client's `port` (its fragment header last:
/// add extension headers after it with `with`).
fn first_fragment6_frame(port: u16, id: u32) -> Ipv6Frame {
    Ipv6Frame {
        payload: vec![0x61; 1200],
        ..Ipv6Frame::tcp(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (CLIENT6, port),
            (VIP6, 6379),
            TCP_ACK,
        )
    }
    .with(Extension::Fragment {
        offset: 0,
        more: true,
        id,
    })
}

fn first_fragment6(port: u16, id: u32) -> Vec<u8> {
    first_fragment6_frame(port, id).build()
}

fn later_fragment6(offset: u16, more: bool, id: u32) -> Vec<u8> {
    Ipv6Frame {
        l4: L4::Other { proto: 6 },
        payload: vec![0x62; 600],
        ..syn6(0)
    }
    .with(Extension::Fragment { offset, more, id })
    .build()
}

#[test]
fn ipv6_fragments_follow_their_first_fragment_or_go_by_the_three_tuple() {
    let Some(mut dp) = datapath6() else {
        return;
    };
    let orphan_choice = choice6(&dp, 6379, &key6(CLIENT6, 0, 0, 6));
    let port = (40300..41000)
        .find(|&p| choice6(&dp, 6379, &key6(CLIENT6, p, 6379, 6)) != orphan_choice)
        .unwrap();
    let owner = choice6(&dp, 6379, &key6(CLIENT6, port, 6379, 6));
    let first = first_fragment6(port, 0x1234_5678);
    assert_eq!(dp.run(&first), (XDP_TX, forwarded(&first, owner)));
    for (offset, more) in [(151, true), (226, false)] {
        let later = later_fragment6(offset, more, 0x1234_5678);
        assert_eq!(
            dp.run(&later),
            (XDP_TX, forwarded(&later, owner)),
            "fragment at {offset}"
        );
    }
    // Another datagram (another id) whose first fragment was not seen.
    let orphan = later_fragment6(151, false, 0x1234_5679);
    assert_eq!(dp.run(&orphan), (XDP_TX, forwarded(&orphan, orphan_choice)));
    let v = dp.snapshot().verdicts;
    assert_eq!(
        (v.tx, v.tx_fragment, v.tx_fragment_hashed),
        (1, 2, 1),
        "{v:?}"
    );
}

/// What the backend sent the client on the flow from `port`, as a router quotes it.
fn reply6(port: u16) -> Vec<u8> {
    Ipv6Frame::tcp(
        mac6(11),
        ROUTER_MAC,
        (VIP6, 6379),
        (CLIENT6, port),
        TCP_ACK | TCP_PSH,
    )
    .with_payload(&[0x2b; 1400])
    .build()
}

fn icmp6_error(kind: (u8, u8, [u8; 4]), quoted: &[u8]) -> Vec<u8> {
    icmpv6(
        (ROUTER_MAC, DIRECTOR_MAC),
        ROUTER6,
        VIP6,
        kind,
        &quoted[14..(14 + 1232).min(quoted.len())],
    )
}

const PACKET_TOO_BIG: (u8, u8, [u8; 4]) = (2, 0, [0, 0, 0x05, 0x00]);

#[test]
fn an_icmpv6_packet_too_big_about_a_tracked_flow_goes_to_its_backend() {
    let Some(mut dp) = datapath6() else {
        return;
    };
    let after = config6(&[11, 12, 14]);
    let port = port_that_moves(&dp, &after);
    dp.run(&tcp6(port, TCP_SYN));
    let (_, ack) = dp.run(&tcp6(port, TCP_ACK));
    let owner = backend_of(&ack);
    dp.apply(&after).unwrap();
    for kind in [
        PACKET_TOO_BIG,
        (1, 4, [0; 4]),
        (3, 0, [0; 4]),
        (4, 0, [0; 4]),
    ] {
        let error = icmp6_error(kind, &reply6(port));
        assert_eq!(
            dp.run(&error),
            (XDP_TX, forwarded(&error, owner)),
            "{kind:?}"
        );
    }
    let v = dp.snapshot().verdicts;
    assert_eq!(v.tx_icmp_error, 4, "{v:?}");
}

#[test]
fn neighbour_discovery_echo_and_frames_for_no_vip_are_passed_unchanged() {
    let Some(mut dp) = datapath6() else {
        return;
    };
    let solicited_node: Ipv6Addr = "ff02::1:ff00:100".parse().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "neighbour solicitation for the VIP",
            icmpv6(
                (CLIENT_MAC, DIRECTOR_MAC),
                CLIENT6,
                solicited_node,
                (135, 0, [0; 4]),
                &VIP6.octets(),
            ),
        ),
        (
            "echo request to the VIP",
            icmpv6(
                (CLIENT_MAC, DIRECTOR_MAC),
                CLIENT6,
                VIP6,
                (128, 0, [0, 1, 0, 1]),
                b"ping",
            ),
        ),
        (
            "an error quoting a packet from another address",
            icmp6_error(PACKET_TOO_BIG, &{
                let mut r = reply6(40500);
                r[22..38].copy_from_slice(&backend6(11).octets());
                r
            }),
        ),
        (
            "an error quoting a packet from a port that is no VIP",
            icmp6_error(PACKET_TOO_BIG, &{
                let mut f =
                    Ipv6Frame::tcp(mac6(11), ROUTER_MAC, (VIP6, 22), (CLIENT6, 40500), TCP_ACK);
                f.payload = vec![0; 100];
                f.build()
            }),
        ),
        (
            "a SYN to an IPv4-mapped address",
            Ipv6Frame::tcp(
                CLIENT_MAC,
                DIRECTOR_MAC,
                (CLIENT6, 40000),
                ("::ffff:198.18.1.100".parse().unwrap(), 6379),
                TCP_SYN,
            )
            .build(),
        ),
        (
            "a SYN to another IPv6 address",
            Ipv6Frame::tcp(
                CLIENT_MAC,
                DIRECTOR_MAC,
                (CLIENT6, 40000),
                (backend6(0x99), 6379),
                TCP_SYN,
            )
            .build(),
        ),
        (
            "a SYN to another IPv6 address claiming more payload than the frame holds \
             (the kernel judges it)",
            {
                let mut f = Ipv6Frame::tcp(
                    CLIENT_MAC,
                    DIRECTOR_MAC,
                    (CLIENT6, 40000),
                    (backend6(0x99), 6379),
                    TCP_SYN,
                )
                .build();
                f[18..20].copy_from_slice(&1000u16.to_be_bytes());
                f
            },
        ),
    ];
    for (what, frame) in cases {
        assert_eq!(dp.run(&frame), (XDP_PASS, frame.clone()), "{what}");
    }
}

/// `persistence_granularity = 64`: every client of a /64 keeps one backend across its
/// connections; the next /64 may get another.
#[test]
fn ipv6_persistence_groups_clients_by_prefix() {
    let Some(mut dp) = datapath6() else {
        return;
    };
    let connect = |dp: &mut Datapath, client: Ipv6Addr, port: u16| {
        let syn = Ipv6Frame::tcp(
            CLIENT_MAC,
            DIRECTOR_MAC,
            (client, port),
            (VIP6, 7007),
            TCP_SYN,
        )
        .build();
        let (verdict, out) = dp.run(&syn);
        assert_eq!(verdict, XDP_TX);
        backend_of(&out)
    };
    let mut per_prefix = Vec::new();
    for prefix in 0..8u16 {
        let first = connect(
            &mut dp,
            Ipv6Addr::new(0x2001, 2, 0, 0x100 + prefix, 0, 0, 0, 1),
            40000,
        );
        for host in 2..10u16 {
            let client = Ipv6Addr::new(0x2001, 2, 0, 0x100 + prefix, 0xabcd, 0, host, 1);
            assert_eq!(
                connect(&mut dp, client, 40000 + host),
                first,
                "{client} shares its /64's backend"
            );
        }
        per_prefix.push(first);
    }
    per_prefix.sort();
    per_prefix.dedup();
    assert!(
        per_prefix.len() > 1,
        "8 prefixes all on one backend: {per_prefix:?}"
    );
}

/// Every kind of IPv6 frame the datapath forwards, cut at every length: never forwarded,
/// and passed only unchanged.
#[test]
fn every_forwardable_ipv6_frame_cut_at_any_length_is_never_forwarded() {
    let Some(mut dp) = datapath6() else {
        return;
    };
    let kinds: Vec<(&str, Vec<u8>)> = vec![
        ("SYN", tcp6(41000, TCP_SYN)),
        (
            "SYN with extension headers",
            syn6(41001)
                .with(Extension::HopByHop)
                .with(Extension::DestinationOptions)
                .build(),
        ),
        ("802.1Q SYN", tagged(&tcp6(41002, TCP_SYN), 7)),
        (
            "UDP",
            Ipv6Frame::udp(CLIENT_MAC, DIRECTOR_MAC, (CLIENT6, 5000), (VIP6, 5353)).build(),
        ),
        ("first fragment", first_fragment6(41003, 1)),
        ("later fragment", later_fragment6(151, false, 2)),
        (
            "packet too big",
            icmp6_error(PACKET_TOO_BIG, &reply6(41004)),
        ),
    ];
    assert_cuts_are_never_forwarded(&mut dp, &kinds);
}

/// RFC 8200 4.1: a destination options header for the final destination follows the
/// fragment header, so every fragment's fragment header names it (60) as next header, and
/// the first fragment's TCP header comes after it. The later fragments follow the first to
/// its backend (the datagram is keyed by the fragment header's next header in both), or
/// the backend would get a first fragment it can never reassemble.
#[test]
fn later_fragments_follow_a_first_fragment_with_destination_options_after_its_fragment_header() {
    let Some(mut dp) = datapath6() else {
        return;
    };
    let port = 40700;
    let id = 0x0bad_f00d;
    let owner = choice6(&dp, 6379, &key6(CLIENT6, port, 6379, 6));
    let first = first_fragment6_frame(port, id)
        .with(Extension::DestinationOptions)
        .build();
    assert_eq!(
        dp.run(&first),
        (XDP_TX, forwarded(&first, owner)),
        "the first fragment is balanced"
    );
    let later = Ipv6Frame {
        l4: L4::Other {
            proto: NEXT_DEST_OPTIONS,
        },
        payload: vec![0x62; 600],
        ..syn6(0)
    }
    .with(Extension::Fragment {
        offset: 154,
        more: false,
        id,
    })
    .build();
    let (verdict, out) = dp.run(&later);
    assert_eq!(
        verdict, XDP_TX,
        "the later fragment of the same datagram goes where its first went (XDP_PASS = 2)"
    );
    assert_eq!(out, forwarded(&later, owner));
}

/// Kernel memory (`memlock` in /proc/self/fdinfo) of every map of type `map_type` with
/// `max_entries` entries that this process holds open.
fn memlock_of_maps(map_type: u32, max_entries: u32) -> (usize, u64) {
    let (mut count, mut bytes) = (0, 0);
    for entry in std::fs::read_dir("/proc/self/fdinfo").unwrap() {
        let Ok(text) = std::fs::read_to_string(entry.unwrap().path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if field("map_type:") == Some(u64::from(map_type))
            && field("max_entries:") == Some(u64::from(max_entries))
        {
            count += 1;
            bytes += field("memlock:").unwrap();
        }
    }
    (count, bytes)
}

/// `lbd check` prints "conntrack tables of N flows each (IPv4, IPv6): about M MiB" from
/// `Config::conntrack_memory_bytes`: it must cover what the kernel preallocates for both
/// flow tables (FLOWS and FLOWS6, `max_flows` each, IPv6 VIPs or not).
#[test]
fn the_conntrack_memory_lbd_check_prints_covers_the_ipv6_flow_table() {
    if !lb_tests::require_root("IPv6 datapath fixtures") {
        return;
    }
    const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
    let max_flows = 1 << 20;
    let text = lb_tests::fixture::config_text(&BEFORE, "").replacen(
        "[director]\n",
        &format!("[director]\nmax_flows = {max_flows}\n"),
        1,
    );
    let config =
        lb_daemon::config::Config::parse(std::path::Path::new("t.toml"), &text).expect("config");
    assert_eq!(config.max_flows, max_flows);
    let options = lb_daemon::dataplane::LoadOptions {
        max_flows,
        ..Default::default()
    };
    let (_, before) = memlock_of_maps(BPF_MAP_TYPE_LRU_HASH, max_flows);
    let dp = Datapath::with_options(&config, &options);
    let (count, after) = memlock_of_maps(BPF_MAP_TYPE_LRU_HASH, max_flows);
    let taken = after - before;
    let said = config.conntrack_memory_bytes();
    drop(dp);
    assert!(
        taken <= said + said / 4,
        "lbd check says about {} MiB for {max_flows} flows; the kernel took {} MiB for the {count} \
         flow tables of that size ({} bytes a flow)",
        said >> 20,
        taken >> 20,
        taken / u64::from(max_flows)
    );
}
