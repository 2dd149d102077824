//! One checker task per backend. Checkers only report: results go to the daemon's loop,
//! which records them on the [`Board`](super::Board) and applies what changes.
//!
//! Checks are spread over the interval (each backend starts at its own offset) and at most
//! [`CONCURRENT_CHECKS`] run at once, so many backends at a short interval do not burst.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Duration};

use lb_common::hash::mix64;
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinHandle,
    time::Instant,
};

use lb_common::VipKey;

use super::{
    board::{BackendKey, Changes, CheckSpec, Outcome},
    probe,
    sentinel::{self, SentinelReport},
};

/// The origin of every checker's grid.
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Checks in flight at once, across all backends.
pub const CONCURRENT_CHECKS: usize = 64;

/// One check result.
#[derive(Debug)]
pub struct Report {
    pub key: BackendKey,
    /// The checker that sent it (see [`Changes::start`]).
    pub checker: u64,
    pub outcome: Outcome,
    /// How long the check took (for `lbd_backend_check_duration_seconds`).
    pub took: std::time::Duration,
}

/// The running checkers and Sentinel watchers.
pub struct Monitor {
    tasks: BTreeMap<BackendKey, JoinHandle<()>>,
    reports: mpsc::Sender<Report>,
    permits: Arc<Semaphore>,
    sentinels: BTreeMap<VipKey, JoinHandle<()>>,
    sentinel_reports: mpsc::Sender<SentinelReport>,
}

/// The receiving ends of a monitor's reports.
pub struct Reports {
    pub checks: mpsc::Receiver<Report>,
    pub sentinels: mpsc::Receiver<SentinelReport>,
}

impl Monitor {
    /// A monitor and the receiving ends of its reports.
    pub fn new() -> (Monitor, Reports) {
        let (tx, rx) = mpsc::channel(1024);
        let (sentinel_tx, sentinel_rx) = mpsc::channel(64);
        (
            Monitor {
                tasks: BTreeMap::new(),
                reports: tx,
                permits: Arc::new(Semaphore::new(CONCURRENT_CHECKS)),
                sentinels: BTreeMap::new(),
                sentinel_reports: sentinel_tx,
            },
            Reports {
                checks: rx,
                sentinels: sentinel_rx,
            },
        )
    }

    /// Stops and starts checkers as a reload asks.
    pub fn apply(&mut self, changes: Changes) {
        for key in changes.stop {
            if let Some(task) = self.tasks.remove(&key) {
                task.abort();
            }
        }
        for (key, spec, id) in changes.start {
            let task = tokio::spawn(checker(
                key,
                id,
                spec,
                self.reports.clone(),
                self.permits.clone(),
            ));
            if let Some(old) = self.tasks.insert(key, task) {
                old.abort();
            }
        }
        for key in changes.stop_sentinels {
            if let Some(task) = self.sentinels.remove(&key) {
                task.abort();
            }
        }
        for (key, spec, id) in changes.start_sentinels {
            let task = tokio::spawn(sentinel::watch(
                key,
                id,
                spec.sentinel,
                spec.timeout,
                spec.interval,
                self.sentinel_reports.clone(),
            ));
            if let Some(old) = self.sentinels.insert(key, task) {
                old.abort();
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        for task in self.tasks.values().chain(self.sentinels.values()) {
            task.abort();
        }
    }
}

/// Checks start on a grid of this step (or a tenth of the interval, if shorter): the daemon
/// wakes once per step for the checks due, not once per check. With 1,000 backends at a 1 s
/// interval that is 10 checks every 10 ms, still no burst, and half the CPU of waking for
/// each one.
const GRID: Duration = Duration::from_millis(10);

fn grid(interval: Duration) -> Duration {
    GRID.min(interval / 10).max(Duration::from_millis(1))
}

/// Where in the interval a backend's checks fall: fixed per backend (from its address) and
/// on the grid, so checks of many backends spread out and each keeps its cadence.
fn offset(key: &BackendKey, interval: Duration) -> Duration {
    let backend = match key.1 {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(_) => lb_common::hash::filter_word(&lb_common::ip_words(key.1)),
    };
    let vip = lb_common::hash::filter_word(&key.0.addr);
    let seed = (u64::from(backend) << 32) ^ (u64::from(vip) << 16) ^ u64::from(key.0.port);
    let step = grid(interval);
    let slots = (interval.as_nanos() / step.as_nanos()).max(1) as u64;
    step * (mix64(seed) % slots) as u32
}

/// The first grid point at or after `at`, counting from `epoch`.
fn on_grid(epoch: Instant, at: Instant, step: Duration) -> Instant {
    let since = at.saturating_duration_since(epoch).as_nanos();
    let step_ns = step.as_nanos();
    epoch + Duration::from_nanos((since.div_ceil(step_ns) * step_ns) as u64)
}

async fn checker(
    key: BackendKey,
    id: u64,
    spec: CheckSpec,
    reports: mpsc::Sender<Report>,
    permits: Arc<Semaphore>,
) {
    let check = &spec.check;
    let addr: IpAddr = key.1;
    let step = grid(check.interval);
    // Every checker counts its grid from the same point (when the first one started).
    let epoch = *EPOCH.get_or_init(Instant::now);
    let mut next = on_grid(epoch, Instant::now(), step) + offset(&key, check.interval);
    let mut failures = 0u32;
    // delay_before_retry is for a backend that was passing and now fails.
    let mut passed = check.initially_up;
    let mut session = probe::Session::default();
    loop {
        tokio::time::sleep_until(next).await;
        let started = Instant::now();
        let (outcome, took) = {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            let started = Instant::now();
            let outcome = probe::check(&spec, addr, &mut session).await;
            (outcome, started.elapsed())
        };
        if outcome.ok {
            failures = 0;
            passed = true;
        } else {
            failures += 1;
        }
        let report = Report {
            key,
            checker: id,
            outcome,
            took,
        };
        if reports.send(report).await.is_err() {
            return;
        }
        // Cadence from the start of a check, so a check that times out does not also
        // delay the next one.
        let delay = if passed && failures > 0 && failures < check.fall {
            check.delay_before_retry
        } else {
            if failures >= check.fall {
                passed = false;
            }
            check.interval
        };
        // The planned start plus the delay, exactly (not the actual start, which drifts):
        // with delays that are multiples of the step (1 s, 0.5 s, ...) checks stay on the
        // grid and due ones keep waking together. Behind (a check longer than the delay):
        // the next grid point.
        let planned = next;
        next = if planned + delay >= started {
            planned + delay
        } else {
            on_grid(epoch, started, step)
        };
    }
}

#[cfg(test)]
mod checker_tests {
    use std::{
        path::Path,
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        time::Duration,
    };

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::config::Config;

    /// a backend whose port starts answering garbage (here a blank line) must be
    /// reported down. Instead `reply_len` panics inside the checker task: the task dies
    /// silently and the backend keeps its last state (up) for good.
    #[tokio::test(flavor = "current_thread")]
    async fn a_garbage_answer_takes_the_backend_down_and_checks_go_on() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let bad = Arc::new(AtomicBool::new(false));
        let flag = bad.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let flag = flag.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let answer: &[u8] = if flag.load(Ordering::SeqCst) {
                            b"\r\n"
                        } else {
                            b"+PONG\r\n"
                        };
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let text = format!(
            "[director]\ninterfaces = [\"eth0\"]\n\n[[vip]]\naddress = \"198.18.0.100\"\nport = {port}\n\
             [vip.check]\ninterval = 0.1\ntimeout = 0.3\nfall = 1\nrise = 1\n\
             [[vip.backend]]\naddress = \"198.18.0.11\"\n"
        );
        let config = Config::parse(Path::new("t.toml"), &text).expect("valid config");
        let spec = CheckSpec::of(&config.vips[0]).unwrap();
        let key = (
            config.vips[0].key(),
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        );
        let (mut monitor, mut reports) = Monitor::new();
        monitor.apply(Changes {
            start: vec![(key, spec, 7)],
            ..Changes::default()
        });
        let first = tokio::time::timeout(Duration::from_secs(3), reports.checks.recv())
            .await
            .expect("a first report")
            .unwrap();
        assert!(first.outcome.ok, "{:?}", first.outcome);
        bad.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let next = tokio::time::timeout_at(deadline, reports.checks.recv()).await;
            match next {
                Ok(Some(r)) if !r.outcome.ok => break,
                Ok(Some(_)) => continue,
                other => panic!(
                    "no failed check reported within 3 s of the backend answering garbage \
                     (checker task gone): {other:?}"
                ),
            }
        }
    }
}

#[cfg(test)]
mod grid_tests {
    use std::net::IpAddr;

    use lb_common::VipKey;

    use super::*;

    #[test]
    fn checks_fall_on_the_grid_and_spread_over_the_interval() {
        let interval = Duration::from_secs(1);
        let vip = VipKey {
            addr: lb_common::ipv4_mapped(u32::from_ne_bytes([198, 18, 0, 100])),
            port: 6379u16.to_be(),
            proto: 6,
            _pad: 0,
        };
        let offsets: std::collections::BTreeSet<Duration> = (0..1000u32)
            .map(|i| {
                offset(
                    &(vip, IpAddr::from(std::net::Ipv4Addr::from(0xc612_0400 + i))),
                    interval,
                )
            })
            .collect();
        assert!(
            offsets
                .iter()
                .all(|o| *o < interval && o.as_millis() % 10 == 0)
        );
        assert!(
            offsets.len() > 90,
            "1,000 backends use most of the 100 slots: {}",
            offsets.len()
        );
        // A short interval gets a finer grid: a tenth of it.
        assert_eq!(grid(Duration::from_millis(50)), Duration::from_millis(5));
    }

    #[test]
    fn on_grid_rounds_up_to_the_next_step() {
        let epoch = Instant::now();
        let step = Duration::from_millis(10);
        assert_eq!(on_grid(epoch, epoch, step), epoch);
        assert_eq!(
            on_grid(epoch, epoch + Duration::from_millis(11), step),
            epoch + Duration::from_millis(20)
        );
        assert_eq!(
            on_grid(epoch, epoch + Duration::from_millis(30), step),
            epoch + Duration::from_millis(30)
        );
    }
}

#[cfg(test)]
mod cadence_tests {
    use std::{path::Path, time::Duration};

    use super::*;
    use crate::config::Config;

    /// delay_before_retry (accepted from 0.01 s) is rounded up to the 10 ms grid
    /// of the *interval*: 0.011 s becomes 0.020 s, so a failing backend is retried at about
    /// half the configured rate and fall x delay_before_retry no longer bounds removal.
    #[tokio::test(flavor = "current_thread")]
    async fn delay_before_retry_is_honoured() {
        // A port nothing listens on: every TCP check fails at once (connection refused).
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let text = format!(
            "[director]\ninterfaces = [\"eth0\"]\n\n[[vip]]\naddress = \"198.18.0.100\"\nport = {port}\n\
             [vip.check]\ntype = \"tcp\"\ninterval = 1\ndelay_before_retry = 0.011\ntimeout = 0.5\n\
             fall = 100\nrise = 1\ninitial = \"up\"\n\
             [[vip.backend]]\naddress = \"198.18.0.11\"\n"
        );
        let config = Config::parse(Path::new("t.toml"), &text).expect("valid config");
        let spec = CheckSpec::of(&config.vips[0]).unwrap();
        let key = (
            config.vips[0].key(),
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        );
        let (mut monitor, mut reports) = Monitor::new();
        monitor.apply(Changes {
            start: vec![(key, spec, 1)],
            ..Changes::default()
        });
        let first = tokio::time::timeout(Duration::from_secs(3), reports.checks.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(!first.outcome.ok);
        let t0 = Instant::now();
        // The next 50 failures are retries, each delay_before_retry (11 ms) apart: ~550 ms.
        for _ in 0..50 {
            let r = tokio::time::timeout(Duration::from_secs(3), reports.checks.recv())
                .await
                .unwrap()
                .unwrap();
            assert!(!r.outcome.ok);
        }
        let took = t0.elapsed();
        assert!(
            took < Duration::from_millis(750),
            "50 retries at delay_before_retry = 11 ms took {took:?} ({:?} each)",
            took / 50
        );
    }
}
