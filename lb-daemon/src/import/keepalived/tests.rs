//! Conversions of in-memory keepalived.conf files, asserted on the TOML text and warnings.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use super::render::quote;
use super::{Conversion, ImportError, Warning, convert_with};

const MAIN: &str = "/etc/keepalived/keepalived.conf";

/// Converts MAIN from in-memory files; a path ending in `/` lists a directory.
fn run(files: &[(&str, &str)]) -> Result<Conversion, ImportError> {
    let files: HashMap<PathBuf, String> = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
        .collect();
    let read = move |path: &Path| -> io::Result<String> {
        let text = path.to_string_lossy();
        if let Some(dir) = text.strip_suffix('/') {
            // Entries are the first component under `dir` of every file below it.
            let mut names: Vec<String> = files
                .keys()
                .filter_map(|p| p.strip_prefix(dir).ok()?.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            names.dedup();
            if names.is_empty() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "not a directory"));
            }
            return Ok(names.join("\n"));
        }
        files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "No such file or directory"))
    };
    convert_with(Path::new(MAIN), &read)
}

fn ok(text: &str) -> Conversion {
    run(&[(MAIN, text)]).unwrap_or_else(|e| panic!("refused: {e}"))
}

fn refused(text: &str) -> ImportError {
    match run(&[(MAIN, text)]) {
        Ok(c) => panic!("converted:\n{}", c.toml),
        Err(e) => e,
    }
}

#[track_caller]
fn has(c: &Conversion, text: &str) {
    assert!(c.toml.contains(text), "no {text:?} in:\n{}", c.toml);
}

#[track_caller]
fn warned(c: &Conversion, line: usize, part: &str) {
    let found = c
        .warnings
        .iter()
        .any(|w| w.line == line && w.message.contains(part));
    let all: Vec<String> = c.warnings.iter().map(Warning::to_string).collect();
    assert!(
        found,
        "no warning on line {line} with {part:?} in:\n{}",
        all.join("\n")
    );
}

#[track_caller]
fn refused_at(text: &str, line: usize, part: &str) {
    let e = refused(text);
    assert_eq!((e.line, e.file.as_path()), (line, Path::new(MAIN)), "{e}");
    assert!(e.message.contains(part), "{e}");
}

/// A VRRP instance holding 10.0.0.100 (lines 1-7), so that a virtual_server starts on line 8.
const VRRP: &str = r"vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        10.0.0.100
    }
}
";

/// A virtual_server for 10.0.0.100:6379 (from line 8) with `body` in it (from line 12).
fn service(body: &str) -> String {
    format!(
        "{VRRP}virtual_server 10.0.0.100 6379 {{\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n{body}}}\n"
    )
}

const REAL: &str = "    real_server 10.0.0.11 6379 {\n        weight 1\n    }\n";

#[test]
fn comments_quotes_and_braces_as_keepalived_reads_them() {
    let c = ok(r#"! Configuration File for keepalived
# another comment
global_defs
{
   router_id "LVS # not a comment"   ! trailing
}
vrrp_instance VI_1
{
    interface eth0 # trailing comment
    virtual_router_id 51
    priority 150!glued comment
    authentication { auth_type PASS
        auth_pass "pa ss#1" }
    virtual_ipaddress { 10.0.0.100 }
    notify_master "/usr/local/bin/notify master"
    notify_backup /usr/local/bin/notify \
        backup
}
"#);
    has(&c, "priority = 150\n");
    has(&c, "auth_pass = \"pa ss#1\"\n");
    has(&c, "vips = [\"10.0.0.100\"]");
    has(
        &c,
        "notify_master = [\"/usr/local/bin/notify\", \"master\"]\n",
    );
    // Unquoted, the word after the script (joined across the `\`) is the user to run it as
    // (keepalived 2.x), not an argument.
    has(&c, "notify_backup = [\"/usr/local/bin/notify\"]\n");
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].message.contains("user and group"),
        "{:?}",
        c.warnings
    );
}

#[test]
fn broken_syntax_is_refused_at_its_line() {
    refused_at(
        "global_defs {\n    router_id \"LVS\n}\n",
        2,
        "quoted string is not closed",
    );
    refused_at(
        "global_defs {\n    router_id x\n\nvrrp_instance VI_1 {\n}\n",
        1,
        "never closed",
    );
    refused_at("global_defs {\n}\n}\n", 3, "closes no block");
    refused_at("\n{\n}\n", 2, "without a keyword");
}

#[test]
fn includes_are_followed_relative_to_the_including_file() {
    let c = run(&[
        (MAIN, "include conf.d/*.conf\ninclude vrrp.conf\n"),
        ("/etc/keepalived/vrrp.conf", VRRP),
        (
            "/etc/keepalived/conf.d/b.conf",
            "virtual_server 10.0.0.100 80 {\n    lb_kind DR\n    lb_algo rr\n    real_server 10.0.0.11 80\n}\n",
        ),
        (
            "/etc/keepalived/conf.d/a.conf",
            "virtual_server 10.0.0.100 6379 {\n    lb_kind DR\n    lb_algo rr\n    bogus_keyword 1\n    real_server 10.0.0.11 6379\n}\n",
        ),
        ("/etc/keepalived/conf.d/.hidden.conf", "garbage {"),
        ("/etc/keepalived/conf.d/notes.txt", "garbage {"),
        ("/etc/keepalived/conf.d/old.conf/x", "garbage {"),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let bogus = &c.warnings[0];
    assert_eq!(bogus.file, Path::new("/etc/keepalived/conf.d/a.conf"));
    assert_eq!(bogus.line, 4);
    assert_eq!(
        bogus.to_string(),
        "/etc/keepalived/conf.d/a.conf:4: `bogus_keyword` in virtual_server: not known to lbd's importer; ignored"
    );
    // Sorted like glob(3): a.conf's VIP comes first.
    let a = c
        .toml
        .find("# a.conf:1 virtual_server 10.0.0.100 6379")
        .expect("a.conf's VIP");
    let b = c
        .toml
        .find("# b.conf:1 virtual_server 10.0.0.100 80")
        .expect("b.conf's VIP");
    assert!(a < b);
    has(
        &c,
        "# and from /etc/keepalived/vrrp.conf, which it includes",
    );
    has(&c, "interfaces = [\"eth0\"]");
}

#[test]
fn include_problems_name_the_include_line() {
    let e = run(&[(MAIN, "\n\ninclude other.conf\n")]).expect_err("missing include");
    assert_eq!((e.file.as_path(), e.line), (Path::new(MAIN), 3));
    assert!(
        e.message
            .contains("/etc/keepalived/other.conf: cannot read"),
        "{e}"
    );
    let e = run(&[
        (MAIN, "include other.conf\n"),
        ("/etc/keepalived/other.conf", "\ninclude keepalived.conf\n"),
    ])
    .expect_err("cycle");
    assert_eq!(
        (e.file.as_path(), e.line),
        (Path::new("/etc/keepalived/other.conf"), 2)
    );
    assert!(e.message.contains("includes itself"), "{e}");
    let c = ok("include /etc/keepalived/none/*.conf\n");
    warned(&c, 1, "no file matches");
    let e = run(&[(Path::new("/nowhere.conf").to_str().unwrap_or(""), "")]).expect_err("no main");
    assert_eq!(
        e.to_string(),
        format!("{MAIN}: cannot read: No such file or directory")
    );
}

#[test]
fn vrrp_instance_keywords() {
    let c = ok(r#"global_defs {
    router_id LVS_DEVEL
    notification_email {
        ops@example.com
    }
    smtp_server 127.0.0.1
}
vrrp_instance VI_1 {
    state MASTER
    interface eth1
    virtual_router_id 51
    priority 150
    advert_int 2
    authentication {
        auth_type PASS
        auth_pass 1111
    }
    virtual_ipaddress {
        10.0.0.100/24 dev eth1 label eth1:1
        10.0.0.101 dev eth2
    }
    unicast_src_ip 10.0.0.2
    unicast_peer {
        10.0.0.3
    }
    preempt_delay 30
    garp_master_delay 5
    garp_master_repeat 3
    garp_master_refresh 60
    track_interface {
        eth0
    }
    track_script {
        chk_redis
    }
    notify_master /etc/keepalived/master.sh
    notify "/etc/keepalived/notify.sh"
    notify_fault "logger fault"
}
"#);
    for line in [
        "# keepalived.conf:8 vrrp_instance VI_1",
        "# state MASTER: lbd starts every instance as a backup",
        "name = \"VI_1\"",
        "interface = \"eth1\"",
        "virtual_router_id = 51",
        "priority = 150",
        "advert_int = 2",
        "version = 2 ",
        "auth_pass = \"1111\"",
        "vips = [\"10.0.0.100\", \"10.0.0.101\"]",
        "unicast_src = \"10.0.0.2\"",
        "unicast_peers = [\"10.0.0.3\"]",
        "garp_master_repeat = 3",
        "garp_master_refresh = 60",
        "track_interface = [\"eth0\"]",
        "notify_master = [\"/etc/keepalived/master.sh\"]",
        "notify = [\"/etc/keepalived/notify.sh\"]",
        "notify_fault = [\"/bin/sh\", \"-c\", \"logger fault\"]",
    ] {
        has(&c, line);
    }
    has(&c, "[director]\ninterfaces = [\"eth1\"]\n");
    warned(
        &c,
        3,
        "notification_email, smtp_server: lbd sends no e-mail",
    );
    warned(
        &c,
        19,
        "lbd adds 10.0.0.100 as a /32 on eth1, the instance's interface; ignored: /24, label eth1:1",
    );
    warned(&c, 20, "not on eth2");
    warned(
        &c,
        26,
        "preempt_delay with state MASTER: keepalived clears it",
    );
    warned(&c, 27, "garp_master_delay");
    warned(&c, 33, "track_pool_weight");
    warned(&c, 38, "runs /bin/sh -c \"logger fault\"");
    assert!(!c.toml.contains("preempt = false"));
    assert!(!c.toml.contains("preempt_delay"), "{}", c.toml);
}

#[test]
fn vrrp_values_lbd_takes_differently() {
    let base = "vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 1\n    virtual_ipaddress {\n        10.0.0.100\n    }\n";
    let c = ok(&format!(
        "{base}    nopreempt\n    preempt_delay 10\n    advert_int 1.5\n    authentication {{\n        auth_type PASS\n        auth_pass 123456789\n    }}\n}}\n"
    ));
    has(&c, "preempt = false ");
    assert!(!c.toml.contains("preempt_delay"));
    warned(&c, 8, "preempt_delay has no effect with nopreempt");
    has(&c, "advert_int = 2\n");
    warned(&c, 9, "VRRP version 2 carries whole seconds");
    has(&c, "auth_pass = \"12345678\"");
    warned(&c, 12, "first 8 bytes");

    let c = ok(&format!(
        "global_defs {{\n    vrrp_version 3\n}}\n{base}    advert_int 0.25\n}}\n"
    ));
    has(&c, "advert_int = 0.25\nversion = 3\n");

    let ah = format!(
        "{base}    authentication {{\n        auth_type AH\n        auth_pass x\n    }}\n}}\n"
    );
    refused_at(&ah, 7, "auth_type AH is not supported");
    refused_at(
        "vrrp_instance VI_1 {\n    virtual_router_id 1\n}\n",
        1,
        "no interface",
    );
    let v6 = format!(
        "{base}}}\nvrrp_instance VI_2 {{\n    interface eth0\n    virtual_router_id 2\n    virtual_ipaddress {{\n        2001:db8::1\n    }}\n}}\n"
    );
    refused_at(&v6, 12, "IPv4 addresses only");
}

#[test]
fn sync_groups_become_vrrp_sync_group() {
    let second = "vrrp_instance VI_2 {\n    interface eth0\n    virtual_router_id 52\n    virtual_ipaddress {\n        10.0.0.101\n    }\n}\n";
    let group = "vrrp_sync_group VG_1 {\n    group {\n        VI_1\n        VI_2\n    }\n    notify_master /bin/true\n}\n";
    let c = ok(&format!("{group}{VRRP}{second}"));
    has(
        &c,
        "# keepalived.conf:1 vrrp_sync_group VG_1\n[[vrrp_sync_group]]\nname = \"VG_1\"\ninstances = [\"VI_1\", \"VI_2\"]\n",
    );
    warned(&c, 6, "no group notify scripts");

    let c = ok(&format!("{group}{VRRP}"));
    assert!(!c.toml.contains("vrrp_sync_group]]"));
    warned(&c, 4, "no vrrp_instance VI_2");
    warned(&c, 1, "fewer than two instances; dropped");
}

#[test]
fn virtual_server_and_tcp_check() {
    let c = ok(&format!(
        "{VRRP}virtual_server 10.0.0.100 6379 {{
    delay_loop 6
    lb_algo wrr
    lb_kind DR
    persistence_timeout 300
    persistence_granularity 255.255.255.0
    protocol TCP
    sorry_server 10.0.0.99 6379
    ha_suspend
    quorum 2
    real_server 10.0.0.11 6379 {{
        weight 3
        inhibit_on_failure
        notify_up /usr/local/bin/up.sh
        notify_down \"/usr/local/bin/down.sh now\"
        TCP_CHECK {{
            connect_port 6380
            connect_timeout 3
            nb_get_retry 3
            delay_before_retry 2
        }}
    }}
    real_server 10.0.0.12 6379 {{
        weight 0
        inhibit_on_failure
        TCP_CHECK {{
            connect_port 6380
            connect_timeout 3
            retry 3
            delay_before_retry 2
        }}
    }}
}}
"
    ));
    let vip = r#"# keepalived.conf:8 virtual_server 10.0.0.100 6379
[[vip]]
address = "10.0.0.100"
port = 6379
protocol = "tcp"
scheduler = "wrr"               # lb_algo
persistence_timeout = 300
persistence_granularity = "255.255.255.0"
on_down = "drain"               # inhibit_on_failure
sorry_server = "10.0.0.99"
"#;
    has(&c, vip);
    let check = r#"# keepalived.conf:23 TCP_CHECK
# For Redis, type = "redis" (PING, and role = "master" or "replica") also catches a hung, loading or demoted server.
[vip.check]
type = "tcp"
interval = 6                    # delay_loop
timeout = 3                     # connect_timeout
fall = 4                        # keepalived: down after 1 + retry 3 failed checks
rise = 1                        # keepalived: up again after one success
delay_before_retry = 2
initial = "up"                  # keepalived starts real servers up (no alpha)
connect_port = 6380
"#;
    has(&c, check);
    let backend = r#"# keepalived.conf:18 real_server 10.0.0.11 6379
[[vip.backend]]
address = "10.0.0.11"
weight = 3
notify_up = ["/usr/local/bin/up.sh"]
notify_down = ["/usr/local/bin/down.sh", "now"]
"#;
    has(&c, backend);
    has(&c, "address = \"10.0.0.12\"\nweight = 0\n");
    warned(&c, 16, "`ha_suspend`: not supported by lbd, ignored");
    warned(&c, 17, "`quorum`: not supported by lbd, ignored");
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
}

#[test]
fn check_defaults_are_keepalived_ones() {
    // TCP_CHECK: delay_loop 60 s, connect_timeout 5 s, one retry after 1 s.
    let c = ok(&service(
        "    real_server 10.0.0.11 6379 {\n        TCP_CHECK {\n        }\n    }\n",
    ));
    has(&c, "interval = 60 ");
    has(&c, "timeout = 5 ");
    has(&c, "fall = 2 ");
    has(&c, "delay_before_retry = 1\n");
    assert!(!c.toml.contains("connect_port"));
    // alpha, and timings given on the virtual_server, as keepalived 2 allows.
    let c = ok(&service(
        "    alpha\n    delay_loop 2\n    retry 0\n    real_server 10.0.0.11 6379 {\n        TCP_CHECK {\n        }\n    }\n",
    ));
    has(&c, "initial = \"down\"                # alpha");
    has(&c, "interval = 2 ");
    has(&c, "fall = 1 ");
    assert!(!c.toml.contains("delay_before_retry"));
}

#[test]
fn misc_check_becomes_a_script_check() {
    let misc = |server: &str, path: &str| {
        format!(
            "    real_server {server} 6379 {{\n        MISC_CHECK {{\n            misc_path \"{path}\"\n            misc_timeout 4\n            misc_dynamic\n        }}\n    }}\n"
        )
    };
    let c = ok(&service(&misc(
        "10.0.0.11",
        "/usr/local/bin/redis-role master",
    )));
    has(&c, "type = \"script\"");
    has(&c, "timeout = 4                     # misc_timeout");
    has(&c, "fall = 1 ");
    has(
        &c,
        "script = [\"/usr/local/bin/redis-role\", \"master\"] # misc_path",
    );
    has(&c, "dynamic_weight = true           # misc_dynamic");

    // The real server's own address in the script becomes $LBD_BACKEND, so one script fits all.
    let both = format!(
        "{}{}",
        misc("10.0.0.11", "/etc/keepalived/check.py 10.0.0.11 6379"),
        misc("10.0.0.12", "/etc/keepalived/check.py 10.0.0.12 6379")
    );
    let c = ok(&service(&both));
    has(
        &c,
        "script = [\"/bin/sh\", \"-c\", \"/etc/keepalived/check.py ${LBD_BACKEND} 6379\"]",
    );
    warned(&c, 13, "$LBD_BACKEND");

    let differ = format!(
        "{}{}",
        misc("10.0.0.11", "/bin/a"),
        misc("10.0.0.12", "/bin/b")
    );
    refused_at(&service(&differ), 20, "its script differs");
}

#[test]
fn schedulers() {
    for (algo, lbd) in [
        ("rr", "rr"),
        ("wrr", "wrr"),
        ("lc", "lc"),
        ("wlc", "wlc"),
        ("sh", "sh"),
        ("dh", "dh"),
        ("mh", "maglev"),
    ] {
        let c = ok(&format!(
            "{VRRP}virtual_server 10.0.0.100 80 {{\n    lb_kind DR\n    lb_algo {algo}\n{REAL}}}\n"
        )
        .replace("6379", "80"));
        has(&c, &format!("scheduler = \"{lbd}\" "));
    }
    let conf = |algo: &str, protocol: &str| {
        format!(
            "{VRRP}virtual_server 10.0.0.100 6379 {{\n    lb_kind DR\n    {algo}\n    protocol {protocol}\n{REAL}}}\n"
        )
    };
    let c = ok(&conf("lb_algo sed", "TCP"));
    has(&c, "scheduler = \"wlc\" ");
    warned(&c, 10, "lbd has no sed; wlc is used");
    let c = ok(&conf("", "TCP"));
    has(
        &c,
        "scheduler = \"wlc\"               # keepalived's default without lb_algo",
    );
    refused_at(
        &conf("lb_algo lblc", "TCP"),
        10,
        "no locality-based scheduler",
    );
    refused_at(&conf("lb_algo lc", "UDP"), 10, "UDP");
    refused_at(&conf("", "UDP"), 8, "keepalived's default without lb_algo");
    let c = ok(&conf("lb_algo rr", "UDP"));
    has(&c, "protocol = \"udp\"");
}

#[test]
fn what_direct_routing_cannot_do_is_refused() {
    let nat = service(REAL).replace("lb_kind DR", "lb_kind NAT");
    refused_at(&nat, 10, "lb_kind NAT: lbd forwards by direct routing only");
    refused_at(
        &service(REAL).replace("lb_kind DR", "lb_kind TUN"),
        10,
        "direct routing only",
    );
    refused_at(
        &service(REAL).replace("    lb_kind DR\n", ""),
        8,
        "keepalived's default is NAT",
    );
    let other_port = "    real_server 10.0.0.11 6380 {\n    }\n";
    refused_at(&service(other_port), 12, "cannot rewrite ports");
    refused_at(
        &service(&format!("    sorry_server 10.0.0.99 80\n{REAL}")),
        12,
        "cannot rewrite ports",
    );
    refused_at(
        &format!("{VRRP}virtual_server fwmark 3 {{\n}}\n"),
        8,
        "firewall-mark",
    );
    let http = "    real_server 10.0.0.11 6379 {\n        HTTP_GET {\n        }\n    }\n";
    refused_at(&service(http), 13, "HTTP_GET: lbd has no such check");
    let mixed = "    real_server 10.0.0.11 6379 {\n        TCP_CHECK {\n        }\n    }\n    real_server 10.0.0.12 6379 {\n        MISC_CHECK {\n            misc_path /bin/true\n        }\n    }\n";
    refused_at(&service(mixed), 17, "one kind of check per VIP");
}

#[test]
fn one_check_per_vip() {
    let server = |address: &str, timeout: u32| {
        format!(
            "    real_server {address} 6379 {{\n        TCP_CHECK {{\n            connect_timeout {timeout}\n        }}\n    }}\n"
        )
    };
    let body = format!(
        "{}{}{}    real_server 10.0.0.14 6379\n",
        server("10.0.0.11", 9),
        server("10.0.0.12", 3),
        server("10.0.0.13", 3)
    );
    let c = ok(&service(&body));
    has(&c, "# keepalived.conf:18 TCP_CHECK\n");
    has(&c, "timeout = 3 ");
    warned(
        &c,
        13,
        "real_server 10.0.0.11: lbd runs one check per VIP, the TCP_CHECK of keepalived.conf:18; this one differs and is not used: connect_timeout 9 (used: 3)",
    );
    warned(&c, 27, "real_server 10.0.0.14 has no checker");
}

#[test]
fn unknown_keywords_are_reported_on_their_line() {
    let c = ok(&format!(
        "bogus_top\n{}",
        service("    wieght 3\n    real_server 10.0.0.11 6379 {\n        wieght 2\n    }\n")
    ));
    warned(
        &c,
        1,
        "`bogus_top` in the top level: not known to lbd's importer; ignored",
    );
    warned(&c, 13, "`wieght` in virtual_server");
    warned(&c, 15, "`wieght` in real_server");
    let c = ok(
        "vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 1\n    preemtp_delay 300\n}\n",
    );
    warned(&c, 4, "`preemtp_delay` in vrrp_instance");
}

#[test]
fn vips_and_vrrp_instances() {
    // No vrrp_instance: the interface must be set by hand.
    let c = ok(
        "virtual_server 10.0.0.100 6379 {\n    lb_kind DR\n    lb_algo rr\n    real_server 10.0.0.11 6379\n}\n",
    );
    has(&c, "# no vrrp_instance named an interface");
    has(&c, "interfaces = [\"eth0\"]");
    assert_eq!(c.warnings[0].line, 0);
    assert!(
        c.warnings[0]
            .to_string()
            .starts_with(&format!("{MAIN}: no vrrp_instance"))
    );
    // A VIP no instance holds is forwarded by every director: said so.
    let c = ok(&service(REAL).replace("virtual_server 10.0.0.100", "virtual_server 10.0.0.200"));
    warned(
        &c,
        8,
        "10.0.0.200 is in no vrrp_instance's virtual_ipaddress",
    );
    // An IPv6 VIP cannot be failed over.
    let v6 = "virtual_server 2001:db8::100 6379 {\n    lb_kind DR\n    lb_algo rr\n    real_server 2001:db8::11 6379\n}\n";
    refused_at(&format!("{VRRP}{v6}"), 8, "IPv4 only");
    has(&ok(v6), "address = \"2001:db8::100\"");
}

#[test]
fn virtual_server_groups_become_one_vip_each() {
    let c = ok(&format!(
        "{VRRP}virtual_server_group REDIS {{\n    10.0.0.100 6379\n    10.0.0.101-102 6379\n}}\nvirtual_server group REDIS {{\n    lb_kind DR\n    lb_algo rr\n{REAL}}}\n"
    ));
    for address in ["10.0.0.100", "10.0.0.101", "10.0.0.102"] {
        has(
            &c,
            &format!("[[vip]]\naddress = \"{address}\"\nport = 6379\n"),
        );
    }
    warned(&c, 12, "becomes 3 [[vip]]");
    has(
        &c,
        "# keepalived.conf:12 virtual_server group REDIS (entry keepalived.conf:10 10.0.0.101-102 6379)",
    );
}

#[test]
fn strings_are_escaped() {
    assert_eq!(quote("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    let c = ok(
        "vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 1\n    notify_master \"/usr/bin/printf a\\b\"\n}\n",
    );
    has(
        &c,
        r#"notify_master = ["/bin/sh", "-c", "/usr/bin/printf a\\b"]"#,
    );
}

/// An instance with `extra` lines (from line 6), closing on the line after them.
fn instance_with(extra: &str) -> String {
    format!(
        "vrrp_instance VI_1 {{\n    interface eth0\n    virtual_router_id 51\n    virtual_ipaddress {{\n        10.0.0.100\n    }}\n{extra}}}\n"
    )
}

/// keepalived derives a missing priority from the state (vrrp.c): MASTER is the address
/// owner, 255; the TOML says so, or lbd's default 100 would lose elections keepalived won.
#[test]
fn state_master_without_priority_is_keepalived_priority_255() {
    let c = ok(&instance_with("    state MASTER\n"));
    has(&c, "priority = 255");
}

/// keepalived clears nopreempt for an initial MASTER ("nopreempt will not work with initial
/// state MASTER - clearing") and for priority 255: that director preempts, and so does lbd's.
#[test]
fn nopreempt_with_state_master_or_priority_255_is_cleared_as_keepalived_does() {
    for extra in [
        "    state MASTER\n    priority 150\n    nopreempt\n",
        "    state BACKUP\n    priority 255\n    nopreempt\n",
    ] {
        let c = ok(&instance_with(extra));
        assert!(
            !c.toml.contains("preempt = false"),
            "keepalived preempts with\n{extra}but lbd is told not to:\n{}",
            c.toml
        );
    }
}

/// keepalived 2.x reads a script keyword's first word as the command (a quoted string is
/// split into argv) and further words as the user and group to run it as: they are not
/// arguments, or the script's $1 would be "root", not "INSTANCE".
#[test]
fn words_after_an_unquoted_script_are_its_user_not_its_arguments() {
    let c = ok(&instance_with(
        "    notify /etc/keepalived/notify.sh root\n    notify_master /etc/keepalived/master.sh keepalived_script users\n",
    ));
    has(&c, "notify = [\"/etc/keepalived/notify.sh\"]");
    has(&c, "notify_master = [\"/etc/keepalived/master.sh\"]");
}

/// A persistence_granularity lbd would refuse (a prefix over 32 or a non-contiguous mask on
/// an IPv4 VIP) is an import error at its line, never a TOML that fails `lbd check`.
#[test]
fn a_granularity_lbd_refuses_is_an_import_error_not_an_invalid_toml() {
    for granularity in ["64", "33", "255.255.0.255"] {
        let text = service(&format!(
            "    persistence_timeout 60\n    persistence_granularity {granularity}\n{REAL}"
        ));
        if let Ok(c) = run(&[(MAIN, &text)]) {
            let parsed = crate::config::Config::parse(Path::new("(converted)"), &c.toml);
            assert!(
                parsed.is_ok(),
                "persistence_granularity {granularity}: the TOML fails lbd check: {}\n{}",
                parsed.err().map(|e| e.to_string()).unwrap_or_default(),
                c.toml
            );
        }
    }
}
