//! Regression tests for mis-forwarding across map updates: reused ids, racing CPUs and
//! applies that fail midway. Each runs the real `lb` object through BPF_PROG_TEST_RUN,
//! provisioned through the daemon's own Applier. Needs root.

use std::{net::Ipv4Addr, path::Path};

use lb_common::{FLOW_CACHE_SIZE, MAP_FLOW_EPOCHS, PROTO_TCP, hash::flow_hash};
use lb_daemon::{
    config::Config,
    daemon::desired_state,
    dataplane::{contents, snapshot::MapSource},
    reconcile::{MapOp, Reconciler},
};
use lb_tests::{fixture::*, frame::*};

/// MAC of a test backend: derived from its address, so every backend's is distinct.
fn mac_of(addr: Ipv4Addr) -> [u8; 6] {
    let o = addr.octets();
    [0x02, 0xbb, 0, 0, o[2], o[3]]
}

/// A config of TCP VIPs on [`VIP`] (by port), each with its backends.
fn vips_config(vips: &[(u16, Vec<Ipv4Addr>)]) -> Config {
    let mut text = String::from("instance = \"fixture\"\n[director]\ninterfaces = [\"lo\"]\n");
    for (port, backends) in vips {
        text.push_str(&format!("[[vip]]\naddress = \"{VIP}\"\nport = {port}\n"));
        for addr in backends {
            let mac = mac_of(*addr).map(|b| format!("{b:02x}")).join(":");
            text.push_str(&format!(
                "[[vip.backend]]\naddress = \"{addr}\"\nmac = \"{mac}\"\n"
            ));
        }
    }
    Config::parse(Path::new("fixture.toml"), &text).expect("test config")
}

fn tcp_to(src_port: u16, vip_port: u16, flags: u8) -> Vec<u8> {
    Ipv4Frame::tcp(
        CLIENT_MAC,
        DIRECTOR_MAC,
        (CLIENT, src_port),
        (VIP, vip_port),
        flags,
    )
    .build()
}

fn vip_key(port: u16) -> lb_common::VipKey {
    lb_common::VipKey::new(VIP.into(), port, PROTO_TCP)
}

/// A live flow to VIP A; A is removed and other VIPs come and go until one of them holds
/// both A's old VIP id and A's old backend id; A is added back. The old connection's next
/// packet must follow A's ring, never the backend that now has its ids.
#[test]
fn a_flow_never_follows_its_reused_vip_and_backend_ids_to_another_backend() {
    if !lb_tests::require_root("id reuse fixture") {
        return;
    }
    let a_backend = Ipv4Addr::new(198, 18, 1, 11);
    let a = (7000, vec![a_backend]);
    let mut dp = Datapath::with_config(&vips_config(std::slice::from_ref(&a)));
    let syn = tcp_to(40000, 7000, TCP_SYN);
    assert_eq!(dp.run(&syn), (XDP_TX, forwarded(&syn, mac_of(a_backend))));
    let old_vip_id = dp.reconciler().vip_id(&vip_key(7000)).unwrap();
    let old_backend_id = dp
        .reconciler()
        .backend_id(&vip_key(7000), a_backend.into())
        .unwrap();

    // Each round replaces the previous VIP by a new one with 64 backends.
    let pool: Vec<Ipv4Addr> = (1..=64).map(|i| Ipv4Addr::new(198, 18, 2, i)).collect();
    let mut holder = None;
    for round in 1..=200u16 {
        let port = 8000 + round;
        dp.apply(&vips_config(&[(port, pool.clone())]))
            .expect("apply");
        let state = dp.reconciler();
        if state.vip_id(&vip_key(port)) != Some(old_vip_id) {
            continue;
        }
        if let Some(&addr) = pool
            .iter()
            .find(|&&addr| state.backend_id(&vip_key(port), addr.into()) == Some(old_backend_id))
        {
            holder = Some((port, addr));
            break;
        }
    }
    let (port, reused_by) = holder.expect("200 rounds reuse both ids");

    // A comes back (new ids); the old connection's ACK arrives.
    dp.apply(&vips_config(&[a, (port, pool)])).expect("apply");
    let ack = tcp_to(40000, 7000, TCP_ACK);
    let (verdict, out) = dp.run(&ack);
    assert_ne!(
        backend_of(&out),
        mac_of(reused_by),
        "the old flow went to {reused_by}, which now has its VIP and backend ids"
    );
    assert_eq!((verdict, out), (XDP_TX, forwarded(&ack, mac_of(a_backend))));
}

/// Two CPUs reschedule flows of one flow-cache slot at the same time: every reschedule
/// must move the slot's epoch (a lost update can move it back to a value a stale cached
/// copy carries). Each run is a SYN+RST, which is a new flow every time (RST closes it, the
/// next SYN reopens it); the backend's MAC is the director's, so the rewritten frame is
/// balanced again by the next repetition.
#[test]
fn concurrent_reschedules_on_two_cpus_never_lose_an_epoch_bump() {
    if !lb_tests::require_root("epoch fixture") {
        return;
    }
    // SAFETY: no preconditions.
    if unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } < 2 {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI machines have 2 CPUs; this one has 1"
        );
        eprintln!("skipped: needs 2 CPUs");
        return;
    }
    let director = DIRECTOR_MAC.map(|b| format!("{b:02x}")).join(":");
    let text = format!(
        "instance = \"fixture\"\n[director]\ninterfaces = [\"lo\"]\n[[vip]]\naddress = \"{VIP}\"\n\
         port = 7100\n[[vip.backend]]\naddress = \"198.18.1.11\"\nmac = \"{director}\"\n"
    );
    let mut dp = Datapath::with_config(&Config::parse(Path::new("f.toml"), &text).unwrap());
    // Two client ports whose flows share a cache slot.
    let slot_of =
        |port: u16| flow_hash(&flow_key(port, 7100, PROTO_TCP)) as u32 & (FLOW_CACHE_SIZE - 1);
    let first = 40000;
    let second = (40001..60000)
        .find(|&p| slot_of(p) == slot_of(first))
        .expect("a port in the same slot");
    let slot = slot_of(first);
    let epoch = |dp: &Datapath| -> u64 {
        let map: aya::maps::Array<_, u64> =
            aya::maps::Array::try_from(dp.dataplane.map(MAP_FLOW_EPOCHS).unwrap()).unwrap();
        map.get(&slot, 0).unwrap()
    };
    let before = epoch(&dp);
    const RUNS: u32 = 200_000;
    let program = dp.dataplane.program();
    let program = &*program;
    let tx = std::thread::scope(|scope| {
        let workers: Vec<_> = [(0usize, first), (1, second)]
            .into_iter()
            .map(|(cpu, port)| {
                scope.spawn(move || {
                    run_on_cpu(cpu);
                    let frame = tcp_to(port, 7100, TCP_SYN | TCP_RST);
                    lb_tests::xdp::test_run(program, &frame, TEST_IFINDEX, RUNS).verdict
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(tx, [XDP_TX, XDP_TX]);
    assert_eq!(
        epoch(&dp) - before,
        2 * RUNS as u64,
        "every reschedule must move the epoch"
    );
}

/// Moves the calling thread to `cpu`: BPF_PROG_TEST_RUN runs the program on the caller's CPU.
fn run_on_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0,
            "pin to CPU {cpu}"
        );
    }
}

/// Map writes the plan from `dp`'s applied state to `config` makes before its ring writes
/// are half done.
fn writes_until_half_the_ring(dp: &Datapath, config: &Config) -> usize {
    let (ops, _) = dp
        .reconciler()
        .plan(&desired_state(config).unwrap())
        .unwrap();
    let mut writes = 0;
    for op in ops {
        match op {
            MapOp::WriteRing { slots, .. } => return writes + slots.len() / 2,
            _ => writes += 1,
        }
    }
    panic!("the plan writes no ring");
}

/// Sends SYNs from `count` client ports to `vip_port`; returns how many went to each MAC
/// (a dropped one counts under the zero MAC) and checks each against the daemon's ring.
fn spread(dp: &mut Datapath, vip_port: u16, count: u16) -> Vec<([u8; 6], u32)> {
    let mut seen: Vec<([u8; 6], u32)> = Vec::new();
    for port in 20000..20000 + count {
        let syn = tcp_to(port, vip_port, TCP_SYN);
        let (verdict, out) = dp.run(&syn);
        let mac = if verdict == XDP_TX {
            backend_of(&out)
        } else {
            [0; 6]
        };
        match seen.iter_mut().find(|(m, _)| *m == mac) {
            Some((_, n)) => *n += 1,
            None => seen.push((mac, 1)),
        }
    }
    seen
}

/// A reload fails after half the ring slots of a new backend were written. Reverting the
/// file must repair the ring (no new flow to the half-added backend), a later VIP must not
/// inherit its id while the ring still points at it, and a failure after a VIP removal must
/// not make every later reload fail.
#[test]
fn an_apply_that_fails_midway_is_repaired_by_the_next_one() {
    if !lb_tests::require_root("failed apply fixture") {
        return;
    }
    let (a, b, c) = (
        Ipv4Addr::new(198, 18, 1, 11),
        Ipv4Addr::new(198, 18, 1, 12),
        Ipv4Addr::new(198, 18, 1, 13),
    );
    let before = vips_config(&[(6379, vec![a, b])]);
    let with_c = vips_config(&[(6379, vec![a, b, c])]);
    let mut dp = Datapath::with_config(&before);

    let budget = writes_until_half_the_ring(&dp, &with_c);
    dp.dataplane.fail_writes_after(Some(budget));
    assert!(dp.apply(&with_c).is_err(), "the injected failure");
    dp.dataplane.fail_writes_after(None);
    assert!(dp.applier.in_doubt());

    // Reverting the file: the ring must be rewritten, not planned as unchanged.
    dp.apply(&before).expect("revert");
    let to_c = spread(&mut dp, 6379, 1000)
        .into_iter()
        .find(|(mac, _)| *mac == mac_of(c))
        .map_or(0, |(_, n)| n);
    assert_eq!(to_c, 0, "new flows still go to the removed backend");
    // The ring in the map, by backend address, is the one a fresh start would write.
    let planned = Reconciler::default()
        .plan(&desired_state(&before).unwrap())
        .unwrap()
        .1;
    let maps = contents::read(&dp.dataplane).expect("read maps");
    let vip_id = dp.reconciler().vip_id(&vip_key(6379)).unwrap();
    let in_map: Vec<u32> = maps.rings[&vip_id]
        .iter()
        .map(|&id| maps.backends[id as usize].addr[3])
        .collect();
    let addr_of = |id: u32| {
        [a, b]
            .into_iter()
            .find(|&addr| planned.backend_id(&vip_key(6379), addr.into()) == Some(id))
            .map_or(0, |addr| u32::from_ne_bytes(addr.octets()))
    };
    let wanted: Vec<u32> = planned
        .ring(&vip_key(6379))
        .unwrap()
        .iter()
        .map(|&id| addr_of(id))
        .collect();
    assert!(
        in_map == wanted,
        "the ring in the map differs from a fresh plan's"
    );

    // A second VIP takes fresh backend ids: the first VIP's flows are all still forwarded.
    let two = vips_config(&[
        (6379, vec![a, b]),
        (7000, vec![Ipv4Addr::new(198, 18, 1, 21)]),
    ]);
    dp.apply(&two).expect("add a VIP");
    let seen = spread(&mut dp, 6379, 1000);
    assert!(
        seen.iter()
            .all(|(mac, _)| *mac == mac_of(a) || *mac == mac_of(b)),
        "new flows of the first VIP dropped or misdirected: {seen:?}"
    );

    // A failure right after unpublishing a VIP: later applies still work.
    dp.dataplane.fail_writes_after(Some(1));
    assert!(dp.apply(&before).is_err(), "the injected failure");
    dp.dataplane.fail_writes_after(None);
    dp.apply(&before)
        .expect("the next apply after a failed VIP removal");
    dp.apply(&two).expect("and the one after");
    let syn = tcp_to(30000, 7000, TCP_SYN);
    assert_eq!(dp.run(&syn).0, XDP_TX, "the VIP is back");
}

// ---------------------------------------------------------------------------------------
// Fault injection at every op boundary (and inside ring writes).

/// The maps, by address: per published VIP its ring (backend address per slot) and its
/// active backends; the prefilter; and active backends no published VIP owns.
#[derive(Debug, PartialEq)]
struct Canon {
    vips: std::collections::BTreeMap<(u32, u16, u8), CanonVip>,
    filter: std::collections::BTreeMap<u32, u32>,
    unowned_active: usize,
    /// Backend MAC -> the VIPs (by key) it serves.
    backend_macs: std::collections::BTreeMap<[u8; 6], std::collections::BTreeSet<(u32, u16, u8)>>,
}

/// A published VIP: backend address per ring slot (0: dropped), and its active backends.
type CanonVip = (Vec<u32>, std::collections::BTreeSet<(u32, [u8; 6])>);

fn canon(dp: &Datapath) -> Canon {
    let maps = contents::read(&dp.dataplane).expect("read maps");
    let mut vips = std::collections::BTreeMap::new();
    let mut owned = std::collections::BTreeSet::new();
    for (key, info) in &maps.vips {
        let ring: Vec<u32> = maps.rings[&info.vip_id]
            .iter()
            .map(|&id| {
                let b = maps.backends[id as usize];
                if id == 0 || b.flags & lb_common::BACKEND_F_ACTIVE == 0 || b.vip_id != info.vip_id
                {
                    0 // dropped by the datapath
                } else {
                    b.addr[3]
                }
            })
            .collect();
        let backends = maps
            .backends
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, b)| b.flags & lb_common::BACKEND_F_ACTIVE != 0 && b.vip_id == info.vip_id)
            .map(|(id, b)| {
                owned.insert(id);
                (b.addr[3], b.mac)
            })
            .collect();
        vips.insert((key.addr[3], key.port, key.proto), (ring, backends));
    }
    let unowned_active = maps
        .backends
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(id, b)| b.flags & lb_common::BACKEND_F_ACTIVE != 0 && !owned.contains(id))
        .count();
    let key_of: std::collections::BTreeMap<u32, (u32, u16, u8)> = maps
        .vips
        .iter()
        .map(|(k, i)| (i.vip_id, (k.addr[3], k.port, k.proto)))
        .collect();
    let backend_macs = maps
        .backend_macs
        .iter()
        .map(|(mac, ids)| {
            let keys = (0..64u32)
                .filter(|id| ids & (1 << id) != 0)
                // An id no published VIP has shows as a key of zeros: still a difference.
                .map(|id| key_of.get(&id).copied().unwrap_or((0, 0, 0)))
                .collect();
            (*mac, keys)
        })
        .collect();
    Canon {
        vips,
        filter: maps.filter,
        unowned_active,
        backend_macs,
    }
}

/// Budgets that stop the plan from `dp`'s state to `config` at every op boundary, and
/// after the first, half and all-but-one slots of every ring write.
fn failure_points(dp: &Datapath, config: &Config) -> Vec<usize> {
    let (ops, _) = dp
        .reconciler()
        .plan(&desired_state(config).unwrap())
        .unwrap();
    let mut points = Vec::new();
    let mut writes = 0;
    for op in ops {
        points.push(writes);
        match op {
            MapOp::WriteRing { slots, .. } => {
                let n = slots.len();
                for k in [1, n / 2, n.saturating_sub(1)] {
                    if k > 0 && k < n {
                        points.push(writes + k);
                    }
                }
                writes += n;
            }
            _ => writes += 1,
        }
    }
    points.dedup();
    points
}

#[test]
fn a_failure_at_any_write_is_repaired_by_the_next_apply() {
    if !lb_tests::require_root("fault loop") {
        return;
    }
    let ip = |c: u8, d: u8| Ipv4Addr::new(198, 18, c, d);
    let scenarios: Vec<(Config, Config)> = vec![
        (
            vips_config(&[(6379, vec![ip(1, 11), ip(1, 12)])]),
            vips_config(&[
                (6379, vec![ip(1, 11), ip(1, 13)]),
                (7000, vec![ip(1, 21), ip(1, 22)]),
            ]),
        ),
        (
            vips_config(&[(6379, vec![ip(1, 11), ip(1, 12)]), (7000, vec![ip(1, 21)])]),
            vips_config(&[(8000, vec![ip(1, 31), ip(1, 11)])]),
        ),
    ];
    let mut failures = Vec::new();
    for (s, (before, after)) in scenarios.iter().enumerate() {
        let probe = Datapath::with_config(before);
        let points = failure_points(&probe, after);
        drop(probe);
        // What a fresh build of each target holds (computed once: loading is the slow part).
        let wanted = [
            canon(&Datapath::with_config(after)),
            canon(&Datapath::with_config(before)),
        ];
        for &budget in &points {
            for (t, target) in [after, before].into_iter().enumerate() {
                let mut dp = Datapath::with_config(before);
                // Some tracked flows to every VIP of `before`.
                for port in 20000..20050u16 {
                    for vip_port in [6379u16, 7000] {
                        dp.run(&tcp_to(port, vip_port, TCP_SYN));
                    }
                }
                dp.dataplane.fail_writes_after(Some(budget));
                let failed = dp.apply(after).is_err();
                dp.dataplane.fail_writes_after(None);
                if !failed {
                    continue;
                }
                if let Err(err) = dp.apply(target) {
                    failures.push(format!(
                        "scenario {s} budget {budget} target {t}: repair failed: {err}"
                    ));
                    continue;
                }
                let (got, want) = (canon(&dp), &wanted[t]);
                if got != *want {
                    failures.push(format!(
                        "scenario {s} budget {budget} target {t}: maps differ from a fresh build \
                         (vips equal: {}, filter {:?} vs {:?}, unowned active {} vs {})",
                        got.vips == want.vips,
                        got.filter,
                        want.filter,
                        got.unowned_active,
                        want.unowned_active
                    ));
                }
                // And the applier's own idea of the state plans nothing more.
                let (ops, _) = dp
                    .reconciler()
                    .plan(&desired_state(target).unwrap())
                    .unwrap();
                if !ops.is_empty() {
                    failures.push(format!(
                        "scenario {s} budget {budget} target {t}: {} ops left",
                        ops.len()
                    ));
                }
            }
        }
        eprintln!("scenario {s}: {} failure points", points.len());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
