//! Random and mutated frames through the real `lb` object (BPF_PROG_TEST_RUN), checked
//! against the datapath's invariant: PASS leaves the frame unchanged; DROP is allowed; TX
//! changes only the Ethernet addresses, comes from the director's MAC, and goes to a
//! backend of the VIP the frame really addresses, as a correct parser reads it. Bounded:
//! a fixed number of frames from a fixed seed, so a failure reproduces. Needs root.

use std::collections::{BTreeMap, BTreeSet};

use std::net::Ipv6Addr;

use lb_tests::{fixture::*, frame::*, frame6::*};

/// The IPv6 VIP (TCP :6379 over ::11 .. ::13, UDP :5353 over ::31) and a client.
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);

fn mac6(last: u8) -> [u8; 6] {
    backend_mac(0x60 + last)
}

/// Frames and seed of the bounded run in `cargo xtask test`; `cargo xtask fuzz` sets
/// `LBD_FUZZ_FRAMES` and `LBD_FUZZ_SEED` for longer runs.
const DEFAULT_FRAMES: usize = 200_000;
const DEFAULT_SEED: u64 = 0x5eed_1b0d_2026_1202;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?}: not a number"))
        })
        .unwrap_or(default)
}

/// xorshift64*: reproducible, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// Backends (by MAC) of each VIP (IPv6 or not, protocol, port) in the fixture config.
fn backends_by_vip() -> BTreeMap<(bool, u8, u16), BTreeSet<[u8; 6]>> {
    let mut out: BTreeMap<(bool, u8, u16), BTreeSet<[u8; 6]>> = BTreeMap::new();
    out.entry((false, 6, 6379))
        .or_default()
        .extend([11, 12, 13].map(backend_mac));
    out.entry((false, 17, 5353))
        .or_default()
        .insert([0x02, 0xbb, 0, 0, 0, 0x1f]);
    out.entry((false, 6, 6380))
        .or_default()
        .insert([0x02, 0xbb, 0, 0, 0, 0x29]);
    for (port, _) in OTHER_SCHEDULERS {
        out.entry((false, 6, port))
            .or_default()
            .extend([21, 22, 23].map(backend_mac));
    }
    out.entry((true, 6, 6379))
        .or_default()
        .extend([0x11, 0x12, 0x13].map(mac6));
    out.entry((true, 17, 5353)).or_default().insert(mac6(0x31));
    out
}

/// The IPv6 VIPs of [`backends_by_vip`].
fn ipv6_vips() -> String {
    let backend = |last: u8| {
        let mac = mac6(last).map(|b| format!("{b:02x}")).join(":");
        format!("[[vip.backend]]\naddress = \"2001:2::{last:x}\"\nmac = \"{mac}\"\n")
    };
    format!(
        "[[vip]]\naddress = \"{VIP6}\"\nport = 6379\n{}{}{}[[vip]]\naddress = \"{VIP6}\"\nport = 5353\nprotocol = \"udp\"\n{}",
        backend(0x11),
        backend(0x12),
        backend(0x13),
        backend(0x31)
    )
}

/// More TCP VIPs, each with backends .21, .22, .23, one per scheduler that keeps state.
const OTHER_SCHEDULERS: [(u16, &str); 4] = [
    (7003, "scheduler = \"rr\""),
    (7005, "scheduler = \"wlc\""),
    (7007, "persistence_timeout = 60"),
    (7009, "scheduler = \"sh\""),
];

fn other_scheduler_vips() -> String {
    let mut text = String::new();
    for (port, keys) in OTHER_SCHEDULERS {
        text.push_str(&format!(
            "[[vip]]\naddress = \"{VIP}\"\nport = {port}\n{keys}\n"
        ));
        for last in [21u8, 22, 23] {
            let mac = backend_mac(last).map(|b| format!("{b:02x}")).join(":");
            text.push_str(&format!(
                "[[vip.backend]]\naddress = \"198.18.1.{last}\"\nweight = {}\nmac = \"{mac}\"\n",
                last - 20
            ));
        }
    }
    text
}

/// An IPv6 frame worth mutating: to the VIP or not, TCP or UDP, with extension headers, in
/// fragments, an ICMPv6 error, sometimes tagged.
fn seed_frame6(rng: &mut Rng) -> Vec<u8> {
    let dst_mac = if rng.chance(8) {
        OTHER_MAC
    } else {
        DIRECTOR_MAC
    };
    let dst = if rng.chance(6) {
        Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, rng.next() as u16)
    } else {
        VIP6
    };
    let port = [6379, 5353, 80, rng.next() as u16][rng.below(4) as usize];
    let src = (CLIENT6, 1024 + rng.below(60_000) as u16);
    let mut frame = if rng.chance(3) {
        Ipv6Frame::udp(CLIENT_MAC, dst_mac, src, (dst, port))
    } else {
        let flags =
            [TCP_SYN, TCP_ACK, TCP_FIN | TCP_ACK, TCP_RST, rng.byte()][rng.below(5) as usize];
        Ipv6Frame::tcp(CLIENT_MAC, dst_mac, src, (dst, port), flags)
    };
    frame = frame.with_payload(&vec![0x5a; rng.below(64) as usize]);
    for _ in 0..rng.below(3) {
        let extension = match rng.below(5) {
            0 => Extension::HopByHop,
            1 => Extension::DestinationOptions,
            2 => Extension::Routing {
                segments_left: rng.below(2) as u8,
            },
            3 => Extension::Other {
                next_header: rng.byte(),
            },
            _ => Extension::Fragment {
                offset: 0,
                more: rng.chance(2),
                id: rng.below(4) as u32,
            },
        };
        frame = frame.with(extension);
    }
    // A later fragment: no transport header, only data.
    if rng.chance(8) {
        frame.l4 = L4::Other {
            proto: [6, 17][rng.below(2) as usize],
        };
        frame = frame.with(Extension::Fragment {
            offset: 1 + rng.below(200) as u16,
            more: rng.chance(2),
            id: rng.below(4) as u32,
        });
    }
    let mut bytes = frame.build();
    // An ICMPv6 error quoting a packet from the VIP (or not) back to the client.
    if rng.chance(5) {
        let quoted_from = if rng.chance(4) { CLIENT6 } else { dst };
        let offending = if rng.chance(3) {
            Ipv6Frame::udp(OTHER_MAC, OTHER_MAC, (quoted_from, port), src)
        } else {
            Ipv6Frame::tcp(OTHER_MAC, OTHER_MAC, (quoted_from, port), src, TCP_ACK)
        }
        .build();
        let kind = [
            (2, 0, [0, 0, 5, 0]),
            (1, 4, [0; 4]),
            (128, 0, [0; 4]),
            (rng.byte(), 0, [0; 4]),
        ][rng.below(4) as usize];
        bytes = icmpv6((CLIENT_MAC, dst_mac), CLIENT6, dst, kind, &offending[14..]);
    }
    if rng.chance(8) {
        bytes = tagged(&bytes, rng.byte().into());
    }
    bytes
}

/// A frame worth mutating: to the VIP or not, TCP or UDP, sometimes tagged or fragmented.
fn seed_frame(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(3) {
        return seed_frame6(rng);
    }
    let dst_mac = if rng.chance(8) {
        OTHER_MAC
    } else {
        DIRECTOR_MAC
    };
    let dst = if rng.chance(6) {
        std::net::Ipv4Addr::new(198, 18, 1, rng.byte())
    } else {
        VIP
    };
    let port = [
        6379,
        5353,
        6380,
        80,
        rng.next() as u16,
        7003,
        7005,
        7007,
        7009,
    ][rng.below(9) as usize];
    let src = (CLIENT, 1024 + rng.below(60_000) as u16);
    let mut frame = if rng.chance(3) {
        Ipv4Frame::udp(CLIENT_MAC, dst_mac, src, (dst, port))
    } else {
        let flags = [
            TCP_SYN,
            TCP_ACK,
            TCP_ACK | TCP_PSH,
            TCP_FIN | TCP_ACK,
            TCP_RST,
            rng.byte(),
        ][rng.below(6) as usize];
        Ipv4Frame::tcp(CLIENT_MAC, dst_mac, src, (dst, port), flags)
    };
    if rng.chance(10) {
        frame.frag = [0x2000, 0x0001, 0x2010, rng.next() as u16][rng.below(4) as usize];
    }
    let mut bytes = frame
        .with_payload(&vec![0x5a; rng.below(64) as usize])
        .build();
    // An ICMP error quoting a packet from the VIP (or not) back to the client.
    if rng.chance(5) {
        let quoted_from = if rng.chance(4) { CLIENT } else { dst };
        let offending = if rng.chance(3) {
            Ipv4Frame::udp(OTHER_MAC, OTHER_MAC, (quoted_from, port), src)
        } else {
            Ipv4Frame::tcp(OTHER_MAC, OTHER_MAC, (quoted_from, port), src, TCP_ACK)
        }
        .build();
        let kind = [
            (3, 4, [0, 0, 5, 0]),
            (11, 0, [0; 4]),
            (8, 0, [0; 4]),
            (rng.byte(), 0, [0; 4]),
        ][rng.below(4) as usize];
        bytes = icmp_error(CLIENT_MAC, dst_mac, CLIENT, dst, kind, &offending);
    }
    // Another IP identification now and then: a later fragment of a datagram whose first
    // fragment was never seen (the builder gives every frame the same one).
    if rng.chance(3) {
        bytes[18] = rng.byte();
        bytes[19] = rng.byte();
    }
    match rng.below(12) {
        // One 802.1Q tag (or two).
        0 => {
            let tag = [0x81, 0x00, 0, rng.byte()];
            bytes.splice(12..12, tag);
            if rng.chance(2) {
                bytes.splice(12..12, [0x81, 0x00, 0, 7]);
            }
        }
        // IPv4 options: a larger IHL with the header grown to match.
        1 => {
            let words = 1 + rng.below(10) as usize;
            bytes[14] = 0x45 + words as u8;
            bytes.splice(34..34, std::iter::repeat_n(1u8, 4 * words));
        }
        // Another EtherType: IPv6, ARP, or anything.
        2 => {
            let ether_type = [0x86dd, 0x0806, rng.next() as u16][rng.below(3) as usize];
            bytes[12..14].copy_from_slice(&u16::to_be_bytes(ether_type));
        }
        _ => {}
    }
    bytes
}

/// Flips, truncates, extends or overwrites a few bytes.
fn mutate(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.below(4) {
        if bytes.is_empty() {
            break;
        }
        match rng.below(5) {
            0 => {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
            1 => {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] = rng.byte();
            }
            // BPF_PROG_TEST_RUN refuses less than an Ethernet header.
            2 => bytes.truncate(14 + rng.below(bytes.len().saturating_sub(14) as u64 + 1) as usize),
            3 => bytes.extend((0..rng.below(32)).map(|_| rng.byte())),
            // Header fields a parser trusts: IP total length, IHL, TCP data offset.
            _ => {
                let at = [16usize, 17, 14, 46][rng.below(4) as usize];
                if at < bytes.len() {
                    bytes[at] = rng.byte();
                }
            }
        }
    }
    bytes
}

/// What a frame may be forwarded as: a packet of the VIP (protocol, port), or a later
/// fragment (no ports) to the VIP address over a protocol, which may go to a backend of any
/// VIP with that protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Addressed {
    /// (IPv6, protocol, port).
    Vip(bool, u8, u16),
    /// (IPv6, protocol).
    LaterFragment(bool, u8),
}

/// What a correct parser says the frame addresses, if the datapath may forward it: an IPv4
/// TCP or UDP packet or first fragment (with at most one 802.1Q tag) to the director's MAC
/// and the VIP whose headers fit in the frame; a later fragment of one; or an ICMP error to
/// the VIP quoting a TCP or UDP packet the VIP sent.
fn addressed_vip(frame: &[u8]) -> Option<Addressed> {
    if frame.len() < 14 || frame[0..6] != DIRECTOR_MAC {
        return None;
    }
    // Untagged, or one 802.1Q tag over IPv4 (or IPv6).
    let l3 = match (&frame[12..14], frame.get(16..18)) {
        ([0x08, 0x00], _) => 14,
        ([0x81, 0x00], Some([0x08, 0x00])) => 18,
        ([0x86, 0xdd], _) => return addressed_vip6(frame.get(14..)?),
        ([0x81, 0x00], Some([0x86, 0xdd])) => return addressed_vip6(frame.get(18..)?),
        _ => return None,
    };
    let ip = frame.get(l3..)?;
    let (proto, offset, more, l4) = ipv4_payload(ip)?;
    if ip[16..20] != VIP.octets() {
        return None;
    }
    if offset != 0 {
        return (matches!(proto, 6 | 17) && !l4.is_empty())
            .then_some(Addressed::LaterFragment(false, proto));
    }
    match proto {
        6 if l4.len() >= 20 => Some(Addressed::Vip(false, 6, u16::from_be_bytes([l4[2], l4[3]]))),
        17 if l4.len() >= 8 => Some(Addressed::Vip(
            false,
            17,
            u16::from_be_bytes([l4[2], l4[3]]),
        )),
        1 if !more && l4.len() >= 8 && matches!(l4[0], 3 | 11 | 12) => {
            let quoted = &l4[8..];
            if quoted.len() < 20 || quoted[0] >> 4 != 4 {
                return None;
            }
            let ihl = usize::from(quoted[0] & 0x0f) * 4;
            let ports = quoted.get(ihl..ihl + 8)?;
            let inner_proto = quoted[9];
            let about_vip = quoted[12..16] == VIP.octets();
            (ihl >= 20 && about_vip && (inner_proto == 6 || inner_proto == 17)).then(|| {
                Addressed::Vip(false, inner_proto, u16::from_be_bytes([ports[0], ports[1]]))
            })
        }
        _ => None,
    }
}

/// What an IPv6 packet (`ip`, from its fixed header) addresses, if it may be forwarded: TCP
/// or UDP to the IPv6 VIP after any hop-by-hop, destination options, AH, fragment, or
/// finished routing headers, whose headers fit in the payload length; a later fragment to
/// the VIP (whatever its fragment header's next header); or an ICMPv6 error to the VIP
/// quoting a TCP or UDP packet the VIP sent.
fn addressed_vip6(ip: &[u8]) -> Option<Addressed> {
    if ip.len() < 40 || ip[0] >> 4 != 6 || ip[24..40] != VIP6.octets() {
        return None;
    }
    let end = 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let packet = ip.get(..end)?;
    let (mut next, mut at) = (ip[6], 40);
    loop {
        let header = packet.get(at..at + 8)?;
        match next {
            0 | 60 => at += (usize::from(header[1]) + 1) * 8,
            43 if header[3] == 0 => at += (usize::from(header[1]) + 1) * 8,
            51 => at += (usize::from(header[1]) + 2) * 4,
            44 => {
                let offset = u16::from_be_bytes([header[2], header[3]]) >> 3;
                if offset != 0 {
                    // Whatever its next header: it follows its datagram's first fragment.
                    return (packet.len() > at + 8)
                        .then_some(Addressed::LaterFragment(true, header[0]));
                }
                at += 8;
            }
            _ => break,
        }
        next = header[0];
    }
    let l4 = packet.get(at..)?;
    match next {
        6 if l4.len() >= 20 => Some(Addressed::Vip(true, 6, u16::from_be_bytes([l4[2], l4[3]]))),
        17 if l4.len() >= 8 => Some(Addressed::Vip(true, 17, u16::from_be_bytes([l4[2], l4[3]]))),
        58 if l4.len() >= 8 && matches!(l4[0], 1..=4) => {
            let quoted = &l4[8..];
            let ports = quoted.get(40..48)?;
            (quoted[0] >> 4 == 6 && quoted[8..24] == VIP6.octets() && matches!(quoted[6], 6 | 17))
                .then(|| Addressed::Vip(true, quoted[6], u16::from_be_bytes([ports[0], ports[1]])))
        }
        _ => None,
    }
}

/// An IPv4 packet's protocol, fragment offset, "more fragments" flag and payload (as far as
/// its total length says, when the frame holds all of it).
fn ipv4_payload(ip: &[u8]) -> Option<(u8, u16, bool, &[u8])> {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let tot_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < 20 || tot_len < ihl || tot_len > ip.len() {
        return None;
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    Some((ip[9], frag & 0x1fff, frag & 0x2000 != 0, &ip[ihl..tot_len]))
}

#[test]
fn random_and_mutated_frames_are_passed_unchanged_dropped_or_sent_to_a_backend_of_their_vip() {
    let (frames, seed) = (
        env_or("LBD_FUZZ_FRAMES", DEFAULT_FRAMES),
        env_or("LBD_FUZZ_SEED", DEFAULT_SEED),
    );
    if !lb_tests::require_root("fuzz") {
        return;
    }
    let mut dp = Datapath::with_config(&config_with(
        &[(11, 1), (12, 2), (13, 1)],
        &(other_scheduler_vips() + &ipv6_vips()),
    ));
    let vips = backends_by_vip();
    let mut rng = Rng(seed);
    let mut verdicts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut violations = Vec::new();
    let mut tx_ipv6 = 0;
    for i in 0..frames {
        let base = seed_frame(&mut rng);
        let frame = if rng.chance(4) {
            base
        } else {
            mutate(&mut rng, base)
        };
        let (verdict, out) = dp.run(&frame);
        let name = match verdict {
            XDP_PASS => "pass",
            XDP_DROP => "drop",
            XDP_TX => "tx",
            XDP_ABORTED => "aborted",
            _ => "other",
        };
        *verdicts.entry(name).or_default() += 1;
        let problem = match verdict {
            XDP_PASS if out != frame => Some("PASS changed the frame".to_owned()),
            XDP_PASS | XDP_DROP => None,
            XDP_TX => match addressed_vip(&frame) {
                None => Some("TX of a frame that addresses no VIP".to_owned()),
                Some(addressed) => {
                    if matches!(
                        addressed,
                        Addressed::Vip(true, ..) | Addressed::LaterFragment(true, _)
                    ) {
                        tx_ipv6 += 1;
                    }
                    let allowed: BTreeSet<[u8; 6]> = vips
                        .iter()
                        .filter(|((v6, proto, port), _)| match addressed {
                            Addressed::Vip(f, p, q) => (f, p, q) == (*v6, *proto, *port),
                            // An IPv6 fragment header naming an extension header: a datagram
                            // of either protocol.
                            Addressed::LaterFragment(f, p) => {
                                f == *v6 && (p == *proto || (f && !matches!(p, 6 | 17)))
                            }
                        })
                        .flat_map(|(_, macs)| macs.iter().copied())
                        .collect();
                    let to: [u8; 6] = out[0..6].try_into().expect("6 bytes");
                    if out.len() != frame.len() || out[12..] != frame[12..] {
                        Some("TX changed more than the Ethernet addresses".to_owned())
                    } else if out[6..12] != DIRECTOR_MAC {
                        Some("TX not from the director's MAC".to_owned())
                    } else if !allowed.contains(&to) {
                        Some(format!("TX to {to:02x?}, no backend of {addressed:?}"))
                    } else {
                        None
                    }
                }
            },
            other => Some(format!("verdict {other}")),
        };
        if let Some(problem) = problem {
            if violations.len() < 10 {
                violations.push(format!("frame {i}: {problem}: {frame:02x?}"));
            } else {
                violations.push(String::new());
            }
        }
    }
    let v = dp.snapshot().verdicts;
    eprintln!(
        "{frames} frames (seed {seed:#x}): {verdicts:?}; of the TX: IPv6 {tx_ipv6}, ICMP errors {}, later fragments after their first {}, by the 3-tuple {}",
        v.tx_icmp_error, v.tx_fragment, v.tx_fragment_hashed
    );
    assert!(
        violations.is_empty(),
        "{} violations, the first: {:#?}",
        violations.len(),
        &violations[..violations.len().min(10)]
    );
    // The frames reached every path: not a test that passes by passing everything.
    for (what, count) in [
        ("ICMP errors", v.tx_icmp_error),
        ("later fragments after their first", v.tx_fragment),
        ("later fragments by the 3-tuple", v.tx_fragment_hashed),
        ("IPv6 frames", tx_ipv6),
    ] {
        assert!(
            count as usize > frames / 1000,
            "too few {what} forwarded: {v:?}"
        );
    }
    for kind in ["pass", "drop", "tx"] {
        assert!(
            verdicts.get(kind).copied().unwrap_or(0) > frames / 100,
            "too few {kind}: {verdicts:?}"
        );
    }
}
