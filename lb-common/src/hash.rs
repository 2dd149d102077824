//! The flow hash. The datapath picks `ring[hash % RING_SIZE]`; the daemon and the tests
//! use the same function to predict that choice.

use crate::{FlowKey, FlowKey6, IpWords, ipv4_of};

const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// MurmurHash3's 64-bit finaliser: a few multiplies, full avalanche.
#[inline(always)]
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Hash of a flow's 5-tuple (fields as stored in [`FlowKey`], i.e. wire byte order).
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u64 {
    let addrs = ((key.src_addr as u64) << 32) | key.dst_addr as u64;
    let ports = ((key.src_port as u64) << 32) | ((key.dst_port as u64) << 8) | key.proto as u64;
    mix64(addrs ^ mix64(ports ^ SEED))
}

/// An IPv6 address folded to 64 bits (wire-order words, as keys hold them): the interface
/// half multiplied before it meets the prefix half, so that structured addresses (a prefix
/// and an interface id that repeat each other's words) do not cancel out.
#[inline(always)]
fn fold(addr: &IpWords) -> u64 {
    let prefix = ((addr[0] as u64) << 32) | addr[1] as u64;
    let interface = ((addr[2] as u64) << 32) | addr[3] as u64;
    prefix ^ interface.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Hash of an IPv6 flow's 5-tuple: each address folded to 64 bits, the destination's rotated
/// so that swapping the two does not cancel out, then the same two finaliser rounds as IPv4.
#[inline(always)]
pub fn flow_hash6(key: &FlowKey6) -> u64 {
    let ports = ((key.src_port as u64) << 32) | ((key.dst_port as u64) << 8) | key.proto as u64;
    let addrs = fold(&key.src_addr) ^ fold(&key.dst_addr).rotate_left(17);
    mix64(addrs ^ mix64(ports ^ SEED))
}

/// Hash of one IPv6 address (source or destination hashing).
#[inline(always)]
pub fn address_hash(addr: &IpWords) -> u64 {
    mix64(((addr[0] as u64) << 32 | addr[1] as u64) ^ mix64(fold(addr)))
}

/// The word of an address the VIP prefilter hashes: an IPv4 address itself, an IPv6 address
/// folded ([`ipv6_filter_word`]).
#[inline(always)]
pub const fn filter_word(addr: &IpWords) -> u32 {
    match ipv4_of(addr) {
        Some(v4) => v4,
        None => ipv6_filter_word(addr),
    }
}

/// [`filter_word`] of an IPv6 address (never IPv4-mapped), for the datapath, which knows
/// the family already: the xor of its four words.
#[inline(always)]
pub const fn ipv6_filter_word(addr: &IpWords) -> u32 {
    addr[0] ^ addr[1] ^ addr[2] ^ addr[3]
}

/// Ring slot of a flow within its VIP's table.
#[inline(always)]
pub fn ring_slot(key: &FlowKey) -> u32 {
    (flow_hash(key) % crate::RING_SIZE as u64) as u32
}

/// A MAC as a number: its six bytes in order, little-endian (as the datapath loads it).
#[inline(always)]
pub const fn mac_number(mac: &[u8; 6]) -> u64 {
    u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0])
}

/// Backend-MAC prefilter slot of a MAC (as [`mac_number`] gives it): the top bits of one
/// multiply, every new flow pays for it.
#[inline(always)]
pub const fn mac_filter_slot(mac: u64) -> u32 {
    (mac.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as u32 & (crate::MAC_FILTER_SIZE - 1)
}

/// VIP prefilter slot of (address, port, protocol), as stored in a [`crate::VipKey`] (the
/// address as [`filter_word`] gives it). Two independent 32-bit multiplies: every non-VIP
/// packet pays for this one.
#[inline(always)]
pub fn vip_filter_slot(addr: u32, port: u16, proto: u8) -> u32 {
    let x = addr.wrapping_mul(0x9e37_79b1)
        ^ (((port as u32) << 8) | proto as u32).wrapping_mul(0x85eb_ca6b);
    (x ^ (x >> 16)) & (crate::VIP_FILTER_SIZE - 1)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    fn key6(src: &str, dst: &str) -> FlowKey6 {
        let words = |text: &str| crate::ip_words(text.parse().unwrap());
        FlowKey6 {
            src_addr: words(src),
            dst_addr: words(dst),
            src_port: 40000u16.to_be(),
            dst_port: 6379u16.to_be(),
            proto: 6,
            _pad0: 0,
            _pad1: 0,
        }
    }

    /// Clients whose interface ids repeat their prefixes' words still hash apart.
    #[test]
    fn structured_ipv6_clients_hash_apart() {
        let vip = "2001:2::100";
        let hashes: std::collections::BTreeSet<u64> = [
            "2001:db8:0:1::1",
            "2001:db8:0:2::2",
            "2001:db8:0:3::3",
            "2001:db8::a:b:0:0",
            "2001:db8:a:b::",
        ]
        .iter()
        .map(|src| flow_hash6(&key6(src, vip)))
        .collect();
        assert_eq!(hashes.len(), 5);
    }
}
