//! Reads back what the planner's maps hold (VIPs, backends, rings, prefilter), so the
//! [`Reconciler`](crate::reconcile::Reconciler) can be rebuilt from the truth after a
//! failed apply.

use std::collections::BTreeMap;

use aya::maps::{Array, HashMap, MapData};
use lb_common::{
    Backend, FragmentVipKey, MAP_BACKEND_MACS, MAP_BACKENDS, MAP_FRAGMENT_VIPS, MAP_GROUP_STANDBY,
    MAP_MAC_FILTER, MAP_RING, MAP_VIP_FILTER, MAP_VIPS, MacKey, RING_SIZE, VipInfo, VipKey,
};

use super::snapshot::MapSource;
use crate::{
    error::{Error, Result},
    reconcile::MapContents,
};

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |cause| Error::map(name, cause)
}

/// One element read per slot: a few seconds for a full director (64 VIPs), paid only when
/// an apply failed.
pub fn read(source: &impl MapSource) -> Result<MapContents> {
    let vip_map: HashMap<&MapData, VipKey, VipInfo> =
        HashMap::try_from(source.map(MAP_VIPS)?).map_err(map_err(MAP_VIPS))?;
    let backend_map: Array<&MapData, Backend> =
        Array::try_from(source.map(MAP_BACKENDS)?).map_err(map_err(MAP_BACKENDS))?;
    let ring_map: Array<&MapData, u32> =
        Array::try_from(source.map(MAP_RING)?).map_err(map_err(MAP_RING))?;
    let filter_map: Array<&MapData, u32> =
        Array::try_from(source.map(MAP_VIP_FILTER)?).map_err(map_err(MAP_VIP_FILTER))?;

    let vips = vip_map
        .iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err(MAP_VIPS))?;
    let backends = (0..backend_map.len())
        .map(|id| backend_map.get(&id, 0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err(MAP_BACKENDS))?;
    let mut rings = BTreeMap::new();
    for (_, info) in &vips {
        let base = info.vip_id.wrapping_mul(RING_SIZE);
        if base / RING_SIZE != info.vip_id || base + RING_SIZE > ring_map.len() {
            continue; // an id out of range: the planner treats the VIP as a stray
        }
        let ring = (base..base + RING_SIZE)
            .map(|slot| ring_map.get(&slot, 0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(MAP_RING))?;
        rings.insert(info.vip_id, ring);
    }
    let mut filter = BTreeMap::new();
    for slot in 0..filter_map.len() {
        let vips = filter_map.get(&slot, 0).map_err(map_err(MAP_VIP_FILTER))?;
        if vips != 0 {
            filter.insert(slot, vips);
        }
    }
    let mac_filter_map: Array<&MapData, u32> =
        Array::try_from(source.map(MAP_MAC_FILTER)?).map_err(map_err(MAP_MAC_FILTER))?;
    let mut mac_filter = BTreeMap::new();
    for slot in 0..mac_filter_map.len() {
        let macs = mac_filter_map
            .get(&slot, 0)
            .map_err(map_err(MAP_MAC_FILTER))?;
        if macs != 0 {
            mac_filter.insert(slot, macs);
        }
    }
    let mac_map: HashMap<&MapData, MacKey, u64> =
        HashMap::try_from(source.map(MAP_BACKEND_MACS)?).map_err(map_err(MAP_BACKEND_MACS))?;
    let backend_macs = mac_map
        .iter()
        .map(|entry| entry.map(|(key, vips)| (key.mac, vips)))
        .collect::<Result<_, _>>()
        .map_err(map_err(MAP_BACKEND_MACS))?;
    let fragment_map: HashMap<&MapData, FragmentVipKey, VipInfo> =
        HashMap::try_from(source.map(MAP_FRAGMENT_VIPS)?).map_err(map_err(MAP_FRAGMENT_VIPS))?;
    let fragment_vips = fragment_map
        .iter()
        .collect::<Result<_, _>>()
        .map_err(map_err(MAP_FRAGMENT_VIPS))?;
    Ok(MapContents {
        vips,
        backends,
        rings,
        filter,
        mac_filter,
        backend_macs,
        fragment_vips,
    })
}

/// Whether each of groups `1..=groups` forwards (its `GROUP_STANDBY` slot is 0), as adopted
/// maps hold it.
pub fn group_forwarding(source: &impl MapSource, groups: u32) -> Result<BTreeMap<u32, bool>> {
    let standby: Array<&MapData, u32> =
        Array::try_from(source.map(MAP_GROUP_STANDBY)?).map_err(map_err(MAP_GROUP_STANDBY))?;
    (1..=groups)
        .map(|group| {
            let value = standby.get(&group, 0).map_err(map_err(MAP_GROUP_STANDBY))?;
            Ok((group, value == 0))
        })
        .collect()
}
