use super::*;
use lb_common::hash::vip_filter_slot;

fn vip(last: u8, port: u16) -> VipKey {
    VipKey {
        addr: u32::from_ne_bytes([198, 18, 0, last]),
        port: port.to_be(),
        proto: 6,
        _pad: 0,
    }
}

fn backend(last: u8, weight: u32) -> DesiredBackend {
    DesiredBackend {
        addr: Ipv4Addr::new(198, 18, 0, last),
        weight,
        mac: [2, 0, 0, 0, 0, last],
    }
}

fn desired(backends: Vec<DesiredBackend>) -> Vec<DesiredVip> {
    vec![DesiredVip {
        key: vip(100, 6379),
        backends,
    }]
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
        next.backend_id(&vip(100, 6379), Ipv4Addr::new(198, 18, 0, 11))
            .unwrap(),
        next.backend_id(&vip(100, 6379), Ipv4Addr::new(198, 18, 0, 12))
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
        .backend_id(&vip(100, 6379), Ipv4Addr::new(198, 18, 0, 13))
        .unwrap();
    let (ops, next) = applied
        .plan(&desired(vec![backend(11, 1), backend(12, 1)]))
        .unwrap();
    let ring = position(&ops, |op| matches!(op, MapOp::WriteRing { .. }));
    let retire = position(&ops, |op| {
        *op == MapOp::RetireBackend {
            backend_id: removed_id,
        }
    });
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
        .backend_id(&vip(100, 6379), Ipv4Addr::new(198, 18, 0, 12))
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
        .backend_id(&vip(100, 6379), Ipv4Addr::new(198, 18, 0, 11))
        .unwrap();
    let mut moved = backend(11, 1);
    moved.mac = [2, 9, 9, 9, 9, 9];
    let (ops, _) = applied.plan(&desired(vec![moved])).unwrap();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert!(
        matches!(&ops[0], MapOp::SetBackend { backend_id, backend } if *backend_id == id && backend.mac == [2, 9, 9, 9, 9, 9])
    );
}

#[test]
fn removed_vip_is_unpublished_then_its_backends_retired() {
    let (_, applied) = Reconciler::default()
        .plan(&desired(vec![backend(11, 1)]))
        .unwrap();
    let id = applied
        .backend_id(&vip(100, 6379), Ipv4Addr::new(198, 18, 0, 11))
        .unwrap();
    let (ops, next) = applied.plan(&[]).unwrap();
    let key = vip(100, 6379);
    let slot = vip_filter_slot(key.addr, key.port, key.proto);
    assert_eq!(
        ops,
        [
            MapOp::RemoveVip { key },
            MapOp::SetVipFilter { slot, vips: 0 },
            MapOp::RetireBackend { backend_id: id }
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
        .backend_id(&vip(100, 6379), Ipv4Addr::new(198, 18, 0, 11))
        .unwrap();
    let (_, applied) = applied.plan(&desired(vec![backend(12, 1)])).unwrap();
    let second = applied
        .backend_id(&vip(100, 6379), Ipv4Addr::new(198, 18, 0, 12))
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
            backends: vec![backend(11, 1)],
        },
        DesiredVip {
            key: vip(100, 6380),
            backends: vec![backend(11, 1)],
        },
    ];
    let (_, applied) = Reconciler::default().plan(&want).unwrap();
    let a = applied
        .backend_id(&vip(100, 6379), Ipv4Addr::new(198, 18, 0, 11))
        .unwrap();
    let b = applied
        .backend_id(&vip(100, 6380), Ipv4Addr::new(198, 18, 0, 11))
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
                    r.backend_id(&vip(100, 6379), Ipv4Addr::new(198, 18, 0, l))
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
            backends: vec![backend(11, 1)],
        },
        DesiredVip {
            key: vip(100, 6380),
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
        .map(|&p| vip_filter_slot(vip(100, p).addr, vip(100, p).port, 6))
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
