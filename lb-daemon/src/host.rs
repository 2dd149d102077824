//! Facts about the host that decide what an operator is told: privileges, and whether this
//! process sees the host's BPF filesystem.

use crate::{
    error::Error,
    paths::{self, BPFFS},
};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set, from `/proc/self/status`.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Whether this process may load, attach and pin BPF programs. Without CAP_SYS_ADMIN the
/// verifier also wants CAP_PERFMON: the datapath does pointer arithmetic on map values,
/// which it allows only to "perfmon-capable" loaders.
pub fn may_administer_bpf() -> bool {
    let caps = effective_caps();
    let has = |cap: u32| caps & (1 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_NET_ADMIN) && has(CAP_PERFMON))
}

/// Refuses early, with what is needed, rather than failing later on EPERM.
pub fn require_bpf_privileges(what: &'static str) -> Result<(), Error> {
    if may_administer_bpf() {
        return Ok(());
    }
    Err(Error::NeedsPrivilege {
        what,
        detail: "this process lacks them (run it as root, or from a unit with \
                 AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON, or CAP_SYS_ADMIN)"
            .to_owned(),
    })
}

/// The `ip netns` name of this process's network namespace, if it is one of them
/// (`/run/netns/NAME` is a bind mount of the namespace: same device and inode).
pub fn named_netns() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mine = std::fs::metadata("/proc/self/ns/net").ok()?;
    std::fs::read_dir("/run/netns")
        .ok()?
        .filter_map(|entry| entry.ok())
        .find(|entry| {
            std::fs::metadata(entry.path())
                .is_ok_and(|ns| ns.dev() == mine.dev() && ns.ino() == mine.ino())
        })
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
}

/// The error for a missing BPF filesystem, with the fix that applies here.
pub fn no_bpffs() -> Error {
    let hint = if let Some(name) = named_netns() {
        format!(
            "this process runs in network namespace {name:?}, probably under `ip netns exec`, \
             which remounts /sys and hides the host's {BPFFS} (and every lbd pin in it): run \
             `lbd --netns {name} ...` instead, which enters the namespace but keeps the host's \
             {BPFFS}"
        )
    } else {
        format!("mount it with `mount -t bpf bpf {BPFFS}`")
    };
    Error::NoBpffs { hint }
}

/// Checks that `PIN_ROOT` can be read, so "no pins" is never said for "not allowed to look".
pub fn require_pin_access(what: &'static str) -> Result<(), Error> {
    match std::fs::metadata(paths::PIN_ROOT) {
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(Error::NeedsPrivilege {
                what,
                detail: format!("{} is not readable for this user", paths::PIN_ROOT),
            })
        }
        _ => Ok(()),
    }
}
