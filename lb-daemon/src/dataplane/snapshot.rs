//! Typed reads of the datapath's state, from maps loaded here or pinned by a running daemon.

use std::net::Ipv4Addr;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use lb_common::{
    BACKEND_F_ACTIVE, Backend, FLOW_F_CLOSING, Flow, FlowKey, MAP_BACKEND_STATS, MAP_BACKENDS,
    MAP_FLOWS, MAP_SETTINGS, MAP_VERDICTS, MAP_VIP_STATS, MAP_VIPS, PROTO_TCP, Settings,
    TrafficCounters, VerdictCounters, VipInfo, VipKey,
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
    pub fn address(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.key.addr.to_ne_bytes())
    }
    pub fn port(&self) -> u16 {
        u16::from_be(self.key.port)
    }
    pub fn backend(&self, addr: Ipv4Addr) -> Option<&BackendStatus> {
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
    pub fn address(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.entry.addr.to_ne_bytes())
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
    let flows: HashMap<&MapData, FlowKey, Flow> =
        HashMap::try_from(source.map(MAP_FLOWS)?).map_err(map_err(MAP_FLOWS))?;

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
    // Keyed by (backend id, generation): a flow of an earlier backend under the same id is
    // not this backend's (the datapath would reschedule it).
    let mut flow_counts: std::collections::HashMap<(u32, u32), (u64, u64)> = Default::default();
    for entry in flows.iter() {
        let Ok((key, flow)) = entry else { continue };
        let closing = flow.flags & FLOW_F_CLOSING != 0;
        let Some(backend) = by_id
            .get(&flow.backend_id)
            .filter(|b| b.generation == flow.backend_generation)
        else {
            continue;
        };
        let timeout = backend.timeout(&settings, key.proto == PROTO_TCP, closing);
        if now.saturating_sub(flow.last_seen) > timeout {
            continue;
        }
        let counts = flow_counts
            .entry((flow.backend_id, flow.backend_generation))
            .or_default();
        if closing {
            counts.1 += 1
        } else {
            counts.0 += 1
        }
    }

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
        members.sort_by_key(|b| u32::from_be(b.entry.addr));
        out.push(VipStatus {
            key,
            info,
            counters: sum_per_cpu(&vip_stats, info.vip_id, TrafficCounters::add)?,
            backends: members,
        });
    }
    out.sort_by_key(|v| {
        (
            u32::from_be(v.key.addr),
            u16::from_be(v.key.port),
            v.key.proto,
        )
    });
    Ok(Snapshot {
        vips: out,
        verdicts,
        settings,
    })
}
