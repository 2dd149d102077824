use std::net::Ipv4Addr;

use super::*;

const GOOD: &str = r#"
instance = "lab"

[director]
interfaces = ["eth0"]

[timeouts]
tcp = 600

[[vip]]
address = "198.18.0.100"
port = 6379
protocol = "tcp"
scheduler = "maglev"

[[vip.backend]]
address = "198.18.0.11"
weight = 2
mac = "02:00:00:00:00:0b"

[[vip.backend]]
address = "198.18.0.12"
"#;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(Path::new("lb.toml"), text)
}

/// Parses `text`, expects exactly one error, and checks where it points.
fn one_error(text: &str, line: usize, key: &str, message_part: &str) {
    let errors = parse(text).expect_err("config must be rejected").0;
    assert_eq!(errors.len(), 1, "expected one error, got: {errors:#?}");
    let err = &errors[0];
    assert_eq!(err.file, Path::new("lb.toml"));
    assert_eq!(err.line, Some(line), "line of {err}");
    assert_eq!(err.key, key, "key of {err}");
    assert!(
        err.message.contains(message_part),
        "message of {err} should contain {message_part:?}"
    );
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("lb.toml:{line}: ")),
        "display: {shown}"
    );
}

fn with(line_to_replace: &str, replacement: &str) -> String {
    assert!(
        GOOD.contains(line_to_replace),
        "{line_to_replace:?} not in GOOD"
    );
    GOOD.replacen(line_to_replace, replacement, 1)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle")
        + 1
}

#[test]
fn good_config_parses_with_defaults_filled_in() {
    let config = parse(GOOD).unwrap();
    assert_eq!(config.instance, "lab");
    assert_eq!(config.interfaces, ["eth0"]);
    assert_eq!(config.xdp_mode, XdpModeSetting::Native);
    assert_eq!(config.max_flows, lb_common::DEFAULT_MAX_FLOWS);
    assert_eq!(config.timeouts.tcp, Duration::from_secs(600));
    assert_eq!(config.timeouts.udp, Duration::from_secs(300));
    assert_eq!(config.vips.len(), 1);
    let vip = &config.vips[0];
    assert_eq!(vip.address, Ipv4Addr::new(198, 18, 0, 100));
    assert_eq!(
        (vip.port, vip.protocol, vip.scheduler),
        (6379, Protocol::Tcp, Scheduler::Maglev)
    );
    assert_eq!(
        vip.backends,
        [
            BackendConfig {
                address: IpAddr::from(Ipv4Addr::new(198, 18, 0, 11)),
                weight: 2,
                mac: Some([2, 0, 0, 0, 0, 0xb]),
                notify: Notify::default(),
            },
            BackendConfig {
                address: IpAddr::from(Ipv4Addr::new(198, 18, 0, 12)),
                weight: 1,
                mac: None,
                notify: Notify::default(),
            },
        ]
    );
}

#[test]
fn toml_syntax_error_names_line() {
    let text = with("port = 6379", "port = = 6379");
    let errors = parse(&text).unwrap_err().0;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, Some(line_of(&text, "port = =")));
    assert_eq!(errors[0].key, "vip[0].port");
}

#[test]
fn wrong_type_names_line_and_key() {
    let text = with("port = 6379", "port = \"6379\"");
    let errors = parse(&text).unwrap_err().0;
    assert_eq!(
        errors[0].line,
        Some(line_of(&text, "port = \"6379\"")),
        "{errors:?}"
    );
    assert_eq!(errors[0].key, "vip[0].port");
}

#[test]
fn unknown_key_is_rejected() {
    let text = with("weight = 2", "wieght = 2");
    let errors = parse(&text).unwrap_err().0;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, Some(line_of(&text, "wieght")));
    assert_eq!(errors[0].key, "vip[0].backend[0].wieght");
    assert!(errors[0].message.contains("wieght"), "{}", errors[0]);
}

#[test]
fn missing_director_section() {
    let text = GOOD.replace("[director]\ninterfaces = [\"eth0\"]\n", "");
    let errors = parse(&text).unwrap_err().0;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].key, "director");
}

#[test]
fn empty_interfaces() {
    let text = with(r#"interfaces = ["eth0"]"#, "interfaces = []");
    one_error(
        &text,
        line_of(&text, "interfaces ="),
        "director.interfaces",
        "at least one",
    );
}

#[test]
fn bad_interface_name() {
    let text = with(
        r#"interfaces = ["eth0"]"#,
        r#"interfaces = ["eth0", "a/b"]"#,
    );
    one_error(
        &text,
        line_of(&text, "interfaces ="),
        "director.interfaces[1]",
        "not an interface name",
    );
}

#[test]
fn bad_xdp_mode() {
    let text = with(
        r#"interfaces = ["eth0"]"#,
        "interfaces = [\"eth0\"]\nxdp_mode = \"fast\"",
    );
    one_error(
        &text,
        line_of(&text, "xdp_mode"),
        "director.xdp_mode",
        "\"native\" or \"skb\"",
    );
}

#[test]
fn bad_max_flows() {
    let text = with(
        r#"interfaces = ["eth0"]"#,
        "interfaces = [\"eth0\"]\nmax_flows = 10",
    );
    one_error(
        &text,
        line_of(&text, "max_flows"),
        "director.max_flows",
        "between",
    );
}

#[test]
fn orphan_fragments_is_hash_by_default_pass_on_request_and_nothing_else() {
    let config = Config::parse(Path::new("lbd.toml"), &with("", "")).unwrap();
    assert_eq!(config.orphan_fragments, lb_common::ORPHAN_FRAGMENTS_HASH);
    let text = with(
        r#"interfaces = ["eth0"]"#,
        "interfaces = [\"eth0\"]\norphan_fragments = \"pass\"",
    );
    let config = Config::parse(Path::new("lbd.toml"), &text).unwrap();
    assert_eq!(config.orphan_fragments, lb_common::ORPHAN_FRAGMENTS_PASS);
    let text = with(
        r#"interfaces = ["eth0"]"#,
        "interfaces = [\"eth0\"]\norphan_fragments = \"drop\"",
    );
    one_error(
        &text,
        line_of(&text, "orphan_fragments"),
        "director.orphan_fragments",
        "\"hash\" or \"pass\"",
    );
}

#[test]
fn bad_instance_name() {
    let text = with(r#"instance = "lab""#, r#"instance = "../etc""#);
    one_error(
        &text,
        line_of(&text, "instance"),
        "instance",
        "[A-Za-z0-9_-]",
    );
}

#[test]
fn bad_timeout() {
    let text = with("tcp = 600", "tcp = 0");
    one_error(
        &text,
        line_of(&text, "tcp = 0"),
        "timeouts.tcp",
        "between 1",
    );
}

#[test]
fn bad_vip_address() {
    let text = with(r#"address = "198.18.0.100""#, r#"address = "198.18.0.300""#);
    one_error(
        &text,
        line_of(&text, "198.18.0.300"),
        "vip[0].address",
        "not an IP address",
    );
}

/// GOOD with every address IPv6 (2001:2::/48, RFC 5180's benchmarking range).
fn ipv6_config() -> String {
    GOOD.replace("198.18.0.100", "2001:2::100")
        .replace("198.18.0.11", "2001:2::11")
        .replace("198.18.0.12", "2001:2::12")
}

#[test]
fn an_ipv6_vip_with_ipv6_backends_is_accepted() {
    let config = parse(&ipv6_config()).unwrap();
    let vip = &config.vips[0];
    assert_eq!(vip.address, "2001:2::100".parse::<IpAddr>().unwrap());
    assert_eq!(
        vip.backends.iter().map(|b| b.address).collect::<Vec<_>>(),
        [
            "2001:2::11".parse::<IpAddr>().unwrap(),
            "2001:2::12".parse().unwrap()
        ]
    );
    assert_eq!(vip.key().address(), vip.address);
    assert_eq!(config.group_of(vip.address), 0);
}

#[test]
fn a_backend_of_the_other_family_is_refused() {
    // Backend errors point at their [[vip.backend]] table.
    let text = with(r#"address = "198.18.0.12""#, r#"address = "2001:2::12""#);
    one_error(
        &text,
        line_of(&text, "2001:2::12") - 1,
        "vip[0].backend[1].address",
        "different address families",
    );
    let text = ipv6_config().replace("2001:2::12", "198.18.0.12");
    one_error(
        &text,
        line_of(&text, "198.18.0.12") - 1,
        "vip[0].backend[1].address",
        "different address families",
    );
}

#[test]
fn link_local_and_ipv4_mapped_addresses_are_refused() {
    for (address, says) in [
        ("fe80::1", "link-local"),
        (
            "::ffff:198.18.0.100",
            "write the IPv4 address 198.18.0.100 itself",
        ),
        ("::1", "cannot be"),
        ("ff02::1", "cannot be"),
    ] {
        let text = ipv6_config().replace("2001:2::100", address);
        one_error(&text, line_of(&text, address), "vip[0].address", says);
    }
}

#[test]
fn an_ipv6_vip_beside_vrrp_is_refused() {
    let text = format!(
        "{GOOD}\n[[vip]]\naddress = \"2001:2::100\"\nport = 6379\n[[vip.backend]]\naddress = \"2001:2::11\"\n{VRRP}"
    );
    one_error(
        &text,
        line_of(&text, "2001:2::100"),
        "vip[1].address",
        "cannot be failed over by [[vrrp]]",
    );
    // Without VRRP the same VIP is fine.
    let text = format!(
        "{GOOD}\n[[vip]]\naddress = \"2001:2::100\"\nport = 6379\n[[vip.backend]]\naddress = \"2001:2::11\"\n"
    );
    assert!(parse(&text).is_ok());
}

#[test]
fn persistence_granularity_is_a_prefix_length_for_ipv6() {
    let text = ipv6_config().replace(
        r#"scheduler = "maglev""#,
        "scheduler = \"maglev\"\npersistence_timeout = 60\npersistence_granularity = 64",
    );
    let persistence = parse(&text).unwrap().vips[0].persistence.unwrap();
    assert_eq!(
        persistence.netmask,
        "ffff:ffff:ffff:ffff::".parse::<IpAddr>().unwrap()
    );
    for bad in ["0", "129", "\"255.255.255.0\""] {
        let text = ipv6_config().replace(
            r#"scheduler = "maglev""#,
            &format!("persistence_timeout = 60\npersistence_granularity = {bad}"),
        );
        one_error(
            &text,
            line_of(&text, "persistence_granularity"),
            "vip[0].persistence_granularity",
            "prefix length from 1 to 128",
        );
    }
    // An IPv4 VIP takes a prefix length too.
    let text = with(
        r#"scheduler = "maglev""#,
        "persistence_timeout = 60\npersistence_granularity = 24",
    );
    let persistence = parse(&text).unwrap().vips[0].persistence.unwrap();
    assert_eq!(
        persistence.netmask,
        IpAddr::from(Ipv4Addr::new(255, 255, 255, 0))
    );
}

#[test]
fn vip_address_cannot_be_special() {
    let text = with(r#"address = "198.18.0.100""#, r#"address = "0.0.0.0""#);
    one_error(
        &text,
        line_of(&text, "0.0.0.0"),
        "vip[0].address",
        "cannot be",
    );
}

#[test]
fn missing_vip_address() {
    let text = with("address = \"198.18.0.100\"\n", "");
    one_error(
        &text,
        line_of(&text, "[[vip]]"),
        "vip[0].address",
        "missing",
    );
}

#[test]
fn port_out_of_range() {
    let text = with("port = 6379", "port = 70000");
    one_error(
        &text,
        line_of(&text, "port = 70000"),
        "vip[0].port",
        "between 1 and 65535",
    );
    let text = with("port = 6379", "port = 0");
    one_error(
        &text,
        line_of(&text, "port = 0"),
        "vip[0].port",
        "between 1 and 65535",
    );
}

#[test]
fn missing_port() {
    let text = with("port = 6379\n", "");
    one_error(&text, line_of(&text, "[[vip]]"), "vip[0].port", "missing");
}

#[test]
fn bad_protocol() {
    let text = with(r#"protocol = "tcp""#, r#"protocol = "sctp""#);
    one_error(
        &text,
        line_of(&text, "sctp"),
        "vip[0].protocol",
        "\"tcp\" or \"udp\"",
    );
}

#[test]
fn unsupported_scheduler() {
    let text = with(r#"scheduler = "maglev""#, r#"scheduler = "lblc""#);
    one_error(
        &text,
        line_of(&text, "lblc"),
        "vip[0].scheduler",
        "supported",
    );
}

#[test]
fn every_ipvsadm_scheduler_we_have_is_accepted_by_name_and_alias() {
    for (name, want) in [
        ("maglev", Scheduler::Maglev),
        ("MH", Scheduler::Maglev),
        ("sh", Scheduler::SourceHash),
        ("dh", Scheduler::DestinationHash),
        ("rr", Scheduler::RoundRobin),
        ("wrr", Scheduler::WeightedRoundRobin),
        ("lc", Scheduler::LeastConnections),
        ("Wlc", Scheduler::WeightedLeastConnections),
    ] {
        let text = with(r#"scheduler = "maglev""#, &format!("scheduler = {name:?}"));
        let config = Config::parse(Path::new("lbd.toml"), &text).unwrap();
        assert_eq!(config.vips[0].scheduler, want, "{name}");
        assert_eq!(Scheduler::from_name(&want.to_string()), Some(want));
    }
}

#[test]
fn a_vip_may_have_timeouts_of_its_own_and_keeps_the_global_ones_otherwise() {
    let text = with(
        r#"scheduler = "maglev""#,
        "scheduler = \"maglev\"\n[vip.timeouts]\ntcp = 60\nudp = 10",
    );
    let config = Config::parse(Path::new("lbd.toml"), &text).unwrap();
    assert_eq!(
        config.vips[0].timeouts,
        VipTimeouts {
            tcp: Some(Duration::from_secs(60)),
            tcp_fin: None,
            udp: Some(Duration::from_secs(10)),
        }
    );
    let plain = Config::parse(Path::new("lbd.toml"), &with("", "")).unwrap();
    assert_eq!(plain.vips[0].timeouts, VipTimeouts::default());
    let text = with(
        r#"scheduler = "maglev""#,
        "scheduler = \"maglev\"\n[vip.timeouts]\ntcp = 0",
    );
    one_error(
        &text,
        line_of(&text, "tcp = 0"),
        "vip[0].timeouts.tcp",
        "between 1 and 604800",
    );
    let text = with(
        r#"scheduler = "maglev""#,
        "scheduler = \"maglev\"\n[vip.timeouts]\ntcp_fn = 5",
    );
    one_error(
        &text,
        line_of(&text, "tcp_fn"),
        "vip[0].timeouts.tcp_fn",
        "",
    );
}

#[test]
fn least_connection_schedulers_are_refused_on_a_udp_vip() {
    for scheduler in ["lc", "wlc"] {
        let text = with(r#"protocol = "tcp""#, r#"protocol = "udp""#).replace(
            r#"scheduler = "maglev""#,
            &format!("scheduler = {scheduler:?}"),
        );
        one_error(
            &text,
            line_of(&text, "scheduler"),
            "vip[0].scheduler",
            "a UDP flow has no end",
        );
    }
}

#[test]
fn persistence_takes_a_timeout_and_a_netmask() {
    let text = with(
        r#"scheduler = "maglev""#,
        "scheduler = \"wrr\"\npersistence_timeout = 300\npersistence_granularity = \"255.255.255.0\"",
    );
    let config = Config::parse(Path::new("lbd.toml"), &text).unwrap();
    assert_eq!(
        config.vips[0].persistence,
        Some(Persistence {
            timeout: Duration::from_secs(300),
            netmask: IpAddr::from(Ipv4Addr::new(255, 255, 255, 0)),
        })
    );
    let off = with(r#"scheduler = "maglev""#, "persistence_timeout = 0");
    assert_eq!(
        Config::parse(Path::new("lbd.toml"), &off).unwrap().vips[0].persistence,
        None
    );
    for (bad, says) in [
        ("persistence_timeout = -1", "between 0 and"),
        (
            "persistence_timeout = 30\npersistence_granularity = \"255.0.255.0\"",
            "netmask",
        ),
        (
            "persistence_granularity = \"255.255.255.0\"",
            "needs persistence_timeout",
        ),
    ] {
        let text = with(r#"scheduler = "maglev""#, bad);
        let key = if bad.contains("granularity") {
            "persistence_granularity"
        } else {
            "persistence_timeout"
        };
        one_error(&text, line_of(&text, key), &format!("vip[0].{key}"), says);
    }
}

#[test]
fn duplicate_vip() {
    let second = "\n[[vip]]\naddress = \"198.18.0.100\"\nport = 6379\n[[vip.backend]]\naddress = \"198.18.0.13\"\n";
    let text = format!("{GOOD}{second}");
    let second_vip_line = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "[[vip]]")
        .nth(1)
        .unwrap()
        .0
        + 1;
    one_error(&text, second_vip_line, "vip[1]", "defined twice");
}

#[test]
fn same_address_other_port_is_a_different_vip() {
    let second = "\n[[vip]]\naddress = \"198.18.0.100\"\nport = 6380\n[[vip.backend]]\naddress = \"198.18.0.13\"\n";
    assert_eq!(parse(&format!("{GOOD}{second}")).unwrap().vips.len(), 2);
}

#[test]
fn vip_without_backends() {
    let text =
        "[director]\ninterfaces = [\"eth0\"]\n\n[[vip]]\naddress = \"198.18.0.100\"\nport = 6379\n";
    one_error(text, 4, "vip[0].backend", "no backends");
}

#[test]
fn weight_out_of_range() {
    let text = with("weight = 2", "weight = -1");
    one_error(
        &text,
        line_of(&text, "weight = -1"),
        "vip[0].backend[0].weight",
        "between 0 (drain) and 65535",
    );
    let text = with("weight = 2", "weight = 65536");
    one_error(
        &text,
        line_of(&text, "weight = 65536"),
        "vip[0].backend[0].weight",
        "65535",
    );
}

#[test]
fn zero_weight_is_drain_and_valid() {
    let config = parse(&with("weight = 2", "weight = 0")).unwrap();
    assert_eq!(config.vips[0].backends[0].weight, 0);
}

#[test]
fn bad_backend_address() {
    let text = with(r#"address = "198.18.0.12""#, r#"address = "redis-2""#);
    one_error(
        &text,
        line_of(&text, "redis-2"),
        "vip[0].backend[1].address",
        "not an IP address",
    );
}

#[test]
fn duplicate_backend() {
    let text = with(r#"address = "198.18.0.12""#, r#"address = "198.18.0.11""#);
    let second_backend_line = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "[[vip.backend]]")
        .nth(1)
        .unwrap()
        .0
        + 1;
    one_error(
        &text,
        second_backend_line,
        "vip[0].backend[1].address",
        "listed twice",
    );
}

#[test]
fn bad_mac() {
    let text = with(r#"mac = "02:00:00:00:00:0b""#, r#"mac = "02:00:00:00:0b""#);
    one_error(
        &text,
        line_of(&text, "mac ="),
        "vip[0].backend[0].mac",
        "six hex bytes",
    );
    let text = with(
        r#"mac = "02:00:00:00:00:0b""#,
        r#"mac = "01:00:5e:00:00:01""#,
    );
    one_error(
        &text,
        line_of(&text, "mac ="),
        "vip[0].backend[0].mac",
        "unicast",
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let text = with("port = 6379", "port = 0").replace("weight = 2", "weight = -5");
    let errors = parse(&text).unwrap_err().0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["vip[0].port", "vip[0].backend[0].weight"]);
}

#[test]
fn unreadable_file_names_the_file() {
    let errors = Config::load(Path::new("/nonexistent/lb.toml"))
        .unwrap_err()
        .0;
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .starts_with("/nonexistent/lb.toml: cannot read:"),
        "{}",
        errors[0]
    );
}

#[test]
fn mac_round_trip() {
    assert_eq!(
        parse_mac("02:aB:00:00:00:ff"),
        Some([2, 0xab, 0, 0, 0, 0xff])
    );
    assert_eq!(
        parse_mac("02-ab-00-00-00-ff"),
        Some([2, 0xab, 0, 0, 0, 0xff])
    );
    assert_eq!(parse_mac("02:ab:00:00:00:ff:00"), None);
    assert_eq!(format_mac(&[2, 0xab, 0, 0, 0, 0xff]), "02:ab:00:00:00:ff");
}

#[test]
fn type_error_in_a_later_backend_names_its_indices() {
    let text = with(
        r#"address = "198.18.0.12""#,
        "address = \"198.18.0.12\"\nweight = \"heavy\"",
    );
    let errors = parse(&text).unwrap_err().0;
    assert_eq!(errors[0].key, "vip[0].backend[1].weight", "{errors:?}");
    assert_eq!(errors[0].line, Some(line_of(&text, "heavy")));
}

#[test]
fn type_error_in_director_names_the_table() {
    let text = with(r#"interfaces = ["eth0"]"#, "interfaces = \"eth0\"");
    let errors = parse(&text).unwrap_err().0;
    assert_eq!(errors[0].key, "director.interfaces", "{errors:?}");
}

#[test]
fn commented_table_headers_still_give_key_paths() {
    let text = GOOD
        .replace("[[vip]]", "[[vip]]  # primary")
        .replacen("[[vip.backend]]", "[[vip.backend]] # rs1", 1)
        .replace("port = 6379", "port = \"6379\"");
    let errors = parse(&text).unwrap_err().0;
    assert_eq!(errors[0].key, "vip[0].port", "{errors:?}");
}

#[test]
fn enum_values_are_case_insensitive() {
    let text = with(r#"scheduler = "maglev""#, r#"scheduler = "MH""#)
        .replace(r#"protocol = "tcp""#, r#"protocol = "TCP""#);
    assert_eq!(parse(&text).unwrap().vips[0].scheduler, Scheduler::Maglev);
}

#[test]
fn backend_cannot_be_the_vip() {
    let text = with(r#"address = "198.18.0.12""#, r#"address = "198.18.0.100""#);
    let second_backend_line = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "[[vip.backend]]")
        .nth(1)
        .unwrap()
        .0
        + 1;
    one_error(
        &text,
        second_backend_line,
        "vip[0].backend[1].address",
        "VIP itself",
    );
}

#[test]
fn backends_are_capped_so_a_reload_can_replace_them_all() {
    let mut text = String::from("[director]\ninterfaces = [\"eth0\"]\n");
    for v in 0..9u32 {
        text.push_str(&format!(
            "[[vip]]\naddress = \"198.18.1.{}\"\nport = 6379\n",
            v + 1
        ));
        for b in 0..230u32 {
            text.push_str(&format!(
                "[[vip.backend]]\naddress = \"198.19.{}.{}\"\n",
                v,
                b + 1
            ));
        }
    }
    let errors = parse(&text).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].message.contains(&format!(
            "2070 backends in all; at most {MAX_CONFIGURED_BACKENDS}"
        )),
        "{}",
        errors[0]
    );
}

#[test]
fn dotted_keys_and_inline_tables_read_like_the_table_form() {
    let dotted = "instance = \"lab\"\ndirector.interfaces = [\"eth0\"]\ndirector.max_flows = 4096\n\
                  timeouts.tcp = 5\n\n[[vip]]\naddress = \"198.18.0.100\"\nport = 6379\n\
                  backend = [{ address = \"198.18.0.11\", weight = 2 }]\n";
    let config = parse(dotted).unwrap();
    assert_eq!(config.interfaces, ["eth0"]);
    assert_eq!(config.max_flows, 4096);
    assert_eq!(config.timeouts.tcp, Duration::from_secs(5));
    assert_eq!(config.vips[0].backends[0].weight, 2);
    let inline = "director = { interfaces = [\"eth0\"] }\nvip = [{ address = \"198.18.0.100\", \
                  port = 6379, backend = [{ address = \"198.18.0.11\" }] }]\n";
    assert_eq!(parse(inline).unwrap().vips.len(), 1);
    // An error inside a dotted key still names the key and its line.
    one_error(
        "director.interfaces = [\"eth0\"]\ndirector.max_flows = 10\n[[vip]]\naddress = \"198.18.0.100\"\nport = 1\n[[vip.backend]]\naddress = \"198.18.0.11\"\n",
        2,
        "director.max_flows",
        "between 1024",
    );
}

#[test]
fn every_error_is_one_line() {
    for text in [
        with("port = 6379", "port = = 6379"),
        with("[timeouts]", "[director]"),
        with("port = 6379", "port = 6379\nport = 6380"),
        with("address = \"198.18.0.11\"", "address = \"198.18.\\q0.11\""),
        with("[[vip]]", "[[vip]"),
    ] {
        for err in parse(&text).expect_err("rejected").0 {
            let shown = err.to_string();
            assert!(!shown.contains('\n'), "two lines: {shown:?}");
            assert!(err.line.is_some(), "no line: {shown}");
        }
    }
}

#[test]
fn a_misspelt_section_is_reported_as_itself() {
    let text = with("[timeouts]", "[timeout]");
    one_error(
        &text,
        line_of(&text, "[timeout]"),
        "timeout",
        "unknown key `timeout`",
    );
}

#[test]
fn headers_with_spaces_keep_indices() {
    let text = format!(
        "{}\n[[ vip ]]\naddress = \"198.18.0.101\"\nport = 1\n[[ vip . backend ]]\naddress = \"198.18.0.21\"\nwieght = 2\n",
        GOOD
    );
    one_error(
        &text,
        line_of(&text, "wieght"),
        "vip[1].backend[0].wieght",
        "unknown key",
    );
}

#[test]
fn an_element_of_a_multi_line_array_is_named() {
    let text = with(
        r#"interfaces = ["eth0"]"#,
        "interfaces = [\n  \"eth0\",\n  5,\n]",
    );
    one_error(
        &text,
        line_of(&text, "  5,"),
        "director.interfaces[1]",
        "expected a string, found an integer",
    );
}

#[test]
fn type_errors_say_what_is_wanted_in_words() {
    let cases = [
        (
            "port = 6379",
            "port = \"6379\"",
            "expected an integer, found a string",
        ),
        (
            "tcp = 600",
            "tcp = 6.5",
            "expected an integer, found a float",
        ),
        (
            "protocol = \"tcp\"",
            "protocol = true",
            "expected a string, found a boolean",
        ),
        (
            "interfaces = [\"eth0\"]",
            "interfaces = \"eth0\"",
            "expected an array, found a string",
        ),
    ];
    for (from, to, want) in cases {
        let text = with(from, to);
        let errors = parse(&text).expect_err("rejected").0;
        assert!(errors[0].message.contains(want), "{to}: {}", errors[0]);
        assert!(!errors[0].message.contains("i64"), "{}", errors[0]);
    }
}

#[test]
fn errors_come_in_line_order() {
    let text = "[[vip]]\naddress = \"198.18.0.100\"\nport = 0\n[[vip.backend]]\naddress = \"198.18.0.11\"\n\
                [director]\ninterfaces = [\"eth0\"]\nxdp_mode = \"fast\"\n";
    let lines: Vec<Option<usize>> = parse(text)
        .expect_err("rejected")
        .0
        .iter()
        .map(|e| e.line)
        .collect();
    assert_eq!(lines, [Some(3), Some(8)]);
}

#[test]
fn interface_names_follow_the_kernels_rule_in_bytes() {
    for name in [
        ".",
        "..",
        "eth0:1",
        "a/b",
        "a b",
        "",
        "sixteen-bytes-xx",
        "ethernet-αβγδ",
    ] {
        let text = with(
            r#"interfaces = ["eth0"]"#,
            &format!("interfaces = [{name:?}]"),
        );
        let errors = parse(&text).expect_err(name).0;
        assert_eq!(errors[0].key, "director.interfaces[0]", "{name:?}");
        assert!(errors[0].message.contains("bytes"), "{}", errors[0]);
    }
    // 15 bytes, the most Linux allows.
    let text = with(
        r#"interfaces = ["eth0"]"#,
        r#"interfaces = ["fifteen-bytes-x"]"#,
    );
    assert!(parse(&text).is_ok());
}

#[test]
fn conntrack_memory_is_estimated_per_flow() {
    let text = with(
        r#"interfaces = ["eth0"]"#,
        "interfaces = [\"eth0\"]\nmax_flows = 67108864",
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.conntrack_memory_bytes(), 67_108_864 * 232);
}

const CHECKED: &str = r#"
[director]
interfaces = ["eth0"]

[[vip]]
address = "198.18.0.100"
port = 6379
role = "master"

[vip.check]
type = "redis"
interval = 0.5
password_env = "REDIS_PASSWORD"

[[vip.backend]]
address = "198.18.0.11"
"#;

#[test]
fn a_health_check_reads_with_keepalived_defaults() {
    let config = parse(CHECKED).unwrap();
    let vip = &config.vips[0];
    assert_eq!(vip.role, Role::Master);
    assert_eq!(vip.on_down, OnDown::Remove);
    let check = vip.check.as_ref().unwrap();
    assert_eq!(
        check,
        &CheckConfig {
            kind: CheckKind::Redis {
                auth: Some(RedisAuth {
                    user: None,
                    password: Secret::Env("REDIS_PASSWORD".into())
                }),
                port: None,
            },
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            fall: 3,
            rise: 2,
            delay_before_retry: Duration::from_millis(500),
            initially_up: false,
            load_weights: None,
            max_memory_permille: None,
        }
    );
    // No check table: no checks, every backend up (as before).
    assert_eq!(parse(GOOD).unwrap().vips[0].check, None);
    // An empty check table is a redis check.
    let text = GOOD.replacen("[[vip.backend]]", "[vip.check]\n\n[[vip.backend]]", 1);
    assert!(matches!(
        parse(&text).unwrap().vips[0].check.as_ref().unwrap().kind,
        CheckKind::Redis {
            auth: None,
            port: None
        }
    ));
}

#[test]
fn a_password_is_never_printed() {
    let text = CHECKED.replace(
        "password_env = \"REDIS_PASSWORD\"",
        "password = \"hunter2\"",
    );
    let config = parse(&text).unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[test]
fn health_check_mistakes_name_their_key() {
    let at = |needle| line_of(CHECKED, needle);
    one_error(
        &CHECKED.replace("role = \"master\"", "role = \"primary\""),
        at("role ="),
        "vip[0].role",
        "expected \"master\", \"replica\" or \"any\"",
    );
    one_error(
        &CHECKED
            .replace("type = \"redis\"", "type = \"tcp\"")
            .replace("password_env = \"REDIS_PASSWORD\"", ""),
        at("role ="),
        "vip[0].role",
        "needs a redis check",
    );
    one_error(
        &CHECKED.replace("interval = 0.5", "interval = \"1s\""),
        at("interval"),
        "vip[0].check.interval",
        "expected a number of seconds, found a string",
    );
    one_error(
        &CHECKED.replace("interval = 0.5", "interval = 0"),
        at("interval"),
        "vip[0].check.interval",
        "between 0.01 and 3600",
    );
    one_error(
        &CHECKED.replace("interval = 0.5", "fall = 0"),
        at("interval"),
        "vip[0].check.fall",
        "between 1 and 100",
    );
    one_error(
        &CHECKED.replace("interval = 0.5", "password_file = \"/etc/lbd/secret\""),
        at("password_env"),
        "vip[0].check.password_env",
        "give one of password",
    );
    one_error(
        &CHECKED.replace("password_env = \"REDIS_PASSWORD\"", "user = \"lbd\""),
        at("password_env"),
        "vip[0].check.user",
        "needs a password",
    );
    one_error(
        &CHECKED.replace("role = \"master\"", "max_lag_secs = 3"),
        at("role ="),
        "vip[0].max_lag_secs",
        "role = \"replica\"",
    );
    one_error(
        &CHECKED.replace("interval = 0.5", "intreval = 0.5"),
        at("interval"),
        "vip[0].check.intreval",
        "unknown key",
    );
}

#[test]
fn script_checks_take_an_absolute_argv_only() {
    let script = |argv: &str| {
        CHECKED
            .replace("role = \"master\"", "")
            .replace(
                "type = \"redis\"",
                &format!("type = \"script\"\nscript = {argv}"),
            )
            .replace("password_env = \"REDIS_PASSWORD\"", "dynamic_weight = true")
    };
    let config = parse(&script("[\"/usr/local/bin/check\", \"--fast\"]")).unwrap();
    assert_eq!(
        config.vips[0].check.as_ref().unwrap().kind,
        CheckKind::Script {
            argv: vec!["/usr/local/bin/check".into(), "--fast".into()],
            dynamic_weight: true
        }
    );
    let text = script("[\"check.sh\"]");
    one_error(
        &text,
        line_of(&text, "script ="),
        "vip[0].check.script[0]",
        "absolute path",
    );
    let text = script("[]");
    one_error(
        &text,
        line_of(&text, "script ="),
        "vip[0].check.script",
        "at least the program",
    );
    let text = CHECKED
        .replace(
            "type = \"redis\"",
            "type = \"tcp\"\nscript = [\"/bin/true\"]",
        )
        .replace("role = \"master\"", "");
    let errors = parse(&text).unwrap_err().0;
    assert!(
        errors.iter().any(
            |e| e.key == "vip[0].check.script" && e.message.contains("not used by a tcp check")
        ),
        "{errors:?}"
    );
}

/// The kernel's dev_valid_name uses its own isspace() on bytes, which is true for
/// 0xA0 (so "à" = c3 a0 is refused: `ip link add à type veth` -> EINVAL) and false for the
/// bytes of U+0085 (so "e\u{85}" is a valid name).
#[test]
fn interface_names_follow_the_kernels_isspace() {
    assert!(
        validate::interface_name_problem("\u{e0}").is_some(),
        "the kernel refuses \"\u{e0}\" (byte 0xa0 is a space to it)"
    );
    assert_eq!(
        validate::interface_name_problem("e\u{85}"),
        None,
        "the kernel accepts \"e\\u{{85}}\" (bytes c2 85)"
    );
}

#[test]
fn sorry_servers_and_notify_commands_read_like_keepalived() {
    let text = CHECKED
        .replace("role = \"master\"", "sorry_server = \"198.18.0.99\"")
        .replace(
            "password_env = \"REDIS_PASSWORD\"",
            "notify_down = [\"/usr/local/bin/page\", \"redis\"]",
        )
        .replace(
            "address = \"198.18.0.11\"",
            "address = \"198.18.0.11\"\nnotify_up = [\"/bin/logger\"]",
        );
    let vip = &parse(&text).unwrap().vips[0];
    assert_eq!(
        vip.sorry_server.as_ref().unwrap().address,
        Ipv4Addr::new(198, 18, 0, 99)
    );
    assert_eq!(
        vip.notify.down.as_deref(),
        Some(&["/usr/local/bin/page".to_owned(), "redis".to_owned()][..])
    );
    assert_eq!(
        vip.backends[0].notify.up.as_deref(),
        Some(&["/bin/logger".to_owned()][..])
    );
    // A sorry server needs a check, and cannot be a backend.
    let text = GOOD.replace(
        "scheduler = \"maglev\"",
        "scheduler = \"maglev\"\nsorry_server = \"198.18.0.99\"",
    );
    one_error(
        &text,
        line_of(&text, "sorry_server"),
        "vip[0].sorry_server",
        "needs a [vip.check]",
    );
    let text = CHECKED.replace(
        "role = \"master\"",
        "sorry_server = { address = \"198.18.0.11\" }",
    );
    one_error(
        &text,
        line_of(&text, "sorry_server"),
        "vip[0].sorry_server",
        "one of its backends",
    );
    let text = CHECKED.replace(
        "password_env = \"REDIS_PASSWORD\"",
        "notify_up = [\"page.sh\"]",
    );
    one_error(
        &text,
        line_of(&text, "notify_up"),
        "vip[0].check.notify_up[0]",
        "absolute path",
    );
}

#[test]
fn a_write_vip_cannot_drain_a_demoted_master() {
    let text = CHECKED.replace(
        "role = \"master\"",
        "role = \"master\"\non_down = \"drain\"",
    );
    one_error(
        &text,
        line_of(&text, "on_down"),
        "vip[0].on_down",
        "must remove a demoted master",
    );
}

const VRRP: &str = r#"
[[vrrp]]
name = "VI_1"
interface = "eth0"
virtual_router_id = 51
priority = 150
advert_int = 0.1
vips = ["198.18.0.100"]
unicast_src = "198.18.0.2"
unicast_peers = ["198.18.0.3"]
notify = ["/usr/local/bin/vrrp-notify"]
"#;

#[test]
fn a_vrrp_instance_parses_and_owns_its_vips_group() {
    let config = parse(&format!("{GOOD}{VRRP}")).unwrap();
    let v = &config.vrrp[0];
    assert_eq!(
        (v.virtual_router_id, v.priority, v.advert_int_cs, v.version),
        (51, 150, 10, 3)
    );
    assert!(v.preempt);
    assert_eq!(v.garp_master_repeat, 5);
    assert_eq!(v.unicast_peers, [Ipv4Addr::new(198, 18, 0, 3)]);
    assert_eq!(
        config.group_of(IpAddr::from(Ipv4Addr::new(198, 18, 0, 100))),
        1
    );
    assert_eq!(
        config.group_of(IpAddr::from(Ipv4Addr::new(198, 18, 0, 101))),
        0
    );
}

#[test]
fn vrrp_mistakes_name_their_line_and_key() {
    let text = format!("{GOOD}{VRRP}");
    let cases = [
        (
            "advert_int = 0.1",
            "advert_int = 0.1\nversion = 2",
            "vrrp[0].advert_int",
            "whole seconds",
        ),
        (
            "advert_int = 0.1",
            "advert_int = 0.005",
            "vrrp[0].advert_int",
            "centiseconds",
        ),
        (
            "priority = 150",
            "auth_pass = \"secret\"",
            "vrrp[0].auth_pass",
            "version 3 has no authentication",
        ),
        (
            "interface = \"eth0\"",
            "interface = \"eth1\"",
            "vrrp[0].interface",
            "not one of director.interfaces",
        ),
        (
            "virtual_router_id = 51",
            "virtual_router_id = 0",
            "vrrp[0].virtual_router_id",
            "between 1 and 255",
        ),
        (
            "unicast_peers = [\"198.18.0.3\"]",
            "unicast_peers = [\"198.18.0.2\"]",
            "vrrp[0].unicast_peers",
            "own unicast_src",
        ),
        (
            "vips = [\"198.18.0.100\"]",
            "vips = [\"198.18.0.100\", \"198.18.0.100\"]",
            "vrrp[0].vips[1]",
            "listed twice",
        ),
        (
            "priority = 150",
            "priority = 150\npreempt_delay = 5\npreempt = false",
            "vrrp[0].preempt_delay",
            "no effect",
        ),
    ];
    for (from, to, key, message) in cases {
        let bad = text.replacen(from, to, 1);
        let errors = parse(&bad).expect_err(to).0;
        assert_eq!(errors.len(), 1, "{to}: {errors:#?}");
        assert_eq!(errors[0].key, key, "{to}: {}", errors[0]);
        assert!(errors[0].message.contains(message), "{to}: {}", errors[0]);
        assert!(errors[0].line.is_some(), "{to}: {}", errors[0]);
    }
    let auth_too_long = text.replacen(
        "advert_int = 0.1",
        "advert_int = 1\nversion = 2\nauth_pass = \"123456789\"",
        1,
    );
    let errors = parse(&auth_too_long).unwrap_err().0;
    assert!(errors[0].message.contains("1 to 8 bytes"), "{}", errors[0]);
}

#[test]
fn two_instances_may_not_share_a_router_id_or_an_address() {
    let second = VRRP
        .replace("VI_1", "VI_2")
        .replace("priority = 150", "priority = 100");
    let errors = parse(&format!("{GOOD}{VRRP}{second}")).unwrap_err().0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["vrrp[1].virtual_router_id", "vrrp[1].vips"],
        "{errors:#?}"
    );
}

#[test]
fn a_sync_group_names_existing_instances_once_each() {
    let second = VRRP
        .replace("VI_1", "VI_2")
        .replace("virtual_router_id = 51", "virtual_router_id = 52")
        .replace("198.18.0.100", "198.18.0.101");
    let group = "\n[[vrrp_sync_group]]\nname = \"VG_1\"\ninstances = [\"VI_1\", \"VI_2\"]\n";
    let config = parse(&format!("{GOOD}{VRRP}{second}{group}")).unwrap();
    assert_eq!(config.vrrp_sync_groups[0].instances, [0, 1]);
    let text = format!(
        "{GOOD}{VRRP}{second}{group}{}",
        group
            .replace("VG_1", "VG_2")
            .replace("\"VI_2\"", "\"VI_3\"")
    );
    let errors = parse(&text).unwrap_err().0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "vrrp_sync_group[1].instances[0]",
            "vrrp_sync_group[1].instances[1]"
        ],
        "{errors:#?}"
    );
    assert!(errors[0].message.contains("already in sync group \"VG_1\""));
    assert!(errors[1].message.contains("no [[vrrp]] instance"));
}

#[test]
fn a_sync_group_member_may_not_weigh_its_own_pool() {
    let second = VRRP
        .replace("VI_1", "VI_2")
        .replace("virtual_router_id = 51", "virtual_router_id = 52")
        .replace("198.18.0.100", "198.18.0.101");
    let weighed = VRRP.replace("priority = 150", "priority = 150\ntrack_pool_weight = 60");
    let group = "\n[[vrrp_sync_group]]\nname = \"VG_1\"\ninstances = [\"VI_1\", \"VI_2\"]\n";
    let errors = parse(&format!("{GOOD}{weighed}{second}{group}"))
        .unwrap_err()
        .0;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].key, "vrrp_sync_group[0].instances[0]");
    assert!(
        errors[0].message.contains("track_pool_weight"),
        "{}",
        errors[0]
    );
}

#[test]
fn metrics_listen_on_loopback_unless_told_otherwise() {
    let default = parse(GOOD).unwrap();
    assert_eq!(default.metrics, Some("127.0.0.1:9917".parse().unwrap()));
    let text = format!("{GOOD}\n[metrics]\nlisten = \"[::1]:9100\"\n");
    assert_eq!(
        parse(&text).unwrap().metrics,
        Some("[::1]:9100".parse().unwrap())
    );
    let text = format!("{GOOD}\n[metrics]\nenabled = false\n");
    assert_eq!(parse(&text).unwrap().metrics, None);
}

#[test]
fn a_bad_metrics_address_names_its_line_and_key() {
    let text = format!("{GOOD}\n[metrics]\nlisten = \"localhost\"\n");
    let line = line_of(&text, "listen = \"localhost\"");
    one_error(&text, line, "metrics.listen", "is not an address and port");
    let text = format!("{GOOD}\n[metrics]\nlisten = \"127.0.0.1:0\"\nport = 1\n");
    let errors = parse(&text).unwrap_err().0;
    assert!(
        errors.iter().any(|e| e.key == "metrics.listen")
            && errors.iter().any(|e| e.key == "metrics.port"),
        "{errors:#?}"
    );
}
