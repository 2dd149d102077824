use std::net::Ipv4Addr;

use super::*;
use lb_common::hash::{mac_filter_slot, mac_number, vip_filter_slot};

fn vip(last: u8, port: u16) -> VipKey {
    VipKey::new(Ipv4Addr::new(198, 18, 0, last).into(), port, 6)
}

fn backend(last: u8, weight: u32) -> DesiredBackend {
    DesiredBackend {
        addr: IpAddr::from(Ipv4Addr::new(198, 18, 0, last)),
        weight,
        mac: [2, 0, 0, 0, 0, last],
        local: false,
    }
}

fn desired(backends: Vec<DesiredBackend>) -> Vec<DesiredVip> {
    vec![DesiredVip {
        key: vip(100, 6379),
        group: 0,
        selection: Selection::default(),
        timeouts: FlowTimeouts::default(),
        backends,
    }]
}

fn fragment_key(last: u8, proto: u8) -> FragmentVipKey {
    FragmentVipKey {
        addr: lb_common::ipv4_mapped(u32::from_ne_bytes([198, 18, 0, last])),
        proto,
        _pad: [0; 3],
    }
}

fn ring_slots_written(ops: &[MapOp]) -> usize {
    ops.iter()
        .map(|op| {
            if let MapOp::WriteRing { slots, .. } = op {
                slots.len()
            } else {
                0
            }
        })
        .sum()
}

fn position(ops: &[MapOp], pred: impl Fn(&MapOp) -> bool) -> usize {
    ops.iter().position(pred).expect("op present")
}

#[test]
fn first_apply_creates_backends_then_ring_then_vip() {
    let (ops, next) = Reconciler::default()
        .plan(&desired(vec![backend(11, 1), backend(12, 1)]))
        .unwrap();
    let set_backend = position(&ops, |op| matches!(op, MapOp::SetBackend { .. }));
    let ring = position(&ops, |op| matches!(op, MapOp::WriteRing { .. }));
    let set_vip = position(&ops, |op| matches!(op, MapOp::SetVip { .. }));
    let filter = position(&ops, |op| matches!(op, MapOp::SetVipFilter { vips: 1, .. }));
    assert!(
        set_backend < ring && ring < set_vip && set_vip < filter,
        "{ops:?}"
    );
    assert_eq!(ring_slots_written(&ops), RING_SIZE as usize);
    let ring = next.ring(&vip(100, 6379)).unwrap();
    let ids = [
        next.backend_id(&vip(100, 6379), IpAddr::from(Ipv4Addr::new(198, 18, 0, 11)))
            .unwrap(),
        next.backend_id(&vip(100, 6379), IpAddr::from(Ipv4Addr::new(198, 18, 0, 12)))
            .unwrap(),
    ];
    assert!(ids.iter().all(|&id| id != 0), "id 0 is reserved");
    assert!(ring.iter().all(|id| ids.contains(id)));
}

#[test]
fn unchanged_config_plans_nothing() {
    let want = desired(vec![backend(11, 1), backend(12, 1)]);
    let (_, applied) = Reconciler::default().plan(&want).unwrap();
    let (ops, _) = applied.plan(&want).unwrap();
    assert_eq!(ops, []);
}

#[test]
fn removing_a_backend_rewrites_its_slots_before_retiring_it() {
    let (_, applied) = Reconciler::default()
        .plan(&desired(vec![
            backend(11, 1),
            backend(12, 1),
            backend(13, 1),
        ]))
        .unwrap();
    let removed_id = applied
        .backend_id(&vip(100, 6379), IpAddr::from(Ipv4Addr::new(198, 18, 0, 13)))
        .unwrap();
    let (ops, next) = applied
        .plan(&desired(vec![backend(11, 1), backend(12, 1)]))
        .unwrap();
    let ring = position(&ops, |op| matches!(op, MapOp::WriteRing { .. }));
    let retire = position(
        &ops,
        |op| matches!(op, MapOp::RetireBackend { backend_id, .. } if *backend_id == removed_id),
    );
    assert!(ring < retire, "{:?}", &ops[..ops.len().min(3)]);
    // Only the removed backend's third (and a little more) moves.
    let written = ring_slots_written(&ops) as f64 / RING_SIZE as f64;
    assert!((0.30..0.36).contains(&written), "{written}");
    assert!(!next.ring(&vip(100, 6379)).unwrap().contains(&removed_id));
    assert!(
        !ops.iter()
            .any(|op| matches!(op, MapOp::SetVip { .. } | MapOp::SetBackend { .. }))
    );
}

#[test]
fn weight_change_rewrites_only_ring_slots() {
    let (_, applied) = Reconciler::default()
        .plan(&desired(vec![backend(11, 1), backend(12, 1)]))
        .unwrap();
    let (ops, _) = applied
        .plan(&desired(vec![backend(11, 3), backend(12, 1)]))
        .unwrap();
    assert!(
        ops.iter()
            .all(|op| matches!(op, MapOp::WriteRing { .. } | MapOp::SetBackend { .. })),
        "{ops:?}"
    );
    let written = ring_slots_written(&ops) as f64 / RING_SIZE as f64;
    assert!(
        (0.2..0.3).contains(&written),
        "1/2 -> 3/4 share moves about 1/4 of slots, wrote {written}"
    );
}

#[test]
fn zero_weight_drains_without_retiring() {
    let (_, applied) = Reconciler::default()
        .plan(&desired(vec![backend(11, 1), backend(12, 1)]))
        .unwrap();
    let drained = applied
        .backend_id(&vip(100, 6379), IpAddr::from(Ipv4Addr::new(198, 18, 0, 12)))
        .unwrap();
    let (ops, next) = applied
        .plan(&desired(vec![backend(11, 1), backend(12, 0)]))
        .unwrap();
    assert!(
        !ops.iter()
            .any(|op| matches!(op, MapOp::RetireBackend { .. })),
        "drain keeps tracked flows"
    );
    assert!(!next.ring(&vip(100, 6379)).unwrap().contains(&drained));
}

#[test]
fn all_weights_zero_leaves_an_empty_ring() {
    let (_, next) = Reconciler::default()
        .plan(&desired(vec![backend(11, 0)]))
        .unwrap();
    assert!(
        next.ring(&vip(100, 6379))
            .unwrap()
            .iter()
            .all(|&id| id == 0)
    );
}

#[test]
fn mac_change_updates_the_entry_in_place() {
    let (_, applied) = Reconciler::default()
        .plan(&desired(vec![backend(11, 1)]))
        .unwrap();
    let id = applied
        .backend_id(&vip(100, 6379), IpAddr::from(Ipv4Addr::new(198, 18, 0, 11)))
        .unwrap();
    let mut moved = backend(11, 1);
    moved.mac = [2, 9, 9, 9, 9, 9];
    let (ops, _) = applied.plan(&desired(vec![moved])).unwrap();
    assert_eq!(ops.len(), 5, "{ops:?}");
    assert!(
        matches!(&ops[0], MapOp::SetBackend { backend_id, backend } if *backend_id == id && backend.mac == [2, 9, 9, 9, 9, 9])
    );
    // The MAC map follows: the old MAC serves nothing, the new one VIP id 0; then the MAC
    // prefilter (the two MACs' slots, apart here).
    let (old_slot, new_slot) = (
        mac_filter_slot(mac_number(&[2, 0, 0, 0, 0, 11])),
        mac_filter_slot(mac_number(&[2, 9, 9, 9, 9, 9])),
    );
    assert_ne!(old_slot, new_slot);
    assert_eq!(
        ops[1..],
        [
            MapOp::SetBackendMac {
                mac: [2, 0, 0, 0, 0, 11],
                vips: 0
            },
            MapOp::SetBackendMac {
                mac: [2, 9, 9, 9, 9, 9],
                vips: 1
            },
            MapOp::SetMacFilter {
                slot: new_slot.min(old_slot),
                macs: u32::from(new_slot < old_slot)
            },
            MapOp::SetMacFilter {
                slot: new_slot.max(old_slot),
                macs: u32::from(new_slot > old_slot)
            },
        ]
    );
}

#[test]
fn removed_vip_is_unpublished_then_its_backends_retired() {
    let (_, applied) = Reconciler::default()
        .plan(&desired(vec![backend(11, 1)]))
        .unwrap();
    let id = applied
        .backend_id(&vip(100, 6379), IpAddr::from(Ipv4Addr::new(198, 18, 0, 11)))
        .unwrap();
    let (ops, next) = applied.plan(&[]).unwrap();
    let key = vip(100, 6379);
    let slot = vip_filter_slot(lb_common::hash::filter_word(&key.addr), key.port, key.proto);
    assert_eq!(
        ops,
        [
            MapOp::RemoveVip { key },
            MapOp::SetFragmentVip {
                key: fragment_key(100, 6),
                info: None
            },
            MapOp::SetVipFilter { slot, vips: 0 },
            MapOp::SetBackendMac {
                mac: [2, 0, 0, 0, 0, 11],
                vips: 0
            },
            MapOp::SetMacFilter {
                slot: mac_filter_slot(mac_number(&[2, 0, 0, 0, 0, 11])),
                macs: 0
            },
            MapOp::RetireBackend {
                backend_id: id,
                generation: 1
            }
        ]
    );
    assert_eq!(next.vip_id(&vip(100, 6379)), None);
}

#[test]
fn retired_backend_ids_are_reused_last() {
    let (_, applied) = Reconciler::default()
        .plan(&desired(vec![backend(11, 1)]))
        .unwrap();
    let first = applied
        .backend_id(&vip(100, 6379), IpAddr::from(Ipv4Addr::new(198, 18, 0, 11)))
        .unwrap();
    let (_, applied) = applied.plan(&desired(vec![backend(12, 1)])).unwrap();
    let second = applied
        .backend_id(&vip(100, 6379), IpAddr::from(Ipv4Addr::new(198, 18, 0, 12)))
        .unwrap();
    assert_ne!(
        first, second,
        "a just-retired id must not be handed out again at once"
    );
}

#[test]
fn backends_of_different_vips_get_their_own_ids() {
    let want = vec![
        DesiredVip {
            key: vip(100, 6379),
            group: 0,
            selection: Selection::default(),
            timeouts: FlowTimeouts::default(),
            backends: vec![backend(11, 1)],
        },
        DesiredVip {
            key: vip(100, 6380),
            group: 0,
            selection: Selection::default(),
            timeouts: FlowTimeouts::default(),
            backends: vec![backend(11, 1)],
        },
    ];
    let (_, applied) = Reconciler::default().plan(&want).unwrap();
    let a = applied
        .backend_id(&vip(100, 6379), IpAddr::from(Ipv4Addr::new(198, 18, 0, 11)))
        .unwrap();
    let b = applied
        .backend_id(&vip(100, 6380), IpAddr::from(Ipv4Addr::new(198, 18, 0, 11)))
        .unwrap();
    assert_ne!(a, b);
    assert_ne!(
        applied.vip_id(&vip(100, 6379)),
        applied.vip_id(&vip(100, 6380))
    );
}

#[test]
fn backend_order_in_config_does_not_change_the_ring() {
    let (_, a) = Reconciler::default()
        .plan(&desired(vec![
            backend(11, 1),
            backend(12, 2),
            backend(13, 1),
        ]))
        .unwrap();
    let (_, b) = Reconciler::default()
        .plan(&desired(vec![
            backend(13, 1),
            backend(11, 1),
            backend(12, 2),
        ]))
        .unwrap();
    let addr_ring = |r: &Reconciler| -> Vec<Ipv4Addr> {
        let ids: BTreeMap<u32, Ipv4Addr> = [11, 12, 13]
            .iter()
            .map(|&l| {
                (
                    r.backend_id(&vip(100, 6379), IpAddr::from(Ipv4Addr::new(198, 18, 0, l)))
                        .unwrap(),
                    Ipv4Addr::new(198, 18, 0, l),
                )
            })
            .collect();
        r.ring(&vip(100, 6379))
            .unwrap()
            .iter()
            .map(|id| ids[id])
            .collect()
    };
    assert_eq!(addr_ring(&a), addr_ring(&b));
}

#[test]
fn prefilter_counts_vips_sharing_a_slot() {
    let two = vec![
        DesiredVip {
            key: vip(100, 6379),
            group: 0,
            selection: Selection::default(),
            timeouts: FlowTimeouts::default(),
            backends: vec![backend(11, 1)],
        },
        DesiredVip {
            key: vip(100, 6380),
            group: 0,
            selection: Selection::default(),
            timeouts: FlowTimeouts::default(),
            backends: vec![backend(11, 1)],
        },
    ];
    let (ops, applied) = Reconciler::default().plan(&two).unwrap();
    let filters: Vec<&MapOp> = ops
        .iter()
        .filter(|op| matches!(op, MapOp::SetVipFilter { .. }))
        .collect();
    let slots: Vec<u32> = [6379u16, 6380]
        .iter()
        .map(|&p| {
            vip_filter_slot(
                lb_common::hash::filter_word(&vip(100, p).addr),
                vip(100, p).port,
                6,
            )
        })
        .collect();
    if slots[0] == slots[1] {
        assert_eq!(
            filters,
            [&MapOp::SetVipFilter {
                slot: slots[0],
                vips: 2
            }]
        );
    } else {
        assert_eq!(filters.len(), 2, "{filters:?}");
    }
    // Dropping one VIP leaves the other's slot marked.
    let (ops, _) = applied.plan(&two[..1]).unwrap();
    assert!(
        !ops.contains(&MapOp::SetVipFilter {
            slot: slots[0],
            vips: 0
        }),
        "{ops:?}"
    );
}

/// The maps after `ops_history` was written to empty maps (for recovery tests).
fn contents_of(ops_history: &[MapOp]) -> MapContents {
    let mut contents = MapContents {
        backends: vec![Backend::default(); MAX_BACKENDS as usize],
        ..MapContents::default()
    };
    let mut vips = BTreeMap::new();
    for op in ops_history {
        match op {
            MapOp::SetBackend {
                backend_id,
                backend,
            } => contents.backends[*backend_id as usize] = *backend,
            MapOp::RetireBackend {
                backend_id,
                generation,
            } => {
                contents.backends[*backend_id as usize] = Backend {
                    generation: *generation,
                    ..Backend::default()
                }
            }
            MapOp::WriteRing { vip_id, slots } => {
                let ring = contents
                    .rings
                    .entry(*vip_id)
                    .or_insert_with(|| vec![0; RING_SIZE as usize]);
                for &(slot, id) in slots {
                    ring[slot as usize] = id;
                }
            }
            MapOp::SetVip { key, info } => {
                vips.insert(*key, *info);
            }
            MapOp::RemoveVip { key } => {
                vips.remove(key);
            }
            MapOp::SetVipFilter { slot, vips } => {
                if *vips == 0 {
                    contents.filter.remove(slot);
                } else {
                    contents.filter.insert(*slot, *vips);
                }
            }
            MapOp::SetBackendMac { mac, vips } => {
                if *vips == 0 {
                    contents.backend_macs.remove(mac);
                } else {
                    contents.backend_macs.insert(*mac, *vips);
                }
            }
            MapOp::SetMacFilter { slot, macs } => {
                if *macs == 0 {
                    contents.mac_filter.remove(slot);
                } else {
                    contents.mac_filter.insert(*slot, *macs);
                }
            }
            MapOp::SetFragmentVip { key, info } => match info {
                Some(info) => {
                    contents.fragment_vips.insert(*key, *info);
                }
                None => {
                    contents.fragment_vips.remove(key);
                }
            },
            MapOp::ResetVipStats { .. } | MapOp::ResetBackendStats { .. } => {}
        }
    }
    let published: std::collections::BTreeSet<u32> = vips.values().map(|i| i.vip_id).collect();
    contents.rings.retain(|id, _| published.contains(id));
    contents.vips = vips.into_iter().collect();
    contents
}

#[test]
fn every_new_backend_allocation_gets_a_new_generation_and_updates_keep_it() {
    let (ops, applied) = Reconciler::default()
        .plan(&desired(vec![backend(11, 1), backend(12, 1)]))
        .unwrap();
    // Each new backend is written twice: weight 0 before the ring, its weight after.
    let writes: Vec<(u32, u32)> = ops
        .iter()
        .filter_map(|op| match op {
            MapOp::SetBackend { backend, .. } => Some((backend.generation, backend.weight)),
            _ => None,
        })
        .collect();
    assert_eq!(writes, [(1, 0), (2, 0), (1, 1), (2, 1)]);
    let ring_at = ops
        .iter()
        .position(|op| matches!(op, MapOp::WriteRing { .. }))
        .unwrap();
    assert!(
        ops[..ring_at]
            .iter()
            .all(|op| !matches!(op, MapOp::SetBackend { backend, .. } if backend.weight != 0)),
        "no entry announces its weight before the ring gives it: {ops:?}"
    );
    // A weight change updates the entry in place: same id, same generation, flows stay.
    let (ops, applied) = applied
        .plan(&desired(vec![backend(11, 5), backend(12, 1)]))
        .unwrap();
    assert!(ops.iter().any(|op| matches!(
        op,
        MapOp::SetBackend { backend, .. } if backend.weight == 5 && backend.generation == 1
    )));
    // Removed and added back: a new allocation, so a new generation, whatever the id.
    let (_, applied) = applied.plan(&desired(vec![backend(12, 1)])).unwrap();
    let (ops, _) = applied
        .plan(&desired(vec![backend(11, 1), backend(12, 1)]))
        .unwrap();
    assert!(ops.iter().any(|op| matches!(
        op,
        MapOp::SetBackend { backend, .. } if backend.generation == 3
    )));
}

#[test]
fn a_reused_backend_id_never_gets_a_generation_it_had_before() {
    // Swap between two disjoint sets of 1,000 backends until every id came back twice.
    let set = |base: u8| -> Vec<DesiredBackend> {
        (0..1000u32)
            .map(|i| DesiredBackend {
                addr: IpAddr::from(Ipv4Addr::new(
                    198,
                    18 + (base % 2),
                    (i / 250) as u8,
                    (i % 250) as u8,
                )),
                weight: 1,
                mac: [2, 0, 0, 0, 0, 1],
                local: false,
            })
            .collect()
    };
    let mut applied = Reconciler::default();
    let mut seen = BTreeMap::new();
    for round in 0..(2 * MAX_BACKENDS / 1000 + 2) as u8 {
        let (ops, next) = applied.plan(&desired(set(round))).unwrap();
        for op in &ops {
            // Allocations only (written with weight 0 first; the weight follows).
            if let MapOp::SetBackend {
                backend_id,
                backend,
            } = op
                && backend.weight == 0
            {
                let before = seen.insert(*backend_id, backend.generation);
                assert_ne!(before, Some(backend.generation), "id {backend_id} reused");
            }
        }
        applied = next;
    }
}

#[test]
fn recovered_state_plans_nothing_when_the_maps_hold_the_plan() {
    let mut history = Vec::new();
    let (ops, applied) = Reconciler::default()
        .plan(&[
            DesiredVip {
                key: vip(100, 6379),
                group: 0,
                selection: Selection::default(),
                timeouts: FlowTimeouts::default(),
                backends: vec![backend(11, 1), backend(12, 2)],
            },
            DesiredVip {
                key: vip(101, 6380),
                group: 0,
                selection: Selection::default(),
                timeouts: FlowTimeouts::default(),
                backends: vec![backend(13, 1)],
            },
        ])
        .unwrap();
    history.extend(ops);
    let recovered = Reconciler::from_maps(&contents_of(&history));
    let again = [
        DesiredVip {
            key: vip(100, 6379),
            group: 0,
            selection: Selection::default(),
            timeouts: FlowTimeouts::default(),
            backends: vec![backend(11, 1), backend(12, 2)],
        },
        DesiredVip {
            key: vip(101, 6380),
            group: 0,
            selection: Selection::default(),
            timeouts: FlowTimeouts::default(),
            backends: vec![backend(13, 1)],
        },
    ];
    let (ops, _) = recovered.plan(&again).unwrap();
    assert_eq!(ops, [], "the recovered state is the applied one");
    assert_eq!(
        recovered.backend_id(&vip(100, 6379), IpAddr::from(Ipv4Addr::new(198, 18, 0, 12))),
        applied.backend_id(&vip(100, 6379), IpAddr::from(Ipv4Addr::new(198, 18, 0, 12)))
    );
}

#[test]
fn recovery_after_a_half_applied_plan_converges_back() {
    let before = desired(vec![backend(11, 1), backend(12, 1)]);
    let (ops, applied) = Reconciler::default().plan(&before).unwrap();
    let mut history = ops;
    // Adding .13 fails after half of its ring slots.
    let (ops, _) = applied
        .plan(&desired(vec![
            backend(11, 1),
            backend(12, 1),
            backend(13, 1),
        ]))
        .unwrap();
    let mut partial = Vec::new();
    for op in ops {
        if let MapOp::WriteRing { vip_id, slots } = op {
            let half = slots.len() / 2;
            partial.push(MapOp::WriteRing {
                vip_id,
                slots: slots[..half].to_vec(),
            });
            break;
        }
        partial.push(op);
    }
    history.extend(partial);
    let maps = contents_of(&history);
    let recovered = Reconciler::from_maps(&maps);
    // Planning against the remembered state writes nothing; against the maps it repairs.
    assert_eq!(applied.plan(&before).unwrap().0, []);
    let (ops, repaired) = recovered.plan(&before).unwrap();
    history.extend(ops.iter().cloned());
    let after = contents_of(&history);
    let ring = &after.rings[&repaired.vip_id(&vip(100, 6379)).unwrap()];
    assert_eq!(ring.as_slice(), applied.ring(&vip(100, 6379)).unwrap());
    assert!(
        ops.iter()
            .any(|op| matches!(op, MapOp::RetireBackend { .. })),
        "the half-added backend is retired: {ops:?}"
    );
    let active: Vec<u32> = (1..MAX_BACKENDS)
        .filter(|&id| after.backends[id as usize].flags & BACKEND_F_ACTIVE != 0)
        .collect();
    assert_eq!(active.len(), 2, "only .11 and .12 stay active");
}

#[test]
fn recovery_retires_orphans_removes_strays_and_continues_generations() {
    let (ops, _) = Reconciler::default()
        .plan(&desired(vec![backend(11, 1)]))
        .unwrap();
    let mut maps = contents_of(&ops);
    // An active backend of an unpublished VIP id (a new VIP whose SetVip never happened)...
    maps.backends[77] = Backend {
        flags: BACKEND_F_ACTIVE,
        vip_id: 9,
        generation: 41,
        ..Backend::default()
    };
    // ...a retired entry with a higher generation, and a VIP published with an id in use.
    maps.backends[78] = Backend {
        generation: 50,
        ..Backend::default()
    };
    let info = maps.vips[0].1;
    maps.vips.push((vip(102, 1), info));
    let recovered = Reconciler::from_maps(&maps);
    let (ops, _) = recovered
        .plan(&desired(vec![backend(11, 1), backend(12, 1)]))
        .unwrap();
    assert_eq!(ops[0], MapOp::RemoveVip { key: vip(102, 1) });
    assert!(ops.contains(&MapOp::RetireBackend {
        backend_id: 77,
        generation: 41
    }));
    assert!(ops.iter().any(|op| matches!(
        op,
        MapOp::SetBackend { backend, .. } if backend.generation == 51
    )));
}

#[test]
fn moving_a_vip_to_another_group_rewrites_its_entries_not_its_ring() {
    let backends = vec![backend(11, 1), backend(12, 2)];
    let (first, applied) = Reconciler::default()
        .plan(&desired(backends.clone()))
        .unwrap();
    let mut moved = desired(backends);
    moved[0].group = 3;
    let (ops, next) = applied.plan(&moved).unwrap();
    assert_eq!(ring_slots_written(&ops), 0);
    let groups: Vec<u32> = ops
        .iter()
        .map(|op| match op {
            MapOp::SetBackend { backend, .. } => backend.group,
            MapOp::SetVip { info, .. } => info.group,
            MapOp::SetFragmentVip {
                info: Some(info), ..
            } => info.group,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(groups, [3, 3, 3, 3], "{ops:?}");
    let (again, _) = next.plan(&moved).unwrap();
    assert!(again.is_empty(), "{again:?}");
    // Recovered from the maps (after a failed apply), the group is known too.
    let history: Vec<MapOp> = first.into_iter().chain(ops).collect();
    let (again, _) = Reconciler::from_maps(&contents_of(&history))
        .plan(&moved)
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
}

/// Orphan fragments (no port) of an address and protocol follow the VIP with the lowest
/// port; when it goes, they stop following it before its backends are retired, and then
/// follow the next one.
#[test]
fn orphan_fragments_follow_the_lowest_port_vip_of_their_address_and_protocol() {
    let mut udp = vip(100, 53);
    udp.proto = 17;
    let three = |keys: &[VipKey]| -> Vec<DesiredVip> {
        keys.iter()
            .map(|&key| DesiredVip {
                key,
                group: 0,
                selection: Selection::default(),
                timeouts: FlowTimeouts::default(),
                backends: vec![backend(11, 1)],
            })
            .collect()
    };
    let (ops, applied) = Reconciler::default()
        .plan(&three(&[vip(100, 6380), vip(100, 6379), udp]))
        .unwrap();
    let info_of = |r: &Reconciler, key: &VipKey| VipInfo {
        vip_id: r.vip_id(key).unwrap(),
        ..VipInfo::default()
    };
    let set = |ops: &[MapOp]| -> Vec<(FragmentVipKey, Option<VipInfo>)> {
        ops.iter()
            .filter_map(|op| match op {
                MapOp::SetFragmentVip { key, info } => Some((*key, *info)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        set(&ops),
        [
            (
                fragment_key(100, 6),
                Some(info_of(&applied, &vip(100, 6379)))
            ),
            (fragment_key(100, 17), Some(info_of(&applied, &udp))),
        ]
    );
    assert_eq!(
        Reconciler::from_maps(&contents_of(&ops))
            .plan(&three(&[vip(100, 6380), vip(100, 6379), udp]))
            .unwrap()
            .0,
        [],
        "recovered from the maps, nothing to redo"
    );
    let (ops, next) = applied.plan(&three(&[vip(100, 6380), udp])).unwrap();
    assert_eq!(
        set(&ops),
        [
            (fragment_key(100, 6), None),
            (fragment_key(100, 6), Some(info_of(&next, &vip(100, 6380)))),
        ]
    );
    let unpublished = position(&ops, |op| {
        matches!(op, MapOp::SetFragmentVip { info: None, .. })
    });
    let retired = position(&ops, |op| matches!(op, MapOp::RetireBackend { .. }));
    assert!(unpublished < retired, "{ops:?}");
}

/// Maglev's promise (maglev.rs): "removing a backend only frees its own slots". Each
/// backend's permutation comes from `maglev_key`: IPv6 addresses whose halves a fold would
/// confuse (`2001:db8::a:b:0:0` and `2001:db8:a:b::`) must still walk their own
/// permutations, so when one goes, the other's flows stay.
#[test]
fn removing_an_ipv6_backend_moves_only_its_own_slots() {
    let addr = |text: &str| ip_words(text.parse::<IpAddr>().unwrap());
    let (a, b) = (addr("2001:db8::a:b:0:0"), addr("2001:db8:a:b::"));
    let (c, d) = (addr("2001:db8::c"), addr("2001:db8::d"));
    let before = ring_for(
        lb_common::SCHED_MAGLEV,
        [(1, a, 1), (2, b, 1), (3, c, 1), (4, d, 1)].into_iter(),
    );
    let after = ring_for(
        lb_common::SCHED_MAGLEV,
        [(2, b, 1), (3, c, 1), (4, d, 1)].into_iter(),
    );
    let survivors_moved = before
        .iter()
        .zip(&after)
        .filter(|&(&was, &now)| was != 1 && was != now)
        .count();
    assert!(
        survivors_moved <= before.len() / 50,
        "removing 2001:db8::a:b:0:0 moved {survivors_moved} of {} slots of the backends that stay \
         (maglev keys {:#x} and {:#x})",
        before.len(),
        maglev_key(ip_addr(&a)),
        maglev_key(ip_addr(&b)),
    );
}

/// The MAC prefilter counts the backend MACs of every slot, follows removals, and comes
/// after the BACKEND_MACS entries it gates.
#[test]
fn the_mac_prefilter_counts_backend_macs_and_follows_them() {
    let two = desired(vec![backend(11, 1), backend(12, 1)]);
    let (ops, planner) = Reconciler::default().plan(&two).unwrap();
    let filter: BTreeMap<u32, u32> = ops
        .iter()
        .filter_map(|op| match op {
            MapOp::SetMacFilter { slot, macs } => Some((*slot, *macs)),
            _ => None,
        })
        .collect();
    let mut want: BTreeMap<u32, u32> = BTreeMap::new();
    for backend in &two[0].backends {
        *want
            .entry(mac_filter_slot(mac_number(&backend.mac)))
            .or_default() += 1;
    }
    assert_eq!(filter, want);
    let last_mac = ops
        .iter()
        .rposition(|op| matches!(op, MapOp::SetBackendMac { .. }))
        .unwrap();
    let first_filter = ops
        .iter()
        .position(|op| matches!(op, MapOp::SetMacFilter { .. }))
        .unwrap();
    assert!(last_mac < first_filter, "{ops:?}");

    let (ops, _) = planner.plan(&desired(vec![backend(11, 1)])).unwrap();
    let gone = mac_filter_slot(mac_number(&two[0].backends[1].mac));
    let kept = mac_filter_slot(mac_number(&two[0].backends[0].mac));
    let expected = u32::from(gone == kept);
    assert!(
        ops.contains(&MapOp::SetMacFilter {
            slot: gone,
            macs: expected
        }),
        "{ops:?}"
    );
}
