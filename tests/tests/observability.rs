//! What an operator watches: Prometheus `/metrics`, JSON logs, `lbd status --json` and
//! `--watch`, against a real lab. Needs root.

use std::{
    io::{Read, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use lb_tests::{
    lab::{self, Lab},
    lbd::Lbd,
};

const TIMEOUT: Duration = Duration::from_secs(3);

/// `config` with a change the daemon refuses on reload (it needs a restart).
fn needs_restart(config: &str) -> String {
    config.replacen("[director]\n", "[director]\nmax_flows = 4096\n", 1)
}

/// `GET /metrics` from the director's namespace, which must answer 200.
fn scrape(lab: &Lab) -> String {
    let response = lb_tests::lbd::scrape_metrics(&lab.director);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the sample `name{labels}` (labels as the text shows them).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The `lbd_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("lbd_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn metrics_show_traffic_health_verdicts_and_reloads_per_vip_and_backend() {
    if !lb_tests::require_root("observability") {
        return;
    }
    let lab = Lab::new("om", 2);
    let config = lab.checked_config(&[(0, 1), (1, 1)]);
    let lbd = Lbd::start(&lab, &config);
    lbd.wait_serving(2);
    let answered: Vec<String> = lab.client.run(|| {
        (0..20)
            .map(|_| lab::whoami(&mut lab::connect_vip(0, TIMEOUT).unwrap()).unwrap())
            .collect()
    });
    assert!(
        lbd.reload(&lab.checked_config(&[(0, 2), (1, 1)]))
            .status
            .success()
    );
    // Valid, but the daemon refuses it: max_flows needs a restart.
    assert!(!lbd.reload(&needs_restart(&config)).status.success());

    let text = scrape(&lab);
    let vip = "vip=\"198.18.0.100:6379/tcp\"";
    assert!(
        text.contains("lbd_build_info{") && text.trim_end().ends_with("# EOF"),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("lbd_vip_new_flows_total{{{vip}}}")),
        Some(20.0),
        "{text}"
    );
    assert!(sample(&text, &format!("lbd_vip_packets_total{{{vip}}}")).unwrap_or(0.0) >= 40.0);
    for (i, server) in lab.servers.iter().enumerate() {
        let backend = format!("{vip},backend=\"{}\"", server.addr);
        let flows = answered.iter().filter(|w| **w == server.name).count() as f64;
        assert_eq!(
            sample(&text, &format!("lbd_backend_new_flows_total{{{backend}}}")),
            Some(flows),
            "backend {i}: {text}"
        );
        assert_eq!(
            sample(
                &text,
                &format!("lbd_backend_health{{{backend},state=\"up\"}}")
            ),
            Some(1.0),
            "{text}"
        );
        let took = sample(
            &text,
            &format!("lbd_backend_check_duration_seconds{{{backend}}}"),
        )
        .expect("check duration");
        assert!(took > 0.0 && took < 1.0, "{took}");
    }
    assert_eq!(
        sample(
            &text,
            &format!(
                "lbd_backend_weight{{{vip},backend=\"{}\"}}",
                lab.servers[0].addr
            )
        ),
        Some(2.0),
        "the reload's weight: {text}"
    );
    assert!(sample(&text, "lbd_datapath_verdicts_total{verdict=\"tx\"}").unwrap_or(0.0) > 0.0);
    assert_eq!(
        sample(
            &text,
            "lbd_datapath_verdicts_total{verdict=\"drop_malformed\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "lbd_reloads_total{result=\"ok\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "lbd_reloads_total{result=\"rejected\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "lbd_health_transitions_total"),
        Some(2.0),
        "{text}"
    );

    // The shipped Grafana dashboard asks only for metrics the endpoint has.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../packaging/grafana/lbd-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut asked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                asked += 1;
                let family = name.strip_suffix("_total").unwrap_or(&name);
                assert!(
                    text.contains(&format!("# TYPE {family} ")),
                    "panel {:?} asks for {name}, which /metrics does not have",
                    panel["title"]
                );
            }
        }
    }
    assert!(asked >= 14, "the dashboard asks for {asked} series");

    // Anything else is not found.
    let other = lab.director.run(|| {
        let mut stream =
            std::net::TcpStream::connect(lb_daemon::config::METRICS_LISTEN).expect("connect");
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    });
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
}

#[test]
fn json_logs_put_each_state_change_on_one_line_with_its_fields() {
    if !lb_tests::require_root("observability") {
        return;
    }
    let lab = Lab::new("oj", 2);
    let lbd = Lbd::start_with(
        &lab,
        &lab.checked_config(&[(0, 1), (1, 1)]),
        &["--log-format", "json"],
    );
    lbd.wait_serving(2);
    assert!(lbd.reload(&lab.checked_config(&[(0, 1)])).status.success());
    assert!(
        !lbd.reload(&needs_restart(&lab.checked_config(&[(0, 1)])))
            .status
            .success()
    );
    let log = lbd.log();
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object: {l:?}: {e}"))
        })
        .collect();
    let find = |message: &str| {
        events
            .iter()
            .filter(|e| e["message"] == message)
            .cloned()
            .collect::<Vec<_>>()
    };
    let up = find("backend up");
    assert_eq!(up.len(), 2, "{log}");
    for event in &up {
        assert_eq!(event["vip"], "198.18.0.100:6379");
        assert!(
            event["backend"]
                .as_str()
                .is_some_and(|b| b.starts_with("198.18.0."))
        );
        assert_eq!(event["level"], "INFO");
        assert!(event["timestamp"].is_string());
    }
    let reloaded = find("reloaded");
    assert_eq!(reloaded.len(), 1, "{log}");
    assert!(reloaded[0]["map_writes"].as_u64().is_some_and(|n| n > 0));
    let refused = find("reload not applied");
    assert_eq!(refused.len(), 1, "{log}");
    assert_eq!(refused[0]["level"], "ERROR");
    assert!(
        refused[0]["cause"]
            .as_str()
            .is_some_and(|c| c.contains("lbd.toml")),
        "{log}"
    );
}

#[test]
fn status_json_is_one_document_and_watch_redraws_until_stopped() {
    if !lb_tests::require_root("observability") {
        return;
    }
    let lab = Lab::new("os", 2);
    let lbd = Lbd::start(&lab, &lab.checked_config(&[(0, 1), (1, 3)]));
    lbd.wait_serving(2);
    // The health file says "up" a moment before the coalesced apply writes the weight.
    let deadline = Instant::now() + Duration::from_secs(5);
    let doc = loop {
        let out = lbd.cli(&["status", "--instance", &lbd.instance, "--json"]);
        assert!(out.status.success());
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let weighted = doc["vips"][0]["backends"]
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["weight"].as_u64() > Some(0)));
        if weighted || Instant::now() > deadline {
            break doc;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(doc["instance"], lbd.instance.as_str());
    assert_eq!(doc["daemon"]["state"], "running");
    assert_eq!(doc["daemon"]["pid"], lbd.pid());
    let vip = &doc["vips"][0];
    assert_eq!(vip["service"], "198.18.0.100:6379/tcp");
    assert_eq!(vip["scheduler"], "maglev");
    let backends = vip["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    let weights: Vec<u64> = backends
        .iter()
        .map(|b| b["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, [1, 3], "{doc:#}");
    assert!(
        backends.iter().all(|b| b["health"]["state"] == "up"),
        "{doc}"
    );
    assert!(doc["verdicts"]["tx"].is_u64());

    let mut watch = Command::new(lb_tests::lbd::bin())
        .args([
            "status",
            "--instance",
            &lbd.instance,
            "--watch",
            "--interval",
            "0.2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(900));
    // SIGTERM, not SIGINT: a job started in the background by a non-interactive shell (as CI
    // may be) inherits SIGINT ignored.
    // SAFETY: signals the child this test started.
    unsafe { libc::kill(watch.id() as i32, libc::SIGTERM) };
    let status = watch.wait().unwrap();
    let mut text = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let frames = text.matches("lbd status --watch: instance").count();
    assert!(frames >= 3, "{frames} frames in 0.9 s at 0.2 s: {text}");
    assert!(text.contains("198.18.0.100:6379"), "{text}");
    assert!(!status.success(), "--watch runs until interrupted");
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) in parentheses: 14 and 15 are utime
    // and stime, the 12th and 13th after the closing parenthesis.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Found by review: /metrics once accepted without bound, so ~1000 idle connections at
/// systemd's default soft limit of 1024 descriptors made every health check fail (EMFILE:
/// backends down, an outage) and the accept loop spin. Connections are capped, accept errors
/// back off, and the unit raises LimitNOFILE.
#[test]
fn idle_metrics_connections_neither_exhaust_descriptors_nor_spin() {
    if !lb_tests::require_root("observability") {
        return;
    }
    let lab = Lab::new("omfd", 1);
    let config = lab.config(&[(0, 1)]).replacen(
        "scheduler = \"maglev\"\n",
        "scheduler = \"maglev\"\n\n[vip.check]\ntype = \"tcp\"\ninterval = 0.2\n",
        1,
    );
    let lbd = Lbd::start(&lab, &config);
    lbd.wait_serving(1);
    // systemd's default for a service without LimitNOFILE (soft 1024).
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads the resource limit of the lbd this test started.
    unsafe { libc::prlimit(lbd.pid(), libc::RLIMIT_NOFILE, std::ptr::null(), &mut limit) };
    limit.rlim_cur = limit.rlim_max.min(1024);
    // SAFETY: sets the resource limit of the lbd this test started (the hard one kept).
    let rc = unsafe { libc::prlimit(lbd.pid(), libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    // This test's own descriptors: raise the soft limit to the hard one.
    let mut own = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads and sets this process's limit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut own);
        own.rlim_cur = own.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &own);
    }
    let addr: std::net::SocketAddr = lb_daemon::config::METRICS_LISTEN.parse().unwrap();
    let idle: Vec<std::net::TcpStream> = lab.director.run(|| {
        let mut held = Vec::new();
        for _ in 0..1200 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                // Half a request line, never finished.
                Ok(mut stream) => {
                    let _ = stream.write_all(b"GET /metr");
                    held.push(stream);
                }
                Err(_) => break,
            }
        }
        held
    });
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_ticks(lbd.pid());
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let busy = (cpu_ticks(lbd.pid()) - before) as f64 / hz as f64;
    let status = lbd.status();
    let held = idle.len();
    drop(idle);
    let log = lbd.log();
    let down = log
        .lines()
        .find(|l| l.contains("backend down"))
        .unwrap_or("");
    assert!(
        down.is_empty() && busy < 0.3,
        "{held} idle /metrics connections: lbd took its backend down ({down}), its health file is \
         stale (status still says up, the maps hold no backend), and it burns {busy:.2} s of CPU \
         per second (accept loop spinning on EMFILE)\n{status}"
    );
}

/// Found by review: `lbd_vrrp_transitions_total` counts changes of forwarding only (became
/// or left master), not the Backup step at start.
#[test]
fn vrrp_transitions_count_becoming_or_leaving_master_only() {
    if !lb_tests::require_root("observability") {
        return;
    }
    let lab = Lab::new("omvt", 2);
    let config = lb_tests::vrrp::config(&lab, &lab.prefix.clone(), 100, "advert_int = 0.1\n");
    let lbd = Lbd::start(&lab, &config);
    lb_tests::vrrp::wait_state(&lbd, "master", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let text = scrape(&lab);
    assert_eq!(
        sample(&text, "lbd_vrrp_transitions_total{vrrp=\"VI_1\"}"),
        Some(1.0),
        "became master once:\n{}",
        text.lines()
            .filter(|l| l.contains("vrrp"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Threads of `pid` blocked in `openat` (x86_64 syscall 257).
fn threads_in_openat(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("syscall"))
                .is_ok_and(|s| s.split_whitespace().next() == Some("257"))
        })
        .count()
}

/// Found by review: a scrape that outlasts the connection timeout (here stuck reading a state
/// file made a FIFO; in production a walk of a large flow table) still counts as running:
/// scrapes never run side by side.
#[test]
fn a_scrape_outlasting_the_timeout_still_runs_one_at_a_time() {
    if !lb_tests::require_root("observability") {
        return;
    }
    let lab = Lab::new("omsl", 1);
    let lbd = Lbd::start(&lab, &lab.config(&[(0, 1)]));
    let fifo = lb_daemon::paths::vrrp_file(&lbd.instance);
    let _ = std::fs::remove_file(&fifo);
    let cpath = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo on a valid C path.
    assert_eq!(unsafe { libc::mkfifo(cpath.as_ptr(), 0o600) }, 0);
    let before = threads_in_openat(lbd.pid());
    for _ in 0..3 {
        lab.director.run(|| {
            let mut stream =
                std::net::TcpStream::connect(lb_daemon::config::METRICS_LISTEN).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: lbd\r\n\r\n")
                .unwrap();
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response);
        });
    }
    std::thread::sleep(Duration::from_millis(200));
    let walks = threads_in_openat(lbd.pid()) - before;
    // Unblock them (a writer opens and closes: the readers see EOF), then remove the FIFO.
    // SAFETY: open/close on a valid C path.
    unsafe {
        let fd = libc::open(cpath.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK);
        if fd >= 0 {
            std::thread::sleep(Duration::from_millis(100));
            libc::close(fd);
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let _ = std::fs::remove_file(&fifo);
    assert!(
        walks <= 1,
        "{walks} scrapes run at once after three scrapes in a row timed out"
    );
}
