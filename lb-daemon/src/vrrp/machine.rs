//! The VRRP state machine of one virtual router (RFC 5798 section 6.4, which RFC 3768
//! shares but for the interval coming from the advert). Pure: events and the current time in,
//! actions out; the caller owns sockets, timers and addresses. Times are microseconds on any
//! monotonic clock.

use std::net::Ipv4Addr;

/// What the machine was configured with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// 1..=254; 255 makes the address owner, master at once.
    pub priority: u8,
    /// Advertisement interval, centiseconds.
    pub interval_cs: u16,
    /// Take over from a master of lower priority.
    pub preempt: bool,
    /// No preemption until this long after startup (keepalived's `preempt_delay`), in
    /// centiseconds.
    pub preempt_delay_cs: u32,
    /// This router's primary address on the interface: breaks priority ties.
    pub address: Ipv4Addr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Initialize,
    Backup,
    Master,
    /// A tracked interface is down (keepalived's FAULT): no adverts, no VIPs, deaf until
    /// it is up again.
    Fault,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Startup,
    Shutdown,
    /// A valid advert of this virtual router (checked by [`super::packet`]).
    Advert {
        priority: u8,
        interval_cs: u16,
        from: Ipv4Addr,
    },
    /// Time passed: fires whichever timer is due.
    Tick,
    /// A tracked interface went down (`true`) or every one is up again (`false`).
    Fault(bool),
    /// Another instance of this one's sync group (`member`, its index in the config) went to
    /// `state` (keepalived's `vrrp_sync_group`): follow it, so the group's VIPs stay on one
    /// director. A member's Backup after its Fault is a recovery; otherwise a stand-down.
    Group {
        member: usize,
        state: State,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority (0: leaving).
    SendAdvert { priority: u8 },
    /// Become the master: add the VIPs, send gratuitous ARP, forward.
    TakeOver,
    /// Stop being the master: stop forwarding, remove the VIPs.
    StandDown,
    /// Still the master after hearing a losing one (a split brain healing): send gratuitous
    /// ARP again, since the clients may have followed the other master's.
    Reassert,
}

/// One virtual router's state.
#[derive(Clone, Debug)]
pub struct Machine {
    settings: Settings,
    state: State,
    /// The master's advertisement interval, as learned from its adverts.
    master_interval_cs: u16,
    adver_at: Option<u64>,
    master_down_at: Option<u64>,
    preempt_from: u64,
    /// In FAULT because a tracked interface is down, and because these members of the sync
    /// group are (a bit per config index): FAULT lasts until both clear.
    link_fault: bool,
    faulted_members: u64,
}

const US_PER_CS: u64 = 10_000;

impl Machine {
    pub fn new(settings: Settings) -> Machine {
        Machine {
            settings,
            state: State::Initialize,
            master_interval_cs: settings.interval_cs,
            adver_at: None,
            master_down_at: None,
            preempt_from: 0,
            link_fault: false,
            faulted_members: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The effective priority (a tracked pool or interface may lower it, see
    /// [`Machine::set_priority`]).
    pub fn priority(&self) -> u8 {
        self.settings.priority
    }

    /// Changes the priority (track weights); takes effect in the next advert or election.
    pub fn set_priority(&mut self, priority: u8) {
        self.settings.priority = priority;
    }

    /// When the next timer fires, if any: call [`Machine::handle`] with [`Event::Tick`] then.
    pub fn next_deadline(&self) -> Option<u64> {
        match (self.adver_at, self.master_down_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `(256 - priority) / 256` of the master's interval.
    pub fn skew_us(&self) -> u64 {
        (256 - u64::from(self.settings.priority)) * u64::from(self.master_interval_cs) * US_PER_CS
            / 256
    }

    /// Three intervals of the master plus the skew: silence for this long makes a backup
    /// take over.
    pub fn master_down_us(&self) -> u64 {
        3 * u64::from(self.master_interval_cs) * US_PER_CS + self.skew_us()
    }

    fn interval_us(&self) -> u64 {
        u64::from(self.settings.interval_cs) * US_PER_CS
    }

    fn become_master(&mut self, now: u64, actions: &mut Vec<Action>) {
        actions.push(Action::SendAdvert {
            priority: self.settings.priority,
        });
        actions.push(Action::TakeOver);
        self.adver_at = Some(now + self.interval_us());
        self.master_down_at = None;
        self.state = State::Master;
    }

    fn enter_fault(&mut self) {
        self.adver_at = None;
        self.master_down_at = None;
        self.state = State::Fault;
    }

    fn become_backup(&mut self, now: u64, master_interval_cs: u16) {
        self.master_interval_cs = master_interval_cs;
        self.master_down_at = Some(now + self.master_down_us());
        self.adver_at = None;
        self.state = State::Backup;
    }

    /// Handles one event at time `now`; returns what to do, in order.
    pub fn handle(&mut self, event: Event, now: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        let event = match event {
            // The address owner discards every advert (RFC 5798 7.1).
            Event::Advert { .. } if self.settings.priority == 255 => return actions,
            // An interval of 0 would make the master-down time 0 (the packet checks drop
            // such adverts; this keeps the machine sound without them).
            Event::Advert {
                priority,
                interval_cs: 0,
                from,
            } => Event::Advert {
                priority,
                interval_cs: self.master_interval_cs,
                from,
            },
            other => other,
        };
        if let Event::Fault(down) = event {
            self.link_fault = down;
        }
        match (self.state, event) {
            // A fault overrides every state but Initialize (not started, or stopped).
            (State::Master, Event::Fault(true)) => {
                // Leave as on a stop, so a backup takes over after its skew only.
                actions.push(Action::SendAdvert { priority: 0 });
                actions.push(Action::StandDown);
                self.enter_fault();
            }
            (State::Backup, Event::Fault(true)) => self.enter_fault(),
            (State::Fault, Event::Fault(false)) if self.faulted_members == 0 => {
                self.become_backup(now, self.settings.interval_cs);
                // Into backup: the VIPs must be off (they are) and forwarding too.
                actions.push(Action::StandDown);
            }
            (State::Fault, Event::Shutdown) => self.state = State::Initialize,
            // The group: a member faulted, recovered, took over or stood down.
            (
                state,
                Event::Group {
                    member,
                    state: State::Fault,
                },
            ) => {
                self.faulted_members |= 1u64 << (member & 63);
                match state {
                    State::Master => {
                        actions.push(Action::SendAdvert { priority: 0 });
                        actions.push(Action::StandDown);
                        self.enter_fault();
                    }
                    State::Backup => self.enter_fault(),
                    State::Fault | State::Initialize => {}
                }
            }
            (
                state,
                Event::Group {
                    member,
                    state: State::Backup,
                },
            ) if self.faulted_members & (1u64 << (member & 63)) != 0 => {
                // A recovery: out of FAULT once no member and no link holds it there.
                self.faulted_members &= !(1u64 << (member & 63));
                if state == State::Fault && self.faulted_members == 0 && !self.link_fault {
                    self.become_backup(now, self.settings.interval_cs);
                    actions.push(Action::StandDown);
                }
            }
            (
                State::Backup,
                Event::Group {
                    state: State::Master,
                    ..
                },
            ) => self.become_master(now, &mut actions),
            (
                State::Master,
                Event::Group {
                    state: State::Backup,
                    ..
                },
            ) => {
                actions.push(Action::StandDown);
                self.become_backup(now, self.master_interval_cs);
            }
            (State::Fault, _) | (_, Event::Fault(_)) | (_, Event::Group { .. }) => {}

            (State::Initialize, Event::Startup) => {
                self.preempt_from = now + u64::from(self.settings.preempt_delay_cs) * US_PER_CS;
                if self.settings.priority == 255 {
                    self.become_master(now, &mut actions);
                } else {
                    self.become_backup(now, self.settings.interval_cs);
                }
            }
            (State::Initialize, _) => {}

            (State::Backup, Event::Shutdown) => {
                self.master_down_at = None;
                self.state = State::Initialize;
            }
            (State::Backup, Event::Tick) => {
                if self.master_down_at.is_some_and(|at| now >= at) {
                    self.become_master(now, &mut actions);
                }
            }
            (
                State::Backup,
                Event::Advert {
                    priority,
                    interval_cs,
                    ..
                },
            ) => {
                if priority == 0 {
                    // The master is leaving: take over after the skew only.
                    self.master_down_at = Some(now + self.skew_us());
                } else if !self.settings.preempt
                    || now < self.preempt_from
                    || priority >= self.settings.priority
                {
                    self.become_backup(now, interval_cs);
                }
                // Else a master of lower priority while we preempt: ignore it, so our
                // master-down timer runs out and we take over.
            }
            (State::Backup, Event::Startup) => {}

            (State::Master, Event::Shutdown) => {
                actions.push(Action::SendAdvert { priority: 0 });
                actions.push(Action::StandDown);
                self.adver_at = None;
                self.state = State::Initialize;
            }
            (State::Master, Event::Tick) => {
                if self.adver_at.is_some_and(|at| now >= at) {
                    actions.push(Action::SendAdvert {
                        priority: self.settings.priority,
                    });
                    self.adver_at = Some(now + self.interval_us());
                }
            }
            (
                State::Master,
                Event::Advert {
                    priority,
                    interval_cs,
                    from,
                },
            ) => {
                let mine = self.settings.priority;
                if priority == 0 {
                    // Another master leaving (a split brain healing, see below): answer at
                    // once, so backups hear a master, and win the clients back.
                    actions.push(Action::SendAdvert { priority: mine });
                    actions.push(Action::Reassert);
                    self.adver_at = Some(now + self.interval_us());
                } else if priority > mine || (priority == mine && from > self.settings.address) {
                    // Two masters: this one loses. It says it leaves (priority 0), so the
                    // winner knows the clients may have followed this one's ARP; otherwise
                    // the winner hears nothing when its advert arrives first.
                    actions.push(Action::SendAdvert { priority: 0 });
                    actions.push(Action::StandDown);
                    self.become_backup(now, interval_cs);
                } else {
                    // A losing master: answer at once so it stands down, and win the
                    // clients back (keepalived's garp_lower_prio_repeat).
                    actions.push(Action::SendAdvert { priority: mine });
                    actions.push(Action::Reassert);
                    self.adver_at = Some(now + self.interval_us());
                }
            }
            (State::Master, Event::Startup) => {}
        }
        actions
    }
}

#[cfg(test)]
mod tests;
