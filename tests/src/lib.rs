//! Test support for the load balancer, shared by the tests, `cargo xtask run` (the lab) and
//! `cargo xtask bench`.
//!
//! - [`netns`]: network namespace guards (unique names, deleted on drop).
//! - [`process`]: child-process guards (killed by PID on drop).
//! - [`lab`]: client, director and real servers running `redis-server`, on one bridge.
//! - [`lbd`]: starting and stopping `lbd` in a lab.
//! - [`frame`]: Ethernet/IPv4/TCP/UDP frame builder; [`frame6`]: the same for IPv6.
//! - [`fixture`]: the datapath fixtures' harness (load, provision, run one frame).
//! - [`resp`]: Redis connections on sockets the tests make (the `redis` crate's codec).
//! - [`vrrp`]: VRRP labs: configs, instance state, the VIP, keepalived as a peer.
//! - [`xdp`]: BPF_PROG_TEST_RUN on one frame.
//!
//! Everything here needs root. [`require_root`] skips politely outside CI and fails in CI.

pub mod fixture;
pub mod frame;
pub mod frame6;
pub mod lab;
pub mod lbd;
pub mod netns;
pub mod process;
pub mod resp;
pub mod vrrp;
pub mod xdp;

/// True when running as root. Without root: panics when `CI` is set (a root-only test must
/// never silently skip there), else prints why the test is skipped and returns false.
pub fn require_root(test: &str) -> bool {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs root (BPF, network namespaces), and CI is set: refusing to skip");
    }
    eprintln!("{test}: skipped, needs root (run `cargo xtask test` as root)");
    false
}

/// A name unique to this process and call, short enough for interface names.
pub fn unique_name(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}{}x{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
