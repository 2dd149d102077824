//! Every filesystem path the daemon uses, in one place.

use std::path::PathBuf;

/// Where the BPF filesystem is expected.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Parent of every instance's pins.
pub const PIN_ROOT: &str = "/sys/fs/bpf/lbd";
/// Pid, lock and reload-status files.
pub const RUN_DIR: &str = "/run/lbd";

/// Pins of one instance:
/// `<PIN_ROOT>/<instance>/{prog_lb, prog_clock, link_<ifname>, maps/<MAP>}`. A later `lbd run` can adopt
/// the attached program through `link_*` and its state through `maps/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinLayout {
    pub dir: PathBuf,
}

impl PinLayout {
    pub fn for_instance(instance: &str) -> PinLayout {
        PinLayout {
            dir: PathBuf::from(PIN_ROOT).join(instance),
        }
    }
    pub fn maps_dir(&self) -> PathBuf {
        self.dir.join("maps")
    }
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }
    pub fn program(&self) -> PathBuf {
        self.dir.join("prog_lb")
    }
    /// The clock program `lbd status` runs to age flows.
    pub fn clock_program(&self) -> PathBuf {
        self.dir.join("prog_clock")
    }
    pub fn link(&self, interface: &str) -> PathBuf {
        self.dir.join(format!("link_{interface}"))
    }
}

/// Pid file of a running instance.
pub fn pid_file(instance: &str) -> PathBuf {
    PathBuf::from(RUN_DIR).join(format!("{instance}.pid"))
}

/// Held (flock) by the running instance for its whole life.
pub fn lock_file(instance: &str) -> PathBuf {
    PathBuf::from(RUN_DIR).join(format!("{instance}.lock"))
}

/// Result of the last reload (`<generation> ok` or `<generation> error: ...`), read by
/// `lbd reload` to report what the daemon did with the new file.
pub fn reload_status_file(instance: &str) -> PathBuf {
    PathBuf::from(RUN_DIR).join(format!("{instance}.reload"))
}

/// Health of every checked backend, written by the daemon for `lbd status` (see
/// [`crate::health::report`]).
pub fn health_file(instance: &str) -> PathBuf {
    PathBuf::from(RUN_DIR).join(format!("{instance}.health"))
}

/// State of every VRRP instance, written by the daemon for `lbd status` (see
/// [`crate::vrrp::report`]).
pub fn vrrp_file(instance: &str) -> PathBuf {
    PathBuf::from(RUN_DIR).join(format!("{instance}.vrrp"))
}

/// Every file a daemon writes in [`RUN_DIR`] besides its lock: removed when it stops, and
/// by whoever cleans up after it when it did not.
pub fn run_files(instance: &str) -> [PathBuf; 5] {
    [
        pid_file(instance),
        reload_status_file(instance),
        health_file(instance),
        vrrp_file(instance),
        sync_file(instance),
    ]
}

/// Flow sync counters, written by the daemon once a second for `lbd status`.
pub fn sync_file(instance: &str) -> PathBuf {
    PathBuf::from(RUN_DIR).join(format!("{instance}.sync"))
}
