use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    time::SystemTime,
};

use super::*;
use crate::health::Replication;
use crate::{
    config::Config,
    daemon::{Resolved, resolve_with},
};

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 11));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 12));
const C: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 13));
const SORRY: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 99));

fn config(vip_extra: &str, check_extra: &str) -> Config {
    let text = format!(
        "[director]\ninterfaces = [\"eth0\"]\n\n[[vip]]\naddress = \"198.18.0.100\"\nport = 6379\n{vip_extra}\n\
         [vip.check]\nfall = 2\nrise = 2\n{check_extra}\n\
         [[vip.backend]]\naddress = \"198.18.0.11\"\nweight = 3\n\
         [[vip.backend]]\naddress = \"198.18.0.12\"\n\
         [[vip.backend]]\naddress = \"198.18.0.13\"\n"
    );
    Config::parse(Path::new("t.toml"), &text).expect("valid test config")
}

fn resolved(config: &Config) -> Resolved {
    let macs: BTreeMap<IpAddr, [u8; 6]> = [A, B, C, SORRY]
        .into_iter()
        .map(|a| {
            (
                a,
                [2, 0, 0, 0, 0, lb_common::ip_words(a)[3].to_ne_bytes()[3]],
            )
        })
        .collect();
    resolve_with(config, &macs).unwrap()
}

struct World {
    config: Config,
    resolved: Resolved,
    board: Board,
}

impl World {
    fn new(config: Config) -> World {
        let mut board = Board::default();
        board.sync(&config, SystemTime::now());
        World {
            resolved: resolved(&config),
            config,
            board,
        }
    }

    fn key(&self, addr: IpAddr) -> BackendKey {
        (self.config.vips[0].key(), addr)
    }

    fn report(&mut self, addr: IpAddr, outcome: Outcome) -> Recorded {
        let key = self.key(addr);
        let lag = self.config.vips[0].max_lag;
        let checker = self.board.get(&key).expect("checked backend").checker;
        self.board
            .record(key, checker, outcome, lag, SystemTime::now())
    }

    /// Reports each of `addrs` refusing connections (checked, down).
    fn refused(&mut self, addrs: &[IpAddr]) {
        for &addr in addrs {
            self.report(addr, Outcome::down("connect: refused"));
        }
    }

    /// (address, weight) of every backend in the effective state.
    fn serving(&mut self) -> (Vec<(IpAddr, u32)>, Vec<Event>) {
        let (vips, events) = self.board.effective(&self.config, &self.resolved);
        (
            vips[0]
                .backends
                .iter()
                .map(|b| (b.addr, b.weight))
                .collect(),
            events,
        )
    }
}

fn role(replication: Replication) -> Outcome {
    Outcome {
        replication: Some(replication),
        ..Outcome::up("PONG")
    }
}

fn replica() -> Replication {
    Replication::Replica {
        link_up: true,
        syncing: false,
        last_io_secs: Some(1),
    }
}

#[test]
fn no_backend_serves_before_its_first_successful_check() {
    let mut w = World::new(config("", ""));
    assert_eq!(w.serving().0, []);
    assert_eq!(w.report(A, Outcome::up("PONG")).went, Some(true));
    w.report(B, Outcome::down("connect: refused"));
    assert_eq!(w.serving().0, [(A, 3)]);
}

#[test]
fn initially_up_backends_serve_at_once() {
    let mut w = World::new(config("", "initial = \"up\""));
    assert_eq!(w.serving().0, [(A, 3), (B, 1), (C, 1)]);
}

#[test]
fn a_failing_backend_is_removed_after_fall_and_drained_with_on_down_drain() {
    for (on_down, expected) in [
        ("remove", vec![(B, 1), (C, 1)]),
        ("drain", vec![(A, 0), (B, 1), (C, 1)]),
    ] {
        let mut w = World::new(config(&format!("on_down = \"{on_down}\""), ""));
        for addr in [A, B, C] {
            w.report(addr, Outcome::up("PONG"));
        }
        let first = w.report(A, Outcome::down("timed out after 0.1s"));
        assert_eq!(first, Recorded::default(), "one failure is not a fall");
        assert_eq!(w.serving().0.len(), 3);
        let second = w.report(A, Outcome::down("timed out after 0.1s"));
        assert_eq!(
            second,
            Recorded {
                went: Some(false),
                replan: true
            }
        );
        assert_eq!(w.serving().0, expected, "on_down = {on_down}");
    }
}

#[test]
fn a_script_weight_replaces_the_configured_weight() {
    let mut w = World::new(config(
        "",
        "type = \"script\"\nscript = [\"/bin/true\"]\ndynamic_weight = true",
    ));
    w.report(
        A,
        Outcome {
            weight: Some(7),
            ..Outcome::up("exit 9")
        },
    );
    w.report(B, Outcome::up("exit 0"));
    assert_eq!(w.serving().0, [(A, 7), (B, 1)]);
    let same = w.report(
        A,
        Outcome {
            weight: Some(7),
            ..Outcome::up("exit 9")
        },
    );
    assert!(!same.replan, "the same weight again changes nothing");
    let changed = w.report(
        A,
        Outcome {
            weight: Some(0),
            ..Outcome::up("exit 2")
        },
    );
    assert!(changed.replan);
    assert_eq!(w.serving().0, [(A, 0), (B, 1)]);
}

#[test]
fn a_write_vip_follows_the_only_master() {
    let mut w = World::new(config("role = \"master\"", ""));
    w.report(A, role(Replication::Master));
    w.report(B, role(replica()));
    w.report(C, role(replica()));
    let (serving, events) = w.serving();
    assert_eq!(serving, [(A, 3)]);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::MasterChosen { master, .. } if *master == A))
    );
    // Failover: A demoted, B promoted.
    w.report(A, role(replica()));
    assert_eq!(w.serving().0, []);
    assert!(w.report(B, role(Replication::Master)).replan);
    assert_eq!(w.serving().0, [(B, 1)]);
}

#[test]
fn a_write_vip_never_sends_to_two_masters() {
    let mut w = World::new(config("role = \"master\"", ""));
    w.refused(&[A, C]);
    w.report(B, role(Replication::Master));
    assert_eq!(w.serving().0, [(B, 1)]);
    // The old master comes back (rise = 2) still believing it is one: B stays, A gets
    // nothing.
    w.report(A, role(Replication::Master));
    w.report(A, role(Replication::Master));
    let (serving, events) = w.serving();
    assert_eq!(serving, [(B, 1)]);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::SeveralMasters { kept: Some(kept), masters, .. } if *kept == B && masters.len() == 2
    )));
    // B dies while A still claims master... and C too: nobody is trusted.
    w.report(C, role(Replication::Master));
    w.report(C, role(Replication::Master));
    w.report(B, Outcome::down("connect: refused"));
    w.report(B, Outcome::down("connect: refused"));
    let (serving, events) = w.serving();
    assert_eq!(serving, [], "two unproven masters: send to none");
    assert!(events.iter().any(|e| e.is_error()), "{events:?}");
    // C demoted: A is the only master left.
    w.report(C, role(replica()));
    assert_eq!(w.serving().0, [(A, 3)]);
}

#[test]
fn a_read_vip_takes_synced_replicas_within_the_lag() {
    let mut w = World::new(config("role = \"replica\"\nmax_lag_secs = 5", ""));
    w.report(A, role(Replication::Master));
    w.report(B, role(replica()));
    w.report(
        C,
        role(Replication::Replica {
            link_up: true,
            syncing: true,
            last_io_secs: Some(0),
        }),
    );
    assert_eq!(w.serving().0, [(B, 1)]);
    w.report(
        B,
        role(Replication::Replica {
            link_up: true,
            syncing: false,
            last_io_secs: Some(9),
        }),
    );
    assert_eq!(w.serving().0, [], "lagging 9 s > 5 s");
}

#[test]
fn a_reload_keeps_unchanged_backends_state_and_restarts_changed_checks() {
    let mut w = World::new(config("", ""));
    w.report(A, Outcome::up("PONG"));
    w.report(B, Outcome::up("PONG"));
    // Same check, one backend gone: the others keep their state, nothing restarts.
    let smaller = Config {
        vips: vec![VipConfig {
            backends: w.config.vips[0].backends[..2].to_vec(),
            ..w.config.vips[0].clone()
        }],
        ..w.config.clone()
    };
    let changes = w.board.sync(&smaller, SystemTime::now());
    assert_eq!(
        changes,
        Changes {
            stop: vec![w.key(C)],
            ..Changes::default()
        }
    );
    assert!(w.board.get(&w.key(A)).unwrap().tracker.is_up());
    // A changed check restarts every checker of the VIP, from the initial state.
    let slower = config("", "interval = 5");
    let changes = w.board.sync(&slower, SystemTime::now());
    assert_eq!(changes.stop, [w.key(A), w.key(B)]);
    assert_eq!(changes.start.len(), 3);
    assert!(!w.board.get(&w.key(A)).unwrap().tracker.is_up());
}

#[test]
fn a_vip_without_a_check_is_untouched() {
    let text = "[director]\ninterfaces = [\"eth0\"]\n[[vip]]\naddress = \"198.18.0.100\"\nport = 6379\n\
                [[vip.backend]]\naddress = \"198.18.0.11\"\n";
    let config = Config::parse(Path::new("t.toml"), text).unwrap();
    let mut w = World::new(config);
    assert_eq!(w.serving().0, [(A, 1)]);
    assert!(w.board.iter().next().is_none());
}

const SENTINEL: &str = "role = \"master\"\n[vip.sentinel]\naddresses = [\"198.18.0.11:26379\"]\nmaster_name = \"mymaster\"";

#[test]
fn sentinels_answer_wins_over_role_polling() {
    let mut w = World::new(config(SENTINEL, ""));
    let vip = w.config.vips[0].key();
    let watcher = w.board.sentinel_watcher(&vip).unwrap();
    w.refused(&[C]);
    w.report(A, role(Replication::Master));
    w.report(B, role(replica()));
    // No answer from Sentinel yet: role polling decides.
    assert_eq!(w.serving().0, [(A, 3)]);
    // Sentinel says B (its failover promoted B; A has not noticed yet).
    assert!(
        w.board
            .record_sentinel(vip, watcher, Some(SocketAddr::new(B, 6379)))
    );
    assert!(
        !w.board
            .record_sentinel(vip, watcher, Some(SocketAddr::new(B, 6379))),
        "the same answer changes nothing"
    );
    let (serving, events) = w.serving();
    assert_eq!(serving, [(B, 1)]);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::MasterChosen { master, .. } if *master == B))
    );
    // Sentinel's master down: none, and an error says why.
    w.report(B, Outcome::down("connect: refused"));
    w.report(B, Outcome::down("connect: refused"));
    w.report(B, Outcome::down("connect: refused"));
    let (serving, events) = w.serving();
    assert_eq!(serving, []);
    assert!(
        events
            .iter()
            .any(|e| e.is_error() && e.to_string().contains("fails its check")),
        "{events:?}"
    );
    // A master Sentinel knows that is no backend of ours: none.
    w.board.record_sentinel(
        vip,
        watcher,
        Some(SocketAddr::new(
            IpAddr::from(Ipv4Addr::new(198, 18, 9, 9)),
            6379,
        )),
    );
    let (serving, events) = w.serving();
    assert_eq!(serving, []);
    assert!(
        events
            .iter()
            .any(|e| e.to_string().contains("not a backend")),
        "{events:?}"
    );
    // Sentinel unreachable: back to role polling.
    w.board.record_sentinel(vip, watcher, None);
    assert_eq!(w.serving().0, [(A, 3)]);
}

#[test]
fn a_reload_starts_and_stops_sentinel_watchers() {
    let mut w = World::new(config("role = \"master\"", ""));
    let with = config(SENTINEL, "");
    let changes = w.board.sync(&with, SystemTime::now());
    assert_eq!(changes.start_sentinels.len(), 1);
    assert!(
        changes.start.is_empty() && changes.stop.is_empty(),
        "{changes:?}"
    );
    assert!(
        w.board
            .sync(&with, SystemTime::now())
            .start_sentinels
            .is_empty()
    );
    let without = config("role = \"master\"", "");
    let changes = w.board.sync(&without, SystemTime::now());
    assert_eq!(changes.stop_sentinels, [with.vips[0].key()]);
}

#[test]
fn the_sorry_server_stands_in_only_while_no_backend_is_up() {
    let mut w = World::new(config("sorry_server = \"198.18.0.99\"", ""));
    assert_eq!(w.serving().0, [(SORRY, 1)], "nothing checked yet");
    w.report(B, Outcome::up("PONG"));
    assert_eq!(w.serving().0, [(B, 1)]);
    for _ in 0..3 {
        w.report(B, Outcome::down("timed out"));
    }
    assert_eq!(w.serving().0, [(SORRY, 1)]);
    // Drained backends take no new flows either: the sorry server takes them.
    let mut w = World::new(config(
        "sorry_server = \"198.18.0.99\"\non_down = \"drain\"",
        "",
    ));
    assert_eq!(w.serving().0, [(A, 0), (B, 0), (C, 0), (SORRY, 1)]);
}

/// `fall` is documented as "consecutive failures that take an up backend down". On a role
/// VIP one failed check (no INFO replication in a failed outcome) makes an *up* backend
/// "role unknown" and takes it out at once: fall is silently 1.
#[test]
fn a_role_vip_honours_fall() {
    for (vip_role, fit) in [
        ("master", role(Replication::Master)),
        ("replica", role(replica())),
    ] {
        let mut w = World::new(config(&format!("role = \"{vip_role}\""), ""));
        w.refused(&[B, C]);
        w.report(A, fit.clone());
        assert_eq!(w.serving().0, [(A, 3)], "role {vip_role}");
        let one = w.report(A, Outcome::down("timed out after 1s"));
        assert_eq!(
            one.went, None,
            "one failure is not a fall (role {vip_role})"
        );
        assert_eq!(
            w.serving().0,
            [(A, 3)],
            "role {vip_role}: fall = 2, yet one timed-out check took the backend out ({:?})",
            w.board.get(&w.key(A)).unwrap().unfit(None)
        );
    }
}

/// Consequence on the one-master rule: while a stale old master B also claims master (kept
/// on standby, A in service), one slow check of A hands the write VIP to B for good.
#[test]
fn one_blip_of_the_master_in_service_does_not_move_the_write_vip() {
    let mut w = World::new(config("role = \"master\"", ""));
    w.refused(&[B, C]);
    w.report(A, role(Replication::Master));
    w.serving();
    w.report(B, role(Replication::Master));
    assert_eq!(w.serving().0, [(A, 3)], "A kept, B on standby");
    w.report(A, Outcome::down("timed out after 1s"));
    w.serving(); // the daemon re-plans on every decision change
    w.report(A, role(Replication::Master)); // A answers again at the next check
    let (serving, events) = w.serving();
    assert_eq!(
        serving,
        [(A, 3)],
        "one timeout (fall = 2) moved the write VIP to the other claimant: {events:?}"
    );
}

/// At start (daemon restart, or a reload that restarts the VIP's checks) nobody is in
/// service. Docs: "if none of the claimants was in service (at start, ...), it sends to none".
/// But the first claimant *checked* (order = the per-address offset hash) wins outright and
/// is then "the master already in service".
#[test]
fn at_start_two_claimants_get_no_flows() {
    let mut w = World::new(config("role = \"master\"", ""));
    w.report(A, role(Replication::Master));
    w.serving(); // first report: the daemon plans at once
    w.report(B, role(Replication::Master));
    w.report(C, role(replica()));
    let (serving, events) = w.serving();
    assert_eq!(
        serving,
        [],
        "two claimants, neither in service before start, yet the first checked got the write VIP: {events:?}"
    );
}

/// dynamic_weight: a backend whose script asked for weight 0 (exit 2, drain) and then
/// starts failing (not yet `fall` times) is put back at its *configured* weight: a failing
/// backend gets more traffic than a healthy one.
#[test]
fn a_failing_check_does_not_restore_the_configured_weight() {
    let mut w = World::new(config(
        "",
        "type = \"script\"\nscript = [\"/bin/true\"]\ndynamic_weight = true",
    ));
    w.report(
        A,
        Outcome {
            weight: Some(0),
            ..Outcome::up("exit 2: weight 0")
        },
    );
    assert_eq!(w.serving().0, [(A, 0)]);
    let failed = w.report(A, Outcome::down("timed out after 1s"));
    assert_eq!(failed.went, None, "still up: one failure of fall = 2");
    assert_eq!(
        w.serving().0,
        [(A, 0)],
        "a drained (weight 0) backend that starts failing got its configured weight 3 back"
    );
}

#[test]
fn a_report_from_a_replaced_checker_is_ignored() {
    let mut w = World::new(config("", ""));
    let old = w.board.get(&w.key(A)).unwrap().checker;
    let changed = config("", "interval = 5");
    w.board.sync(&changed, SystemTime::now());
    w.config = changed;
    let new = w.board.get(&w.key(A)).unwrap().checker;
    assert_ne!(old, new);
    let stale = w.board.record(
        w.key(A),
        old,
        Outcome::up("exit 0"),
        None,
        SystemTime::now(),
    );
    assert_eq!(stale, Recorded::default());
    assert!(!w.board.get(&w.key(A)).unwrap().tracker.checked());
    assert_eq!(w.serving().0, []);
}

fn loaded(clients: u64, used_memory: u64) -> Outcome {
    Outcome {
        load: Some(crate::health::load::Load {
            connected_clients: clients,
            ops_per_sec: 0,
            used_memory,
            maxmemory: 1000,
        }),
        ..Outcome::up("PONG")
    }
}

#[test]
fn load_aware_weights_favour_the_least_loaded_backend() {
    let mut w = World::new(config("", "load_weights = \"connected_clients\""));
    w.report(A, loaded(1000, 0));
    w.report(B, loaded(1000, 0));
    let last = w.report(C, loaded(0, 0));
    assert!(last.replan, "C's arrival changes the others' factors");
    assert_eq!(w.serving().0, [(A, 3 * 10), (B, 10), (C, 100)]);
    // Loads even out: back to the configured ratio (in percent units).
    w.report(C, loaded(990, 0));
    assert_eq!(w.serving().0, [(A, 300), (B, 100), (C, 100)]);
}

#[test]
fn memory_over_its_share_drains_until_it_falls_back() {
    let mut w = World::new(config("", "max_memory_share = 0.9"));
    w.report(A, loaded(1, 100));
    w.report(B, loaded(1, 100));
    assert_eq!(w.serving().0, [(A, 3), (B, 1)]);
    assert!(w.report(A, loaded(1, 950)).replan);
    assert_eq!(
        w.serving().0,
        [(A, 0), (B, 1)],
        "no new flows, tracked ones stay"
    );
    assert!(!w.report(A, loaded(1, 870)).replan, "within the hysteresis");
    assert!(w.report(A, loaded(1, 800)).replan);
    assert_eq!(w.serving().0, [(A, 3), (B, 1)]);
}

/// the sorry server takes the VIP's flows whenever every backend's weight is 0
/// (effective), but `lbd status` calls it "idle while a backend is up" as soon as one
/// backend's *state* is `up`, weight 0 or not. A script asking for weight 0 (exit 2), or a
/// backend configured with weight 0, leaves the two disagreeing: the maps send every new
/// flow to the sorry server while status says it is idle.
#[test]
fn status_says_the_sorry_server_stands_in_when_it_does() {
    let mut w = World::new(config(
        "sorry_server = \"198.18.0.99\"",
        "type = \"script\"\nscript = [\"/bin/true\"]\ndynamic_weight = true",
    ));
    w.refused(&[B, C]);
    w.report(
        A,
        Outcome {
            weight: Some(0),
            ..Outcome::up("exit 2: weight 0")
        },
    );
    let serving = w.serving().0;
    assert_eq!(
        serving,
        [(A, 0), (SORRY, 1)],
        "the maps: the sorry server stands in"
    );
    let lines = crate::health::report::lines(&w.config, &w.board);
    let sorry = lines.iter().find(|l| l.backend == SORRY).unwrap();
    let a = lines.iter().find(|l| l.backend == A).unwrap();
    assert_eq!(
        sorry.reason, "sorry server: standing in, no backend takes new flows",
        "status disagrees with the maps {serving:?}; A's row: state {:?}, reason {:?}",
        a.state, a.reason
    );
}

/// Sentinel's master takes the write VIP's flows whatever its own INFO says (only
/// its up/down state counts), but `lbd status` derives the row from role polling: the
/// master in service is shown as `standby` (role slave) while the maps send to it. Right
/// after every `+switch-master` (until the next check of the promoted replica), and for
/// good if the Sentinel's master keeps reporting role:slave.
#[test]
fn status_shows_the_sentinel_master_in_service_as_up() {
    let mut w = World::new(config(SENTINEL, ""));
    let vip = w.config.vips[0].key();
    let watcher = w.board.sentinel_watcher(&vip).unwrap();
    w.refused(&[C]);
    w.report(A, role(Replication::Master));
    w.report(B, role(replica()));
    w.serving();
    w.board
        .record_sentinel(vip, watcher, Some(SocketAddr::new(B, 6379)));
    let serving = w.serving().0;
    assert_eq!(serving, [(B, 1)], "the maps send the write VIP to B");
    let lines = crate::health::report::lines(&w.config, &w.board);
    let b = lines.iter().find(|l| l.backend == B).unwrap();
    assert_eq!(
        b.state, "up",
        "B takes every new flow but status says {:?} ({:?})",
        b.state, b.reason
    );
}

#[test]
fn sentinel_reports_of_a_replaced_watcher_and_other_ports_do_not_count() {
    let mut w = World::new(config(SENTINEL, ""));
    let vip = w.config.vips[0].key();
    let old = w.board.sentinel_watcher(&vip).unwrap();
    w.refused(&[C]);
    w.report(A, role(Replication::Master));
    w.report(B, role(replica()));
    // A reload that changes the Sentinel config starts a new watcher.
    let changed = config(&SENTINEL.replace("mymaster", "other"), "");
    w.board.sync(&changed, SystemTime::now());
    w.config = changed;
    let new = w.board.sentinel_watcher(&vip).unwrap();
    assert_ne!(old, new);
    assert!(
        !w.board
            .record_sentinel(vip, old, Some(SocketAddr::new(B, 6379)))
    );
    assert_eq!(
        w.serving().0,
        [(A, 3)],
        "the old watcher's answer is ignored"
    );
    // Sentinel's master on another port of a backend's host is no backend of this VIP.
    assert!(
        w.board
            .record_sentinel(vip, new, Some(SocketAddr::new(B, 6380)))
    );
    let (serving, events) = w.serving();
    assert_eq!(serving, []);
    assert!(
        events
            .iter()
            .any(|e| e.to_string().contains("198.18.0.12:6380")),
        "{events:?}"
    );
}

/// `up` means "taking new flows" (HealthLine docs). Sentinel's master over its
/// max_memory_share is drained in the maps (weight 0, the sorry server stands in), but the
/// new "Sentinel's master" branch of report::lines comes before the memory_full branch:
/// status calls it `up` while no new flow reaches it, and in the same listing says the
/// sorry server stands in because no backend takes new flows.
#[test]
fn a_drained_sentinel_master_is_not_shown_up() {
    let mut w = World::new(config(
        &format!("sorry_server = \"198.18.0.99\"\n{SENTINEL}"),
        "max_memory_share = 0.9",
    ));
    let vip = w.config.vips[0].key();
    let watcher = w.board.sentinel_watcher(&vip).unwrap();
    w.refused(&[A, C]);
    let full = Outcome {
        replication: Some(Replication::Master),
        load: Some(crate::health::load::Load {
            connected_clients: 1,
            ops_per_sec: 0,
            used_memory: 950,
            maxmemory: 1000,
        }),
        ..Outcome::up("PONG")
    };
    w.report(B, full);
    w.board
        .record_sentinel(vip, watcher, Some(SocketAddr::new(B, 6379)));
    let serving = w.serving().0;
    assert_eq!(
        serving,
        [(B, 0), (SORRY, 1)],
        "the maps: B drained, sorry stands in"
    );
    let lines = crate::health::report::lines(&w.config, &w.board);
    let b = lines.iter().find(|l| l.backend == B).unwrap();
    let sorry = lines.iter().find(|l| l.backend == SORRY).unwrap();
    assert_ne!(
        b.state, "up",
        "B takes no new flow (maps {serving:?}, sorry: {:?}) but status says {:?} ({:?})",
        sorry.reason, b.state, b.reason
    );
}
