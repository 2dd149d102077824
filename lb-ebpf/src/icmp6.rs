//! ICMPv6 errors about a VIP flow ("packet too big", "destination unreachable", "time
//! exceeded", "parameter problem"): read here, sent on by `icmp::forward_error` as for
//! IPv4. Neighbour discovery and echo are the local stack's.

use aya_ebpf::programs::XdpContext;
use lb_common::{IpWords, PROTO_TCP, PROTO_UDP, hash::ipv6_filter_word};
use network_types::eth::EthHdr;

use crate::{
    Outcome,
    parse::{Fragment, Packet, TcpFlags, ports, prefilter},
    parse6::{addresses, fixed},
};

const ICMPV6_DEST_UNREACHABLE: u8 = 1;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMPV6_TIME_EXCEEDED: u8 = 3;
const ICMPV6_PARAMETER_PROBLEM: u8 = 4;
/// Type, code, checksum and 4 bytes (the MTU for "packet too big").
const ICMPV6_HEADER_LEN: usize = 8;
const QUOTED_HEADER_LEN: usize = 40;
/// The quoted transport header's ports.
const QUOTED_L4_LEN: usize = 8;

/// Reads an ICMPv6 error at `l4` (its packet ends at `end`) and returns the flow it is
/// about, in the client's direction: the quoted packet went from the VIP (the error's
/// destination, `dst_addr`) to the client.
#[inline(always)]
pub fn parse_error(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    l4: usize,
    end: usize,
    frame_len: u64,
    dst_addr: IpWords,
) -> Result<Packet<IpWords>, Outcome> {
    let icmp: *const [u8; 2] = crate::parse::ptr_at(ctx, l4)?;
    // SAFETY: within bounds.
    let [icmp_type, _code] = unsafe { *icmp };
    if !matches!(
        icmp_type,
        ICMPV6_DEST_UNREACHABLE
            | ICMPV6_PACKET_TOO_BIG
            | ICMPV6_TIME_EXCEEDED
            | ICMPV6_PARAMETER_PROBLEM
    ) {
        return Err(Outcome::NotBalanced);
    }
    let inner = l4 + ICMPV6_HEADER_LEN;
    let (version, _, proto) = fixed(ctx, inner)?;
    if version != 6 {
        return Err(Outcome::Malformed);
    }
    let (vip, client) = addresses(ctx, inner)?;
    // About a packet this VIP sent over TCP or UDP, without extension headers (which a real
    // server's replies do not carry): anything else is the local stack's.
    if vip != dst_addr || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return Err(Outcome::NotBalanced);
    }
    let (vip_port, client_port) = ports(ctx, inner + QUOTED_HEADER_LEN)?;
    prefilter(ipv6_filter_word(&vip), vip_port, proto)?;
    if end < inner + QUOTED_HEADER_LEN + QUOTED_L4_LEN || end as u64 > frame_len {
        return Err(Outcome::Malformed);
    }
    Ok(Packet {
        eth,
        frame_len,
        src_addr: client,
        dst_addr: vip,
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
