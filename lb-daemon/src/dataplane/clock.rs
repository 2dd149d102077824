//! The conntrack clock: kernel jiffies, read in the datapath by an inlined `bpf_jiffies64()`.

use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions, Xdp};

use crate::error::{Error, Result};

/// Length of one jiffy: the resolution of `CLOCK_MONOTONIC_COARSE` is the kernel tick.
pub fn jiffy_ns() -> u64 {
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into a valid timespec.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) };
    let ns = res.tv_sec as u64 * 1_000_000_000 + res.tv_nsec as u64;
    // HZ=250 if the kernel will not say.
    if rc == 0 && ns > 0 { ns } else { 4_000_000 }
}

/// `duration` in jiffies, rounded up, at least 1.
pub fn to_jiffies(duration: Duration, jiffy_ns: u64) -> u64 {
    (duration.as_nanos() as u64).div_ceil(jiffy_ns).max(1)
}

/// The datapath's current jiffies, from the `clock` program run once on a scratch frame.
pub fn now(clock: &Xdp) -> Result<u64> {
    let frame = [0u8; 64];
    let mut out = [0u8; 64];
    let result = clock
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .map_err(Error::from)?;
    if result.data_size_out < 8 {
        return Err(Error::Io(std::io::Error::other(
            "clock program returned a short frame",
        )));
    }
    Ok(u64::from_ne_bytes(out[..8].try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_jiffies() {
        assert_eq!(to_jiffies(Duration::from_secs(900), 4_000_000), 225_000);
        assert_eq!(to_jiffies(Duration::from_millis(5), 4_000_000), 2);
        assert_eq!(to_jiffies(Duration::ZERO, 4_000_000), 1);
    }

    #[test]
    fn jiffy_is_a_plausible_tick() {
        let ns = jiffy_ns();
        assert!(
            (1_000_000..=10_000_000).contains(&ns),
            "tick of {ns} ns: HZ between 100 and 1000 expected"
        );
    }
}
