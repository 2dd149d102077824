//! From desired state to map writes, without touching a map.
//!
//! [`Reconciler`] remembers what was applied (ids, weights, MACs, rings) and plans the
//! smallest ordered list of [`MapOp`]s that brings the datapath to a new desired state:
//! backends exist before rings point at them, rings stop pointing at a backend before it is
//! retired, and only ring slots that change are written. Tracked flows are never touched:
//! the datapath reschedules a flow only when its backend was retired (or its id now serves
//! another VIP).

use std::{
    collections::{BTreeMap, VecDeque},
    net::Ipv4Addr,
};

use lb_common::{
    BACKEND_F_ACTIVE, Backend, MAX_BACKENDS, MAX_VIPS, RING_SIZE, VipInfo, VipKey,
    hash::vip_filter_slot,
};

use crate::maglev::{self, MaglevBackend};

/// A VIP as the configuration (plus MAC resolution) wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredVip {
    pub key: VipKey,
    pub backends: Vec<DesiredBackend>,
}

/// A backend as the configuration (plus MAC resolution) wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredBackend {
    pub addr: Ipv4Addr,
    pub weight: u32,
    pub mac: [u8; 6],
}

/// One write to the datapath's maps, in the order they must happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOp {
    /// Zero a freshly allocated VIP's counters.
    ResetVipStats { vip_id: u32 },
    /// Zero a freshly allocated backend's counters.
    ResetBackendStats { backend_id: u32 },
    /// Create or update a backend entry.
    SetBackend { backend_id: u32, backend: Backend },
    /// Write ring slots `(slot within the VIP's ring, backend id)`.
    WriteRing { vip_id: u32, slots: Vec<(u32, u32)> },
    /// Publish a VIP (after its ring is complete).
    SetVip { key: VipKey, info: VipInfo },
    /// Stop serving a VIP (before its backends are retired).
    RemoveVip { key: VipKey },
    /// Mark a backend unusable: flows tracked to it are rescheduled.
    RetireBackend { backend_id: u32 },
    /// Set a VIP prefilter slot: the number of VIPs hashing to it (0 = none).
    SetVipFilter { slot: u32, vips: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    #[error("more than {MAX_VIPS} VIPs")]
    TooManyVips,
    #[error("more than {} backends", MAX_BACKENDS - 1)]
    TooManyBackends,
}

#[derive(Clone, Debug)]
struct AppliedVip {
    vip_id: u32,
    backends: BTreeMap<Ipv4Addr, AppliedBackend>,
    /// Backend id per ring slot, as written.
    ring: Vec<u32>,
}

#[derive(Clone, Debug)]
struct AppliedBackend {
    id: u32,
    entry: Backend,
}

/// What has been applied to the maps, and the ids free for reuse.
#[derive(Clone, Debug)]
pub struct Reconciler {
    vips: BTreeMap<VipKey, AppliedVip>,
    free_vip_ids: VecDeque<u32>,
    /// First in, first out: a retired id is reused as late as possible, so a stale flow
    /// entry is unlikely to meet a new backend under its old id.
    free_backend_ids: VecDeque<u32>,
}

impl Default for Reconciler {
    fn default() -> Self {
        Reconciler {
            vips: BTreeMap::new(),
            free_vip_ids: (0..MAX_VIPS).collect(),
            // Id 0 means "no backend" in a ring slot.
            free_backend_ids: (1..MAX_BACKENDS).collect(),
        }
    }
}

impl Reconciler {
    /// The ops that turn the applied state into `desired`, and the state after them.
    /// `self` is unchanged, so a failed apply can be retried or abandoned.
    pub fn plan(&self, desired: &[DesiredVip]) -> Result<(Vec<MapOp>, Reconciler), ReconcileError> {
        let mut next = self.clone();
        let mut ops = Vec::new();
        let mut retire = Vec::new();
        let wanted: BTreeMap<VipKey, &DesiredVip> = desired.iter().map(|v| (v.key, v)).collect();

        // VIPs that go away: unpublish first, then retire their backends.
        for (key, applied) in &self.vips {
            if !wanted.contains_key(key) {
                ops.push(MapOp::RemoveVip { key: *key });
                retire.extend(applied.backends.values().map(|b| b.id));
                next.vips.remove(key);
                next.free_vip_ids.push_back(applied.vip_id);
            }
        }

        for (key, want) in &wanted {
            let is_new = !next.vips.contains_key(key);
            if is_new {
                let vip_id = next
                    .free_vip_ids
                    .pop_front()
                    .ok_or(ReconcileError::TooManyVips)?;
                ops.push(MapOp::ResetVipStats { vip_id });
                next.vips.insert(
                    *key,
                    AppliedVip {
                        vip_id,
                        backends: BTreeMap::new(),
                        ring: Vec::new(),
                    },
                );
            }
            let vip = next.vips.get_mut(key).expect("inserted above");
            let vip_id = vip.vip_id;

            // Backends that stay or arrive: entries first, so the ring never points at nothing.
            for b in &want.backends {
                let entry = Backend {
                    mac: b.mac,
                    _pad: [0; 2],
                    addr: u32::from_ne_bytes(b.addr.octets()),
                    flags: BACKEND_F_ACTIVE,
                    vip_id,
                    weight: b.weight,
                };
                match vip.backends.get_mut(&b.addr) {
                    Some(applied) if applied.entry == entry => {}
                    Some(applied) => {
                        applied.entry = entry;
                        ops.push(MapOp::SetBackend {
                            backend_id: applied.id,
                            backend: entry,
                        });
                    }
                    None => {
                        let id = next
                            .free_backend_ids
                            .pop_front()
                            .ok_or(ReconcileError::TooManyBackends)?;
                        ops.push(MapOp::ResetBackendStats { backend_id: id });
                        ops.push(MapOp::SetBackend {
                            backend_id: id,
                            backend: entry,
                        });
                        vip.backends.insert(b.addr, AppliedBackend { id, entry });
                    }
                }
            }
            let gone: Vec<Ipv4Addr> = vip
                .backends
                .keys()
                .filter(|a| !want.backends.iter().any(|b| b.addr == **a))
                .copied()
                .collect();
            for addr in gone {
                let applied = vip.backends.remove(&addr).expect("listed above");
                retire.push(applied.id);
            }

            // The ring, over backends in address order so every director builds the same one.
            let ring = ring_for(
                vip.backends
                    .values()
                    .map(|b| (b.id, b.entry.addr, b.entry.weight)),
            );
            let slots: Vec<(u32, u32)> = if vip.ring.is_empty() {
                ring.iter()
                    .enumerate()
                    .map(|(slot, &id)| (slot as u32, id))
                    .collect()
            } else {
                ring.iter()
                    .zip(&vip.ring)
                    .enumerate()
                    .filter(|(_, (new, old))| new != old)
                    .map(|(slot, (&id, _))| (slot as u32, id))
                    .collect()
            };
            if !slots.is_empty() {
                ops.push(MapOp::WriteRing { vip_id, slots });
            }
            vip.ring = ring;
            if is_new {
                ops.push(MapOp::SetVip {
                    key: *key,
                    info: VipInfo { vip_id, flags: 0 },
                });
            }
        }

        // The prefilter follows the published VIP set.
        let (old_filter, new_filter) = (
            filter_counts(self.vips.keys()),
            filter_counts(next.vips.keys()),
        );
        for slot in old_filter
            .keys()
            .chain(new_filter.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let vips = new_filter.get(slot).copied().unwrap_or(0);
            if old_filter.get(slot).copied().unwrap_or(0) != vips {
                ops.push(MapOp::SetVipFilter { slot: *slot, vips });
            }
        }

        // Only now nothing points at retired backends.
        for backend_id in retire {
            ops.push(MapOp::RetireBackend { backend_id });
            next.free_backend_ids.push_back(backend_id);
        }
        Ok((ops, next))
    }

    /// Backend id of `addr` in `vip`, as applied.
    pub fn backend_id(&self, vip: &VipKey, addr: Ipv4Addr) -> Option<u32> {
        self.vips.get(vip)?.backends.get(&addr).map(|b| b.id)
    }

    /// Ring slot -> backend id of `vip`, as applied.
    pub fn ring(&self, vip: &VipKey) -> Option<&[u32]> {
        self.vips.get(vip).map(|v| v.ring.as_slice())
    }

    /// VIP id of `vip`, as applied.
    pub fn vip_id(&self, vip: &VipKey) -> Option<u32> {
        self.vips.get(vip).map(|v| v.vip_id)
    }
}

/// VIPs per prefilter slot.
fn filter_counts<'a>(vips: impl Iterator<Item = &'a VipKey>) -> BTreeMap<u32, u32> {
    let mut counts = BTreeMap::new();
    for key in vips {
        *counts
            .entry(vip_filter_slot(key.addr, key.port, key.proto))
            .or_default() += 1;
    }
    counts
}

/// A VIP's ring: backend id per slot, all 0 when no backend has a positive weight.
fn ring_for(backends: impl Iterator<Item = (u32, u32, u32)>) -> Vec<u32> {
    let mut by_addr: Vec<(u32, u32, u32)> = backends.collect();
    by_addr.sort_by_key(|&(_, addr, _)| u32::from_be(addr));
    let input: Vec<MaglevBackend> = by_addr
        .iter()
        .map(|&(_, addr, weight)| MaglevBackend {
            key: u32::from_be(addr) as u64,
            weight,
        })
        .collect();
    match maglev::build_table(&input, RING_SIZE) {
        Some(table) => table.into_iter().map(|i| by_addr[i as usize].0).collect(),
        None => vec![0; RING_SIZE as usize],
    }
}

#[cfg(test)]
mod tests;
