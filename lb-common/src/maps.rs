//! Map names and capacities. The eBPF statics carry exactly these names.

/// Slots in one VIP's Maglev lookup table. Prime, as Maglev requires; 65,537 keeps the
/// imbalance between backends under 1% for up to a few hundred backends per VIP.
pub const RING_SIZE: u32 = 65_537;
/// VIPs one director can serve. The ring map holds `MAX_VIPS * RING_SIZE` slots (17 MB).
pub const MAX_VIPS: u32 = 64;
/// Backend slots, over all VIPs. Slot 0 is never used: a ring slot of 0 means "no backend".
pub const MAX_BACKENDS: u32 = 4_096;
/// Default capacity of the connection-tracking LRU (overridable in the config).
pub const DEFAULT_MAX_FLOWS: u32 = 262_144;
/// Slots of the interface table, indexed by `ifindex % MAX_INTERFACES` (an array lookup
/// is inlined by the verifier; a hash lookup costs a call). The daemon refuses two
/// interfaces that share a slot.
pub const MAX_INTERFACES: u32 = 1_024;
/// Slots of the per-CPU flow cache (a power of two: the index is `hash & (size - 1)`).
pub const FLOW_CACHE_SIZE: u32 = 4_096;
/// Slots of the VIP prefilter, indexed by [`crate::hash::vip_filter_slot`] (a power of two).
pub const VIP_FILTER_SIZE: u32 = 65_536;
/// Slots of the backend-MAC prefilter, indexed by [`crate::hash::mac_filter_slot`] (a power
/// of two).
pub const MAC_FILTER_SIZE: u32 = 4_096;

/// Forwarding groups: slot 0 holds the VIPs of no VRRP instance; each instance has its own.
pub const MAX_GROUPS: u32 = 64;

/// Name of the XDP load-balancer program in the object file.
pub const PROGRAM_LB: &str = "lb";
/// A program that writes the conntrack clock (jiffies) into the frame it is run on, so
/// userspace can age flows by the datapath's own clock through BPF_PROG_TEST_RUN.
pub const PROGRAM_CLOCK: &str = "clock";

/// `VipKey -> VipInfo`: which (address, port, protocol) are load balanced, IPv4 and IPv6.
pub const MAP_VIPS: &str = "VIPS";
/// `u32 -> u32` array: slot `vip_id * RING_SIZE + hash % RING_SIZE` holds a backend id.
pub const MAP_RING: &str = "RING";
/// `u32 -> Backend` array: backend id -> MAC and state.
pub const MAP_BACKENDS: &str = "BACKENDS";
/// `FlowKey -> Flow` LRU hash: connection tracking of IPv4 flows (authoritative).
pub const MAP_FLOWS: &str = "FLOWS";
/// `FlowKey6 -> Flow` LRU hash: connection tracking of IPv6 flows (same capacity as FLOWS).
pub const MAP_FLOWS6: &str = "FLOWS6";
/// Per-CPU `u32 slot -> FlowCacheEntry` array: a direct-mapped cache of recently seen
/// established flows, so most packets skip the LRU hash lookup.
pub const MAP_FLOW_CACHE: &str = "FLOW_CACHE";
/// Per-CPU `u32 slot -> FlowCacheEntry6` array: the same cache for IPv6 flows (it shares
/// `FLOW_EPOCHS`).
pub const MAP_FLOW_CACHE6: &str = "FLOW_CACHE6";
/// `u32 slot -> u64` array shared by all CPUs: atomically bumped whenever a flow hashing to
/// the slot is (re)scheduled, so every CPU's cached copy of that slot stops being trusted.
pub const MAP_FLOW_EPOCHS: &str = "FLOW_EPOCHS";
/// `u32 (ifindex % MAX_INTERFACES) -> Interface` array: the director's interfaces and MACs.
pub const MAP_INTERFACES: &str = "INTERFACES";
/// `u32 slot -> u32` array: non-zero when some VIP's (address, port, protocol) hashes to the
/// slot. Lets non-VIP traffic pass after one inlined array read instead of a hash lookup.
pub const MAP_VIP_FILTER: &str = "VIP_FILTER";
/// `u32 (0) -> Settings` array: timeouts and the forwarding switch.
pub const MAP_SETTINGS: &str = "SETTINGS";
/// `u32 group -> u32` array: non-zero while this director is not the VRRP master of the
/// group, so the VIPs of the group are passed to the kernel, not forwarded. Zero (the
/// initial value) forwards: VIPs of no VRRP instance are in group 0, never switched. One
/// write switches every VIP of an instance.
pub const MAP_GROUP_STANDBY: &str = "GROUP_STANDBY";
/// Ring buffer of `FlowEvent`s (new and closing flows), written only while
/// `Settings::sync_flows` is set; the daemon sends them to the other directors. Not pinned:
/// it holds nothing a restart needs.
pub const MAP_FLOW_EVENTS: &str = "FLOW_EVENTS";
/// Bytes of [`MAP_FLOW_EVENTS`] (a power of two of pages): 43,690 events of 24 bytes
/// (plus an 8-byte header each), about 4 s of 10,000 new flows a second.
pub const FLOW_EVENTS_BYTES: u32 = 1 << 20;
/// `MacKey -> u64` hash: the MACs of every (remote) backend, each with a bit per `vip_id`
/// it serves. A new flow to a VIP from one of that VIP's backends was balanced by another
/// director to this one (a backend of the VIP sends it nothing else: it holds the VIP
/// itself): it goes to the local stack, never balanced again, so two directors that are
/// also real servers never bounce a frame between them.
pub const MAP_BACKEND_MACS: &str = "BACKEND_MACS";
/// `u32 slot -> u32` array: the number of backend MACs (of `BACKEND_MACS`) hashing to the
/// slot. A new flow from a MAC whose slot is 0 (a client's router, almost always) skips the
/// `BACKEND_MACS` lookup: one inlined array read instead of a hash lookup.
pub const MAP_MAC_FILTER: &str = "MAC_FILTER";
/// `FragmentKey -> FragmentOwner` LRU hash: the backend each fragmented datagram's first
/// fragment went to, for its later fragments (which carry no ports).
pub const MAP_FRAGMENTS: &str = "FRAGMENTS";
/// Datagrams in fragments remembered at once.
pub const MAX_FRAGMENTED_DATAGRAMS: u32 = 16_384;
/// `FragmentVipKey -> VipInfo` hash: for each VIP address and protocol, the VIP (the one with
/// the lowest port) whose ring places a later fragment whose first fragment was not seen.
pub const MAP_FRAGMENT_VIPS: &str = "FRAGMENT_VIPS";
/// `PersistKey -> Choice` LRU hash: persistence templates (`ipvsadm -p`).
pub const MAP_PERSIST: &str = "PERSIST";
/// Clients remembered for persistence at once, over all VIPs.
pub const MAX_PERSISTENT_CLIENTS: u32 = 65_536;
/// `FlowKey -> Choice` LRU hash: the backend a round-robin or least-connection VIP gave a
/// bare SYN, for its handshake's ACK (the flow is tracked from the ACK; spoofed SYNs only
/// churn this table, never `FLOWS`).
pub const MAP_HALF_OPEN: &str = "HALF_OPEN";
/// `FlowKey6 -> Choice` LRU hash: `HALF_OPEN` for IPv6 handshakes.
pub const MAP_HALF_OPEN6: &str = "HALF_OPEN6";
/// Handshakes remembered at once.
pub const MAX_HALF_OPEN: u32 = 65_536;
/// Per-CPU `u32 vip_id -> u64` array: a round-robin VIP's position in its sequence, per CPU.
pub const MAP_SCHED_POSITION: &str = "SCHED_POSITION";
/// `u32 backend_id -> u64` array: open flows of a least-connection VIP's backend (counted
/// up when tracked, down at the client's FIN or RST).
pub const MAP_BACKEND_ACTIVE: &str = "BACKEND_ACTIVE";
/// Per-CPU `u32 vip_id -> TrafficCounters`.
pub const MAP_VIP_STATS: &str = "VIP_STATS";
/// Per-CPU `u32 backend_id -> TrafficCounters`.
pub const MAP_BACKEND_STATS: &str = "BACKEND_STATS";
/// Per-CPU `u32 (0) -> VerdictCounters`.
pub const MAP_VERDICTS: &str = "VERDICTS";

/// `u32 (0) -> PinInfo` array: the layout version of the pinned maps and the XDP mode of
/// the links, read by a later `lbd run` before it adopts them. The program never reads it.
pub const MAP_PIN_INFO: &str = "PIN_INFO";

/// Version of the maps' layout (their keys, values, sizes and meaning). A later `lbd run`
/// adopts pinned maps (and with them the tracked connections) only when their version is
/// this one. Bump it with any change to a pinned map's key or value type, capacity
/// constant or meaning of a field.
pub const LAYOUT_VERSION: u32 = 1;

/// Every map the daemon pins, in the order `lbd status` and docs list them.
pub const ALL_MAPS: [&str; 25] = [
    MAP_VIPS,
    MAP_VIP_FILTER,
    MAP_FRAGMENT_VIPS,
    MAP_RING,
    MAP_BACKENDS,
    MAP_BACKEND_MACS,
    MAP_MAC_FILTER,
    MAP_FLOWS,
    MAP_FLOWS6,
    MAP_FLOW_CACHE,
    MAP_FLOW_CACHE6,
    MAP_FLOW_EPOCHS,
    MAP_FRAGMENTS,
    MAP_PERSIST,
    MAP_HALF_OPEN,
    MAP_HALF_OPEN6,
    MAP_SCHED_POSITION,
    MAP_BACKEND_ACTIVE,
    MAP_INTERFACES,
    MAP_SETTINGS,
    MAP_GROUP_STANDBY,
    MAP_VIP_STATS,
    MAP_BACKEND_STATS,
    MAP_VERDICTS,
    MAP_PIN_INFO,
];
