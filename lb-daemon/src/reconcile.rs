//! From desired state to map writes, without touching a map.
//!
//! [`Reconciler`] remembers what was applied (ids, weights, MACs, rings) and plans the
//! smallest ordered list of [`MapOp`]s that brings the datapath to a new desired state:
//! backends exist before rings point at them, rings stop pointing at a backend before it is
//! retired, and only ring slots that change are written. Tracked flows are never touched:
//! the datapath reschedules a flow only when its backend was retired or its id was given
//! to another backend since (every allocation of an id carries a new generation).
//!
//! After a failed apply, what the maps hold is not what was planned:
//! [`Reconciler::from_maps`] rebuilds the applied state from the maps' contents, so the
//! next plan converges from what is really there.

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
};

use lb_common::{
    BACKEND_F_ACTIVE, BACKEND_F_LOCAL, Backend, FragmentVipKey, IpWords, MAX_BACKENDS, MAX_VIPS,
    RING_SIZE, SCHED_LC, SCHED_RR, SCHED_WRR, VipInfo, VipKey,
    hash::{filter_word, mac_filter_slot, mac_number, vip_filter_slot},
    ip_addr, ip_words,
};

use crate::{
    maglev::{self, MaglevBackend},
    round_robin,
};

/// A VIP as the configuration (plus MAC resolution) wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredVip {
    pub key: VipKey,
    /// Forwarding group (its VRRP instance; 0: none), see [`VipInfo::group`].
    pub group: u32,
    /// How new flows pick a backend.
    pub selection: Selection,
    /// The VIP's own idle timeouts (0: the global ones).
    pub timeouts: FlowTimeouts,
    pub backends: Vec<DesiredBackend>,
}

/// Idle timeouts of one VIP's flows, in jiffies; 0 takes the global value from `SETTINGS`.
/// Written into each backend entry, which is what a tracked packet reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowTimeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

/// A VIP's scheduler and persistence, as [`VipInfo`] carries them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// `lb_common::SCHED_*` (0: Maglev).
    pub scheduler: u32,
    /// Client address mask for persistence ([`lb_common::IpWords`]).
    pub persist_mask: IpWords,
    /// Persistence timeout in jiffies (0: off).
    pub persist_timeout: u64,
}

impl Selection {
    fn info(self, vip_id: u32, group: u32) -> VipInfo {
        VipInfo {
            vip_id,
            flags: 0,
            group,
            scheduler: self.scheduler,
            persist_mask: self.persist_mask,
            _pad: 0,
            persist_timeout: self.persist_timeout,
        }
    }

    fn of(info: &VipInfo) -> Selection {
        Selection {
            scheduler: info.scheduler,
            persist_mask: info.persist_mask,
            persist_timeout: info.persist_timeout,
        }
    }
}

/// A backend as the configuration (plus MAC resolution) wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredBackend {
    pub addr: IpAddr,
    pub weight: u32,
    pub mac: [u8; 6],
    /// This director itself: its flows go to the local stack.
    pub local: bool,
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
    /// Mark a backend unusable: flows tracked to it are rescheduled. The entry keeps its
    /// generation, so the next allocation of the id can be told apart even after a restart.
    RetireBackend { backend_id: u32, generation: u32 },
    /// Set a VIP prefilter slot: the number of VIPs hashing to it (0 = none).
    SetVipFilter { slot: u32, vips: u32 },
    /// Set the VIPs (a bit per `vip_id`) a backend MAC serves (0 = remove the entry).
    SetBackendMac { mac: [u8; 6], vips: u64 },
    /// Set a backend-MAC prefilter slot: the number of backend MACs hashing to it.
    SetMacFilter { slot: u32, macs: u32 },
    /// Set the VIP whose ring places orphan fragments to this address and protocol (None =
    /// remove the entry).
    SetFragmentVip {
        key: FragmentVipKey,
        info: Option<VipInfo>,
    },
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
    group: u32,
    selection: Selection,
    backends: BTreeMap<IpAddr, AppliedBackend>,
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
    /// First in, first out: a retired id is reused as late as possible (generations make
    /// reuse safe; late reuse keeps ids stable to read in `bpftool` output).
    free_backend_ids: VecDeque<u32>,
    /// Generation of the next backend allocation; never 0 (the value of an empty entry).
    next_generation: u32,
    /// Prefilter slot -> VIP count, as the map holds it.
    filter: BTreeMap<u32, u32>,
    /// Backend-MAC prefilter slot -> MAC count, as the map holds it.
    mac_filter: BTreeMap<u32, u32>,
    /// Remote backend MAC -> VIPs it serves (a bit per id), as the map holds it.
    backend_macs: BTreeMap<[u8; 6], u64>,
    /// VIP address and protocol -> the VIP placing orphan fragments, as the map holds it.
    fragment_vips: BTreeMap<FragmentVipKey, VipInfo>,
    /// Active backend entries that no published VIP owns (left by a failed apply): retired
    /// by the next plan.
    orphans: Vec<(u32, u32)>,
    /// Published VIPs the maps hold but the planner cannot own (a duplicate or out-of-range
    /// id, only after a failed or foreign write): unpublished by the next plan.
    strays: Vec<VipKey>,
}

impl Default for Reconciler {
    fn default() -> Self {
        Reconciler {
            vips: BTreeMap::new(),
            free_vip_ids: (0..MAX_VIPS).collect(),
            // Id 0 means "no backend" in a ring slot.
            free_backend_ids: (1..MAX_BACKENDS).collect(),
            next_generation: 1,
            filter: BTreeMap::new(),
            mac_filter: BTreeMap::new(),
            backend_macs: BTreeMap::new(),
            fragment_vips: BTreeMap::new(),
            orphans: Vec::new(),
            strays: Vec::new(),
        }
    }
}

/// What the datapath's maps hold, as read back by the daemon (see
/// [`Reconciler::from_maps`]).
#[derive(Clone, Debug, Default)]
pub struct MapContents {
    /// Every entry of the VIP map.
    pub vips: Vec<(VipKey, VipInfo)>,
    /// The backend array, indexed by id.
    pub backends: Vec<Backend>,
    /// Ring of each published VIP id (`RING_SIZE` slots).
    pub rings: BTreeMap<u32, Vec<u32>>,
    /// Non-zero prefilter slots.
    pub filter: BTreeMap<u32, u32>,
    /// Non-zero backend-MAC prefilter slots.
    pub mac_filter: BTreeMap<u32, u32>,
    /// Every entry of the backend MAC map.
    pub backend_macs: BTreeMap<[u8; 6], u64>,
    /// Every entry of the fragment VIP map.
    pub fragment_vips: BTreeMap<FragmentVipKey, VipInfo>,
}

/// The generation after `generation`, skipping 0.
fn next_gen(generation: u32) -> u32 {
    generation.wrapping_add(1).max(1)
}

impl Reconciler {
    /// The ops that turn the applied state into `desired`, and the state after them.
    /// `self` is unchanged, so a failed apply can be retried or abandoned.
    pub fn plan(&self, desired: &[DesiredVip]) -> Result<(Vec<MapOp>, Reconciler), ReconcileError> {
        let mut next = self.clone();
        let mut ops = Vec::new();
        let mut retire: Vec<(u32, u32)> = std::mem::take(&mut next.orphans);
        let wanted: BTreeMap<VipKey, &DesiredVip> = desired.iter().map(|v| (v.key, v)).collect();

        // Entries no plan made: unpublished before anything reuses their ids.
        for key in std::mem::take(&mut next.strays) {
            ops.push(MapOp::RemoveVip { key });
        }

        // VIPs that go away: unpublish first, then retire their backends.
        for (key, applied) in &self.vips {
            if !wanted.contains_key(key) {
                ops.push(MapOp::RemoveVip { key: *key });
                retire.extend(
                    applied
                        .backends
                        .values()
                        .map(|b| (b.id, b.entry.generation)),
                );
                next.vips.remove(key);
                next.free_vip_ids.push_back(applied.vip_id);
            }
        }
        // Orphan fragments stop following a VIP that goes before its id can be reused.
        next.fragment_vips.retain(|key, info| {
            let kept = next.vips.values().any(|v| v.vip_id == info.vip_id);
            if !kept {
                ops.push(MapOp::SetFragmentVip {
                    key: *key,
                    info: None,
                });
            }
            kept
        });

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
                        group: want.group,
                        selection: want.selection,
                        backends: BTreeMap::new(),
                        ring: Vec::new(),
                    },
                );
            }
            let vip = next.vips.get_mut(key).expect("inserted above");
            let vip_id = vip.vip_id;

            // Backends that arrive: entries first, so the ring never points at nothing.
            let mut updated = Vec::new();
            for b in &want.backends {
                let mut entry = Backend {
                    mac: b.mac,
                    _pad: [0; 2],
                    addr: ip_words(b.addr),
                    flags: if b.local {
                        BACKEND_F_ACTIVE | BACKEND_F_LOCAL
                    } else {
                        BACKEND_F_ACTIVE
                    },
                    vip_id,
                    weight: b.weight,
                    generation: 0,
                    group: want.group,
                    tcp_timeout: want.timeouts.tcp,
                    tcp_fin_timeout: want.timeouts.tcp_fin,
                    udp_timeout: want.timeouts.udp,
                    _pad2: 0,
                };
                match vip.backends.get_mut(&b.addr) {
                    Some(applied) => {
                        // The same backend: its flows stay, so its generation does too. Its
                        // entry is rewritten after the ring, so an entry (what `lbd status`
                        // shows) never announces a weight the ring does not have yet.
                        entry.generation = applied.entry.generation;
                        if applied.entry != entry {
                            applied.entry = entry;
                            updated.push(MapOp::SetBackend {
                                backend_id: applied.id,
                                backend: entry,
                            });
                        }
                    }
                    None => {
                        let id = next
                            .free_backend_ids
                            .pop_front()
                            .ok_or(ReconcileError::TooManyBackends)?;
                        entry.generation = next.next_generation;
                        next.next_generation = next_gen(next.next_generation);
                        ops.push(MapOp::ResetBackendStats { backend_id: id });
                        // Weight 0 until the ring points at it: the entry never claims
                        // more than the ring gives.
                        ops.push(MapOp::SetBackend {
                            backend_id: id,
                            backend: Backend { weight: 0, ..entry },
                        });
                        if entry.weight != 0 {
                            updated.push(MapOp::SetBackend {
                                backend_id: id,
                                backend: entry,
                            });
                        }
                        vip.backends.insert(b.addr, AppliedBackend { id, entry });
                    }
                }
            }
            let gone: Vec<IpAddr> = vip
                .backends
                .keys()
                .filter(|a| !want.backends.iter().any(|b| b.addr == **a))
                .copied()
                .collect();
            for addr in gone {
                let applied = vip.backends.remove(&addr).expect("listed above");
                retire.push((applied.id, applied.entry.generation));
            }

            // The ring, over backends in address order so every director builds the same one.
            let ring = ring_for(
                want.selection.scheduler,
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
            ops.append(&mut updated);
            vip.ring = ring;
            // A VIP moved to another group: its entry and its backends' (above) follow; a
            // flow in between is judged by whichever it reads, either a valid group.
            // A changed scheduler or persistence applies to new flows from this write on.
            if is_new || vip.group != want.group || vip.selection != want.selection {
                vip.group = want.group;
                vip.selection = want.selection;
                ops.push(MapOp::SetVip {
                    key: *key,
                    info: want.selection.info(vip_id, want.group),
                });
            }
        }

        // The prefilter follows the published VIP set.
        let (old_filter, new_filter) = (&self.filter, filter_counts(next.vips.keys()));
        for (slot, vips) in changed(old_filter, &new_filter) {
            let vips = vips.unwrap_or(0);
            ops.push(MapOp::SetVipFilter { slot, vips });
        }
        next.filter = new_filter;

        // Backend MACs follow the backends of published VIPs.
        let new_macs = mac_masks(next.vips.values());
        for (mac, vips) in changed(&self.backend_macs, &new_macs) {
            let vips = vips.unwrap_or(0);
            ops.push(MapOp::SetBackendMac { mac, vips });
        }
        // The MAC prefilter after the entries it gates: a slot that is 0 while its MAC's entry
        // exists only skips the guard, as before the MAC served any VIP.
        let new_mac_filter = mac_filter_counts(new_macs.keys());
        for (slot, macs) in changed(&self.mac_filter, &new_mac_filter) {
            let macs = macs.unwrap_or(0);
            ops.push(MapOp::SetMacFilter { slot, macs });
        }
        next.backend_macs = new_macs;
        next.mac_filter = new_mac_filter;

        // Orphan fragments follow the published VIP set, before any backend is retired.
        let new_fragment_vips = fragment_vips(&next.vips);
        for (key, info) in changed(&next.fragment_vips, &new_fragment_vips) {
            ops.push(MapOp::SetFragmentVip { key, info });
        }
        next.fragment_vips = new_fragment_vips;

        // Only now nothing points at retired backends.
        for (backend_id, generation) in retire {
            ops.push(MapOp::RetireBackend {
                backend_id,
                generation,
            });
            next.free_backend_ids.push_back(backend_id);
        }
        Ok((ops, next))
    }

    /// The applied state as the maps hold it, for planning after a failed apply (or, later,
    /// adopting a running datapath). VIPs keep their ids, rings and backends (matched by
    /// VIP id), so tracked flows keep theirs; active backends of no published VIP become
    /// orphans and published VIPs with an unusable id strays, both undone by the next plan.
    /// Generations continue after the highest one in the backend array, so no id is ever
    /// given a generation a flow may still carry.
    pub fn from_maps(contents: &MapContents) -> Reconciler {
        let mut vips: BTreeMap<VipKey, AppliedVip> = BTreeMap::new();
        let mut strays = Vec::new();
        let mut key_of_id: BTreeMap<u32, VipKey> = BTreeMap::new();
        for &(key, info) in &contents.vips {
            let ring = contents.rings.get(&info.vip_id);
            let usable = info.vip_id < MAX_VIPS
                && !key_of_id.contains_key(&info.vip_id)
                && ring.is_some_and(|r| r.len() == RING_SIZE as usize);
            if !usable {
                strays.push(key);
                continue;
            }
            key_of_id.insert(info.vip_id, key);
            vips.insert(
                key,
                AppliedVip {
                    vip_id: info.vip_id,
                    group: info.group,
                    selection: Selection::of(&info),
                    backends: BTreeMap::new(),
                    ring: ring.expect("checked above").clone(),
                },
            );
        }
        let mut orphans = Vec::new();
        let mut free_backend_ids = VecDeque::new();
        let mut max_generation = 0;
        for (id, entry) in contents.backends.iter().enumerate().skip(1) {
            let id = id as u32;
            max_generation = max_generation.max(entry.generation);
            if entry.flags & BACKEND_F_ACTIVE == 0 {
                free_backend_ids.push_back(id);
                continue;
            }
            let owner = key_of_id
                .get(&entry.vip_id)
                .and_then(|key| vips.get_mut(key));
            let addr = ip_addr(&entry.addr);
            match owner {
                Some(vip) if !vip.backends.contains_key(&addr) => {
                    vip.backends
                        .insert(addr, AppliedBackend { id, entry: *entry });
                }
                _ => orphans.push((id, entry.generation)),
            }
        }
        Reconciler {
            free_vip_ids: (0..MAX_VIPS)
                .filter(|id| !key_of_id.contains_key(id))
                .collect(),
            vips,
            free_backend_ids,
            next_generation: next_gen(max_generation),
            filter: contents.filter.clone(),
            mac_filter: contents.mac_filter.clone(),
            backend_macs: contents.backend_macs.clone(),
            fragment_vips: contents.fragment_vips.clone(),
            orphans,
            strays,
        }
    }

    /// Continue generations at least from `other`'s (the in-memory counter may be ahead of
    /// what the maps show when its last allocations were never written).
    pub fn continue_generations_from(&mut self, other: &Reconciler) {
        if other.next_generation > self.next_generation {
            self.next_generation = other.next_generation;
        }
    }

    /// Backend id of `addr` in `vip`, as applied.
    pub fn backend_id(&self, vip: &VipKey, addr: IpAddr) -> Option<u32> {
        self.vips.get(vip)?.backends.get(&addr).map(|b| b.id)
    }

    /// `(vip_id, backend id, generation)` of `addr` in `vip`, as applied: what a flow to
    /// that backend records.
    pub fn flow_target(&self, vip: &VipKey, addr: IpAddr) -> Option<(u32, u32, u32)> {
        let applied = self.vips.get(vip)?;
        let backend = applied.backends.get(&addr)?;
        Some((applied.vip_id, backend.id, backend.entry.generation))
    }

    /// The scheduler and persistence of `vip`, as applied.
    pub fn selection(&self, vip: &VipKey) -> Option<Selection> {
        self.vips.get(vip).map(|v| v.selection)
    }

    /// Ring slot -> backend id of `vip`, as applied.
    pub fn ring(&self, vip: &VipKey) -> Option<&[u32]> {
        self.vips.get(vip).map(|v| v.ring.as_slice())
    }

    /// Every applied VIP's backends: `(address, weight)` as the entries hold them.
    pub fn applied_backends(&self) -> BTreeMap<VipKey, Vec<(IpAddr, u32)>> {
        self.vips
            .iter()
            .map(|(key, vip)| {
                let backends = vip
                    .backends
                    .iter()
                    .map(|(addr, b)| (*addr, b.entry.weight))
                    .collect();
                (*key, backends)
            })
            .collect()
    }

    /// VIP id of `vip`, as applied.
    pub fn vip_id(&self, vip: &VipKey) -> Option<u32> {
        self.vips.get(vip).map(|v| v.vip_id)
    }
}

/// The VIPs (a bit per id) each remote backend's MAC serves.
fn mac_masks<'a>(vips: impl Iterator<Item = &'a AppliedVip>) -> BTreeMap<[u8; 6], u64> {
    let mut masks = BTreeMap::new();
    for vip in vips {
        for b in vip.backends.values() {
            if b.entry.flags & BACKEND_F_LOCAL == 0 && b.entry.mac != [0; 6] {
                *masks.entry(b.entry.mac).or_default() |= 1u64 << (vip.vip_id & 63);
            }
        }
    }
    masks
}

/// For each VIP address and protocol, the VIP whose ring places the later fragments whose
/// first fragment was not seen (they carry no port): the lowest port among the VIPs with a
/// backend taking new flows, else the lowest port (whose empty ring drops them, as it drops
/// its own packets).
fn fragment_vips(vips: &BTreeMap<VipKey, AppliedVip>) -> BTreeMap<FragmentVipKey, VipInfo> {
    let mut out: BTreeMap<FragmentVipKey, ((bool, u16), VipInfo)> = BTreeMap::new();
    for (key, vip) in vips {
        let fragment_key = FragmentVipKey {
            addr: key.addr,
            proto: key.proto,
            _pad: [0; 3],
        };
        // Ordered: serving VIPs first (false < true), then by port.
        let empty = !vip.backends.values().any(|b| b.entry.weight > 0);
        let rank = (empty, u16::from_be(key.port));
        let info = vip.selection.info(vip.vip_id, vip.group);
        let entry = out.entry(fragment_key).or_insert((rank, info));
        if rank < entry.0 {
            *entry = (rank, info);
        }
    }
    out.into_iter().map(|(k, (_, info))| (k, info)).collect()
}

/// The keys whose entry differs between `old` and `new`, in key order, with the new entry
/// (`None`: removed). The maps never hold a 0 count or mask, so "absent" and "0" agree.
fn changed<K: Ord + Copy, V: PartialEq + Copy>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> Vec<(K, Option<V>)> {
    let keys: std::collections::BTreeSet<&K> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|key| old.get(key) != new.get(key))
        .map(|key| (*key, new.get(key).copied()))
        .collect()
}

/// Backend MACs per MAC prefilter slot.
fn mac_filter_counts<'a>(macs: impl Iterator<Item = &'a [u8; 6]>) -> BTreeMap<u32, u32> {
    let mut counts = BTreeMap::new();
    for mac in macs {
        *counts.entry(mac_filter_slot(mac_number(mac))).or_default() += 1;
    }
    counts
}

/// VIPs per prefilter slot.
fn filter_counts<'a>(vips: impl Iterator<Item = &'a VipKey>) -> BTreeMap<u32, u32> {
    let mut counts = BTreeMap::new();
    for key in vips {
        *counts
            .entry(vip_filter_slot(filter_word(&key.addr), key.port, key.proto))
            .or_default() += 1;
    }
    counts
}

/// A backend's Maglev key: its address as a number (an IPv4 address's as always).
fn maglev_key(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u32::from(v4).into(),
        IpAddr::V6(v6) => v6.into(),
    }
}

/// A VIP's ring: backend id per slot, all 0 when no backend has a positive weight.
fn ring_for(scheduler: u32, backends: impl Iterator<Item = (u32, IpWords, u32)>) -> Vec<u32> {
    let mut by_addr: Vec<(u32, IpAddr, u32)> = backends
        .map(|(id, addr, w)| (id, ip_addr(&addr), w))
        .collect();
    by_addr.sort_by_key(|&(_, addr, _)| addr);
    // Unweighted schedulers count every serving backend once (0 still drains).
    let weight = |w: u32| match scheduler {
        SCHED_RR | SCHED_LC => w.min(1),
        _ => w,
    };
    let table = if matches!(scheduler, SCHED_RR | SCHED_WRR) {
        let weights: Vec<u32> = by_addr.iter().map(|&(_, _, w)| weight(w)).collect();
        round_robin::build_table(&weights, RING_SIZE)
    } else {
        let input: Vec<MaglevBackend> = by_addr
            .iter()
            .map(|&(_, addr, w)| MaglevBackend {
                key: maglev_key(addr),
                weight: weight(w),
            })
            .collect();
        maglev::build_table(&input, RING_SIZE)
    };
    match table {
        Some(table) => table.into_iter().map(|i| by_addr[i as usize].0).collect(),
        None => vec![0; RING_SIZE as usize],
    }
}

#[cfg(test)]
mod tests;
