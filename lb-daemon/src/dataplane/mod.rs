//! The loaded eBPF program and its maps.
//!
//! - [`object`]: the embedded eBPF objects.
//! - [`writer`]: typed writes (settings, interfaces, reconcile ops).
//! - [`snapshot`]: typed reads for `lbd status` and tests, from loaded or pinned maps.
//! - [`contents`]: reads back what the planner wrote, to rebuild it after a failure.
//! - [`pins`]: bpffs checks, pinning, attachment and cleanup.

pub mod adopt;
pub mod clock;
pub mod contents;
pub mod object;
pub mod pins;
pub mod snapshot;
pub mod writer;

use aya::{Ebpf, EbpfLoader, maps::Map, programs::Xdp};
use lb_common::{MAP_FLOWS, MAP_FLOWS6, PROGRAM_CLOCK, PROGRAM_LB};

use crate::error::{Error, Result};

/// Verbosity of the datapath's own log events (aya-log), fixed at load time so disabled
/// levels cost nothing: the verifier removes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatapathLogLevel {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

/// How to load the datapath.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Capacity of the connection-tracking LRU.
    pub max_flows: u32,
    pub log_level: DatapathLogLevel,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_flows: lb_common::DEFAULT_MAX_FLOWS,
            log_level: DatapathLogLevel::Warn,
        }
    }
}

/// The balancer program, loaded into the kernel (not yet attached) with its maps.
pub struct Dataplane {
    pub(super) ebpf: Ebpf,
    /// Map writes allowed before an injected failure; `None` (always, outside tests).
    write_budget: Option<usize>,
}

impl Dataplane {
    /// Loads `object` (see [`object::lb`]) and verifies the program.
    pub fn load(object: &[u8], options: &LoadOptions) -> Result<Dataplane> {
        Self::load_with(object, options, None)
    }

    /// [`Dataplane::load`], taking the maps pinned under `pins` instead of creating them
    /// (see [`adopt`]): the new program shares them with the one still attached. A map the
    /// pins lack is created and pinned there.
    pub fn load_adopting(
        object: &[u8],
        options: &LoadOptions,
        pins: &crate::paths::PinLayout,
    ) -> Result<Dataplane> {
        Self::load_with(object, options, Some(pins))
    }

    fn load_with(
        object: &[u8],
        options: &LoadOptions,
        pins: Option<&crate::paths::PinLayout>,
    ) -> Result<Dataplane> {
        let level = options.log_level as u8;
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(MAP_FLOWS, options.max_flows)
            .map_max_entries(MAP_FLOWS6, options.max_flows)
            .override_global(aya_log::LEVEL, &level, false);
        let paths: Vec<(&str, std::path::PathBuf)> = pins
            .map(|pins| {
                lb_common::ALL_MAPS
                    .iter()
                    .map(|&name| (name, pins.map(name)))
                    .collect()
            })
            .unwrap_or_default();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(object)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_LB)
            .ok_or(Error::NoEbpfObject)?
            .try_into()
            .map_err(Error::from)?;
        program.load()?;
        let clock: &mut Xdp = ebpf
            .program_mut(PROGRAM_CLOCK)
            .ok_or(Error::NoEbpfObject)?
            .try_into()?;
        clock.load()?;
        Ok(Dataplane {
            ebpf,
            write_budget: None,
        })
    }

    /// The balancer program (loaded), for attaching or `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM_LB)
            .and_then(|p| p.try_into().ok())
            .expect("load() checked the program exists and is XDP")
    }

    /// The clock program (loaded), see [`clock::now`].
    pub fn clock_program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_CLOCK)
            .and_then(|p| p.try_into().ok())
            .expect("load() checked the program exists and is XDP")
    }

    /// The flow-event ring buffer, for the sync sender (taken once: it has one reader).
    pub fn take_flow_events(&mut self) -> Result<aya::maps::RingBuf<aya::maps::MapData>> {
        let name = lb_common::MAP_FLOW_EVENTS;
        let map = self.ebpf.take_map(name).ok_or_else(|| {
            Error::map(name, aya::maps::MapError::InvalidName { name: name.into() })
        })?;
        aya::maps::RingBuf::try_from(map).map_err(|e| Error::map(name, e))
    }

    /// Typed writes to the maps.
    pub fn writer(&mut self) -> writer::MapWriter<'_> {
        writer::MapWriter::new(&mut self.ebpf, &mut self.write_budget)
    }

    /// Makes every map write after the next `writes` fail (`None`: never), so tests can
    /// show what a failure midway through an apply leaves behind and how it is repaired.
    #[doc(hidden)]
    pub fn fail_writes_after(&mut self, writes: Option<usize>) {
        self.write_budget = writes;
    }

    /// Starts forwarding the datapath's log events to `tracing` (through `log`).
    /// Must be called inside a tokio runtime.
    pub fn spawn_log_forwarder(&mut self) {
        match aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, DatapathLog) {
            Ok(logger) => {
                tokio::spawn(async move {
                    // SAFETY: the AsyncFd owns the logger, which owns the fd, so the fd outlives
                    // its registration.
                    let registered = unsafe {
                        tokio::io::unix::AsyncFd::register_with_interest(
                            logger,
                            tokio::io::Interest::READABLE,
                        )
                    };
                    let Ok(mut logger) = registered else { return };
                    loop {
                        let Ok(mut guard) = logger.readable_mut().await else {
                            return;
                        };
                        // Cleared before draining, so a record written after the drain
                        // wakes this loop again (the kernel only signals a caught-up reader).
                        guard.clear_ready();
                        guard.get_inner_mut().flush();
                    }
                });
            }
            Err(err) => tracing::warn!(cause = %err, "datapath log events unavailable"),
        }
    }
}

/// Forwards the datapath's aya-log records to `tracing` under the target `datapath`, so
/// `--datapath-log LEVEL` can open exactly that target's filter.
struct DatapathLog;

impl log::Log for DatapathLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "datapath", "{message}"),
            log::Level::Warn => tracing::warn!(target: "datapath", "{message}"),
            log::Level::Info => tracing::info!(target: "datapath", "{message}"),
            log::Level::Debug => tracing::debug!(target: "datapath", "{message}"),
            log::Level::Trace => tracing::trace!(target: "datapath", "{message}"),
        }
    }

    fn flush(&self) {}
}

impl snapshot::MapSource for Dataplane {
    fn now_jiffies(&self) -> Result<u64> {
        clock::now(self.clock_program())
    }

    fn map(&self, name: &'static str) -> Result<&Map> {
        self.ebpf
            .map(name)
            .ok_or_else(|| Error::map(name, aya::maps::MapError::InvalidName { name: name.into() }))
    }
}
