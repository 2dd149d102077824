//! Health checks: TCP_CHECK and MISC_CHECK as lbd's `[vip.check]`, one per VIP.

use std::net::IpAddr;

use super::lex::Stmt;
use super::lvs::Server;
use super::{Importer, Loc, Ms, Result, needs_shell, seconds};

/// keepalived's defaults where lbd's differ: delay_loop 60 s, connect_timeout 5 s, 1 s
/// before a retry (TCP_CHECK retries once, MISC_CHECK never).
const DEFAULT_DELAY_LOOP: Ms = 60_000;
const DEFAULT_CONNECT_TIMEOUT: Ms = 5_000;
const DEFAULT_DELAY_BEFORE_RETRY: Ms = 1_000;

/// Checker timings, set on the virtual_server, the real_server or the checker; the innermost
/// wins, as in keepalived.
#[derive(Clone, Default)]
pub(super) struct Timing {
    delay_loop: Option<Ms>,
    timeout: Option<Ms>,
    retry: Option<u32>,
    delay_before_retry: Option<Ms>,
    alpha: Option<bool>,
}

impl Timing {
    pub fn within(&self, outer: &Timing) -> Timing {
        Timing {
            delay_loop: self.delay_loop.or(outer.delay_loop),
            timeout: self.timeout.or(outer.timeout),
            retry: self.retry.or(outer.retry),
            delay_before_retry: self.delay_before_retry.or(outer.delay_before_retry),
            alpha: self.alpha.or(outer.alpha),
        }
    }
}

/// A real server's check in lbd's terms; lbd runs one per VIP, for every backend.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Check {
    pub kind: CheckKind,
    pub interval: Ms,
    pub timeout: Ms,
    pub retry: u32,
    pub delay_before_retry: Ms,
    pub initially_up: bool,
}

#[derive(Clone, PartialEq, Eq)]
pub(super) enum CheckKind {
    Tcp {
        port: Option<u16>,
    },
    /// `text` has the real server's own address as `${LBD_BACKEND}`, so the scripts of
    /// several real servers compare equal when only that differs; `shell`: why it needs one.
    Script {
        text: String,
        shell: Option<&'static str>,
        dynamic: bool,
    },
}

impl CheckKind {
    pub fn keyword(&self) -> &'static str {
        match self {
            CheckKind::Tcp { .. } => "TCP_CHECK",
            CheckKind::Script { .. } => "MISC_CHECK",
        }
    }
}

impl Importer {
    /// Checker timings, which may stand at any level; true when `st` was one.
    pub(super) fn timing(&mut self, st: &Stmt, t: &mut Timing) -> Result<bool> {
        match st.key() {
            "delay_loop" => t.delay_loop = Some(self.millis(st)?),
            "connect_timeout" => t.timeout = Some(self.millis(st)?),
            // nb_get_retry is keepalived 1.x's name; its users meant it for TCP_CHECK too.
            "retry" | "nb_get_retry" => t.retry = Some(self.integer(st, 0, 1_000_000)? as u32),
            "delay_before_retry" => t.delay_before_retry = Some(self.millis(st)?),
            "alpha" => t.alpha = Some(!matches!(st.arg(0), Some("false" | "no" | "off" | "0"))),
            "warmup" => self.unsupported(
                st,
                "lbd starts each backend's checks at its own offset in the interval",
            ),
            "log_all_failures" => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub(super) fn checker(&mut self, c: &Stmt, outer: &Timing, server: IpAddr) -> Result<Check> {
        let mut timing = Timing::default();
        let (mut port, mut path, mut misc_timeout, mut dynamic) = (None, None, None, false);
        for st in c.body() {
            if self.timing(st, &mut timing)? {
                continue;
            }
            match (c.key(), st.key()) {
                ("TCP_CHECK", "connect_port") => {
                    port = Some(self.port(st, self.needed(st, 0, "a port")?)?)
                }
                ("TCP_CHECK", "connect_ip") => {
                    if st.arg(0).and_then(|a| a.parse::<IpAddr>().ok()) != Some(server) {
                        self.unsupported(st, "lbd checks each backend at its own address")
                    }
                }
                ("TCP_CHECK", "bindto" | "bind_port" | "bind_if" | "fwmark") => {
                    self.unsupported(st, "")
                }
                ("MISC_CHECK", "misc_path") => path = self.command(st, true),
                ("MISC_CHECK", "misc_timeout") => misc_timeout = Some(self.millis(st)?),
                ("MISC_CHECK", "misc_dynamic") => dynamic = true,
                ("MISC_CHECK", "user") => {
                    self.unsupported(st, "lbd runs check scripts as its own user")
                }
                _ => self.unknown(st, c.key()),
            }
        }
        let t = timing.within(outer);
        let interval = t.delay_loop.unwrap_or(DEFAULT_DELAY_LOOP);
        let (kind, retry, timeout) = match c.key() {
            "TCP_CHECK" => {
                let timeout = t.timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
                (CheckKind::Tcp { port }, t.retry.unwrap_or(1), timeout)
            }
            _ => {
                let Some(text) = path else {
                    return Err((c.at, "MISC_CHECK without misc_path".into()));
                };
                let (text, replaced) = replace_address(&text, server);
                let shell = if replaced {
                    Some("the real server's address is $LBD_BACKEND")
                } else {
                    needs_shell(&text)
                };
                // A script times out at delay_loop unless misc_timeout says otherwise.
                let timeout = misc_timeout.unwrap_or(interval);
                (
                    CheckKind::Script {
                        text,
                        shell,
                        dynamic,
                    },
                    t.retry.unwrap_or(0),
                    timeout,
                )
            }
        };
        Ok(Check {
            kind,
            interval,
            timeout,
            retry,
            delay_before_retry: t.delay_before_retry.unwrap_or(DEFAULT_DELAY_BEFORE_RETRY),
            initially_up: !t.alpha.unwrap_or(false),
        })
    }

    /// lbd runs one check per VIP. Real servers with different kinds of checker, or different
    /// scripts, would be checked materially differently: an error. Different timings are not:
    /// the most common settings win (the first on a tie), with a warning for the others. A real
    /// server without a checker gets the VIP's check too (keepalived left it unchecked).
    pub(super) fn pick_check(&mut self, servers: &[Server]) -> Result<Option<(Loc, Check)>> {
        let checked: Vec<&(Loc, Check)> = servers.iter().filter_map(|s| s.check.as_ref()).collect();
        let Some(&first) = checked.first() else {
            return Ok(None);
        };
        for &(at, check) in &checked {
            let message = match (&check.kind, &first.1.kind) {
                (CheckKind::Tcp { .. }, CheckKind::Tcp { .. }) => continue,
                (CheckKind::Script { text: a, .. }, CheckKind::Script { text: b, .. })
                    if a == b =>
                {
                    continue;
                }
                (CheckKind::Script { .. }, CheckKind::Script { text, .. }) => format!(
                    "MISC_CHECK: its script differs from the one at {} ({text:?}); lbd runs one script \
                     for every backend of a VIP (with the backend's address in LBD_BACKEND)",
                    self.place(first.0)
                ),
                _ => format!(
                    "{}: the real server at {} has a {}; lbd runs one kind of check per VIP",
                    check.kind.keyword(),
                    self.place(first.0),
                    first.1.kind.keyword()
                ),
            };
            return Err((*at, message));
        }
        let mut chosen = first;
        let mut most = 0;
        for &candidate in &checked {
            let alike = checked.iter().filter(|o| o.1 == candidate.1).count();
            if alike > most {
                (chosen, most) = (candidate, alike);
            }
        }
        let (at, check) = chosen.clone();
        let used = format!("the {} of {}", check.kind.keyword(), self.place(at));
        for server in servers {
            let (warn_at, message) = match &server.check {
                None => (
                    server.at,
                    format!(
                        "real_server {} has no checker: lbd checks every backend of a VIP, with {used} \
                         (keepalived kept this one in service unchecked)",
                        server.address
                    ),
                ),
                Some((own, other)) if *other != check => (
                    *own,
                    format!(
                        "real_server {}: lbd runs one check per VIP, {used}; this one differs and is not used: {}",
                        server.address,
                        differences(other, &check).join(", ")
                    ),
                ),
                Some(_) => continue,
            };
            self.warn(warn_at, message);
        }
        Ok(Some(self.settle_check(at, check)))
    }

    /// lbd's ranges: interval up to an hour, timeout up to a minute, fall up to 100.
    fn settle_check(&mut self, at: Loc, mut check: Check) -> (Loc, Check) {
        let timeout_name = match check.kind {
            CheckKind::Tcp { .. } => "connect_timeout",
            CheckKind::Script { .. } => "misc_timeout",
        };
        for (name, value, max) in [
            ("delay_loop", &mut check.interval, 3_600_000),
            (timeout_name, &mut check.timeout, 60_000),
            (
                "delay_before_retry",
                &mut check.delay_before_retry,
                3_600_000,
            ),
        ] {
            let settled = (*value).clamp(10, max);
            if settled != *value {
                let message = format!(
                    "{name} {}: lbd allows 0.01 to {} seconds; {} is used",
                    seconds(*value),
                    max / 1000,
                    seconds(settled)
                );
                self.warn(at, message);
                *value = settled;
            }
        }
        if check.retry > 99 {
            let message = format!(
                "retry {}: lbd takes a backend down after at most 100 failed checks",
                check.retry
            );
            self.warn(at, message);
            check.retry = 99;
        }
        if let CheckKind::Script {
            text,
            shell: Some(why),
            ..
        } = &check.kind
        {
            let message = format!(
                "MISC_CHECK misc_path: lbd runs commands without a shell, and {why}: it runs /bin/sh -c {text:?}"
            );
            self.warn(at, message);
        }
        (at, check)
    }
}

/// The script with the real server's own address, as a whole word, as `${LBD_BACKEND}`;
/// and whether there was one.
fn replace_address(text: &str, address: IpAddr) -> (String, bool) {
    let needle = address.to_string();
    let joined = |c: Option<char>| {
        c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == ':' && address.is_ipv6())
    };
    let mut out = String::new();
    let mut last = 0;
    for (i, _) in text.match_indices(&needle) {
        let before = text[..i].chars().next_back();
        let after = text[i + needle.len()..].chars().next();
        if joined(before) || joined(after) {
            continue;
        }
        out.push_str(&text[last..i]);
        out.push_str("${LBD_BACKEND}");
        last = i + needle.len();
    }
    out.push_str(&text[last..]);
    (out, last > 0)
}

/// What differs between a real server's check and the one lbd uses, in keepalived's words.
fn differences(theirs: &Check, used: &Check) -> Vec<String> {
    let mut out = Vec::new();
    let mut differ = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name} {a} (used: {b})"));
        }
    };
    match (&theirs.kind, &used.kind) {
        (CheckKind::Tcp { port: a }, CheckKind::Tcp { port: b }) => {
            let shown = |p: &Option<u16>| p.map_or("-".to_owned(), |p| p.to_string());
            differ("connect_port", shown(a), shown(b));
        }
        (CheckKind::Script { dynamic: a, .. }, CheckKind::Script { dynamic: b, .. }) => {
            differ("misc_dynamic", a.to_string(), b.to_string())
        }
        _ => {}
    }
    differ(
        "delay_loop",
        seconds(theirs.interval),
        seconds(used.interval),
    );
    let timeout = match used.kind {
        CheckKind::Tcp { .. } => "connect_timeout",
        CheckKind::Script { .. } => "misc_timeout",
    };
    differ(timeout, seconds(theirs.timeout), seconds(used.timeout));
    differ("retry", theirs.retry.to_string(), used.retry.to_string());
    differ(
        "delay_before_retry",
        seconds(theirs.delay_before_retry),
        seconds(used.delay_before_retry),
    );
    differ(
        "alpha",
        (!theirs.initially_up).to_string(),
        (!used.initially_up).to_string(),
    );
    out
}
