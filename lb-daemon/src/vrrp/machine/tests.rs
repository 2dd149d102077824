//! The RFC's behaviour, played out between routers on a simulated segment with a fake clock.

use std::collections::VecDeque;

use super::*;

const SEC: u64 = 1_000_000;

fn settings(priority: u8, last_octet: u8) -> Settings {
    Settings {
        priority,
        interval_cs: 100,
        preempt: true,
        preempt_delay_cs: 0,
        address: Ipv4Addr::new(198, 18, 0, last_octet),
    }
}

/// Routers on one segment: every advert reaches every other running router at once.
struct Segment {
    routers: Vec<Machine>,
    running: Vec<bool>,
    now: u64,
    /// (time, router, action), in order.
    log: Vec<(u64, usize, Action)>,
    /// False: the link between routers is cut (adverts are lost).
    linked: bool,
}

impl Segment {
    fn new(routers: Vec<Settings>) -> Segment {
        let n = routers.len();
        Segment {
            routers: routers.into_iter().map(Machine::new).collect(),
            running: vec![false; n],
            now: 0,
            log: Vec::new(),
            linked: true,
        }
    }

    fn event(&mut self, router: usize, event: Event) {
        let mut queue = VecDeque::from([(router, event)]);
        while let Some((i, event)) = queue.pop_front() {
            for action in self.routers[i].handle(event, self.now) {
                self.log.push((self.now, i, action));
                if let Action::SendAdvert { priority } = action
                    && self.linked
                {
                    for j in 0..self.routers.len() {
                        if j != i && self.running[j] {
                            queue.push_back((
                                j,
                                Event::Advert {
                                    priority,
                                    interval_cs: self.routers[i].settings.interval_cs,
                                    from: self.routers[i].settings.address,
                                },
                            ));
                        }
                    }
                }
            }
        }
    }

    fn start(&mut self, router: usize) {
        self.running[router] = true;
        self.event(router, Event::Startup);
    }

    /// A clean stop (priority-0 advert from a master).
    fn stop(&mut self, router: usize) {
        self.event(router, Event::Shutdown);
        self.running[router] = false;
    }

    /// A crash: it just goes silent.
    fn crash(&mut self, router: usize) {
        self.running[router] = false;
    }

    /// Runs the timers of running routers until `until`.
    fn run_until(&mut self, until: u64) {
        loop {
            let next = (0..self.routers.len())
                .filter(|&i| self.running[i])
                .filter_map(|i| self.routers[i].next_deadline())
                .min();
            match next {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    for i in 0..self.routers.len() {
                        if self.running[i]
                            && self.routers[i]
                                .next_deadline()
                                .is_some_and(|d| d <= self.now)
                        {
                            self.event(i, Event::Tick);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = until;
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.routers.len())
            .filter(|&i| self.running[i] && self.routers[i].state() == State::Master)
            .collect()
    }

    /// When `router` last took over.
    fn took_over_at(&self, router: usize) -> Option<u64> {
        self.log
            .iter()
            .rev()
            .find(|(_, i, a)| *i == router && *a == Action::TakeOver)
            .map(|(t, _, _)| *t)
    }
}

#[test]
fn the_higher_priority_becomes_master_and_the_other_backs_it_up() {
    let mut seg = Segment::new(vec![settings(200, 2), settings(100, 3)]);
    seg.start(0);
    seg.start(1);
    seg.run_until(10 * SEC);
    assert_eq!(seg.masters(), [0]);
    assert_eq!(seg.routers[1].state(), State::Backup);
    // Router 0 waited out a master-down interval first: 3 s + (256-200)/256 s.
    assert_eq!(seg.took_over_at(0), Some(3 * SEC + 56 * SEC / 256));
}

#[test]
fn a_crashed_master_is_replaced_after_three_intervals_and_the_skew() {
    let mut seg = Segment::new(vec![settings(200, 2), settings(100, 3)]);
    seg.start(0);
    seg.start(1);
    seg.run_until(10 * SEC);
    let last_advert = seg
        .log
        .iter()
        .rev()
        .find(|(_, i, a)| *i == 0 && matches!(a, Action::SendAdvert { .. }))
        .map(|(t, _, _)| *t)
        .unwrap();
    seg.crash(0);
    seg.run_until(20 * SEC);
    assert_eq!(seg.masters(), [1]);
    let master_down = 3 * SEC + (256 - 100) * SEC / 256;
    assert_eq!(seg.took_over_at(1), Some(last_advert + master_down));
}

#[test]
fn a_clean_stop_hands_over_after_the_skew_only() {
    let mut seg = Segment::new(vec![settings(200, 2), settings(100, 3)]);
    seg.start(0);
    seg.start(1);
    seg.run_until(10 * SEC);
    seg.stop(0);
    assert!(
        seg.log
            .iter()
            .any(|(t, i, a)| *t == 10 * SEC && *i == 0 && *a == Action::SendAdvert { priority: 0 })
    );
    seg.run_until(20 * SEC);
    assert_eq!(seg.masters(), [1]);
    assert_eq!(
        seg.took_over_at(1),
        Some(10 * SEC + (256 - 100) * SEC / 256)
    );
}

#[test]
fn a_returning_higher_priority_preempts_unless_told_not_to() {
    for preempt in [true, false] {
        let high = Settings {
            preempt,
            ..settings(200, 2)
        };
        let mut seg = Segment::new(vec![high, settings(100, 3)]);
        seg.start(1);
        seg.run_until(10 * SEC);
        assert_eq!(seg.masters(), [1]);
        seg.start(0);
        seg.run_until(30 * SEC);
        let expected = if preempt { vec![0] } else { vec![1] };
        assert_eq!(seg.masters(), expected, "preempt = {preempt}");
    }
}

#[test]
fn preempt_delay_holds_back_the_takeover() {
    let delayed = Settings {
        preempt_delay_cs: 1500,
        ..settings(200, 2)
    };
    let mut seg = Segment::new(vec![delayed, settings(100, 3)]);
    seg.start(1);
    seg.run_until(10 * SEC);
    seg.start(0);
    seg.run_until(20 * SEC);
    assert_eq!(seg.masters(), [1], "within the 15 s preempt_delay");
    seg.run_until(40 * SEC);
    assert_eq!(seg.masters(), [0]);
    assert!(seg.took_over_at(0).unwrap() >= 25 * SEC);
}

#[test]
fn after_a_split_brain_one_master_remains_equal_priorities_by_the_higher_address() {
    let mut seg = Segment::new(vec![settings(100, 2), settings(100, 3)]);
    seg.linked = false;
    seg.start(0);
    seg.start(1);
    seg.run_until(10 * SEC);
    assert_eq!(
        seg.masters(),
        [0, 1],
        "cut off from each other, both take over"
    );
    seg.linked = true;
    let healed = seg.now;
    seg.run_until(12 * SEC);
    assert_eq!(seg.masters(), [1], "the higher address keeps it");
    assert_eq!(seg.routers[0].state(), State::Backup);
    // The winner announces itself again: the clients may have followed the loser's ARP.
    assert!(
        seg.log
            .iter()
            .any(|(t, i, a)| *t >= healed && *i == 1 && *a == Action::Reassert),
        "{:?}",
        seg.log
    );
    assert!(
        seg.log
            .iter()
            .all(|(_, i, a)| *i == 1 || *a != Action::Reassert),
        "only the winner reasserts"
    );
    // The loser said it left, so the winner knows whichever advert arrived first.
    assert!(
        seg.log
            .iter()
            .any(|(t, i, a)| *t >= healed && *i == 0 && *a == Action::SendAdvert { priority: 0 })
    );
}

#[test]
fn the_address_owner_is_master_at_once_and_never_two_masters_stay() {
    let mut seg = Segment::new(vec![settings(255, 2), settings(100, 3)]);
    seg.start(1);
    seg.run_until(10 * SEC);
    assert_eq!(seg.masters(), [1]);
    seg.start(0);
    assert_eq!(seg.took_over_at(0), Some(10 * SEC));
    // Its advert made the other stand down in the same instant.
    assert_eq!(seg.masters(), [0]);
    assert!(
        seg.log
            .iter()
            .any(|(t, i, a)| *t == 10 * SEC && *i == 1 && *a == Action::StandDown)
    );
}

#[test]
fn centisecond_adverts_take_over_in_a_third_of_a_second() {
    let fast = |p, o| Settings {
        interval_cs: 10,
        ..settings(p, o)
    };
    let mut seg = Segment::new(vec![fast(200, 2), fast(100, 3)]);
    seg.start(0);
    seg.start(1);
    seg.run_until(2 * SEC);
    seg.crash(0);
    let crashed = seg.now;
    seg.run_until(4 * SEC);
    let took = seg.took_over_at(1).unwrap() - crashed;
    // 3 x 0.1 s + skew (156/256 x 0.1 s), from the last advert (at most 0.1 s before).
    assert!(took <= 3 * SEC / 10 + 61_000, "{took} us");
}

#[test]
fn a_lowered_priority_lets_a_peer_take_over() {
    // Tracking: the master's pool is empty, its priority drops below the backup's.
    let mut seg = Segment::new(vec![settings(200, 2), settings(150, 3)]);
    seg.start(0);
    seg.start(1);
    seg.run_until(10 * SEC);
    assert_eq!(seg.masters(), [0]);
    seg.routers[0].set_priority(100);
    seg.run_until(20 * SEC);
    assert_eq!(seg.masters(), [1]);
}

#[test]
fn a_faulted_master_hands_over_at_once_and_returns_as_a_backup_that_preempts() {
    let mut seg = Segment::new(vec![settings(150, 2), settings(100, 3)]);
    seg.start(0);
    seg.start(1);
    seg.run_until(5 * SEC);
    assert_eq!(seg.masters(), [0]);
    let fault_at = seg.now;
    seg.event(0, Event::Fault(true));
    assert_eq!(seg.routers[0].state(), State::Fault);
    assert_eq!(
        seg.routers[0].next_deadline(),
        None,
        "a faulted router is silent"
    );
    seg.run_until(fault_at + SEC);
    assert_eq!(seg.masters(), [1]);
    let skew = seg.routers[1].skew_us();
    assert!(
        seg.took_over_at(1).unwrap() <= fault_at + skew,
        "the fault said priority 0: the backup waits its skew only"
    );
    // Adverts mean nothing to a faulted router.
    seg.run_until(8 * SEC);
    assert_eq!(seg.routers[0].state(), State::Fault);
    // Link back: a backup first, then it preempts the lower master.
    let actions = seg.routers[0].handle(Event::Fault(false), seg.now);
    assert_eq!(
        actions,
        [Action::StandDown],
        "forwarding off, VIPs off: a backup"
    );
    assert_eq!(seg.routers[0].state(), State::Backup);
    seg.run_until(12 * SEC);
    assert_eq!(seg.masters(), [0]);
}

#[test]
fn a_backup_in_fault_never_takes_over() {
    let mut seg = Segment::new(vec![settings(150, 2), settings(100, 3)]);
    seg.start(0);
    seg.start(1);
    seg.run_until(5 * SEC);
    seg.event(1, Event::Fault(true));
    seg.crash(0);
    seg.run_until(20 * SEC);
    assert_eq!(seg.masters(), Vec::<usize>::new());
    assert_eq!(seg.routers[1].state(), State::Fault);
}

/// A version 3 advert may carry Max Adver Int 0 (malformed, or a peer's bug). The backup
/// learns it as the master's interval, so its master-down interval becomes 0 (3 x 0 + 0
/// skew) and it takes over at its next tick, although the master is alive and advertising.
/// Every further advert of that master makes it stand down and take over again: it flaps.
#[test]
fn an_advert_with_interval_0_does_not_make_the_backup_take_over_from_a_live_master() {
    let mut backup = Machine::new(settings(100, 3));
    backup.handle(Event::Startup, 0);
    let mut took_over = 0;
    // The master (priority 200) advertises every second, its adverts saying interval 0.
    for second in 1..=5u64 {
        backup.handle(
            Event::Advert {
                priority: 200,
                interval_cs: 0,
                from: Ipv4Addr::new(198, 18, 0, 2),
            },
            second * SEC,
        );
        // A few ticks before the next advert.
        for ms in [1u64, 10, 500] {
            let actions = backup.handle(Event::Tick, second * SEC + ms * 1000);
            took_over += actions.iter().filter(|a| **a == Action::TakeOver).count();
        }
    }
    assert_eq!(
        took_over,
        0,
        "the backup took over {took_over} times from a master that never went silent (state now {:?})",
        backup.state()
    );
}

/// RFC 5798 section 7.1 (and RFC 3768 7.1): the receiver MUST verify "that the local router
/// is not the IPvX Address owner (Priority = 255)", else discard. The owner must not be
/// moved by any advert; here it stands down for another advert of priority 255.
#[test]
fn the_address_owner_is_not_moved_by_an_advert() {
    let mut owner = Machine::new(settings(255, 2));
    owner.handle(Event::Startup, 0);
    assert_eq!(owner.state(), State::Master);
    let actions = owner.handle(
        Event::Advert {
            priority: 255,
            interval_cs: 100,
            from: Ipv4Addr::new(198, 18, 0, 3),
        },
        SEC,
    );
    assert_eq!(
        owner.state(),
        State::Master,
        "the owner stood down: {actions:?}"
    );
}

#[test]
fn a_sync_group_member_follows_the_group_and_recovers_only_when_both_causes_clear() {
    let mut m = Machine::new(settings(150, 2));
    m.handle(Event::Startup, 0);
    // Another member took over: follow at once, with an advert.
    let actions = m.handle(
        Event::Group {
            member: 1,
            state: State::Master,
        },
        SEC,
    );
    assert_eq!(m.state(), State::Master);
    assert!(actions.contains(&Action::TakeOver), "{actions:?}");
    // Another member faulted: leave as on a stop.
    let actions = m.handle(
        Event::Group {
            member: 1,
            state: State::Fault,
        },
        2 * SEC,
    );
    assert_eq!(
        actions,
        [Action::SendAdvert { priority: 0 }, Action::StandDown]
    );
    assert_eq!(m.state(), State::Fault);
    // Its own link fails and returns meanwhile: still faulted for the group.
    m.handle(Event::Fault(true), 3 * SEC);
    m.handle(Event::Fault(false), 4 * SEC);
    assert_eq!(m.state(), State::Fault);
    // The group recovers while its own link is down: still faulted for the link.
    m.handle(Event::Fault(true), 5 * SEC);
    m.handle(
        Event::Group {
            member: 1,
            state: State::Backup,
        },
        6 * SEC,
    );
    assert_eq!(m.state(), State::Fault);
    m.handle(Event::Fault(false), 7 * SEC);
    assert_eq!(m.state(), State::Backup);
    // A member stood down: a master here stands down too.
    m.handle(
        Event::Group {
            member: 1,
            state: State::Master,
        },
        8 * SEC,
    );
    let actions = m.handle(
        Event::Group {
            member: 1,
            state: State::Backup,
        },
        9 * SEC,
    );
    assert_eq!(actions, [Action::StandDown]);
    assert_eq!(m.state(), State::Backup);
}

/// a member faulted by its own link hears that another member of its
/// group faulted too (that member's own link). When this member's link returns, the group is
/// still faulted (the other member still is): keepalived keeps every member of a sync group
/// in FAULT while any member is. Here the member leaves FAULT (and, with no master heard,
/// takes over), so the group's VIPs are split between the directors.
#[test]
fn a_member_whose_link_returns_stays_faulted_while_another_member_faults() {
    let mut m = Machine::new(settings(150, 2));
    m.handle(Event::Startup, 0);
    m.handle(Event::Fault(true), SEC);
    assert_eq!(m.state(), State::Fault);
    // The other member's own link fails now: it broadcasts its move to FAULT.
    m.handle(
        Event::Group {
            member: 1,
            state: State::Fault,
        },
        2 * SEC,
    );
    // This member's link returns; the other member is still faulted.
    m.handle(Event::Fault(false), 3 * SEC);
    assert_eq!(
        m.state(),
        State::Fault,
        "left FAULT while another member of its sync group is still faulted"
    );
}

/// Three members: X and Z fault; Y follows the group. X recovers
/// (fault -> backup, broadcast): Z is still faulted, so Y must stay in FAULT. `Event::Group`
/// carries no sender and the machine one flag, so Y recovers on the first member's news.
#[test]
fn a_group_follower_stays_faulted_until_every_faulted_member_recovers() {
    let mut y = Machine::new(settings(150, 2));
    y.handle(Event::Startup, 0);
    y.handle(
        Event::Group {
            member: 1,
            state: State::Fault,
        },
        SEC,
    ); // X faulted
    y.handle(
        Event::Group {
            member: 3,
            state: State::Fault,
        },
        2 * SEC,
    ); // Z faulted
    y.handle(
        Event::Group {
            member: 1,
            state: State::Backup,
        },
        3 * SEC,
    ); // X recovered; Z has not
    assert_eq!(
        y.state(),
        State::Fault,
        "left FAULT on one member's recovery while another member is still faulted"
    );
}
