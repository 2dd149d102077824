//! Running `lbd` on a lab's director.

use std::{
    path::PathBuf,
    process::{Command, Output},
    time::{Duration, Instant},
};

use lb_daemon::{dataplane::pins, paths::PinLayout};

use crate::{lab::Lab, netns::Netns, process::ChildGuard};

/// `GET /metrics` from `ns` (lbd's endpoint listens on that namespace's loopback): the whole
/// HTTP response.
pub fn scrape_metrics(ns: &Netns) -> String {
    use std::io::{Read, Write};
    ns.run(|| {
        let mut stream =
            std::net::TcpStream::connect(lb_daemon::config::METRICS_LISTEN).expect("/metrics");
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: lbd\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
}

/// The `lbd` binary (`cargo xtask test|run|bench` set `LBD_BIN`).
pub fn bin() -> PathBuf {
    PathBuf::from(
        std::env::var_os("LBD_BIN").expect("LBD_BIN is not set: run through `cargo xtask test`"),
    )
}

/// A running `lbd`; stopped (SIGTERM) and its pins removed on drop.
pub struct Lbd {
    pub instance: String,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub director_ns: String,
    child: ChildGuard,
    /// The next `lbd run` takes this one's pins over: dropping the guard leaves them.
    leave_pins: bool,
}

impl Lbd {
    /// Writes `config` and starts `lbd run` in the lab's director namespace; returns once it
    /// serves (its pid file names it, which happens after attaching) and `lbd status` answers.
    pub fn start(lab: &Lab, config: &str) -> Lbd {
        Lbd::start_with(lab, config, &[])
    }

    /// [`Lbd::start`] with extra `lbd run` arguments.
    pub fn start_with(lab: &Lab, config: &str, run_args: &[&str]) -> Lbd {
        Lbd::start_in(lab, &lab.director, &lab.prefix, config, run_args)
    }

    /// Starts `lbd run` as `instance` in namespace `ns` (one of a pair of directors), with
    /// its config and log named after the instance.
    pub fn start_in(lab: &Lab, ns: &Netns, instance: &str, config: &str, run_args: &[&str]) -> Lbd {
        let name = if instance == lab.prefix {
            "lbd"
        } else {
            instance
        };
        let config_path = lab.dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, config).expect("write config");
        let log_path = lab.dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("lbd log");
        let child = Command::new(bin())
            .args(["--netns", &ns.name, "run", "--config"])
            .arg(&config_path)
            .args(run_args)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting lbd");
        let mut lbd = Lbd {
            instance: instance.to_owned(),
            config_path,
            log_path,
            director_ns: ns.name.clone(),
            child: ChildGuard::new("lbd", child),
            leave_pins: false,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = lbd.child.try_status() {
                panic!("lbd exited ({status}) during start:\n{}", lbd.log());
            }
            // The pid file is written once every interface is attached (pins come earlier).
            let serving = lb_daemon::instance::running_pid(&lbd.instance) == Some(lbd.pid());
            if serving && lbd.status_output().status.success() {
                return lbd;
            }
            assert!(
                Instant::now() < deadline,
                "lbd did not come up within 30 s:\n{}",
                lbd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.pid()
    }

    fn status_output(&self) -> Output {
        Command::new(bin())
            .args(["status", "--instance", &self.instance])
            .output()
            .expect("lbd status")
    }

    /// `lbd status` output (panics if it fails).
    pub fn status(&self) -> String {
        let out = self.status_output();
        assert!(
            out.status.success(),
            "lbd status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes a new config and runs `lbd reload`; returns its output.
    pub fn reload(&self, config: &str) -> Output {
        std::fs::write(&self.config_path, config).expect("write config");
        Command::new(bin())
            .arg("reload")
            .arg("--config")
            .arg(&self.config_path)
            .output()
            .expect("lbd reload")
    }

    /// SIGKILL, as a crash would: nothing is cleaned up (the guard removes the pins later).
    pub fn kill(&mut self) {
        // SAFETY: signals the lbd this guard started and has not reaped.
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_status().is_none() {
            assert!(Instant::now() < deadline, "lbd survived SIGKILL");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `lbd <args>` run here (in the host namespace), with its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin()).args(args).output().expect("lbd")
    }

    /// Sends `signal` (SIGTERM, SIGSTOP, SIGCONT) without waiting.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: signals the lbd this guard started and has not reaped.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_status().is_some()
    }

    /// SIGTERM and wait; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        self.child
            .stop(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    }

    /// Waits until the first VIP's maps hold `servers` backends taking new flows whose check
    /// says up: the health file says "up" a moment before the coalesced apply writes the
    /// weight, and a checked backend's first check lands after `start` returns.
    pub fn wait_serving(&self, servers: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = self.cli(&["status", "--instance", &self.instance, "--json"]);
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let serving = doc["vips"][0]["backends"].as_array().map_or(0, |b| {
                b.iter()
                    .filter(|b| {
                        b["in_maps"] == true
                            && b["weight"].as_u64() > Some(0)
                            && b["health"]["state"] == "up"
                    })
                    .count()
            });
            if serving >= servers {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{serving} of {servers} backends serving after 15 s:\n{}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// This instance's files in the run directory.
    pub fn run_files_left(&self) -> Vec<String> {
        std::fs::read_dir(lb_daemon::paths::RUN_DIR)
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with(&format!("{}.", self.instance)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Dropping this guard will leave the pins (another `lbd run` took them over).
    pub fn leave_pins(&mut self) {
        self.leave_pins = true;
    }

    pub fn pin_layout(&self) -> PinLayout {
        PinLayout::for_instance(&self.instance)
    }
}

impl Drop for Lbd {
    fn drop(&mut self) {
        self.child.stop(Duration::from_secs(10));
        // Only if lbd died without cleaning up.
        if !self.leave_pins {
            let _ = pins::remove_stale(&self.pin_layout());
        }
        // A killed daemon's run files, unless a successor holds the instance now.
        if let Ok(lock) = lb_daemon::instance::lock(&self.instance) {
            drop(lock); // its guard removes the run files
        }
    }
}
