//! Every map of the load balancer, with BTF so `bpftool map dump` shows field names.
//! Names, capacities and layouts come from `lb_common`; the daemon pins and writes them.

use aya_ebpf::{
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use lb_common::{
    Backend, Choice, DEFAULT_MAX_FLOWS, FLOW_CACHE_SIZE, FLOW_EVENTS_BYTES, Flow, FlowCacheEntry,
    FlowCacheEntry6, FlowEvent, FlowKey, FlowKey6, FragmentKey, FragmentOwner, FragmentVipKey,
    Interface, MAC_FILTER_SIZE, MAX_BACKENDS, MAX_FRAGMENTED_DATAGRAMS, MAX_GROUPS, MAX_HALF_OPEN,
    MAX_INTERFACES, MAX_PERSISTENT_CLIENTS, MAX_VIPS, MacKey, PersistKey, PinInfo, RING_SIZE,
    Settings, TrafficCounters, VIP_FILTER_SIZE, VerdictCounters, VipInfo, VipKey,
};

#[btf_map]
pub static VIPS: HashMap<VipKey, VipInfo, { MAX_VIPS as usize }> = HashMap::new();

#[btf_map]
pub static RING: Array<u32, { (MAX_VIPS * RING_SIZE) as usize }> = Array::new();

#[btf_map]
pub static BACKENDS: Array<Backend, { MAX_BACKENDS as usize }> = Array::new();

#[btf_map]
pub static BACKEND_MACS: HashMap<MacKey, u64, { MAX_BACKENDS as usize }> = HashMap::new();

#[btf_map]
pub static MAC_FILTER: Array<u32, { MAC_FILTER_SIZE as usize }> = Array::new();

/// Sized by the daemon at load time (`max_flows`); this is the default.
#[btf_map]
pub static FLOWS: LruHashMap<FlowKey, Flow, { DEFAULT_MAX_FLOWS as usize }> = LruHashMap::new();

/// Sized by the daemon at load time, as FLOWS.
#[btf_map]
pub static FLOWS6: LruHashMap<FlowKey6, Flow, { DEFAULT_MAX_FLOWS as usize }> = LruHashMap::new();

/// Per-CPU: a flow's packets normally stay on one CPU (RSS), and no locking is needed.
#[btf_map]
pub static FLOW_CACHE: PerCpuArray<FlowCacheEntry, { FLOW_CACHE_SIZE as usize }> =
    PerCpuArray::new();

#[btf_map]
pub static FLOW_CACHE6: PerCpuArray<FlowCacheEntry6, { FLOW_CACHE_SIZE as usize }> =
    PerCpuArray::new();

/// Shared by all CPUs; see `conntrack`.
#[btf_map]
pub static FLOW_EPOCHS: Array<u64, { FLOW_CACHE_SIZE as usize }> = Array::new();

#[btf_map]
pub static FRAGMENTS: LruHashMap<
    FragmentKey,
    FragmentOwner,
    { MAX_FRAGMENTED_DATAGRAMS as usize },
> = LruHashMap::new();

#[btf_map]
pub static FRAGMENT_VIPS: HashMap<FragmentVipKey, VipInfo, { MAX_VIPS as usize }> = HashMap::new();

#[btf_map]
pub static PERSIST: LruHashMap<PersistKey, Choice, { MAX_PERSISTENT_CLIENTS as usize }> =
    LruHashMap::new();

#[btf_map]
pub static HALF_OPEN: LruHashMap<FlowKey, Choice, { MAX_HALF_OPEN as usize }> = LruHashMap::new();

#[btf_map]
pub static HALF_OPEN6: LruHashMap<FlowKey6, Choice, { MAX_HALF_OPEN as usize }> = LruHashMap::new();

/// Per-CPU: each CPU walks a round-robin VIP's sequence on its own.
#[btf_map]
pub static SCHED_POSITION: PerCpuArray<u64, { MAX_VIPS as usize }> = PerCpuArray::new();

/// Shared by all CPUs: changed atomically.
#[btf_map]
pub static BACKEND_ACTIVE: Array<u64, { MAX_BACKENDS as usize }> = Array::new();

#[btf_map]
pub static INTERFACES: Array<Interface, { MAX_INTERFACES as usize }> = Array::new();

#[btf_map]
pub static VIP_FILTER: Array<u32, { VIP_FILTER_SIZE as usize }> = Array::new();

#[btf_map]
pub static SETTINGS: Array<Settings, 1> = Array::new();

#[btf_map]
pub static GROUP_STANDBY: Array<u32, { MAX_GROUPS as usize }> = Array::new();

#[btf_map]
pub static FLOW_EVENTS: RingBuf<FlowEvent, { FLOW_EVENTS_BYTES as usize }> = RingBuf::new();

#[btf_map]
pub static VIP_STATS: PerCpuArray<TrafficCounters, { MAX_VIPS as usize }> = PerCpuArray::new();

#[btf_map]
pub static BACKEND_STATS: PerCpuArray<TrafficCounters, { MAX_BACKENDS as usize }> =
    PerCpuArray::new();

#[btf_map]
pub static VERDICTS: PerCpuArray<VerdictCounters, 1> = PerCpuArray::new();

/// Never read here: it tells a later `lbd run` what layout these maps have.
#[btf_map]
pub static PIN_INFO: Array<PinInfo, 1> = Array::new();
