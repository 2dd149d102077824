//! VRRP labs: director configs with a VRRP instance, the instance's state as `lbd status`
//! sees it, the VIP on an interface, held connections, and keepalived 2.2.7 as a peer.

use std::{
    os::unix::process::CommandExt,
    time::{Duration, Instant},
};

use lb_daemon::{paths, vrrp::report};

use crate::{
    lab::{self, Lab, VIP},
    lbd::Lbd,
    netns::Netns,
    process::ChildGuard,
    resp,
};

const TIMEOUT: Duration = Duration::from_secs(3);

/// A director config for `instance`: the lab's VIP over servers 0 and 1, and one VRRP
/// instance holding it, with `vrrp` lines added.
pub fn config(lab: &Lab, instance: &str, priority: u8, vrrp: &str) -> String {
    config_with(lab, instance, priority, &[(0, 1), (1, 1)], vrrp, "")
}

/// [`config`] with other backends and `extra` tables after the VRRP instance.
pub fn config_with(
    lab: &Lab,
    instance: &str,
    priority: u8,
    backends: &[(usize, u32)],
    vrrp: &str,
    extra: &str,
) -> String {
    let base = lab.config(backends).replacen(
        &format!("instance = \"{}\"", lab.prefix),
        &format!("instance = \"{instance}\""),
        1,
    );
    format!(
        "{base}\n[[vrrp]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\npriority = {priority}\nvips = [\"{VIP}\"]\n{vrrp}\n{extra}"
    )
}

pub fn state(lbd: &Lbd) -> Option<report::VrrpLine> {
    report::read(&paths::vrrp_file(&lbd.instance))
        .ok()?
        .into_iter()
        .next()
}

/// Waits until `lbd`'s instance is in `want`; returns how long that took.
pub fn wait_state(lbd: &Lbd, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if state(lbd).is_some_and(|s| s.state == want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{} not {want} within {within:?}: {:?}\n{}",
            lbd.instance,
            state(lbd),
            lbd.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn holds_vip(ns: &Netns) -> bool {
    let out = ns.ip(&["-4", "addr", "show", "dev", "eth0"]);
    String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/32"))
}

pub fn wait_vip(ns: &Netns, held: bool, within: Duration) {
    let deadline = Instant::now() + within;
    while holds_vip(ns) != held {
        assert!(
            Instant::now() < deadline,
            "{}: VIP held = {} after {within:?}",
            ns.name,
            !held
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `n` connections through the VIP, each with the server that answered.
pub fn hold(lab: &Lab, n: usize) -> Vec<(resp::Connection, String)> {
    lab.client.run(|| {
        (0..n)
            .map(|_| {
                let mut conn = lab::connect_vip(0, TIMEOUT).expect("connect through the VIP");
                let server = lab::whoami(&mut conn).expect("whoami");
                (conn, server)
            })
            .collect()
    })
}

/// keepalived 2.2.7 (VRRP only: this kernel has no IPVS) as the peer in `ns`.
pub fn keepalived(lab: &Lab, ns: &Netns, priority: u8, vrrp: &str) -> ChildGuard {
    let conf = lab.dir.join(format!("keepalived-{priority}.conf"));
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n  router_id {name}\n  {version}\n}}\n\
             vrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n\
               priority {priority}\n  {vrrp}\n  virtual_ipaddress {{\n    {VIP}/32\n  }}\n}}\n",
            name = ns.name,
            version = if vrrp.contains("auth_pass") {
                "vrrp_version 2"
            } else {
                "vrrp_version 3"
            },
        ),
    )
    .unwrap();
    let log = std::fs::File::create(lab.dir.join(format!("keepalived-{priority}.log"))).unwrap();
    let run = lab.dir.join(format!("keepalived-{priority}"));
    let child = ns
        .command("keepalived")
        .args(["-P", "-n", "-l", "-D", "-f"])
        .arg(&conf)
        .arg("-p")
        .arg(run.with_extension("pid"))
        .arg("-r")
        .arg(run.with_extension("vrrp.pid"))
        .args(["-i", &ns.name])
        // Its own process group: a crash is `kill -9` of the group (parent and VRRP child).
        .process_group(0)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting keepalived");
    ChildGuard::new("keepalived", child)
}
