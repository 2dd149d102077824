//! ICMP errors about a VIP flow. In direct routing the real server answers the client
//! itself, from the VIP; when a router on that path cannot pass one of its packets
//! ("fragmentation needed", "unreachable", "time exceeded"), the error goes to the VIP,
//! which is this director. It is sent on, unchanged, to the backend that owns the flow
//! (found from the header the error quotes), so path MTU discovery works through DR.
//! Other ICMP (echo requests to a VIP, ...) is the local stack's.

use aya_ebpf::programs::XdpContext;
use lb_common::{BACKEND_F_LOCAL, Backend, FlowTuple, PROTO_TCP, PROTO_UDP, Settings};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    Outcome, conntrack,
    family::Family,
    forward, forwarding, maps,
    parse::{Fragment, Packet, TcpFlags, prefilter, ptr_at},
    select,
};

const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// Type, code, checksum and 4 bytes (the next-hop MTU for "fragmentation needed").
const ICMP_HEADER_LEN: usize = 8;
/// What an error must quote of the offending packet's transport header (RFC 792: 64 bits).
const QUOTED_L4_LEN: usize = 8;
/// The fragment offset in the quoted header's flags + offset field.
const QUOTED_OFFSET_MASK: u16 = 0x1fff;

/// Reads an ICMP error (the IPv4 header at `l3`, `ihl` long, is checked) and returns the flow
/// it is about, in the client's direction: the quoted packet went from the VIP (the error's
/// destination, `dst_addr`) to the client.
#[inline(always)]
pub fn parse_error(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    l3: usize,
    ihl: usize,
    tot_len: u16,
    dst_addr: u32,
) -> Result<Packet<u32>, Outcome> {
    let l4 = l3 + ihl;
    let icmp: *const [u8; 2] = ptr_at(ctx, l4)?;
    // SAFETY: within bounds.
    let [icmp_type, _code] = unsafe { *icmp };
    if !matches!(
        icmp_type,
        ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
    ) {
        return Err(Outcome::NotBalanced);
    }
    let inner = l4 + ICMP_HEADER_LEN;
    let quoted: *const Ipv4Hdr = ptr_at(ctx, inner)?;
    // SAFETY: within bounds; the protocol read as a raw byte (see `parse`).
    let (vihl, quoted_frags, proto, src_addr, quoted_dst) = unsafe {
        (
            (*quoted).vihl,
            u16::from_be_bytes((*quoted).frags),
            *(quoted as *const u8).add(9),
            u32::from_ne_bytes((*quoted).src_addr),
            u32::from_ne_bytes((*quoted).dst_addr),
        )
    };
    let inner_ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || inner_ihl < Ipv4Hdr::LEN {
        return Err(Outcome::Malformed);
    }
    // About a packet this VIP sent, over TCP or UDP, that starts with its transport header
    // (not a later fragment, whose first bytes are no ports): anything else is the local
    // stack's.
    if src_addr != dst_addr
        || (proto != PROTO_TCP && proto != PROTO_UDP)
        || quoted_frags & QUOTED_OFFSET_MASK != 0
    {
        return Err(Outcome::NotBalanced);
    }
    let ports: *const [u8; 4] = ptr_at(ctx, inner + inner_ihl)?;
    // SAFETY: within bounds.
    let ports = unsafe { *ports };
    let vip_port = u16::from_ne_bytes([ports[0], ports[1]]);
    let client_port = u16::from_ne_bytes([ports[2], ports[3]]);
    prefilter(src_addr, vip_port, proto)?;
    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    if (tot_len as usize) < ihl + ICMP_HEADER_LEN + inner_ihl + QUOTED_L4_LEN
        || tot_len as u64 > frame_len - l3 as u64
    {
        return Err(Outcome::Malformed);
    }
    Ok(Packet {
        eth,
        frame_len,
        src_addr: quoted_dst,
        dst_addr: src_addr,
        src_port: client_port,
        dst_port: vip_port,
        proto,
        tcp_flags: TcpFlags::default(),
        icmp_error: true,
        fragment: Fragment::Whole,
        ip_id: 0,
        fragment_proto: proto,
    })
}

/// Sends the error to the backend that owns the flow: the tracked one, else where the VIP's
/// scheduler sent or would send it (a flow in its handshake, or tracked by no director; see
/// `select::owner`). Never tracks or refreshes anything: an error is no sign that a flow is
/// alive.
#[inline(always)]
pub fn forward_error<F: Family>(
    ctx: &XdpContext,
    packet: &Packet<F::Addr>,
    key: &F::Key,
    settings: &Settings,
    now: u64,
) -> Result<Outcome, Outcome> {
    let backend: &Backend = match conntrack::owner::<F>(key, settings, now) {
        Some(backend) => backend,
        None => {
            // SAFETY: map values are only read; the daemon replaces them whole.
            let vip = unsafe { maps::VIPS.get(key.vip_key()) }.ok_or(Outcome::NotVip)?;
            select::owner::<F>(ctx, vip, key, settings, now)?.1
        }
    };
    forwarding(backend.group)?;
    if backend.flags & BACKEND_F_LOCAL != 0 {
        // The flow is this director's own: its stack sent the packet the error quotes.
        return Ok(Outcome::Local);
    }
    forward::rewrite_macs(packet.eth, backend);
    Ok(Outcome::TxIcmpError)
}
