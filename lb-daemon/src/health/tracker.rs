//! Rise/fall counting, keepalived's way: a backend changes state only after `fall`
//! consecutive failures (or `rise` consecutive successes). Before its first check a backend
//! is in its initial state; with the default (down), the first success brings it up.

/// The up/down state of one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracker {
    up: bool,
    /// Consecutive results disagreeing with `up`.
    streak: u32,
    checked: bool,
}

impl Tracker {
    pub fn new(initially_up: bool) -> Tracker {
        Tracker {
            up: initially_up,
            streak: 0,
            checked: false,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Whether any check has completed.
    pub fn checked(&self) -> bool {
        self.checked
    }

    /// Counts one check result; returns whether the state changed.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        let first = !self.checked;
        self.checked = true;
        if ok == self.up {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        // Not yet in service: the first success is enough (down until the first success).
        let needed = if self.up {
            fall
        } else if first {
            1
        } else {
            rise
        };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tracker;

    fn run(tracker: &mut Tracker, results: &[bool]) -> Vec<bool> {
        results
            .iter()
            .map(|&ok| {
                tracker.record(ok, 2, 3);
                tracker.is_up()
            })
            .collect()
    }

    #[test]
    fn starts_down_and_the_first_success_brings_it_up() {
        let mut t = Tracker::new(false);
        assert!(!t.is_up() && !t.checked());
        assert_eq!(run(&mut t, &[false, false, true]), [false, false, false]);
        let mut t = Tracker::new(false);
        assert_eq!(run(&mut t, &[true]), [true]);
    }

    #[test]
    fn goes_down_after_fall_consecutive_failures_only() {
        let mut t = Tracker::new(false);
        run(&mut t, &[true]);
        assert_eq!(
            run(&mut t, &[false, false, true, false, false, false]),
            [true, true, true, true, true, false]
        );
    }

    #[test]
    fn comes_back_after_rise_consecutive_successes() {
        let mut t = Tracker::new(true);
        run(&mut t, &[false, false, false]);
        assert!(!t.is_up());
        assert_eq!(
            run(&mut t, &[true, false, true, true]),
            [false, false, false, true]
        );
    }

    #[test]
    fn initially_up_needs_fall_failures_to_go_down() {
        let mut t = Tracker::new(true);
        assert_eq!(run(&mut t, &[false, false, false]), [true, true, false]);
    }

    #[test]
    fn reports_only_changes() {
        let mut t = Tracker::new(false);
        assert!(t.record(true, 2, 1));
        assert!(!t.record(true, 2, 1));
        assert!(t.record(false, 2, 1));
        assert!(!t.record(false, 2, 1));
    }
}
