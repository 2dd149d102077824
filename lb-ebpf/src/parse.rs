//! Bounds-checked header parsing: Ethernet (with at most one 802.1Q tag), IPv4 (IPv6 in
//! `parse6`), TCP/UDP, ICMP errors (their quoted header, in `icmp`) and fragments (a first
//! fragment carries the ports; a later one has none, and only its datagram's identity is
//! read).

use core::mem;

use aya_ebpf::programs::XdpContext;
use lb_common::{
    MAX_INTERFACES, PROTO_ICMP, PROTO_TCP, PROTO_UDP, hash::vip_filter_slot, ipv4_mapped,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
    tcp::TcpHdr,
    udp::UdpHdr,
};

use crate::{Outcome, icmp, maps, wire};

/// The fields the balancer needs, read once. `A` is the family's address (`u32` or
/// `IpWords`).
pub struct Packet<A> {
    /// The Ethernet header, to rewrite in place.
    pub eth: *mut EthHdr,
    /// Whole frame length (for byte counters).
    pub frame_len: u64,
    /// Addresses and ports in wire byte order.
    pub src_addr: A,
    pub dst_addr: A,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    /// TCP flags of interest (0 for UDP).
    pub tcp_flags: TcpFlags,
    /// An ICMP error about the flow above (its addresses and ports are those of the quoted
    /// packet, turned around to the client's direction).
    pub icmp_error: bool,
    /// Part of a datagram in fragments, or not.
    pub fragment: Fragment,
    /// The IP identification, as on the wire (names the datagram of a fragment): IPv4's 16
    /// bits or the IPv6 fragment header's 32.
    pub ip_id: u32,
    /// The protocol that names a fragment's datagram, alike in all its fragments: IPv4's
    /// protocol, or the IPv6 fragment header's next header (which may be an extension
    /// header: the first fragment's transport protocol lies beyond it, a later one's nowhere).
    pub fragment_proto: u8,
}

/// Where the IP header starts, and which IP.
pub struct Link {
    pub eth: *mut EthHdr,
    pub l3: usize,
    pub ipv6: bool,
}

/// Where a packet stands in a fragmented datagram. A plain tag, with the IP id beside it in
/// [`Packet`]: an enum carrying data leaves undefined bytes in the variants without, which
/// the verifier refuses to see copied.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    Whole,
    /// Offset 0, more to come: it carries the ports.
    First,
    /// Offset > 0: no ports (`src_port` and `dst_port` are 0).
    Later,
}

/// The TCP flags conntrack acts on.
#[derive(Clone, Copy, Default)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, Outcome> {
    let start = ctx.data();
    if start + offset + mem::size_of::<T>() > ctx.data_end() {
        return Err(Outcome::Malformed);
    }
    Ok((start + offset) as *mut T)
}

/// TCP flag bits (the header's byte 13).
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// An 802.1Q tag: TCI, then the inner EtherType.
const VLAN_TAG_LEN: usize = 4;
/// "More fragments" and the fragment offset, in the flags + offset field.
const IPV4_MF: u16 = 0x2000;
const IPV4_OFFSET_MASK: u16 = 0x1fff;

/// Reads the Ethernet header (and one 802.1Q tag): the frame must carry IPv4 or IPv6.
/// Whether it is addressed to this director is asked later ([`addressed_to_us`]), once it
/// is known to be for a VIP: everything else pays for nothing more.
#[inline(always)]
pub fn link(ctx: &XdpContext) -> Result<Link, Outcome> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: the Ethernet header is within bounds.
    let ether_type = unsafe { wire::load::<u16>((eth as *const u8).add(12)) };
    // Untagged IPv4 first (the common case pays one compare). One 802.1Q tag is read past
    // and stays on the frame, which only has its MACs rewritten; two tags (QinQ) are passed.
    if ether_type == EtherType::Ipv4 as u16 {
        return Ok(Link {
            eth,
            l3: EthHdr::LEN,
            ipv6: false,
        });
    }
    let (inner, l3) = if ether_type == EtherType::Ieee8021q as u16 {
        let inner: *const [u8; 2] = ptr_at(ctx, EthHdr::LEN + 2)?;
        // SAFETY: `inner` is within bounds.
        (
            unsafe { wire::load::<u16>(inner as *const u8) },
            EthHdr::LEN + VLAN_TAG_LEN,
        )
    } else {
        (ether_type, EthHdr::LEN)
    };
    if inner == EtherType::Ipv4 as u16 {
        Ok(Link {
            eth,
            l3,
            ipv6: false,
        })
    } else if inner == EtherType::Ipv6 as u16 {
        Ok(Link {
            eth,
            l3,
            ipv6: true,
        })
    } else {
        Err(Outcome::NotBalanced)
    }
}

/// Whether the frame is addressed to the MAC of the interface it arrived on, one the
/// daemon configured (a bridge floods unknown unicast, and another director must not
/// forward the same frame twice).
#[inline(always)]
pub fn addressed_to_us(ctx: &XdpContext, eth: *mut EthHdr) -> Result<(), Outcome> {
    let ifindex = ctx.ingress_ifindex() as u32;
    let iface = maps::INTERFACES
        .get(ifindex % MAX_INTERFACES)
        .ok_or(Outcome::NotForUs)?;
    let frame = eth as *const u8;
    // SAFETY: `link` bounds-checked the Ethernet header; the map value holds 6 MAC bytes.
    let (dst_mac, own_mac) = unsafe { (wire::mac(frame), wire::mac(iface.mac.as_ptr())) };
    if iface.ifindex != ifindex || dst_mac != own_mac {
        return Err(Outcome::NotForUs);
    }
    Ok(())
}

/// Parses an IPv4 packet down to its ports, or says why it is not for the balancer
/// (including "not a VIP", from the prefilter).
#[inline(always)]
pub fn parse_ipv4(ctx: &XdpContext, link: &Link) -> Result<Packet<u32>, Outcome> {
    let (eth, l3) = (link.eth, link.l3);
    let ip: *const Ipv4Hdr = ptr_at(ctx, l3)?;
    // SAFETY: the 20-byte header is within bounds. Five words: version/IHL, TOS, total
    // length; id, flags/offset; TTL, protocol, checksum; source; destination.
    let [w0, w1, w2, src_addr, dst_addr] = unsafe { wire::load::<[u32; 5]>(ip as *const u8) };
    let (vihl, tot_len) = (w0 as u8, u16::from_be((w0 >> 16) as u16));
    // The id as on the wire (its two bytes in order), the rest as numbers.
    let (id, frags) = (w1 & 0xffff, u16::from_be((w1 >> 16) as u16));
    let proto = (w2 >> 8) as u8;
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
        return Err(Outcome::Malformed);
    }
    if proto != PROTO_TCP && proto != PROTO_UDP && proto != PROTO_ICMP {
        return Err(Outcome::NotBalanced);
    }
    let fragment = if frags & IPV4_OFFSET_MASK != 0 {
        Fragment::Later
    } else if frags & IPV4_MF != 0 {
        Fragment::First
    } else {
        Fragment::Whole
    };
    if proto == PROTO_ICMP {
        // An ICMP error is small: a fragmented one is left to the kernel.
        if fragment != Fragment::Whole {
            return Err(Outcome::NotBalanced);
        }
        return icmp::parse_error(ctx, eth, l3, ihl, tot_len, dst_addr);
    }
    if fragment == Fragment::Later {
        let frame_len = (ctx.data_end() - ctx.data()) as u64;
        if (tot_len as usize) <= ihl || tot_len as u64 > frame_len - l3 as u64 {
            return Err(Outcome::Malformed);
        }
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
            fragment_proto: proto,
        });
    }
    // TCP and UDP both start with the two ports.
    let l4 = l3 + ihl;
    let (src_port, dst_port) = ports(ctx, l4)?;
    // As soon as the destination is known: traffic for no VIP pays for nothing more, and
    // the kernel judges its headers.
    if let Err(not_vip) = prefilter(dst_addr, dst_port, proto) {
        // Its later fragments (no port) must stay with it, on this host; only a frame for
        // this director says so (a flooded one for another host must not touch our state).
        if fragment == Fragment::First && addressed_to_us(ctx, eth).is_ok() {
            crate::fragment::remember_passed(
                ipv4_mapped(src_addr),
                ipv4_mapped(dst_addr),
                id,
                proto,
            );
        }
        return Err(not_vip);
    }

    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    // The IP packet claims more than the frame holds, or too little for its own header and
    // the transport header (a padded frame must not lend the padding to the TCP header).
    let l4_header = transport_len(proto);
    if (tot_len as usize) < ihl + l4_header || tot_len as u64 > frame_len - l3 as u64 {
        return Err(Outcome::Malformed);
    }
    let tcp_flags = transport_flags(ctx, l4, proto)?;
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
        fragment_proto: proto,
    })
}

/// The two ports TCP and UDP (and a quoted header) start with, in wire order.
#[inline(always)]
pub fn ports(ctx: &XdpContext, l4: usize) -> Result<(u16, u16), Outcome> {
    let ports: *const [u8; 4] = ptr_at(ctx, l4)?;
    // SAFETY: `ports` is within bounds.
    let ports = unsafe { wire::load::<u32>(ports as *const u8) };
    Ok((ports as u16, (ports >> 16) as u16))
}

/// The transport header at `l4` is all there; for TCP, its flags.
#[inline(always)]
pub fn transport_flags(ctx: &XdpContext, l4: usize, proto: u8) -> Result<TcpFlags, Outcome> {
    if proto == PROTO_TCP {
        let tcp: *const TcpHdr = ptr_at(ctx, l4)?;
        // SAFETY: `tcp` is within bounds; byte 13 holds the flags.
        let flags = unsafe { *(tcp as *const u8).add(13) };
        Ok(TcpFlags {
            syn: flags & TCP_SYN != 0,
            ack: flags & TCP_ACK != 0,
            fin: flags & TCP_FIN != 0,
            rst: flags & TCP_RST != 0,
        })
    } else {
        let _: *const UdpHdr = ptr_at(ctx, l4)?;
        Ok(TcpFlags::default())
    }
}

/// The transport header's least length: what an IP packet must hold beyond its headers.
#[inline(always)]
pub fn transport_len(proto: u8) -> usize {
    if proto == PROTO_TCP {
        TcpHdr::LEN
    } else {
        UdpHdr::LEN
    }
}

/// The VIP prefilter: one inlined array read says whether (address, port, protocol) may be
/// a VIP (`addr`: an IPv4 address, or an IPv6 one folded by `hash::filter_word`).
#[inline(always)]
pub fn prefilter(addr: u32, port: u16, proto: u8) -> Result<(), Outcome> {
    match maps::VIP_FILTER.get(vip_filter_slot(addr, port, proto)) {
        Some(&vips) if vips != 0 => Ok(()),
        _ => Err(Outcome::NotVip),
    }
}
