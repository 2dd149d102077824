//! Keys and values of the datapath's maps. Addresses and ports are kept exactly as they are
//! on the wire (network byte order), so the datapath copies them without swapping.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol numbers the datapath balances.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
/// ICMP: its errors about a VIP flow are forwarded to the flow's backend.
pub const PROTO_ICMP: u8 = 1;

/// An IP address as map keys and values hold it: 16 bytes in wire order, read as four
/// words so the datapath compares and masks one in four operations. An IPv4 address is held
/// IPv4-mapped (`::ffff:a.b.c.d`, see [`ipv4_mapped`]); the IPv6 parser passes packets to such
/// addresses (RFC 4291 keeps them off the wire), so the two families never meet in one key.
pub type IpWords = [u32; 4];

/// The third word of an IPv4-mapped address (`0000:ffff` in wire order).
pub const IPV4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// `::ffff:addr`, the way keys hold the IPv4 address `addr` (wire order).
#[inline(always)]
pub const fn ipv4_mapped(addr: u32) -> IpWords {
    [0, 0, IPV4_MAPPED_WORD, addr]
}

/// The IPv4 address of an IPv4-mapped `addr`, else `None` (an IPv6 address).
#[inline(always)]
pub const fn ipv4_of(addr: &IpWords) -> Option<u32> {
    if addr[0] == 0 && addr[1] == 0 && addr[2] == IPV4_MAPPED_WORD {
        Some(addr[3])
    } else {
        None
    }
}

/// `addr` under `mask`, word by word (a persistence template's client).
#[inline(always)]
pub fn masked(addr: &IpWords, mask: &IpWords) -> IpWords {
    [
        addr[0] & mask[0],
        addr[1] & mask[1],
        addr[2] & mask[2],
        addr[3] & mask[3],
    ]
}

/// `addr` as keys hold it.
pub fn ip_words(addr: IpAddr) -> IpWords {
    match addr {
        IpAddr::V4(v4) => ipv4_mapped(u32::from_ne_bytes(v4.octets())),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [word(0), word(4), word(8), word(12)]
        }
    }
}

/// The address keys hold as `words`.
pub fn ip_addr(words: &IpWords) -> IpAddr {
    match ipv4_of(words) {
        Some(v4) => IpAddr::V4(Ipv4Addr::from(v4.to_ne_bytes())),
        None => {
            let mut octets = [0u8; 16];
            for (i, word) in words.iter().enumerate() {
                octets[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
    }
}

/// What a client addresses: key of [`crate::MAP_VIPS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipKey {
    /// The VIP, IPv4-mapped for an IPv4 VIP ([`IpWords`]).
    pub addr: IpWords,
    /// L4 destination port, network byte order.
    pub port: u16,
    /// IP protocol ([`PROTO_TCP`] or [`PROTO_UDP`]).
    pub proto: u8,
    /// Keeps the key free of uninitialised padding (hash keys are compared bytewise).
    pub _pad: u8,
}

/// Value of [`crate::MAP_VIPS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipInfo {
    /// Index of this VIP's ring (and its counters): slots `vip_id * RING_SIZE ..`.
    pub vip_id: u32,
    /// Reserved; 0.
    pub flags: u32,
    /// The VIP's forwarding group: its slot in [`crate::MAP_GROUP_STANDBY`] (its VRRP
    /// instance; 0 for VIPs of no instance, always forwarded).
    pub group: u32,
    /// How a new flow picks its backend: `SCHED_*`.
    pub scheduler: u32,
    /// Reserved; 0.
    pub _pad: u32,
    /// With persistence: the client address mask ([`IpWords`]; all ones over the IPv4-mapped
    /// prefix) whose clients share a backend (`ipvsadm -M`).
    pub persist_mask: IpWords,
    /// Persistence (`ipvsadm -p`), in jiffies: a client (masked) keeps its backend for new
    /// connections until it has opened none for this long. 0: off.
    pub persist_timeout: u64,
}

impl VipKey {
    /// The key of `addr`:`port` (host byte order) over `proto`.
    pub fn new(addr: IpAddr, port: u16, proto: u8) -> VipKey {
        VipKey {
            addr: ip_words(addr),
            port: port.to_be(),
            proto,
            _pad: 0,
        }
    }

    /// The VIP's address.
    pub fn address(&self) -> IpAddr {
        ip_addr(&self.addr)
    }
}

/// [`VipInfo::scheduler`]: weighted Maglev on the 5-tuple (the ring is a Maglev table).
pub const SCHED_MAGLEV: u32 = 0;
/// Source hashing: the ring (Maglev) on the client address alone.
pub const SCHED_SH: u32 = 1;
/// Destination hashing: the ring (Maglev) on the VIP address alone.
pub const SCHED_DH: u32 = 2;
/// Round robin: the ring is an interleaved sequence (equal weights), walked by a per-VIP
/// counter.
pub const SCHED_RR: u32 = 3;
/// Weighted round robin: as rr, the sequence weighted.
pub const SCHED_WRR: u32 = 4;
/// Least connections: the less loaded of two ring choices (unweighted ring).
pub const SCHED_LC: u32 = 5;
/// Weighted least connections: the less loaded, relative to weight, of two choices of the
/// weighted ring.
pub const SCHED_WLC: u32 = 6;

/// Key of [`crate::MAP_PERSIST`]: a VIP and a (masked) client address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PersistKey {
    pub vip_id: u32,
    /// Client address & [`VipInfo::persist_mask`] ([`IpWords`]).
    pub client: IpWords,
}

/// A remembered choice: value of [`crate::MAP_PERSIST`] (a client's backend) and of
/// [`crate::MAP_HALF_OPEN`] (a handshake's backend).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    pub backend_id: u32,
    /// [`Backend::generation`] of `backend_id` then.
    pub backend_generation: u32,
    /// Jiffies when last used.
    pub last_seen: u64,
}

/// The backend may receive packets. Cleared when a backend is removed, so flows still
/// tracked to it are rescheduled instead of being sent to a server that left the pool.
pub const BACKEND_F_ACTIVE: u32 = 1;
/// The backend is this director itself (keepalived's "localnode"): its flows are passed to
/// the local stack, which holds the VIP, instead of being sent back out.
pub const BACKEND_F_LOCAL: u32 = 2;

/// Value of [`crate::MAP_BACKENDS`]: where to send a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    /// Destination MAC written into forwarded frames.
    pub mac: [u8; 6],
    /// Keeps `addr` aligned.
    pub _pad: [u8; 2],
    /// Real server address ([`IpWords`]; for status, flow sync and debugging only: DR
    /// forwarding never writes it into the packet).
    pub addr: IpWords,
    /// `BACKEND_F_*` bits.
    pub flags: u32,
    /// The VIP this backend serves (status and `bpftool` readers group by it).
    pub vip_id: u32,
    /// Configured weight (informational: the ring already encodes it).
    pub weight: u32,
    /// Which allocation of this id the entry is (never 0 for an active entry). Ids are
    /// reused; a tracked flow records the generation it was scheduled to and is trusted only
    /// while the entry still has it, so a reused id never inherits another backend's flows.
    pub generation: u32,
    /// [`VipInfo::group`] of the VIP: a tracked flow's packets are passed, not forwarded,
    /// while this director is not the master of that group.
    pub group: u32,
    /// The VIP's own idle timeouts in jiffies (`[vip.timeouts]`), 0 for the global one in
    /// [`Settings`]. Here, not in the VIP entry, because a tracked packet reads only its
    /// backend entry.
    pub tcp_timeout: u32,
    pub tcp_fin_timeout: u32,
    pub udp_timeout: u32,
    pub _pad2: u32,
}

impl Backend {
    /// The idle timeout of a flow to this backend (jiffies): its VIP's own, else the global.
    #[inline(always)]
    pub fn timeout(&self, settings: &Settings, tcp: bool, closing: bool) -> u64 {
        let (own, global) = match (tcp, closing) {
            (true, false) => (self.tcp_timeout, settings.tcp_timeout),
            (true, true) => (self.tcp_fin_timeout, settings.tcp_fin_timeout),
            (false, _) => (self.udp_timeout, settings.udp_timeout),
        };
        if own != 0 { own as u64 } else { global }
    }
}

/// Key of [`crate::MAP_BACKEND_MACS`]: a backend's MAC, padded (hash keys are compared
/// bytewise).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacKey {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Connection-tracking key of an IPv4 flow: the client side of a flow, as it arrives.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Client IPv4 address, network byte order.
    pub src_addr: u32,
    /// VIP, network byte order.
    pub dst_addr: u32,
    /// Client port, network byte order.
    pub src_port: u16,
    /// VIP port, network byte order.
    pub dst_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Zeroed padding (hash keys are compared bytewise); scalars, not an array, so building
    /// a key is two stores rather than a call to a byte-wise memset.
    pub _pad0: u8,
    pub _pad1: u16,
}

/// Connection-tracking key of an IPv6 flow (its own maps, so IPv4 keys stay 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey6 {
    /// Client address, wire order.
    pub src_addr: IpWords,
    /// VIP, wire order.
    pub dst_addr: IpWords,
    /// Client port, network byte order.
    pub src_port: u16,
    /// VIP port, network byte order.
    pub dst_port: u16,
    /// IP protocol (the transport header's, after any extension headers).
    pub proto: u8,
    /// Zeroed padding, as in [`FlowKey`].
    pub _pad0: u8,
    pub _pad1: u16,
}

/// What the datapath needs of either family's flow key: its hashes and its VIP.
pub trait FlowTuple: Copy + PartialEq {
    /// The flow hash (ring slot, cache slot, least-connection choices).
    fn flow_hash(&self) -> u64;
    /// Hash of the client address alone (`sh`).
    fn source_hash(&self) -> u64;
    /// Hash of the VIP address alone (`dh`).
    fn destination_hash(&self) -> u64;
    /// The client address ([`IpWords`]).
    fn client(&self) -> IpWords;
    /// The VIP the flow addresses (its destination), as [`crate::MAP_VIPS`] keys it.
    fn vip_key(&self) -> VipKey;
    /// The IP protocol.
    fn proto(&self) -> u8;
}

impl FlowTuple for FlowKey {
    #[inline(always)]
    fn flow_hash(&self) -> u64 {
        crate::hash::flow_hash(self)
    }
    #[inline(always)]
    fn source_hash(&self) -> u64 {
        crate::hash::mix64(self.src_addr as u64)
    }
    #[inline(always)]
    fn destination_hash(&self) -> u64 {
        crate::hash::mix64(self.dst_addr as u64)
    }
    #[inline(always)]
    fn client(&self) -> IpWords {
        ipv4_mapped(self.src_addr)
    }
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.proto
    }
    #[inline(always)]
    fn vip_key(&self) -> VipKey {
        VipKey {
            addr: ipv4_mapped(self.dst_addr),
            port: self.dst_port,
            proto: self.proto,
            _pad: 0,
        }
    }
}

impl FlowTuple for FlowKey6 {
    #[inline(always)]
    fn flow_hash(&self) -> u64 {
        crate::hash::flow_hash6(self)
    }
    #[inline(always)]
    fn source_hash(&self) -> u64 {
        crate::hash::address_hash(&self.src_addr)
    }
    #[inline(always)]
    fn destination_hash(&self) -> u64 {
        crate::hash::address_hash(&self.dst_addr)
    }
    #[inline(always)]
    fn client(&self) -> IpWords {
        self.src_addr
    }
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.proto
    }
    #[inline(always)]
    fn vip_key(&self) -> VipKey {
        VipKey {
            addr: self.dst_addr,
            port: self.dst_port,
            proto: self.proto,
            _pad: 0,
        }
    }
}

/// The client sent FIN or RST: the flow expires after the shorter `tcp_fin_timeout`, and a
/// new SYN on the same 5-tuple starts a new connection (rescheduled).
pub const FLOW_F_CLOSING: u32 = 1;
/// The flow is counted in its backend's [`crate::MAP_BACKEND_ACTIVE`] (a least-connection
/// VIP's), until it closes.
pub const FLOW_F_COUNTED: u32 = 2;
/// The flow's VIP has persistence: the flow's packets keep its client's template alive.
pub const FLOW_F_PERSISTENT: u32 = 4;

/// Value of [`crate::MAP_FLOWS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Backend chosen when the flow was first seen.
    pub backend_id: u32,
    /// The flow's VIP, so a tracked packet needs no VIP lookup.
    pub vip_id: u32,
    /// `FLOW_F_*` bits.
    pub flags: u32,
    /// [`Backend::generation`] of `backend_id` when the flow was scheduled: the flow follows
    /// that allocation only, never a later backend (of any VIP) given the same id.
    pub backend_generation: u32,
    /// Kernel jiffies of the last packet, refreshed at most once per
    /// [`Settings::touch_interval`] so established flows stay write-free. Jiffies because
    /// `bpf_jiffies64()` is inlined to a load, where a clock helper costs a call.
    pub last_seen: u64,
}

/// Value of [`crate::MAP_FLOW_CACHE`]: a copy of a live, not closing flow, valid while its
/// slot's epoch is unchanged and `last_seen` is younger than the touch interval and the
/// flow's timeout. The LRU entry stays the truth; this only saves its lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowCacheEntry {
    /// The flow this slot holds (all zero: empty).
    pub key: FlowKey,
    /// The flow's backend.
    pub backend_id: u32,
    /// The flow's [`Flow::backend_generation`] (the VIP comes from the backend entry).
    pub backend_generation: u32,
    /// `Flow::last_seen` when the slot was filled (low 32 bits of jiffies).
    pub last_seen: u32,
    /// The slot's [`crate::MAP_FLOW_EPOCHS`] value (low 32 bits), read before the LRU lookup
    /// that filled it.
    pub epoch: u32,
}

/// Value of [`crate::MAP_FLOW_CACHE6`]: [`FlowCacheEntry`] for an IPv6 flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowCacheEntry6 {
    pub key: FlowKey6,
    pub backend_id: u32,
    pub backend_generation: u32,
    pub last_seen: u32,
    pub epoch: u32,
}

/// Value of [`crate::MAP_INTERFACES`], at slot `ifindex % MAX_INTERFACES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Interface {
    /// The interface's own MAC: only frames addressed to it are balanced (a bridge floods
    /// unknown unicast, and another director must not forward the same frame twice).
    pub mac: [u8; 6],
    /// Keeps `ifindex` aligned.
    pub _pad: [u8; 2],
    /// Which interface owns the slot (0: none).
    pub ifindex: u32,
}

/// Value of [`crate::MAP_SETTINGS`] slot 0. Durations are in kernel jiffies (the daemon
/// converts; [`Settings::jiffy_ns`] says how long one is).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// 1 when this director forwards at all (VRRP switches each VIP's group on its own, see
    /// [`crate::MAP_GROUP_STANDBY`]); 0 passes all VIP traffic to the kernel.
    pub forwarding: u32,
    /// 1 when new and closing flows are announced in [`crate::MAP_FLOW_EVENTS`], for the
    /// daemon to send to the other directors (`[sync]`).
    pub sync_flows: u32,
    /// Idle timeout of an established TCP flow (`ipvsadm --set` tcp; default 900 s).
    pub tcp_timeout: u64,
    /// Idle timeout after the client's FIN or RST (`ipvsadm --set` tcpfin; default 120 s).
    pub tcp_fin_timeout: u64,
    /// Idle timeout of a UDP flow (`ipvsadm --set` udp; default 300 s).
    pub udp_timeout: u64,
    /// Minimum interval between two refreshes of [`Flow::last_seen`] (1 s).
    pub touch_interval: u64,
    /// Length of one jiffy in ns, for readers of these values.
    pub jiffy_ns: u64,
    /// With `sync_flows`: a live flow is announced again when a refresh of its `last_seen`
    /// crosses a multiple of this many jiffies, so the other directors' copies (which see
    /// none of its packets) never expire while it is in use. A third of the shortest
    /// timeout.
    pub sync_refresh: u64,
    /// What happens to a later fragment whose first fragment was not seen: `ORPHAN_FRAGMENTS_*`.
    pub orphan_fragments: u32,
    /// Keeps `fragment_timeout` aligned.
    pub _pad: u32,
    /// How long the backend of a datagram's first fragment is remembered for the later ones
    /// (jiffies; 30 s, as the kernel's `ipfrag_time`).
    pub fragment_timeout: u64,
}

/// [`Settings::orphan_fragments`]: sent by the VIP address's ring, hashed on (source,
/// destination, protocol), so all fragments of a datagram meet on one backend.
pub const ORPHAN_FRAGMENTS_HASH: u32 = 0;
/// [`Settings::orphan_fragments`]: passed to the local stack (dropped there, in effect).
pub const ORPHAN_FRAGMENTS_PASS: u32 = 1;

/// Key of [`crate::MAP_FRAGMENTS`]: one datagram in fragments (RFC 791 and RFC 8200
/// identify it by source, destination, protocol and identification).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    /// [`IpWords`] (IPv4-mapped for IPv4).
    pub src_addr: IpWords,
    pub dst_addr: IpWords,
    /// The identification as on the wire: IPv4's 16 bits (in the low-addressed half) or the
    /// IPv6 fragment header's 32.
    pub id: u32,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Value of [`crate::MAP_FRAGMENTS`]: where the datagram's first fragment went.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentOwner {
    pub backend_id: u32,
    /// [`Backend::generation`] of `backend_id` then.
    pub backend_generation: u32,
    /// Jiffies when the first fragment was seen.
    pub first_seen: u64,
}

/// Key of [`crate::MAP_FRAGMENT_VIPS`]: a VIP address and protocol, without a port (a
/// later fragment has none).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FragmentVipKey {
    /// [`IpWords`] (IPv4-mapped for IPv4).
    pub addr: IpWords,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// [`FlowEvent::kind`]: a flow was scheduled.
pub const FLOW_EVENT_NEW: u32 = 1;
/// [`FlowEvent::kind`]: the client sent FIN or RST on a tracked flow.
pub const FLOW_EVENT_CLOSING: u32 = 2;

/// A record of [`crate::MAP_FLOW_EVENTS`]: what another director needs to forward a flow
/// to the same real server (an address, never a local id). IPv4 flows only, for now.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEvent {
    pub key: FlowKey,
    /// The backend's address, network byte order.
    pub backend_addr: u32,
    /// `FLOW_EVENT_*`.
    pub kind: u32,
}

/// Value of [`crate::MAP_PIN_INFO`] slot 0: what a later `lbd run` must know before it
/// adopts an instance's pins. Its own layout never changes (a new field would make old pins
/// unreadable to the very check that guards them); everything else is versioned by
/// [`crate::LAYOUT_VERSION`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PinInfo {
    /// [`crate::LAYOUT_VERSION`] of the lbd that created the maps.
    pub layout: u32,
    /// How the links are attached: [`XDP_MODE_NATIVE`] or [`XDP_MODE_SKB`].
    pub xdp_mode: u32,
}

/// [`PinInfo::xdp_mode`]: driver (native) XDP.
pub const XDP_MODE_NATIVE: u32 = 1;
/// [`PinInfo::xdp_mode`]: generic (skb) XDP.
pub const XDP_MODE_SKB: u32 = 2;

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::PinInfo {}
    // SAFETY: all types are repr(C), made of integers and byte arrays, with explicit padding.
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::VipInfo {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowKey6 {}
    unsafe impl aya::Pod for super::FlowCacheEntry6 {}
    unsafe impl aya::Pod for super::Flow {}
    unsafe impl aya::Pod for super::FlowCacheEntry {}
    unsafe impl aya::Pod for super::Interface {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::FlowEvent {}
    unsafe impl aya::Pod for super::MacKey {}
    unsafe impl aya::Pod for super::FragmentKey {}
    unsafe impl aya::Pod for super::FragmentOwner {}
    unsafe impl aya::Pod for super::FragmentVipKey {}
    unsafe impl aya::Pod for super::PersistKey {}
    unsafe impl aya::Pod for super::Choice {}
}
