//! IPv6 parsing: the fixed header, then extension headers (hop-by-hop, destination options,
//! routing with no segments left, AH and fragment are skipped; anything else, or more than
//! [`MAX_EXTENSION_HEADERS`], is passed to the kernel), then TCP/UDP as for IPv4, or an
//! ICMPv6 error (`icmp6`).

use aya_ebpf::programs::XdpContext;
use lb_common::{IpWords, PROTO_TCP, PROTO_UDP, hash::ipv6_filter_word, ipv4_of};

use crate::{
    Outcome, icmp6,
    parse::{
        Fragment, Link, Packet, TcpFlags, ports, prefilter, ptr_at, transport_flags, transport_len,
    },
    wire,
};

/// The fixed header.
const IPV6_HEADER_LEN: usize = 40;
/// Offset of the source address in it (the destination follows).
const IPV6_ADDRS_OFFSET: usize = 8;
const NEXT_HOP_BY_HOP: u8 = 0;
const NEXT_ROUTING: u8 = 43;
const NEXT_FRAGMENT: u8 = 44;
const NEXT_AUTH: u8 = 51;
const NEXT_DEST_OPTIONS: u8 = 60;
pub const PROTO_ICMPV6: u8 = 58;
/// Extension headers read past before giving up (passing the packet). Real traffic has at
/// most one or two; the bound keeps the verifier's walk short.
const MAX_EXTENSION_HEADERS: usize = 4;
/// The fragment header's offset field (its low 3 bits are flags, M the lowest).
const FRAGMENT_OFFSET_MASK: u16 = 0xfff8;
const FRAGMENT_MORE: u16 = 1;

/// The source and destination of the fixed header at `l3`.
#[inline(always)]
pub fn addresses(ctx: &XdpContext, l3: usize) -> Result<(IpWords, IpWords), Outcome> {
    let addrs: *const [IpWords; 2] = ptr_at(ctx, l3 + IPV6_ADDRS_OFFSET)?;
    // SAFETY: within bounds.
    let [src, dst] = unsafe { wire::load::<[IpWords; 2]>(addrs as *const u8) };
    Ok((src, dst))
}

/// The first 8 bytes of an IPv6 header: (version, payload length, next header).
#[inline(always)]
pub fn fixed(ctx: &XdpContext, l3: usize) -> Result<(u8, u16, u8), Outcome> {
    let head: *const [u8; 8] = ptr_at(ctx, l3)?;
    // SAFETY: within bounds. Version, traffic class and flow label; payload length, next
    // header, hop limit.
    let [w0, w1] = unsafe { wire::load::<[u32; 2]>(head as *const u8) };
    Ok(((w0 as u8) >> 4, u16::from_be(w1 as u16), (w1 >> 16) as u8))
}

#[inline(always)]
pub fn parse_ipv6(ctx: &XdpContext, link: &Link) -> Result<Packet<IpWords>, Outcome> {
    let (eth, l3) = (link.eth, link.l3);
    let (version, payload_len, mut next) = fixed(ctx, l3)?;
    if version != 6 {
        return Err(Outcome::Malformed);
    }
    let (src_addr, dst_addr) = addresses(ctx, l3)?;
    // IPv4-mapped addresses stay off the wire (RFC 4291); the maps hold IPv4 VIPs that way.
    if ipv4_of(&dst_addr).is_some() {
        return Err(Outcome::NotBalanced);
    }
    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    // Where the payload length says the packet ends: checked against the frame only for
    // packets to a VIP (the kernel judges everyone else's).
    let end = l3 + IPV6_HEADER_LEN + payload_len as usize;

    let mut offset = l3 + IPV6_HEADER_LEN;
    let mut fragment = Fragment::Whole;
    let mut id = 0u32;
    let mut fragment_header = false;
    let mut fragment_proto = 0;
    for _ in 0..MAX_EXTENSION_HEADERS {
        match next {
            NEXT_HOP_BY_HOP | NEXT_DEST_OPTIONS | NEXT_ROUTING | NEXT_AUTH => {
                let header: *const [u8; 4] = ptr_at(ctx, offset)?;
                // SAFETY: within bounds.
                let [following, len, _, segments_left] = unsafe { *header };
                // Not its final destination: a segment endpoint's business, not ours.
                if next == NEXT_ROUTING && segments_left != 0 {
                    return Err(Outcome::NotBalanced);
                }
                offset += if next == NEXT_AUTH {
                    (len as usize + 2) * 4
                } else {
                    (len as usize + 1) * 8
                };
                next = following;
            }
            NEXT_FRAGMENT => {
                // Two fragment headers: the kernel's to judge.
                if fragment_header {
                    return Err(Outcome::NotBalanced);
                }
                fragment_header = true;
                let header: *const [u8; 8] = ptr_at(ctx, offset)?;
                // SAFETY: within bounds.
                let header = unsafe { *header };
                let field = u16::from_be_bytes([header[2], header[3]]);
                id = u32::from_ne_bytes([header[4], header[5], header[6], header[7]]);
                next = header[0];
                fragment_proto = next;
                offset += 8;
                if field & FRAGMENT_OFFSET_MASK != 0 {
                    // What follows is data, not headers.
                    fragment = Fragment::Later;
                    break;
                }
                // Without M: an atomic fragment (RFC 6946), a whole packet.
                if field & FRAGMENT_MORE != 0 {
                    fragment = Fragment::First;
                }
            }
            _ => break,
        }
    }
    let proto = next;
    if fragment == Fragment::Later {
        if offset >= end || end as u64 > frame_len {
            return Err(Outcome::Malformed);
        }
        // Whatever follows the fragment header: the datagram is found by its identity
        // (`fragment_proto`), and only TCP or UDP datagrams were remembered.
        return Ok(Packet {
            eth,
            frame_len,
            src_addr,
            dst_addr,
            src_port: 0,
            dst_port: 0,
            proto,
            tcp_flags: TcpFlags::default(),
            icmp_error: false,
            fragment,
            ip_id: id,
            fragment_proto,
        });
    }
    if !fragment_header {
        fragment_proto = proto;
    }
    if proto == PROTO_ICMPV6 {
        if fragment != Fragment::Whole {
            return Err(Outcome::NotBalanced);
        }
        return icmp6::parse_error(ctx, eth, offset, end, frame_len, dst_addr);
    }
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(Outcome::NotBalanced);
    }
    let (src_port, dst_port) = ports(ctx, offset)?;
    if let Err(not_vip) = prefilter(ipv6_filter_word(&dst_addr), dst_port, proto) {
        // As for IPv4: only a frame for this director keeps its datagram here.
        if fragment == Fragment::First && crate::parse::addressed_to_us(ctx, eth).is_ok() {
            crate::fragment::remember_passed(src_addr, dst_addr, id, fragment_proto);
        }
        return Err(not_vip);
    }
    if offset + transport_len(proto) > end || end as u64 > frame_len {
        return Err(Outcome::Malformed);
    }
    let tcp_flags = transport_flags(ctx, offset, proto)?;
    Ok(Packet {
        eth,
        frame_len,
        src_addr,
        dst_addr,
        src_port,
        dst_port,
        proto,
        tcp_flags,
        icmp_error: false,
        fragment,
        ip_id: id,
        fragment_proto,
    })
}
