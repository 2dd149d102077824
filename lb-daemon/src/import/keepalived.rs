//! `lbd import-keepalived FILE`: a keepalived.conf (and the files it includes) as lbd's TOML.
//!
//! Whatever lbd does alike is converted; whatever it drops or does differently is a warning
//! naming the file and line; whatever would make lbd behave materially differently (NAT or TUN
//! forwarding, fwmark services, a real server on another port, a checker lbd does not have)
//! is an error, so nobody starts a director that silently does something else.
//!
//! - `lex`: keepalived's syntax and includes, into statements.
//! - `vrrp`: vrrp_instance and vrrp_sync_group as `[[vrrp]]` and `[[vrrp_sync_group]]`, and
//!   which VIPs they hold.
//! - `lvs`: virtual_server and real_server as `[[vip]]` and `[[vip.backend]]`.
//! - `check`: TCP_CHECK and MISC_CHECK as `[vip.check]`, one per VIP.
//! - `render`: the TOML text.
//!
//! Pure: files and directory listings come only through the `read` function of
//! [`convert_with`]; [`convert`] gives it the disk.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

mod check;
mod lex;
mod lvs;
mod render;
#[cfg(test)]
mod tests;
mod vrrp;

use lex::Stmt;

/// The TOML text, and what the user should review before using it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    pub toml: String,
    pub warnings: Vec<Warning>,
}

/// Something dropped or changed on the way, at the keyword's file and line (0: the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

/// Why the file cannot be converted. `line` is 0 when the file itself cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

fn located(f: &mut fmt::Formatter<'_>, file: &Path, line: usize, message: &str) -> fmt::Result {
    match line {
        0 => write!(f, "{}: {message}", file.display()),
        _ => write!(f, "{}:{line}: {message}", file.display()),
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        located(f, &self.file, self.line, &self.message)
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        located(f, &self.file, self.line, &self.message)
    }
}

impl std::error::Error for ImportError {}

/// Converts `path`, reading it and its includes from the disk.
///
/// # Errors
///
/// A file that cannot be read, broken syntax, or what lbd cannot do alike, at its line.
pub fn convert(path: &Path) -> std::result::Result<Conversion, ImportError> {
    convert_with(path, &|p: &Path| {
        if !p.as_os_str().to_string_lossy().ends_with('/') {
            return std::fs::read_to_string(p);
        }
        let mut names = Vec::new();
        for entry in std::fs::read_dir(p)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names.join("\n"))
    })
}

/// Converts `path`, asking `read` for every file's text. To expand an include pattern it asks
/// for a directory as a path ending in `/`, and expects the entry names, one per line.
///
/// # Errors
///
/// As [`convert`].
pub fn convert_with(
    path: &Path,
    read: &dyn Fn(&Path) -> io::Result<String>,
) -> std::result::Result<Conversion, ImportError> {
    let failed = |files: &[PathBuf], (at, message): Fail| ImportError {
        file: files
            .get(at.file)
            .cloned()
            .unwrap_or_else(|| path.to_path_buf()),
        line: at.line,
        message,
    };
    let read = lex::read(path, read).map_err(|(files, fail)| failed(&files[..], fail))?;
    let mut importer = Importer {
        files: read.files,
        warnings: read.warnings,
        ..Importer::default()
    };
    if let Err(fail) = importer.walk(&read.top) {
        return Err(failed(&importer.files, fail));
    }
    let toml = importer.render();
    // By file, in the order they were read, then by line.
    importer.warnings.sort_by_key(|(at, _)| (at.file, at.line));
    let files = &importer.files;
    let warnings = importer
        .warnings
        .iter()
        .map(|(at, message)| Warning {
            file: files[at.file].clone(),
            line: at.line,
            message: message.clone(),
        })
        .collect();
    Ok(Conversion { toml, warnings })
}

/// A place in the input: index into the files read, 1-based line (0: the file as a whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Loc {
    file: usize,
    line: usize,
}

type Fail = (Loc, String);
type Result<T> = std::result::Result<T, Fail>;

/// Milliseconds: keepalived's timers take fractions of a second.
type Ms = u64;

/// A setting and the line it came from, for warnings raised once everything is known.
type At<T> = Option<(Loc, T)>;

fn seconds(ms: Ms) -> String {
    if ms.is_multiple_of(1000) {
        return (ms / 1000).to_string();
    }
    let text = format!("{:.3}", ms as f64 / 1000.0);
    text.trim_end_matches('0').to_owned()
}

/// Characters that need a shell: lbd runs commands without one.
const SHELL_CHARS: &[char] = &[
    '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', ']', '~', '{', '}',
];

/// Why a command needs `/bin/sh -c`, if it does.
fn needs_shell(text: &str) -> Option<&'static str> {
    if text.contains(SHELL_CHARS) {
        Some("it uses shell syntax")
    } else if !text
        .split_whitespace()
        .next()
        .is_some_and(|w| w.starts_with('/'))
    {
        Some("its program is not given by an absolute path")
    } else {
        None
    }
}

/// `/bin/sh -c TEXT`; with `pass_args`, `"$@"` hands on the arguments lbd appends.
fn shell(text: &str, pass_args: bool) -> Vec<String> {
    let mut argv = vec!["/bin/sh".to_owned(), "-c".to_owned()];
    if pass_args {
        argv.extend([format!("{text} \"$@\""), "sh".to_owned()]);
    } else {
        argv.push(text.to_owned());
    }
    argv
}

/// Top-level keywords of keepalived features lbd does not have.
const TOP_UNSUPPORTED: &[&str] = &[
    "vrrp_track_process",
    "track_process",
    "track_file",
    "vrrp_track_file",
    "bfd_instance",
    "track_group",
    "garp_group",
    "linkbeat_interfaces",
    "SSL",
    "use_pid_dir",
    "linkbeat_use_polling",
    "child_wait_time",
    "net_namespace_ipvs",
    "namespace_with_ipsets",
    "interface_up_down_delays",
];

#[derive(Default)]
struct Importer {
    files: Vec<PathBuf>,
    warnings: Vec<(Loc, String)>,
    instance: Option<String>,
    version: Option<u8>,
    garp_repeat: Option<u32>,
    garp_refresh: At<Ms>,
    timeouts: Vec<(&'static str, u64)>,
    vrrps: Vec<vrrp::Vrrp>,
    groups: Vec<vrrp::SyncGroup>,
    vips: Vec<lvs::Vip>,
    server_groups: HashMap<String, Stmt>,
}

impl Importer {
    fn warn(&mut self, at: Loc, message: impl Into<String>) {
        self.warnings.push((at, message.into()));
    }

    fn unknown(&mut self, st: &Stmt, context: &str) {
        let message = format!(
            "`{}` in {context}: not known to lbd's importer; ignored",
            st.key()
        );
        self.warn(st.at, message);
    }

    fn unsupported(&mut self, st: &Stmt, why: &str) {
        let message = match why {
            "" => format!("`{}`: not supported by lbd, ignored", st.key()),
            _ => format!("`{}`: not supported by lbd, ignored ({why})", st.key()),
        };
        self.warn(st.at, message);
    }

    /// `keepalived.conf:12`, for comments in the TOML.
    fn place(&self, at: Loc) -> String {
        let file = &self.files[at.file];
        let name = file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        format!("{name}:{}", at.line)
    }

    fn needed<'s>(&self, st: &'s Stmt, i: usize, what: &str) -> Result<&'s str> {
        st.arg(i)
            .ok_or_else(|| (st.at, format!("{}: missing {what}", st.key())))
    }

    fn integer(&self, st: &Stmt, min: u64, max: u64) -> Result<u64> {
        let text = self.needed(st, 0, "its value")?;
        match text.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => {
                let message = format!("expected an integer from {min} to {max}, found {text:?}");
                Err((st.at, format!("{}: {message}", st.key())))
            }
        }
    }

    fn millis(&self, st: &Stmt) -> Result<Ms> {
        let text = self.needed(st, 0, "a number of seconds")?;
        match text.parse::<f64>() {
            Ok(s) if s.is_finite() && (0.0..=1e9).contains(&s) => Ok((s * 1000.0).round() as Ms),
            _ => Err((
                st.at,
                format!("{}: expected seconds, found {text:?}", st.key()),
            )),
        }
    }

    fn address(&self, st: &Stmt, text: &str) -> Result<std::net::IpAddr> {
        text.parse().map_err(|_| {
            (
                st.at,
                format!("{}: {text:?} is not an IP address", st.key()),
            )
        })
    }

    fn port(&self, st: &Stmt, text: &str) -> Result<u16> {
        match text.parse::<u16>() {
            Ok(p) if p != 0 => Ok(p),
            _ => Err((
                st.at,
                format!("{}: {text:?} is not a port (1 to 65535)", st.key()),
            )),
        }
    }

    /// A script keyword's command. A quoted string is the whole command; otherwise the first
    /// word is, unless `all_words` (`misc_path` takes the rest of the line). Words after the
    /// command name a user and group to run it as (keepalived 2.x), which lbd does not do.
    fn command(&mut self, st: &Stmt, all_words: bool) -> Option<String> {
        let args = st.args();
        let text = match args.first() {
            Some(first) if !first.quoted && !all_words => {
                if args.len() > 1 {
                    let message = format!(
                        "{}: the user and group after the script are ignored: lbd runs it as itself \
                         (quote the script to give it arguments)",
                        st.key()
                    );
                    self.warn(st.at, message);
                }
                first.text.trim().to_owned()
            }
            Some(first) if first.quoted => {
                if args.len() > 1 {
                    let message = format!(
                        "{}: the user after the command is ignored: lbd runs it as itself",
                        st.key()
                    );
                    self.warn(st.at, message);
                }
                first.text.trim().to_owned()
            }
            _ => args
                .iter()
                .map(|w| w.text.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        };
        if text.is_empty() {
            self.warn(st.at, format!("{} without a command: ignored", st.key()));
            return None;
        }
        Some(text)
    }

    /// The argv lbd runs for a command: lbd has no shell, so shell syntax, or a program not
    /// given by its absolute path, runs through `/bin/sh -c` (as keepalived 1.x ran every
    /// script). `pass_args`: the command still gets the arguments lbd appends (`notify`).
    fn argv(&mut self, st: &Stmt, text: &str, pass_args: bool) -> Vec<String> {
        let Some(why) = needs_shell(text) else {
            return text.split_whitespace().map(str::to_owned).collect();
        };
        let message = format!(
            "{}: lbd runs commands without a shell, and {why}: it runs /bin/sh -c {text:?}",
            st.key()
        );
        self.warn(st.at, message);
        shell(text, pass_args)
    }

    fn walk(&mut self, top: &[Stmt]) -> Result<()> {
        // What others depend on comes first, wherever it stands in the file.
        for st in top {
            match st.key() {
                "global_defs" => self.global_defs(st)?,
                "virtual_server_group" => {
                    let name = self.needed(st, 0, "a name")?.to_owned();
                    self.server_groups.insert(name, st.clone());
                }
                _ => {}
            }
        }
        for st in top {
            match st.key() {
                "global_defs" | "virtual_server_group" => {}
                "vrrp_instance" => self.vrrp_instance(st)?,
                "vrrp_sync_group" => self.sync_group(st)?,
                "virtual_server" => self.virtual_server(st)?,
                "instance" => self.instance_name(st)?,
                "vrrp_script" => {
                    let name = st.arg(0).unwrap_or("");
                    let message = format!("vrrp_script {name}: lbd runs no VRRP scripts; ignored (see track_script)");
                    self.warn(st.at, message);
                }
                "static_ipaddress" | "static_routes" | "static_rules" => self.unsupported(
                    st,
                    "lbd configures no addresses, routes or rules: keep them in the system's network configuration",
                ),
                "net_namespace" => self.unsupported(st, "run lbd --netns NAME instead"),
                key if TOP_UNSUPPORTED.contains(&key) => self.unsupported(st, ""),
                _ => self.unknown(st, "the top level"),
            }
        }
        self.resolve_sync_groups();
        self.tie_vips_to_vrrp()
    }

    /// keepalived's `instance NAME` (several keepalived on one host) is lbd's `instance`.
    fn instance_name(&mut self, st: &Stmt) -> Result<()> {
        let name = self.needed(st, 0, "a name")?;
        let valid = name.len() <= 32
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
        if valid {
            self.instance = Some(name.to_owned());
        } else {
            let message = format!(
                "instance {name:?}: not an lbd instance name (1-32 of A-Z a-z 0-9 _ -); \"lbd\" is used"
            );
            self.warn(st.at, message);
        }
        Ok(())
    }

    fn global_defs(&mut self, s: &Stmt) -> Result<()> {
        let mut mail: Vec<&Stmt> = Vec::new();
        for st in s.body() {
            match st.key() {
                // This host's name in mails, and the scripts' security: nothing for lbd.
                "router_id" | "lvs_id" | "enable_script_security" => {}
                key if key.starts_with("smtp_") || key.starts_with("notification_email") => {
                    mail.push(st)
                }
                "script_user" => self.unsupported(st, "lbd runs scripts as its own user"),
                "vrrp_version" => self.version = Some(self.integer(st, 2, 3)? as u8),
                "vrrp_garp_master_repeat" => {
                    self.garp_repeat = Some(self.integer(st, 1, 100)? as u32)
                }
                "vrrp_garp_master_refresh" => self.garp_refresh = Some((st.at, self.millis(st)?)),
                "vrrp_garp_master_delay" => self.unsupported(
                    st,
                    "lbd sends its gratuitous ARPs at once on becoming master",
                ),
                "lvs_timeouts" => self.lvs_timeouts(st)?,
                "lvs_sync_daemon" => self.unsupported(
                    st,
                    "lbd's flow sync is [sync] with peers = [...], unicast between lbd directors",
                ),
                "vrrp_mcast_group4" | "vrrp_mcast_group6" => self.unsupported(
                    st,
                    "lbd multicasts to 224.0.0.18, or unicasts to unicast_peer",
                ),
                "vrrp_strict" => {
                    self.unsupported(st, "lbd checks adverts as RFC 3768 and 5798 require")
                }
                _ => self.unknown(st, "global_defs"),
            }
        }
        if let Some(first) = mail.first() {
            let keys: Vec<&str> = mail.iter().map(|st| st.key()).collect();
            let message = format!(
                "{}: lbd sends no e-mail (notify scripts can); ignored",
                keys.join(", ")
            );
            self.warn(first.at, message);
        }
        Ok(())
    }

    /// `lvs_timeouts tcp 900 tcpfin 120 udp 300` is `ipvsadm --set`: lbd's [timeouts].
    fn lvs_timeouts(&mut self, st: &Stmt) -> Result<()> {
        let args: Vec<&str> = st.args().iter().map(|w| w.text.as_str()).collect();
        for pair in args.chunks(2) {
            let key = match pair[0] {
                "tcp" => "tcp",
                "tcpfin" => "tcp_fin",
                "udp" => "udp",
                other => {
                    let message = format!(
                        "lvs_timeouts {other}: lbd has tcp, tcpfin and udp timeouts only; ignored"
                    );
                    self.warn(st.at, message);
                    continue;
                }
            };
            match pair.get(1).and_then(|v| v.parse::<u64>().ok()) {
                Some(secs) if (1..=604_800).contains(&secs) => self.timeouts.push((key, secs)),
                _ => {
                    let message = format!(
                        "lvs_timeouts {}: expected seconds from 1 to 604800",
                        pair[0]
                    );
                    return Err((st.at, message));
                }
            }
        }
        Ok(())
    }
}
