//! Typed reads of the datapath's state, from maps loaded here or pinned by a running daemon.

use std::net::IpAddr;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use lb_common::{
    BACKEND_F_ACTIVE, Backend, FLOW_F_CLOSING, Flow, FlowKey, FlowKey6, FlowTuple,
    MAP_BACKEND_STATS, MAP_BACKENDS, MAP_FLOWS, MAP_FLOWS6, MAP_SETTINGS, MAP_VERDICTS,
    MAP_VIP_STATS, MAP_VIPS, PROTO_TCP, Settings, TrafficCounters, VerdictCounters, VipInfo,
    VipKey,
};

use crate::error::{Error, Result};

/// Where maps (and the datapath's clock) come from.
pub trait MapSource {
    fn map(&self, name: &'static str) -> Result<&Map>;
    /// The conntrack clock now, in jiffies.
    fn now_jiffies(&self) -> Result<u64>;
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |cause| Error::map(name, cause)
}

/// Everything `lbd status` shows.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub vips: Vec<VipStatus>,
    pub verdicts: VerdictCounters,
    pub settings: Settings,
}

#[derive(Clone, Debug)]
pub struct VipStatus {
    pub key: VipKey,
    pub info: VipInfo,
    pub counters: TrafficCounters,
    pub backends: Vec<BackendStatus>,
}

impl VipStatus {
    pub fn address(&self) -> IpAddr {
        self.key.address()
    }
    pub fn port(&self) -> u16 {
        u16::from_be(self.key.port)
    }
    pub fn backend(&self, addr: IpAddr) -> Option<&BackendStatus> {
        self.backends.iter().find(|b| b.address() == addr)
    }
}

#[derive(Clone, Debug)]
pub struct BackendStatus {
    pub id: u32,
    pub entry: Backend,
    pub counters: TrafficCounters,
    /// Tracked flows not closing and not expired (ipvsadm's ActiveConn).
    pub active_flows: u64,
    /// Tracked flows after the client's FIN/RST, not yet expired (ipvsadm's InActConn).
    pub closing_flows: u64,
}

impl BackendStatus {
    pub fn address(&self) -> IpAddr {
        lb_common::ip_addr(&self.entry.addr)
    }
}

/// Sums the per-CPU copies of slot `index`.
pub fn sum_per_cpu<V: aya::Pod + Default>(
    map: &PerCpuArray<&MapData, V>,
    index: u32,
    add: impl Fn(&mut V, &V),
) -> Result<V> {
    let mut total = V::default();
    for v in map
        .get(&index, 0)
        .map_err(|cause| Error::map("per-cpu", cause))?
        .iter()
    {
        add(&mut total, v);
    }
    Ok(total)
}

/// Adds the live flows of one flow table (IPv4 or IPv6) to `counts`, per (backend id,
/// generation): (open, closing).
fn count_flows<K: aya::Pod + FlowTuple>(
    flows: &Map,
    name: &'static str,
    by_id: &std::collections::HashMap<u32, Backend>,
    settings: &Settings,
    now: u64,
    counts: &mut std::collections::HashMap<(u32, u32), (u64, u64)>,
) -> Result<()> {
    let flows: HashMap<&MapData, K, Flow> = HashMap::try_from(flows).map_err(map_err(name))?;
    for entry in flows.iter() {
        let Ok((key, flow)) = entry else { continue };
        let closing = flow.flags & FLOW_F_CLOSING != 0;
        // A flow of an earlier backend under the same id is not this backend's (the
        // datapath would reschedule it).
        let Some(backend) = by_id
            .get(&flow.backend_id)
            .filter(|b| b.generation == flow.backend_generation)
        else {
            continue;
        };
        let timeout = backend.timeout(settings, key.proto() == PROTO_TCP, closing);
        if now.saturating_sub(flow.last_seen) > timeout {
            continue;
        }
        let count = counts
            .entry((flow.backend_id, flow.backend_generation))
            .or_default();
        if closing { count.1 += 1 } else { count.0 += 1 }
    }
    Ok(())
}

/// Reads the whole state.
pub fn read(source: &impl MapSource) -> Result<Snapshot> {
    let vips: HashMap<&MapData, VipKey, VipInfo> =
        HashMap::try_from(source.map(MAP_VIPS)?).map_err(map_err(MAP_VIPS))?;
    let backends: Array<&MapData, Backend> =
        Array::try_from(source.map(MAP_BACKENDS)?).map_err(map_err(MAP_BACKENDS))?;
    let vip_stats: PerCpuArray<&MapData, TrafficCounters> =
        PerCpuArray::try_from(source.map(MAP_VIP_STATS)?).map_err(map_err(MAP_VIP_STATS))?;
    let backend_stats: PerCpuArray<&MapData, TrafficCounters> =
        PerCpuArray::try_from(source.map(MAP_BACKEND_STATS)?)
            .map_err(map_err(MAP_BACKEND_STATS))?;
    let verdict_map: PerCpuArray<&MapData, VerdictCounters> =
        PerCpuArray::try_from(source.map(MAP_VERDICTS)?).map_err(map_err(MAP_VERDICTS))?;
    let settings: Array<&MapData, Settings> =
        Array::try_from(source.map(MAP_SETTINGS)?).map_err(map_err(MAP_SETTINGS))?;

    let settings = settings.get(&0, 0).map_err(map_err(MAP_SETTINGS))?;
    let verdicts = sum_per_cpu(&verdict_map, 0, VerdictCounters::add)?;

    let mut all_backends = Vec::new();
    for id in 1..backends.len() {
        let entry = backends.get(&id, 0).map_err(map_err(MAP_BACKENDS))?;
        if entry.flags & BACKEND_F_ACTIVE != 0 {
            all_backends.push((id, entry));
        }
    }
    let by_id: std::collections::HashMap<u32, Backend> = all_backends.iter().copied().collect();

    // Flow counts per backend, as ipvsadm's ActiveConn / InActConn.
    let now = source.now_jiffies()?;
    let mut flow_counts: std::collections::HashMap<(u32, u32), (u64, u64)> = Default::default();
    let flows4 = source.map(MAP_FLOWS)?;
    count_flows::<FlowKey>(flows4, MAP_FLOWS, &by_id, &settings, now, &mut flow_counts)?;
    let flows6 = source.map(MAP_FLOWS6)?;
    count_flows::<FlowKey6>(flows6, MAP_FLOWS6, &by_id, &settings, now, &mut flow_counts)?;

    let mut out = Vec::new();
    for entry in vips.iter() {
        let (key, info) = entry.map_err(map_err(MAP_VIPS))?;
        let mut members = Vec::new();
        for &(id, entry) in all_backends.iter().filter(|(_, b)| b.vip_id == info.vip_id) {
            let (active_flows, closing_flows) = flow_counts
                .get(&(id, entry.generation))
                .copied()
                .unwrap_or_default();
            members.push(BackendStatus {
                id,
                entry,
                counters: sum_per_cpu(&backend_stats, id, TrafficCounters::add)?,
                active_flows,
                closing_flows,
            });
        }
        members.sort_by_key(|b| b.address());
        out.push(VipStatus {
            key,
            info,
            counters: sum_per_cpu(&vip_stats, info.vip_id, TrafficCounters::add)?,
            backends: members,
        });
    }
    out.sort_by_key(|v| (v.key.address(), u16::from_be(v.key.port), v.key.proto));
    Ok(Snapshot {
        vips: out,
        verdicts,
        settings,
    })
}
