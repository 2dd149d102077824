//! The one owner of the planner's map writes. Config reloads (and, later, health results
//! and VRRP state) hand it a desired state; it plans through the [`Reconciler`] and writes
//! through the [`MapWriter`](crate::dataplane::writer::MapWriter).
//!
//! A write can fail midway (the kernel refuses, memory runs out), leaving the maps
//! somewhere between two plans. The applier then stops trusting its remembered state: the
//! next apply first rebuilds it from the maps' contents, so it converges from what is
//! really there instead of planning no writes against what it had hoped to write.

use crate::{
    dataplane::{Dataplane, contents},
    error::Result,
    reconcile::{DesiredVip, Reconciler},
};

#[derive(Debug, Default)]
pub struct Applier {
    /// What the maps hold, when `in_doubt` is false.
    reconciler: Reconciler,
    /// A write failed since the last successful apply: re-read the maps before planning.
    in_doubt: bool,
}

impl Applier {
    /// An applier for freshly created (empty) maps.
    pub fn new() -> Applier {
        Applier::default()
    }

    /// An applier for maps an earlier run filled (adopted pins): its state is read from them,
    /// so the first apply writes only the difference to the new desired state.
    pub fn adopted(contents: &crate::reconcile::MapContents) -> Applier {
        Applier {
            reconciler: Reconciler::from_maps(contents),
            in_doubt: false,
        }
    }

    /// Brings the maps to `desired`; returns the number of map operations planned.
    pub fn apply(&mut self, dataplane: &mut Dataplane, desired: &[DesiredVip]) -> Result<usize> {
        if self.in_doubt {
            let mut recovered = Reconciler::from_maps(&contents::read(dataplane)?);
            recovered.continue_generations_from(&self.reconciler);
            self.reconciler = recovered;
            self.in_doubt = false;
        }
        // Planning fails before any write (too many VIPs or backends): nothing to doubt.
        let (ops, next) = self.reconciler.plan(desired)?;
        match dataplane.writer().apply(&ops) {
            Ok(()) => {
                self.reconciler = next;
                Ok(ops.len())
            }
            Err(err) => {
                // Keep `next`'s generation counter: some of its allocations may be in the
                // maps, and the maps' own maximum is read on recovery too.
                let mut previous = self.reconciler.clone();
                previous.continue_generations_from(&next);
                self.reconciler = previous;
                self.in_doubt = true;
                Err(err)
            }
        }
    }

    /// The applied state (as planned; after a failure, as it was before it).
    pub fn reconciler(&self) -> &Reconciler {
        &self.reconciler
    }

    /// Whether a write failed and the maps have not been re-read since.
    pub fn in_doubt(&self) -> bool {
        self.in_doubt
    }
}
