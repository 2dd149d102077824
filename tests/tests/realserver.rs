//! `lbd realserver` on a lab real server (its own network namespace, a real redis-server):
//! `check` finds each classic DR mistake with the command that fixes it, `setup` fixes
//! them, `teardown` undoes setup. Needs root.

use std::process::{Command, Output};

use lb_tests::{
    lab::{Lab, VIP},
    lbd::bin,
};

/// `lbd --netns NS realserver ARGS`.
fn realserver(ns: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .args(["--netns", ns, "realserver"])
        .args(args)
        .output()
        .expect("lbd realserver")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `PROBLEM:` lines of a check, each with its `fix:` line.
fn problems(out: &Output) -> Vec<(String, String)> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter_map(|(i, line)| {
            let problem = line.strip_prefix("PROBLEM: ")?;
            let fix = lines.get(i + 1)?.trim().strip_prefix("fix: ")?;
            Some((problem.to_owned(), fix.to_owned()))
        })
        .collect()
}

fn sysctl(ns: &lb_tests::netns::Netns, key: &str) -> String {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.run(|| std::fs::read_to_string(&path).unwrap().trim().to_owned())
}

#[test]
fn check_finds_each_dr_mistake_setup_fixes_them_and_teardown_undoes_setup() {
    if !lb_tests::require_root("realserver") {
        return;
    }
    let lab = Lab::new("rsv", 1);
    let server = &lab.servers[0];
    let ns = server.ns.name.as_str();
    let vip = VIP.to_string();
    let sysctl_file = lab.dir.join("90-lbd-realserver.conf");
    let sysctl_file = sysctl_file.to_str().unwrap();

    // The lab prepared this server by hand, the way the README says: nothing to find.
    let out = realserver(ns, &["check", "--vip", &vip, "--port", "6379"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(problems(&out).is_empty(), "{}", text(&out));

    // A server set up wrong: no VIP on lo, ARP sysctls left at 0, nothing on port 6390.
    server
        .ns
        .ip(&["addr", "del", &format!("{vip}/32"), "dev", "lo"]);
    for conf in ["all", "lo"] {
        server
            .ns
            .sysctl(&format!("net.ipv4.conf.{conf}.arp_ignore"), "0");
        server
            .ns
            .sysctl(&format!("net.ipv4.conf.{conf}.arp_announce"), "0");
    }
    let out = realserver(ns, &["check", "--vip", &vip, "--port", "6390"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let found = problems(&out);
    let fixes: Vec<&str> = found.iter().map(|(_, fix)| fix.as_str()).collect();
    for wanted in [
        format!("ip addr add {vip}/32 dev lo"),
        "sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.lo.arp_ignore=1".to_owned(),
        "sysctl -w net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.lo.arp_announce=2".to_owned(),
    ] {
        assert!(
            fixes.iter().any(|f| f.contains(&wanted)),
            "no fix {wanted:?} in {found:#?}"
        );
    }
    assert!(
        found.iter().any(|(problem, _)| problem.contains("6390")),
        "nothing listens on 6390, unreported: {found:#?}"
    );
    assert_eq!(found.len(), 4, "{found:#?}");

    // setup fixes what it owns; the check is clean again (Redis listens on 6379).
    let out = realserver(ns, &["setup", "--vip", &vip, "--sysctl-file", sysctl_file]);
    assert!(out.status.success(), "{}", text(&out));
    let out = realserver(ns, &["check", "--vip", &vip, "--port", "6379"]);
    assert!(problems(&out).is_empty(), "after setup: {}", text(&out));
    assert_eq!(sysctl(&server.ns, "net.ipv4.conf.all.arp_ignore"), "1");
    assert_eq!(sysctl(&server.ns, "net.ipv4.conf.lo.arp_announce"), "2");
    let persisted = std::fs::read_to_string(sysctl_file).expect("the sysctl file");
    assert!(
        persisted.contains("net.ipv4.conf.all.arp_ignore = 1")
            && persisted.contains("net.ipv4.conf.all.arp_announce = 2"),
        "{persisted}"
    );

    // The VIP on the server's own interface (it would answer ARP for it): found, and setup
    // refuses to go on over it, naming the fix.
    server
        .ns
        .ip(&["addr", "add", &format!("{vip}/32"), "dev", "eth0"]);
    let out = realserver(ns, &["check", "--vip", &vip]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        problems(&out)
            .iter()
            .any(|(p, f)| p.contains("eth0")
                && f.contains(&format!("ip addr del {vip}/32 dev eth0"))),
        "{}",
        text(&out)
    );
    let out = realserver(ns, &["setup", "--vip", &vip, "--sysctl-file", sysctl_file]);
    assert!(!out.status.success(), "setup went on over a VIP on eth0");
    server
        .ns
        .ip(&["addr", "del", &format!("{vip}/32"), "dev", "eth0"]);

    // Strict reverse-path filtering on the interface that carries the default route is
    // fine (the clients' requests arrive where replies would leave); on a second interface
    // without it (a director forwarding over it), requests are dropped on arrival.
    server.ns.sysctl("net.ipv4.conf.eth0.rp_filter", "1");
    let out = realserver(ns, &["check", "--vip", &vip]);
    assert!(problems(&out).is_empty(), "{}", text(&out));
    server
        .ns
        .ip(&["link", "add", "dr0", "type", "veth", "peer", "name", "dr1"]);
    server
        .ns
        .ip(&["addr", "add", "198.19.0.11/24", "dev", "dr0"]);
    server.ns.ip(&["link", "set", "dr0", "up"]);
    server.ns.sysctl("net.ipv4.conf.dr0.rp_filter", "1");
    let out = realserver(ns, &["check", "--vip", &vip]);
    assert!(
        problems(&out).iter().any(|(p, f)| p.contains("rp_filter")
            && p.contains("dr0")
            && f.contains("rp_filter=2")),
        "{}",
        text(&out)
    );
    server.ns.ip(&["link", "del", "dr0"]);
    server.ns.sysctl("net.ipv4.conf.eth0.rp_filter", "0");

    // teardown: the VIP leaves lo, the sysctls setup raised go back, its file goes.
    let out = realserver(
        ns,
        &["teardown", "--vip", &vip, "--sysctl-file", sysctl_file],
    );
    assert!(out.status.success(), "{}", text(&out));
    let addrs = String::from_utf8_lossy(&server.ns.ip(&["-o", "addr", "show", "dev", "lo"]).stdout)
        .into_owned();
    assert!(!addrs.contains(&format!("{vip}/32")), "{addrs}");
    // Another VIP of the lab (VIP2) is still on lo: the sysctls must stay, and the file too.
    assert_eq!(sysctl(&server.ns, "net.ipv4.conf.all.arp_ignore"), "1");
    let vip2 = lb_tests::lab::VIP2.to_string();
    let out = realserver(
        ns,
        &["teardown", "--vip", &vip2, "--sysctl-file", sysctl_file],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        sysctl(&server.ns, "net.ipv4.conf.all.arp_ignore"),
        "0",
        "{}",
        text(&out)
    );
    assert_eq!(sysctl(&server.ns, "net.ipv4.conf.all.arp_announce"), "0");
    assert!(
        !std::path::Path::new(sysctl_file).exists(),
        "the sysctl file is left"
    );
}
