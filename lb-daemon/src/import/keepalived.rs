//! `lbd import-keepalived FILE`: a keepalived.conf (and the files it includes) as lbd's TOML.
//!
//! Whatever lbd does alike is converted; whatever it drops or does differently is a warning
//! naming the file and line; whatever would make lbd behave materially differently (NAT or TUN
//! forwarding, fwmark services, a real server on another port, a checker lbd has not) is an
//! error, so nobody starts a director that silently does something else.
//!
//! Pure: files and directory listings come only through the `read` function of
//! [`convert_with`]; [`convert`] gives it the disk.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Component, Path, PathBuf};

/// The TOML text, and what the user should review before using it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    pub toml: String,
    pub warnings: Vec<Warning>,
}

/// Something dropped or changed on the way, at the keyword's file and line.
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
pub fn convert(path: &Path) -> std::result::Result<Conversion, ImportError> {
    convert_with(path, &|p: &Path| {
        if p.as_os_str().to_string_lossy().ends_with('/') {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(p)? {
                names.push(entry?.file_name().to_string_lossy().into_owned());
            }
            Ok(names.join("\n"))
        } else {
            std::fs::read_to_string(p)
        }
    })
}

/// Converts `path`, asking `read` for every file's text. To expand an include pattern it asks
/// for a directory as a path ending in `/`, and expects the entry names, one per line.
pub fn convert_with(
    path: &Path,
    read: &dyn Fn(&Path) -> io::Result<String>,
) -> std::result::Result<Conversion, ImportError> {
    let mut reader = Reader {
        read,
        files: Vec::new(),
        open: Vec::new(),
        tokens: Vec::new(),
        warnings: Vec::new(),
    };
    let lexed = reader.file(path.to_path_buf(), None);
    let failed = |files: &[PathBuf], (at, message): Fail| ImportError {
        file: files.get(at.file).cloned().unwrap_or_else(|| path.to_path_buf()),
        line: at.line,
        message,
    };
    if let Err(fail) = lexed {
        return Err(failed(&reader.files, fail));
    }
    let mut importer = Importer {
        files: std::mem::take(&mut reader.files),
        warnings: std::mem::take(&mut reader.warnings),
        ..Importer::default()
    };
    let parsed = parse_block(&reader.tokens, &mut 0, None).and_then(|top| importer.walk(&top));
    if let Err(fail) = parsed {
        return Err(failed(&importer.files, fail));
    }
    let toml = importer.render();
    // Files are numbered in reading order, so this is the order a reader meets the lines in.
    importer.warnings.sort_by_key(|(at, _)| (at.file, at.line));
    let warnings = importer
        .warnings
        .iter()
        .map(|(at, message)| Warning {
            file: importer.files[at.file].clone(),
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

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word { text: String, quoted: bool },
    Open,
    Close,
    EndOfLine,
}

struct Token {
    tok: Tok,
    at: Loc,
}

/// Reads files into one token stream, splicing includes where they stand (keepalived allows
/// `include` anywhere, even inside a block).
struct Reader<'r> {
    read: &'r dyn Fn(&Path) -> io::Result<String>,
    files: Vec<PathBuf>,
    open: Vec<PathBuf>,
    tokens: Vec<Token>,
    warnings: Vec<(Loc, String)>,
}

impl Reader<'_> {
    fn file(&mut self, path: PathBuf, included_at: Option<Loc>) -> Result<()> {
        if let Some(at) = included_at {
            if self.open.contains(&path) {
                return Err((at, format!("include {}: includes itself", path.display())));
            }
            if self.open.len() >= 32 {
                return Err((at, "include: nested more than 32 deep".into()));
            }
        }
        let index = self.files.len();
        self.files.push(path.clone());
        let text = (self.read)(&path).map_err(|e| match included_at {
            Some(at) => (at, format!("include {}: cannot read: {e}", path.display())),
            None => (Loc { file: index, line: 0 }, format!("cannot read: {e}")),
        })?;
        self.open.push(path);
        let mut lines = text.lines().enumerate();
        while let Some((i, line)) = lines.next() {
            let at = Loc { file: index, line: i + 1 };
            let (mut toks, mut continued) = lex_line(line, at)?;
            // A trailing `\` continues the line; the keyword keeps its first line's number.
            while continued {
                match lines.next() {
                    Some((_, next)) => {
                        let (more, again) = lex_line(next, at)?;
                        toks.extend(more);
                        continued = again;
                    }
                    None => continued = false,
                }
            }
            match toks.first() {
                None => continue,
                Some(Tok::Word { text, quoted: false }) if text == "include" => {
                    self.include(&toks[1..], at)?
                }
                Some(_) => {
                    self.tokens.extend(toks.into_iter().map(|tok| Token { tok, at }));
                    self.tokens.push(Token { tok: Tok::EndOfLine, at });
                }
            }
        }
        self.open.pop();
        Ok(())
    }

    fn include(&mut self, args: &[Tok], at: Loc) -> Result<()> {
        let pattern = match args {
            [Tok::Word { text, .. }] => text.clone(),
            _ => return Err((at, "include takes one file name or pattern".into())),
        };
        // Relative to the including file's directory, as keepalived does.
        let base = self.files[at.file].parent().unwrap_or(Path::new(""));
        let full = base.join(&pattern);
        if !has_wildcard(&pattern) {
            return self.file(full, Some(at));
        }
        let matches = self.expand(&full);
        if matches.is_empty() {
            self.warnings
                .push((at, format!("include {pattern}: no file matches; nothing included")));
        }
        for path in matches {
            self.file(path, Some(at))?;
        }
        Ok(())
    }

    /// The files a glob pattern names, sorted per directory level like glob(3).
    fn expand(&self, pattern: &Path) -> Vec<PathBuf> {
        let mut found = vec![PathBuf::new()];
        for part in pattern.components() {
            let name = part.as_os_str().to_string_lossy();
            if !matches!(part, Component::Normal(_)) || !has_wildcard(&name) {
                found.iter_mut().for_each(|p| p.push(part));
                continue;
            }
            let mut next = Vec::new();
            for dir in &found {
                let listing = if dir.as_os_str().is_empty() { PathBuf::from("./") } else { dir.join("") };
                let Ok(text) = (self.read)(&listing) else { continue };
                let mut names: Vec<&str> = text.lines().filter(|n| glob_match(&name, n)).collect();
                names.sort_unstable();
                next.extend(names.into_iter().map(|n| dir.join(n)));
            }
            found = next;
        }
        found
    }
}

fn has_wildcard(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// `*`, `?` and `[...]` (with `!`/`^` and ranges); a leading dot is matched only literally.
fn glob_match(pattern: &str, name: &str) -> bool {
    fn class(set: &[char], c: char) -> bool {
        let (negated, set) = match set.first() {
            Some('!' | '^') => (true, &set[1..]),
            _ => (false, set),
        };
        let mut i = 0;
        let mut hit = false;
        while i < set.len() {
            if i + 2 < set.len() && set[i + 1] == '-' {
                hit |= (set[i]..=set[i + 2]).contains(&c);
                i += 3;
            } else {
                hit |= set[i] == c;
                i += 1;
            }
        }
        hit != negated
    }
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                // `]` right after `[` (or `[!`) belongs to the set.
                let from = if matches!(p.get(1), Some('!' | '^')) { 3 } else { 2 };
                match (n.first(), p.iter().skip(from).position(|&c| c == ']')) {
                    (Some(&c), Some(end)) => {
                        let end = end + from;
                        class(&p[1..end], c) && go(&p[end + 1..], &n[1..])
                    }
                    (Some(&c), None) => c == '[' && go(&p[1..], &n[1..]),
                    (None, _) => false,
                }
            }
            Some(&c) => n.first() == Some(&c) && go(&p[1..], &n[1..]),
        }
    }
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// One line as keepalived reads it: `!` and `#` start a comment anywhere outside quotes
/// (`\#` and `\!` are literal), `"..."` is one word (no escapes), `{` and `}` are words of
/// their own, and a `\` ending the line continues it (the bool).
fn lex_line(line: &str, at: Loc) -> Result<(Vec<Tok>, bool)> {
    let mut toks = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, toks: &mut Vec<Tok>| {
        if !word.is_empty() {
            toks.push(Tok::Word { text: std::mem::take(word), quoted: false });
        }
    };
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '!' | '#' => break,
            '"' => {
                flush(&mut word, &mut toks);
                let mut text = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some(ch) => text.push(ch),
                        None => return Err((at, "a quoted string is not closed on its line".into())),
                    }
                }
                toks.push(Tok::Word { text, quoted: true });
            }
            '{' | '}' => {
                flush(&mut word, &mut toks);
                toks.push(if c == '{' { Tok::Open } else { Tok::Close });
            }
            '\\' => match chars.peek() {
                None => {
                    flush(&mut word, &mut toks);
                    return Ok((toks, true));
                }
                Some(&next @ ('#' | '!')) => {
                    word.push(next);
                    chars.next();
                }
                Some(_) => word.push('\\'),
            },
            c if c.is_whitespace() => flush(&mut word, &mut toks),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut toks);
    Ok((toks, false))
}

#[derive(Debug, Clone)]
struct Word {
    text: String,
    quoted: bool,
}

/// A keyword line, its arguments and its `{ }` block, if any.
#[derive(Debug, Clone)]
struct Stmt {
    at: Loc,
    words: Vec<Word>,
    block: Option<Vec<Stmt>>,
}

impl Stmt {
    fn key(&self) -> &str {
        self.words.first().map_or("", |w| w.text.as_str())
    }
    fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i + 1).map(|w| w.text.as_str())
    }
    fn args(&self) -> &[Word] {
        self.words.get(1..).unwrap_or(&[])
    }
    fn body(&self) -> &[Stmt] {
        self.block.as_deref().unwrap_or(&[])
    }
    /// The line as written (quotes kept), for messages and comments.
    fn shown(&self) -> String {
        let words: Vec<String> = self
            .words
            .iter()
            .map(|w| if w.quoted { format!("\"{}\"", w.text) } else { w.text.clone() })
            .collect();
        words.join(" ")
    }
}

/// Statements up to the `}` closing `opened` (or the end of input at top level). A `{` alone
/// on its line opens the block of the statement on the line before.
fn parse_block(toks: &[Token], pos: &mut usize, opened: Option<Loc>) -> Result<Vec<Stmt>> {
    let mut out: Vec<Stmt> = Vec::new();
    let mut current: Option<Stmt> = None;
    while let Some(token) = toks.get(*pos) {
        *pos += 1;
        match &token.tok {
            Tok::Word { text, quoted } => current
                .get_or_insert_with(|| Stmt { at: token.at, words: Vec::new(), block: None })
                .words
                .push(Word { text: text.clone(), quoted: *quoted }),
            Tok::EndOfLine => out.extend(current.take()),
            Tok::Open => {
                let mut owner = match current.take() {
                    Some(stmt) => stmt,
                    None => match out.pop() {
                        Some(prev) if prev.block.is_none() => prev,
                        _ => return Err((token.at, "`{` without a keyword before it".into())),
                    },
                };
                owner.block = Some(parse_block(toks, pos, Some(token.at))?);
                out.push(owner);
            }
            Tok::Close => {
                out.extend(current.take());
                return match opened {
                    Some(_) => Ok(out),
                    None => Err((token.at, "`}` closes no block".into())),
                };
            }
        }
    }
    out.extend(current.take());
    match opened {
        Some(at) => Err((at, "this `{` is never closed".into())),
        None => Ok(out),
    }
}

/// Milliseconds: keepalived's timers take fractions of a second.
type Ms = u64;

fn seconds(ms: Ms) -> String {
    if ms % 1000 == 0 {
        return (ms / 1000).to_string();
    }
    let text = format!("{:.3}", ms as f64 / 1000.0);
    text.trim_end_matches('0').to_owned()
}

/// A setting and the line it came from, for warnings raised once everything is known.
type At<T> = Option<(Loc, T)>;

#[derive(Default)]
struct Vrrp {
    at: Loc,
    shown: String,
    raw_name: String,
    name: String,
    state: Option<String>,
    interface: String,
    virtual_router_id: u8,
    priority: Option<u8>,
    advert: At<Ms>,
    version: u8,
    version_is_default: bool,
    auth_pass: Option<String>,
    preempt: bool,
    preempt_delay: At<Ms>,
    vips: Vec<Ipv4Addr>,
    unicast_src: At<Ipv4Addr>,
    unicast_peers: Vec<Ipv4Addr>,
    garp_repeat: Option<u32>,
    garp_refresh: At<Ms>,
    track_interfaces: Vec<String>,
    notify: Vec<(&'static str, Vec<String>)>,
}

struct SyncGroup {
    at: Loc,
    shown: String,
    name: String,
    members: Vec<(Loc, String)>,
    instances: Vec<String>,
}

/// Checker timings, set on the virtual_server, the real_server or the checker; the innermost
/// wins, as in keepalived.
#[derive(Clone, Default)]
struct Timing {
    delay_loop: Option<Ms>,
    timeout: Option<Ms>,
    retry: Option<u32>,
    delay_before_retry: Option<Ms>,
    alpha: Option<bool>,
}

impl Timing {
    fn within(&self, outer: &Timing) -> Timing {
        Timing {
            delay_loop: self.delay_loop.or(outer.delay_loop),
            timeout: self.timeout.or(outer.timeout),
            retry: self.retry.or(outer.retry),
            delay_before_retry: self.delay_before_retry.or(outer.delay_before_retry),
            alpha: self.alpha.or(outer.alpha),
        }
    }
}

/// A real server's check in lbd's terms. lbd runs one per VIP, for every backend.
#[derive(Clone, PartialEq, Eq)]
struct Check {
    kind: CheckKind,
    interval: Ms,
    timeout: Ms,
    retry: u32,
    delay_before_retry: Ms,
    initially_up: bool,
}

#[derive(Clone, PartialEq, Eq)]
enum CheckKind {
    Tcp {
        port: Option<u16>,
    },
    /// `text` has the real server's own address replaced by `${LBD_BACKEND}`, so the scripts
    /// of several real servers compare equal when only that differs.
    Script {
        text: String,
        shell: Option<&'static str>,
        dynamic: bool,
    },
}

impl CheckKind {
    fn keyword(&self) -> &'static str {
        match self {
            CheckKind::Tcp { .. } => "TCP_CHECK",
            CheckKind::Script { .. } => "MISC_CHECK",
        }
    }
}

struct Server {
    at: Loc,
    shown: String,
    address: IpAddr,
    port: Option<u16>,
    weight: u32,
    inhibit: Option<bool>,
    direct: bool,
    notify_up: Option<Vec<String>>,
    notify_down: Option<Vec<String>>,
    check: Option<(Loc, Check)>,
}

struct Vip {
    at: Loc,
    shown: String,
    address: IpAddr,
    port: u16,
    protocol: &'static str,
    scheduler: String,
    scheduler_is_default: bool,
    persistence_timeout: u64,
    granularity: Option<String>,
    sorry_server: Option<IpAddr>,
    drain: bool,
    check: Option<(Loc, Check)>,
    backends: Rc<Vec<Server>>,
}

use std::rc::Rc;

/// Characters that need a shell: lbd runs commands without one.
const SHELL_CHARS: &[char] = &[
    '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', ']', '~', '{', '}',
];

/// keepalived's defaults where lbd's differ: delay_loop 60 s, connect_timeout 5 s, TCP_CHECK
/// retries once (MISC_CHECK never), 1 s before a retry.
const DEFAULT_DELAY_LOOP: Ms = 60_000;
const DEFAULT_CONNECT_TIMEOUT: Ms = 5_000;
const DEFAULT_DELAY_BEFORE_RETRY: Ms = 1_000;

#[derive(Default)]
struct Importer {
    files: Vec<PathBuf>,
    warnings: Vec<(Loc, String)>,
    instance: Option<String>,
    version: Option<u8>,
    garp_repeat: Option<u32>,
    garp_refresh: At<Ms>,
    timeouts: Vec<(&'static str, u64)>,
    vrrps: Vec<Vrrp>,
    groups: Vec<SyncGroup>,
    vips: Vec<Vip>,
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

    fn no_mail(&mut self, st: &Stmt) {
        self.unsupported(st, "lbd sends no e-mail; notify scripts can");
    }

    /// `keepalived.conf:12`, for comments in the TOML.
    fn place(&self, at: Loc) -> String {
        let file = &self.files[at.file];
        let name = file
            .file_name()
            .map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
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
            _ => Err((
                st.at,
                format!(
                    "{}: expected an integer from {min} to {max}, found {text:?}",
                    st.key()
                ),
            )),
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

    fn address(&self, st: &Stmt, text: &str) -> Result<IpAddr> {
        text.parse()
            .map_err(|_| (st.at, format!("{}: {text:?} is not an IP address", st.key())))
    }

    fn ipv4(&self, st: &Stmt, text: &str) -> Result<Ipv4Addr> {
        match self.address(st, text)? {
            IpAddr::V4(a) => Ok(a),
            IpAddr::V6(_) => Err((
                st.at,
                format!(
                    "{}: {text}: lbd's VRRP moves IPv4 addresses only",
                    st.key()
                ),
            )),
        }
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

    /// lbd names are 1-32 of `[A-Za-z0-9_.-]`; anything else is replaced, with a warning.
    fn lbd_name(&mut self, st: &Stmt, raw: &str) -> String {
        let mut name: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(32)
            .collect();
        if name.is_empty() {
            name.push('_');
        }
        if name != raw {
            let message = format!(
                "{} {raw:?} is named {name:?} in lbd (1-32 of A-Z a-z 0-9 _ . -)",
                st.key()
            );
            self.warn(st.at, message);
        }
        name
    }

    /// A script keyword's command. A quoted string is the whole command (words after it name
    /// a user to run it as, which lbd does not do); unquoted words are joined.
    fn command(&mut self, st: &Stmt) -> Option<String> {
        let args = st.args();
        let text = match args.first() {
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
        match needs_shell(text) {
            None => text.split_whitespace().map(str::to_owned).collect(),
            Some(why) => {
                let message = format!(
                    "{}: lbd runs commands without a shell, and {why}: it runs /bin/sh -c {text:?}",
                    st.key()
                );
                self.warn(st.at, message);
                shell(text, pass_args)
            }
        }
    }

    fn walk(&mut self, top: &[Stmt]) -> Result<()> {
        // Settings others depend on come first, wherever they stand in the file.
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
                    let message = format!(
                        "vrrp_script {}: lbd runs no VRRP scripts; ignored (see track_script)",
                        st.arg(0).unwrap_or("")
                    );
                    self.warn(st.at, message);
                }
                "static_ipaddress" | "static_routes" | "static_rules" => self.unsupported(
                    st,
                    "lbd configures no addresses, routes or rules: keep them in the system's network configuration",
                ),
                "net_namespace" => self.unsupported(st, "run lbd --netns NAME instead"),
                "vrrp_track_process" | "track_process" | "track_file" | "vrrp_track_file"
                | "bfd_instance" | "track_group" | "garp_group" | "linkbeat_interfaces" | "SSL"
                | "use_pid_dir" | "linkbeat_use_polling" | "child_wait_time"
                | "net_namespace_ipvs" | "namespace_with_ipsets" | "interface_up_down_delays" => {
                    self.unsupported(st, "")
                }
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
        for st in s.body() {
            match st.key() {
                // This host's name in keepalived's mails and scripts' security: nothing for lbd.
                "router_id" | "lvs_id" | "enable_script_security" => {}
                "script_user" => self.unsupported(st, "lbd runs scripts as its own user"),
                key if key.starts_with("smtp_")
                    || key.starts_with("notification_email")
                    || key == "email_from" =>
                {
                    self.no_mail(st)
                }
                "vrrp_version" => self.version = Some(self.integer(st, 2, 3)? as u8),
                "vrrp_garp_master_repeat" => {
                    self.garp_repeat = Some(self.integer(st, 1, 100)? as u32)
                }
                "vrrp_garp_master_refresh" => {
                    self.garp_refresh = Some((st.at, self.millis(st)?))
                }
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
                    return Err((
                        st.at,
                        format!(
                            "lvs_timeouts {}: expected seconds from 1 to 604800",
                            pair[0]
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn vrrp_instance(&mut self, s: &Stmt) -> Result<()> {
        let raw_name = self.needed(s, 0, "a name")?.to_owned();
        let name = self.lbd_name(s, &raw_name);
        if self.vrrps.iter().any(|v| v.name == name) {
            return Err((s.at, format!("a second vrrp_instance named {name:?}")));
        }
        let mut v = Vrrp {
            at: s.at,
            shown: s.shown(),
            raw_name,
            name,
            version: self.version.unwrap_or(2),
            version_is_default: self.version.is_none(),
            preempt: true,
            garp_repeat: self.garp_repeat,
            garp_refresh: self.garp_refresh,
            ..Vrrp::default()
        };
        let (mut interface, mut router_id, mut auth) = (None, None, None);
        let mut vip_lines: Vec<&Stmt> = Vec::new();
        for st in s.body() {
            match st.key() {
                "state" => v.state = st.arg(0).map(str::to_ascii_uppercase),
                "interface" => {
                    interface = Some(self.needed(st, 0, "an interface name")?.to_owned())
                }
                "virtual_router_id" => router_id = Some(self.integer(st, 1, 255)? as u8),
                "priority" => v.priority = Some(self.integer(st, 1, 255)? as u8),
                "advert_int" => v.advert = Some((st.at, self.millis(st)?)),
                "version" => {
                    v.version = self.integer(st, 2, 3)? as u8;
                    v.version_is_default = false;
                }
                "authentication" => auth = Some(st),
                "virtual_ipaddress" => vip_lines.extend(st.body()),
                "virtual_ipaddress_excluded" => {
                    self.warn(
                        st.at,
                        "virtual_ipaddress_excluded: lbd holds these like virtual_ipaddress and \
                         lists them in its adverts (a keepalived peer would count other addresses)",
                    );
                    vip_lines.extend(st.body());
                }
                "unicast_src_ip" => {
                    let address = self.ipv4(st, self.needed(st, 0, "an address")?)?;
                    v.unicast_src = Some((st.at, address));
                }
                "unicast_peer" => {
                    for peer in st.body() {
                        v.unicast_peers.push(self.ipv4(peer, peer.key())?);
                        if peer.words.len() > 1 {
                            let message = format!(
                                "unicast_peer {}: the options after the address are ignored",
                                peer.key()
                            );
                            self.warn(peer.at, message);
                        }
                    }
                }
                "nopreempt" => v.preempt = false,
                "preempt" => v.preempt = true,
                "preempt_delay" => v.preempt_delay = Some((st.at, self.millis(st)?)),
                "garp_master_repeat" => v.garp_repeat = Some(self.integer(st, 1, 100)? as u32),
                "garp_master_refresh" => v.garp_refresh = Some((st.at, self.millis(st)?)),
                "notify_master" => self.vrrp_notify(st, "notify_master", &mut v),
                "notify_backup" => self.vrrp_notify(st, "notify_backup", &mut v),
                "notify_fault" => self.vrrp_notify(st, "notify_fault", &mut v),
                "notify" => self.vrrp_notify(st, "notify", &mut v),
                "track_interface" => {
                    for line in st.body() {
                        v.track_interfaces.push(line.key().to_owned());
                        if line.words.len() > 1 {
                            let message = format!(
                                "track_interface {}: its weight is ignored: lbd puts the instance \
                                 in FAULT while the interface is down",
                                line.key()
                            );
                            self.warn(line.at, message);
                        }
                    }
                }
                "track_script" => self.unsupported(
                    st,
                    "lbd runs no VRRP scripts; for a script that tests the pool's own health, \
                     track_pool_weight = N lowers the priority while a VIP has no backend in service",
                ),
                "smtp_alert" => self.no_mail(st),
                "dont_track_primary" => self.unsupported(
                    st,
                    "lbd always faults the instance while its interface is down",
                ),
                "mcast_src_ip" => self.unsupported(
                    st,
                    "lbd sends from the interface's first address, or from unicast_src_ip to unicast peers",
                ),
                "garp_master_delay" => self.unsupported(
                    st,
                    "lbd sends its gratuitous ARPs at once on becoming master",
                ),
                "lvs_sync_daemon_interface" => {
                    self.unsupported(st, "lbd's flow sync is [sync] with peers = [...]")
                }
                "virtual_routes" | "virtual_rules" => {
                    self.unsupported(st, "lbd moves addresses only")
                }
                "debug" | "accept" | "no_accept" | "skip_check_adv_addr" | "strict_mode"
                | "use_vmac" | "vmac_xmit_base" | "native_ipv6" | "unicast_ttl"
                | "check_unicast_src" | "garp_master_refresh_repeat" | "garp_lower_prio_delay"
                | "garp_lower_prio_repeat" | "notify_stop" | "notify_deleted"
                | "notify_master_rx_lower_pri" | "track_file" | "track_process" | "track_bfd"
                | "promote_secondaries" | "kernel_rx_buf_size" | "higher_prio_send_advert"
                | "lower_prio_no_advert" | "old_unicast_checksum" | "mcast_dst_ip" => {
                    self.unsupported(st, "")
                }
                _ => self.unknown(st, "vrrp_instance"),
            }
        }
        v.interface =
            interface.ok_or_else(|| (s.at, format!("vrrp_instance {}: no interface", v.name)))?;
        v.virtual_router_id = router_id
            .ok_or_else(|| (s.at, format!("vrrp_instance {}: no virtual_router_id", v.name)))?;
        for line in vip_lines {
            let vip = self.virtual_ipaddress(line, &v.interface)?;
            if v.vips.contains(&vip) || self.vrrps.iter().any(|o| o.vips.contains(&vip)) {
                return Err((
                    line.at,
                    format!("{vip} is held twice: only one vrrp_instance may own an address"),
                ));
            }
            v.vips.push(vip);
        }
        if let Some(st) = auth {
            self.authentication(st, &mut v)?;
        }
        self.settle_vrrp(&mut v);
        self.vrrps.push(v);
        Ok(())
    }

    fn vrrp_notify(&mut self, st: &Stmt, key: &'static str, v: &mut Vrrp) {
        if let Some(text) = self.command(st) {
            // keepalived appends "INSTANCE name STATE priority" to `notify`; so does lbd.
            let argv = self.argv(st, &text, key == "notify");
            v.notify.push((key, argv));
        }
    }

    /// `ADDR[/LEN] [dev IF] [brd X] [scope S] [label L] ...`: lbd adds ADDR as a /32 on the
    /// instance's interface; whatever else the line asks for is reported.
    fn virtual_ipaddress(&mut self, line: &Stmt, interface: &str) -> Result<Ipv4Addr> {
        let (address, length) = match line.key().split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (line.key(), None),
        };
        let vip = self.ipv4(line, address)?;
        let mut ignored: Vec<String> = length
            .filter(|l| *l != "32")
            .map(|l| format!("/{l}"))
            .into_iter()
            .collect();
        let mut dev = None;
        let mut words = line.args().iter().map(|w| w.text.as_str());
        while let Some(word) = words.next() {
            match word {
                "dev" => dev = words.next(),
                "brd" | "broadcast" | "scope" | "label" | "preferred_lft" | "valid_lft"
                | "metric" | "peer" | "track_group" => {
                    ignored.push(format!("{word} {}", words.next().unwrap_or("")))
                }
                other => ignored.push(other.to_owned()),
            }
        }
        let elsewhere = dev.filter(|d| *d != interface);
        if elsewhere.is_some() || !ignored.is_empty() {
            let mut message =
                format!("lbd adds {vip} as a /32 on {interface}, the instance's interface");
            if let Some(d) = elsewhere {
                message.push_str(&format!(", not on {d}"));
            }
            if !ignored.is_empty() {
                message.push_str(&format!("; ignored: {}", ignored.join(", ")));
            }
            self.warn(line.at, message);
        }
        Ok(vip)
    }

    fn authentication(&mut self, s: &Stmt, v: &mut Vrrp) -> Result<()> {
        let (mut kind, mut pass) = (None, None);
        for st in s.body() {
            match st.key() {
                "auth_type" => {
                    kind = Some(self.needed(st, 0, "PASS or AH")?.to_ascii_uppercase())
                }
                "auth_pass" => pass = Some((st.at, self.needed(st, 0, "a password")?.to_owned())),
                _ => self.unknown(st, "authentication"),
            }
        }
        match (kind.as_deref(), pass) {
            (Some("AH"), _) => Err((
                s.at,
                "auth_type AH is not supported by lbd (VRRPv2 PASS only): the directors \
                 would drop each other's adverts"
                    .into(),
            )),
            (Some("PASS"), None) => {
                self.warn(s.at, "auth_type PASS without auth_pass: no authentication");
                Ok(())
            }
            (Some("PASS"), Some((at, _))) if v.version == 3 => {
                self.warn(
                    at,
                    "auth_pass: VRRP version 3 has no authentication (keepalived ignores it too); dropped",
                );
                Ok(())
            }
            (Some("PASS"), Some((at, mut password))) => {
                if password.len() > 8 {
                    // keepalived sends the first 8 bytes; lbd refuses longer ones.
                    let mut end = 8;
                    while !password.is_char_boundary(end) {
                        end -= 1;
                    }
                    password.truncate(end);
                    let message = format!(
                        "auth_pass: keepalived uses only its first 8 bytes; lbd is given {password:?}"
                    );
                    self.warn(at, message);
                }
                v.auth_pass = Some(password);
                Ok(())
            }
            (Some(other), _) => Err((s.at, format!("auth_type {other}: expected PASS or AH"))),
            (None, Some((at, _))) => {
                self.warn(
                    at,
                    "auth_pass without auth_type PASS: keepalived uses no authentication then; ignored",
                );
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }

    /// Values keepalived accepts but lbd's ranges or rules refuse.
    fn settle_vrrp(&mut self, v: &mut Vrrp) {
        if let Some((at, ms)) = v.advert {
            let (step, min, max, what) = match v.version {
                2 => (1000, 1000, 255_000, "whole seconds from 1 to 255"),
                _ => (10, 10, 40_950, "0.01 to 40.95 seconds"),
            };
            let settled = ((ms + step / 2) / step * step).clamp(min, max);
            if settled != ms {
                let message = format!(
                    "advert_int {}: VRRP version {} carries {what}; lbd uses {}",
                    seconds(ms),
                    v.version,
                    seconds(settled)
                );
                self.warn(at, message);
            }
            v.advert = Some((at, settled));
        }
        if let Some((at, ms)) = v.preempt_delay {
            if !v.preempt {
                self.warn(at, "preempt_delay has no effect with nopreempt; dropped");
                v.preempt_delay = None;
            } else if ms > 1_000_000 {
                self.warn(at, "preempt_delay: lbd allows at most 1000 seconds; 1000 is used");
                v.preempt_delay = Some((at, 1_000_000));
            }
        }
        if let Some((at, ms)) = v.garp_refresh.filter(|(_, ms)| (1..1000).contains(ms)) {
            let message = format!(
                "garp_master_refresh {}: lbd refreshes at most once a second; 1 is used",
                seconds(ms)
            );
            self.warn(at, message);
            v.garp_refresh = Some((at, 1000));
        }
        if let Some((at, _)) = v.unicast_src
            && v.unicast_peers.is_empty()
        {
            self.warn(
                at,
                "unicast_src_ip without unicast_peer: lbd multicasts from the interface's address; dropped",
            );
            v.unicast_src = None;
        }
        if v.vips.is_empty() {
            let message = format!(
                "vrrp_instance {} has no virtual_ipaddress: it elects a master that holds nothing",
                v.name
            );
            self.warn(v.at, message);
        }
    }

    fn sync_group(&mut self, s: &Stmt) -> Result<()> {
        let name = self.needed(s, 0, "a name")?.to_owned();
        let mut members = Vec::new();
        for st in s.body() {
            match st.key() {
                "group" => {
                    for line in st.body() {
                        members.extend(line.words.iter().map(|w| (line.at, w.text.clone())));
                    }
                }
                "notify_master" | "notify_backup" | "notify_fault" | "notify" | "notify_stop" => {
                    self.unsupported(
                        st,
                        "lbd has no group notify scripts: give each vrrp_instance its own",
                    )
                }
                "smtp_alert" => self.no_mail(st),
                "global_tracking" | "sync_group_tracking_weight" | "track_interface"
                | "track_script" | "track_file" | "track_process" | "track_bfd" => {
                    self.unsupported(st, "")
                }
                _ => self.unknown(st, "vrrp_sync_group"),
            }
        }
        self.groups.push(SyncGroup {
            at: s.at,
            shown: s.shown(),
            name,
            members,
            instances: Vec::new(),
        });
        Ok(())
    }

    /// Members may be defined after their group. A group left with fewer than two members is
    /// dropped, as keepalived drops it.
    fn resolve_sync_groups(&mut self) {
        let mut taken: HashSet<String> = HashSet::new();
        let mut groups = std::mem::take(&mut self.groups);
        for group in &mut groups {
            for (at, raw) in &group.members {
                let found = self.vrrps.iter().find(|v| &v.raw_name == raw);
                let message = match found {
                    None => format!("vrrp_sync_group {}: no vrrp_instance {raw}; left out", group.name),
                    Some(v) if !taken.insert(v.name.clone()) => format!(
                        "vrrp_sync_group {}: {raw} is already in a group (lbd allows one); left out",
                        group.name
                    ),
                    Some(v) => {
                        group.instances.push(v.name.clone());
                        continue;
                    }
                };
                self.warn(*at, message);
            }
            if group.instances.len() < 2 {
                let message = format!(
                    "vrrp_sync_group {}: fewer than two instances; dropped (keepalived drops it too)",
                    group.name
                );
                self.warn(group.at, message);
            }
        }
        groups.retain(|g| g.instances.len() >= 2);
        self.groups = groups;
    }

    /// lbd ties a [[vip]] to the [[vrrp]] that holds its address: only that instance's master
    /// forwards it. keepalived ran the IPVS rules on every director whatever the VRRP state.
    fn tie_vips_to_vrrp(&mut self) -> Result<()> {
        if self.vrrps.is_empty() {
            self.warn(
                Loc::default(),
                "no vrrp_instance names an interface: director.interfaces is set to [\"eth0\"]; \
                 set the interface(s) facing the clients and the real servers",
            );
            return Ok(());
        }
        let held: HashSet<IpAddr> = self
            .vrrps
            .iter()
            .flat_map(|v| v.vips.iter().map(|a| IpAddr::V4(*a)))
            .collect();
        let mut told = HashSet::new();
        let mut messages = Vec::new();
        for vip in &self.vips {
            if vip.address.is_ipv6() {
                return Err((
                    vip.at,
                    format!(
                        "{}: lbd's VRRP fails over IPv4 only, so lbd refuses IPv6 VIPs in a file \
                         with vrrp_instances (every director would forward it)",
                        vip.address
                    ),
                ));
            }
            if !held.contains(&vip.address) && told.insert(vip.address) {
                messages.push((
                    vip.at,
                    format!(
                        "{} is in no vrrp_instance's virtual_ipaddress: every lbd director \
                         forwards it at once, as keepalived's IPVS rules did; add it to a \
                         [[vrrp]]'s vips so that only the master does",
                        vip.address
                    ),
                ));
            }
        }
        self.warnings.extend(messages);
        Ok(())
    }

    fn virtual_server(&mut self, s: &Stmt) -> Result<()> {
        let endpoints = self.endpoints(s)?;
        let Some(body) = s.block.as_deref() else {
            return Err((s.at, "virtual_server without a { } block".into()));
        };
        let mut timing = Timing::default();
        let (mut scheduler, mut protocol, mut direct) = (None, "tcp", false);
        let (mut persistence, mut granularity) = (0, None);
        let (mut sorry, mut inhibit, mut weight) = (None, false, 1);
        let mut server_lines = Vec::new();
        for st in body {
            if self.timing(st, &mut timing)? {
                continue;
            }
            match st.key() {
                "lb_algo" | "lvs_sched" => {
                    let name = self.needed(st, 0, "a scheduler")?.to_ascii_lowercase();
                    scheduler = Some((st.at, name));
                }
                "lb_kind" | "lvs_method" => direct = self.forwarding(st)?,
                "protocol" => {
                    protocol = match self.needed(st, 0, "TCP or UDP")?.to_ascii_uppercase().as_str() {
                        "TCP" => "tcp",
                        "UDP" => "udp",
                        other => {
                            return Err((
                                st.at,
                                format!("protocol {other}: lbd balances TCP and UDP only"),
                            ));
                        }
                    }
                }
                // keepalived's persistence_timeout without a value is 6 minutes.
                "persistence_timeout" => {
                    persistence = match st.arg(0) {
                        None => 360,
                        Some(_) => self.integer(st, 0, 31_536_000)?,
                    }
                }
                "persistence_granularity" => {
                    let mask = self.needed(st, 0, "a netmask or prefix length")?;
                    granularity = Some((st.at, mask.to_owned()));
                }
                "sorry_server" => sorry = Some(st),
                "inhibit_on_failure" => inhibit = true,
                "weight" => weight = self.integer(st, 0, 65_535)? as u32,
                "real_server" => server_lines.push(st),
                "ip_family" => {}
                "nat_mask" => self.unsupported(st, "NAT only"),
                "ha_suspend" => self.unsupported(
                    st,
                    "lbd checks real servers on every director, master or backup",
                ),
                "smtp_alert" => self.no_mail(st),
                "virtualhost" => self.unsupported(st, "HTTP_GET only"),
                "omega" | "quorum" | "quorum_up" | "quorum_down" | "hysteresis"
                | "persistence_engine" | "sorry_server_inhibit" | "sorry_server_lvs_method"
                | "hashed" | "ops" | "one_packet_scheduling" | "flag-1" | "flag-2" | "flag-3"
                | "sh-port" | "sh-fallback" | "mh-port" | "mh-fallback" | "snmp_name" => {
                    self.unsupported(st, "")
                }
                _ => self.unknown(st, "virtual_server"),
            }
        }
        let mut servers = Vec::new();
        for st in server_lines {
            let server = self.real_server(st, &timing, weight, inhibit)?;
            if !direct && !server.direct {
                return Err((
                    s.at,
                    "virtual_server without lb_kind: keepalived's default is NAT, which lbd does \
                     not do; write lb_kind DR if direct routing was meant"
                        .into(),
                ));
            }
            if servers.iter().any(|o: &Server| o.address == server.address) {
                return Err((
                    st.at,
                    format!("real_server {} is listed twice", server.address),
                ));
            }
            servers.push(server);
        }
        if servers.is_empty() {
            return Err((s.at, "virtual_server without a real_server: lbd needs at least one backend per VIP".into()));
        }
        let (scheduler, scheduler_is_default) = self.scheduler(s, scheduler, protocol)?;
        let check = self.pick_check(&servers)?;
        let drain = check.is_some() && self.on_down(&servers);
        let granularity = match granularity {
            Some((at, _)) if persistence == 0 => {
                self.warn(at, "persistence_granularity without persistence_timeout: ignored");
                None
            }
            Some((_, mask)) if mask.contains('.') => Some(quote(&mask)),
            Some((at, bits)) => match bits.parse::<u8>() {
                Ok(n) if (1..=128).contains(&n) => Some(n.to_string()),
                _ => return Err((at, format!("persistence_granularity {bits}: expected a netmask or a prefix length"))),
            },
            None => None,
        };
        let sorry = match sorry {
            Some(st) => self.sorry_server(st, &endpoints, &servers, check.is_some())?,
            None => None,
        };
        let backends = Rc::new(servers);
        for (address, port, origin) in endpoints {
            for server in backends.iter() {
                if server.port.is_some_and(|p| p != port) {
                    return Err((
                        server.at,
                        format!(
                            "real_server {} {}: the virtual_server's port is {port}; direct \
                             routing cannot rewrite ports, so the real server must listen on {port}",
                            server.address,
                            server.port.unwrap_or(port)
                        ),
                    ));
                }
            }
            if self.vips.iter().any(|v| (v.address, v.port, v.protocol) == (address, port, protocol)) {
                return Err((s.at, format!("{address} {port} {protocol}: a second virtual_server for it")));
            }
            self.vips.push(Vip {
                at: s.at,
                shown: format!("{}{origin}", s.shown()),
                address,
                port,
                protocol,
                scheduler: scheduler.clone(),
                scheduler_is_default,
                persistence_timeout: persistence,
                granularity: granularity.clone(),
                sorry_server: sorry,
                drain,
                check: check.clone(),
                backends: Rc::clone(&backends),
            });
        }
        Ok(())
    }

    /// The (address, port, origin) of each VIP a virtual_server stands for.
    fn endpoints(&mut self, s: &Stmt) -> Result<Vec<(IpAddr, u16, String)>> {
        match s.arg(0) {
            None => Err((s.at, "virtual_server: missing its address and port".into())),
            Some("fwmark") => Err((
                s.at,
                "virtual_server fwmark: lbd has no firewall-mark services; give the VIP's \
                 address and port (lbd's own guard replaces the marks against the localnode loop)"
                    .into(),
            )),
            Some("group") => {
                let name = self.needed(s, 1, "the group's name")?;
                let group = self.server_groups.get(name).cloned().ok_or_else(|| {
                    (s.at, format!("virtual_server group {name}: there is no virtual_server_group {name}"))
                })?;
                let endpoints = self.expand_server_group(&group)?;
                let message = format!(
                    "virtual_server group {name}: lbd has no groups; it becomes {} [[vip]] with \
                     the same real servers, each checked on its own",
                    endpoints.len()
                );
                self.warn(s.at, message);
                Ok(endpoints)
            }
            Some(address) => {
                let address = self.address(s, address)?;
                let port = self.needed(s, 1, "a port (lbd has no port-less services)")?;
                Ok(vec![(address, self.port(s, port)?, String::new())])
            }
        }
    }

    /// `ADDR PORT` and `A.B.C.D-E PORT` lines; `fwmark` entries cannot be converted.
    fn expand_server_group(&mut self, group: &Stmt) -> Result<Vec<(IpAddr, u16, String)>> {
        let mut out = Vec::new();
        for line in group.body() {
            if line.key() == "fwmark" {
                return Err((line.at, "virtual_server_group: fwmark entries: lbd has no firewall-mark services".into()));
            }
            let port = self.needed(line, 0, "a port (lbd has no port-less services)")?;
            let port = self.port(line, port)?;
            let origin = format!(" (group entry {} {})", self.place(line.at), line.shown());
            let Some((first, last)) = line.key().split_once('-') else {
                out.push((self.address(line, line.key())?, port, origin));
                continue;
            };
            let range_error = || (line.at, format!("{}: expected a range A.B.C.D-E of IPv4 addresses", line.key()));
            let IpAddr::V4(first) = self.address(line, first)? else {
                return Err(range_error());
            };
            let [a, b, c, d] = first.octets();
            let last: u8 = last.parse().map_err(|_| range_error())?;
            if last < d {
                return Err(range_error());
            }
            out.extend((d..=last).map(|x| (IpAddr::V4(Ipv4Addr::new(a, b, c, x)), port, origin.clone())));
        }
        if out.is_empty() {
            return Err((group.at, "virtual_server_group without entries".into()));
        }
        Ok(out)
    }

    /// `lb_kind DR` is what lbd does; NAT and TUN would rewrite or wrap packets.
    fn forwarding(&self, st: &Stmt) -> Result<bool> {
        match self.needed(st, 0, "DR, NAT or TUN")?.to_ascii_uppercase().as_str() {
            "DR" => Ok(true),
            other => Err((
                st.at,
                format!(
                    "{} {other}: lbd forwards by direct routing only (lb_kind DR); {other} would \
                     behave differently (the real servers answer the clients themselves, from the VIP)",
                    st.key()
                ),
            )),
        }
    }

    /// lbd's scheduler for keepalived's lb_algo (wlc when absent, keepalived's default).
    /// sed and nq become wlc: all three pick by open connections relative to weight and
    /// differ only in how idle servers and ties rank, so the balance stays alike. lblc,
    /// lblcr, fo and ovf have no counterpart close enough: an error.
    fn scheduler(&mut self, s: &Stmt, given: At<String>, protocol: &str) -> Result<(String, bool)> {
        let is_default = given.is_none();
        let (at, name) = given.unwrap_or((s.at, "wlc".into()));
        let lbd = match name.as_str() {
            "rr" | "wrr" | "lc" | "wlc" | "sh" | "dh" => name.clone(),
            "mh" | "maglev" => "maglev".into(),
            "sed" | "nq" => {
                let message = format!(
                    "lb_algo {name}: lbd has no {name}; wlc is used (it too picks by open flows \
                     relative to weight; only idle servers and ties rank differently)"
                );
                self.warn(at, message);
                "wlc".into()
            }
            "lblc" | "lblcr" => {
                return Err((
                    at,
                    format!(
                        "lb_algo {name}: lbd has no locality-based scheduler; dh is the closest \
                         but never moves a destination off an overloaded server: choose dh or \
                         another scheduler lbd has (rr wrr lc wlc sh dh mh)"
                    ),
                ));
            }
            other => {
                return Err((
                    at,
                    format!("lb_algo {other}: lbd's schedulers are rr wrr lc wlc sh dh mh"),
                ));
            }
        };
        if protocol == "udp" && lbd.ends_with("lc") {
            let default = if is_default { " (wlc is keepalived's default without lb_algo)" } else { "" };
            return Err((
                at,
                format!(
                    "lb_algo {name} on a UDP service{default}: lbd counts open flows by their \
                     TCP end, which UDP never shows; choose rr, wrr, sh, dh or mh"
                ),
            ));
        }
        Ok((lbd, is_default))
    }

    /// Checker timings that may stand at any level; true when `st` was one.
    fn timing(&mut self, st: &Stmt, t: &mut Timing) -> Result<bool> {
        match st.key() {
            "delay_loop" => t.delay_loop = Some(self.millis(st)?),
            "connect_timeout" => t.timeout = Some(self.millis(st)?),
            // nb_get_retry is keepalived 1.x's name, meant the same way in its users' files.
            "retry" | "nb_get_retry" => t.retry = Some(self.integer(st, 0, 1_000_000)? as u32),
            "delay_before_retry" => t.delay_before_retry = Some(self.millis(st)?),
            "alpha" => t.alpha = Some(!matches!(st.arg(0), Some("false" | "no" | "off" | "0"))),
            "warmup" => self.unsupported(
                st,
                "lbd starts each backend's checks at its own offset within the interval",
            ),
            "log_all_failures" => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn real_server(&mut self, st: &Stmt, outer: &Timing, weight: u32, inhibit: bool) -> Result<Server> {
        let address = self.address(st, self.needed(st, 0, "an address")?)?;
        let port = match st.arg(1) {
            Some(p) => Some(self.port(st, p)?),
            None => None,
        };
        let mut server = Server {
            at: st.at,
            shown: st.shown(),
            address,
            port,
            weight,
            inhibit: Some(inhibit),
            direct: false,
            notify_up: None,
            notify_down: None,
            check: None,
        };
        let mut timing = Timing::default();
        let mut checkers = Vec::new();
        for line in st.body() {
            if self.timing(line, &mut timing)? {
                continue;
            }
            match line.key() {
                "weight" => server.weight = self.integer(line, 0, 65_535)? as u32,
                "inhibit_on_failure" => server.inhibit = Some(true),
                "notify_up" | "notify_down" => {
                    let Some(text) = self.command(line) else { continue };
                    let argv = Some(self.argv(line, &text, false));
                    match line.key() {
                        "notify_up" => server.notify_up = argv,
                        _ => server.notify_down = argv,
                    }
                }
                "lvs_method" | "lb_kind" => server.direct = self.forwarding(line)?,
                "TCP_CHECK" | "MISC_CHECK" => checkers.push(line),
                "HTTP_GET" | "SSL_GET" | "SMTP_CHECK" | "DNS_CHECK" | "UDP_CHECK" | "PING_CHECK"
                | "FILE_CHECK" | "BFD_CHECK" => {
                    return Err((
                        line.at,
                        format!(
                            "{}: lbd has no such check (it runs TCP_CHECK, MISC_CHECK scripts and \
                             its own Redis check); dropping it would keep a failed server in service: \
                             use a MISC_CHECK script instead",
                            line.key()
                        ),
                    ));
                }
                "uthreshold" | "lthreshold" => {
                    self.unsupported(line, "lbd has no connection limits")
                }
                "smtp_alert" => self.no_mail(line),
                "virtualhost" => self.unsupported(line, "HTTP_GET only"),
                _ => self.unknown(line, "real_server"),
            }
        }
        if let Some(second) = checkers.get(1) {
            return Err((
                second.at,
                format!(
                    "real_server {address}: a second checker; lbd runs one check per VIP (keepalived \
                     wanted both to pass)"
                ),
            ));
        }
        if let Some(checker) = checkers.first() {
            let check = self.checker(checker, &timing.within(outer), address)?;
            server.check = Some((checker.at, check));
        }
        Ok(server)
    }

    fn checker(&mut self, c: &Stmt, outer: &Timing, server: IpAddr) -> Result<Check> {
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
                ("MISC_CHECK", "misc_path") => path = self.command(st),
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
            "TCP_CHECK" => (
                CheckKind::Tcp { port },
                t.retry.unwrap_or(1),
                t.timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            ),
            _ => {
                let Some(text) = path else {
                    return Err((c.at, "MISC_CHECK without misc_path".into()));
                };
                let (text, substituted) = replace_address(&text, server);
                let shell = match substituted {
                    true => Some("the real server's address is $LBD_BACKEND"),
                    false => needs_shell(&text),
                };
                // A MISC_CHECK script times out at delay_loop unless misc_timeout says otherwise.
                let timeout = misc_timeout.unwrap_or(interval);
                (CheckKind::Script { text, shell, dynamic }, t.retry.unwrap_or(0), timeout)
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
    /// the most common settings are used (the first on a tie), with a warning for the others.
    /// A real server without a checker gets the VIP's check too (keepalived left it unchecked).
    fn pick_check(&mut self, servers: &[Server]) -> Result<Option<(Loc, Check)>> {
        let checked: Vec<&(Loc, Check)> = servers.iter().filter_map(|s| s.check.as_ref()).collect();
        let Some(&first) = checked.first() else {
            return Ok(None);
        };
        for &(at, check) in &checked {
            let same_kind = match (&check.kind, &first.1.kind) {
                (CheckKind::Tcp { .. }, CheckKind::Tcp { .. }) => true,
                (CheckKind::Script { text: a, .. }, CheckKind::Script { text: b, .. }) if a != b => {
                    return Err((
                        *at,
                        format!(
                            "MISC_CHECK: its script differs from the one at {} ({b:?}); lbd runs one \
                             script for every backend of a VIP (with the backend's address in LBD_BACKEND)",
                            self.place(first.0)
                        ),
                    ));
                }
                (CheckKind::Script { .. }, CheckKind::Script { .. }) => true,
                _ => false,
            };
            if !same_kind {
                return Err((
                    *at,
                    format!(
                        "{}: the real server at {} uses {}; lbd runs one kind of check per VIP, for all its real servers",
                        check.kind.keyword(),
                        self.place(first.0),
                        first.1.kind.keyword()
                    ),
                ));
            }
        }
        let mut chosen = first;
        let mut most = 0;
        for &candidate in &checked {
            let alike = checked.iter().filter(|o| o.1 == candidate.1).count();
            if alike > most {
                (chosen, most) = (candidate, alike);
            }
        }
        let chosen = chosen.clone();
        for server in servers {
            let message = match &server.check {
                None => format!(
                    "real_server {} has no checker: lbd checks every backend of a VIP, so it gets \
                     the {} of {} (keepalived kept it in service unchecked)",
                    server.address,
                    chosen.1.kind.keyword(),
                    self.place(chosen.0)
                ),
                Some((_, check)) if *check != chosen.1 => format!(
                    "real_server {}: lbd runs one check per VIP, the {} of {}; this one's {} is not used",
                    server.address,
                    chosen.1.kind.keyword(),
                    self.place(chosen.0),
                    differences(check, &chosen.1).join(", ")
                ),
                Some(_) => continue,
            };
            let at = server.check.as_ref().map_or(server.at, |c| c.0);
            self.warn(at, message);
        }
        Ok(Some(self.settle_check(chosen)))
    }

    /// lbd's ranges: interval up to an hour, timeout up to a minute, fall up to 100.
    fn settle_check(&mut self, (at, mut check): (Loc, Check)) -> (Loc, Check) {
        let clamp = |this: &mut Self, what: &str, value: &mut Ms, max: Ms| {
            let settled = (*value).clamp(10, max);
            if settled != *value {
                let message = format!("{what} {}: lbd allows 0.01 to {} seconds; {} is used", seconds(*value), max / 1000, seconds(settled));
                this.warn(at, message);
                *value = settled;
            }
        };
        clamp(self, "delay_loop", &mut check.interval, 3_600_000);
        let timeout_name = match check.kind {
            CheckKind::Tcp { .. } => "connect_timeout",
            CheckKind::Script { .. } => "misc_timeout",
        };
        clamp(self, timeout_name, &mut check.timeout, 60_000);
        clamp(self, "delay_before_retry", &mut check.delay_before_retry, 3_600_000);
        if check.retry > 99 {
            let message = format!("retry {}: lbd takes a backend down after at most 100 failed checks; 99 retries are used", check.retry);
            self.warn(at, message);
            check.retry = 99;
        }
        if let CheckKind::Script { text, shell: Some(why), .. } = &check.kind {
            let message = format!("MISC_CHECK misc_path: lbd runs commands without a shell, and {why}: it runs /bin/sh -c {text:?}");
            self.warn(at, message);
        }
        (at, check)
    }

    /// inhibit_on_failure is lbd's `on_down = "drain"`, which lbd sets per VIP. With real
    /// servers that disagree, lbd's default (remove, keepalived's too) is kept.
    fn on_down(&mut self, servers: &[Server]) -> bool {
        let inhibited: Vec<&Server> = servers.iter().filter(|s| s.inhibit == Some(true)).collect();
        if inhibited.is_empty() || inhibited.len() == servers.len() {
            return !inhibited.is_empty();
        }
        for server in inhibited {
            let message = format!(
                "real_server {}: inhibit_on_failure is per VIP in lbd (on_down = \"drain\") and the \
                 other real servers do not have it; lbd removes failed backends of this VIP",
                server.address
            );
            self.warn(server.at, message);
        }
        false
    }

    fn sorry_server(
        &mut self,
        st: &Stmt,
        endpoints: &[(IpAddr, u16, String)],
        servers: &[Server],
        checked: bool,
    ) -> Result<Option<IpAddr>> {
        let address = self.address(st, self.needed(st, 0, "an address")?)?;
        if let Some(port) = st.arg(1) {
            let port = self.port(st, port)?;
            if let Some((_, vip_port, _)) = endpoints.iter().find(|e| e.1 != port) {
                return Err((
                    st.at,
                    format!(
                        "sorry_server {address} {port}: the virtual_server's port is {vip_port}; \
                         direct routing cannot rewrite ports"
                    ),
                ));
            }
        }
        if !checked {
            self.warn(st.at, "sorry_server without checkers: keepalived never used it (no real server ever fails); lbd needs a check for it; dropped");
            return Ok(None);
        }
        if servers.iter().any(|s| s.address == address) {
            self.warn(st.at, format!("sorry_server {address} is also a real_server: lbd refuses that; dropped"));
            return Ok(None);
        }
        Ok(Some(address))
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, text: &str| {
            out.push_str(text);
            out.push('\n');
        };
        line(&mut out, &format!("# generated by lbd import-keepalived from {}", comment(&self.files[0].display().to_string())));
        for file in self.files.iter().skip(1) {
            line(&mut out, &format!("# and from {}, which it includes", comment(&file.display().to_string())));
        }
        line(&mut out, "# Review the warnings it printed. Each section names the keepalived line it comes from.");
        if !self.vrrps.is_empty() {
            line(&mut out, "# A [[vip]] whose address is in the vips of a [[vrrp]] is forwarded only by that instance's master.");
        }
        line(&mut out, "");
        line(&mut out, &format!("instance = {}", quote(self.instance.as_deref().unwrap_or("lbd"))));
        line(&mut out, "");
        line(&mut out, "[director]");
        let mut interfaces: Vec<String> = Vec::new();
        for v in &self.vrrps {
            if !interfaces.contains(&v.interface) {
                interfaces.push(v.interface.clone());
            }
        }
        if interfaces.is_empty() {
            line(&mut out, "# no vrrp_instance named an interface: set the one(s) facing the clients and the real servers");
            interfaces.push("eth0".into());
        }
        line(&mut out, &format!("interfaces = {}", list(&interfaces)));
        if !self.timeouts.is_empty() {
            line(&mut out, "");
            line(&mut out, "[timeouts]                      # global_defs lvs_timeouts");
            for (key, secs) in &self.timeouts {
                line(&mut out, &format!("{key} = {secs}"));
            }
        }
        for v in &self.vrrps {
            self.render_vrrp(&mut out, v);
        }
        for g in &self.groups {
            line(&mut out, "");
            line(&mut out, &format!("# {} {}", self.place(g.at), comment(&g.shown)));
            line(&mut out, "[[vrrp_sync_group]]");
            line(&mut out, &format!("name = {}", quote(&g.name)));
            line(&mut out, &format!("instances = {}", list(&g.instances)));
        }
        for vip in &self.vips {
            self.render_vip(&mut out, vip);
        }
        out
    }

    fn render_vrrp(&self, out: &mut String, v: &Vrrp) {
        out_line(out, "");
        out_line(out, &format!("# {} {}", self.place(v.at), comment(&v.shown)));
        if let Some(state) = &v.state {
            out_line(out, &format!("# state {}: lbd starts every instance as a backup; the election decides", comment(state)));
        }
        out_line(out, "[[vrrp]]");
        let mut kv = |key: &str, value: String, note: &str| push_key(out, key, &value, note);
        kv("name", quote(&v.name), "");
        kv("interface", quote(&v.interface), "");
        kv("virtual_router_id", v.virtual_router_id.to_string(), "");
        if let Some(p) = v.priority {
            kv("priority", p.to_string(), "");
        }
        if let Some((_, ms)) = v.advert {
            kv("advert_int", seconds(ms), "");
        }
        let note = if v.version_is_default && v.version == 2 {
            "keepalived's default, so keepalived peers can take part (3: sub-second adverts, no auth_pass)"
        } else {
            ""
        };
        kv("version", v.version.to_string(), note);
        if let Some(pass) = &v.auth_pass {
            kv("auth_pass", quote(pass), "");
        }
        if !v.preempt {
            kv("preempt", "false".into(), "nopreempt");
        }
        if let Some((_, ms)) = v.preempt_delay {
            kv("preempt_delay", seconds(ms), "");
        }
        kv("vips", list(&v.vips), "virtual_ipaddress");
        if let Some((_, src)) = v.unicast_src {
            kv("unicast_src", quote(&src.to_string()), "unicast_src_ip");
        }
        if !v.unicast_peers.is_empty() {
            kv("unicast_peers", list(&v.unicast_peers), "unicast_peer");
        }
        if let Some(n) = v.garp_repeat {
            kv("garp_master_repeat", n.to_string(), "");
        }
        if let Some((_, ms)) = v.garp_refresh.filter(|(_, ms)| *ms > 0) {
            kv("garp_master_refresh", seconds(ms), "");
        }
        if !v.track_interfaces.is_empty() {
            kv("track_interface", list(&v.track_interfaces), "");
        }
        for (key, argv) in &v.notify {
            kv(key, list(argv), "");
        }
    }

    fn render_vip(&self, out: &mut String, vip: &Vip) {
        out_line(out, "");
        out_line(out, &format!("# {} {}", self.place(vip.at), comment(&vip.shown)));
        out_line(out, "[[vip]]");
        let mut kv = |key: &str, value: String, note: &str| push_key(out, key, &value, note);
        kv("address", quote(&vip.address.to_string()), "");
        kv("port", vip.port.to_string(), "");
        kv("protocol", quote(vip.protocol), "");
        let note = if vip.scheduler_is_default { "keepalived's default without lb_algo" } else { "lb_algo" };
        kv("scheduler", quote(&vip.scheduler), note);
        if vip.persistence_timeout > 0 {
            kv("persistence_timeout", vip.persistence_timeout.to_string(), "");
        }
        if let Some(g) = &vip.granularity {
            kv("persistence_granularity", g.clone(), "");
        }
        if vip.drain {
            kv("on_down", quote("drain"), "inhibit_on_failure");
        }
        if let Some(sorry) = vip.sorry_server {
            kv("sorry_server", quote(&sorry.to_string()), "");
        }
        if let Some((at, check)) = &vip.check {
            self.render_check(out, *at, check);
        }
        for server in vip.backends.iter() {
            out_line(out, "");
            out_line(out, &format!("# {} {}", self.place(server.at), comment(&server.shown)));
            out_line(out, "[[vip.backend]]");
            push_key(out, "address", &quote(&server.address.to_string()), "");
            push_key(out, "weight", &server.weight.to_string(), "");
            if let Some(argv) = &server.notify_up {
                push_key(out, "notify_up", &list(argv), "");
            }
            if let Some(argv) = &server.notify_down {
                push_key(out, "notify_down", &list(argv), "");
            }
        }
    }

    fn render_check(&self, out: &mut String, at: Loc, check: &Check) {
        out_line(out, "");
        out_line(out, &format!("# {} {}", self.place(at), check.kind.keyword()));
        out_line(out, "[vip.check]");
        let mut kv = |key: &str, value: String, note: &str| push_key(out, key, &value, note);
        match &check.kind {
            CheckKind::Tcp { .. } => kv("type", quote("tcp"), ""),
            CheckKind::Script { .. } => kv("type", quote("script"), ""),
        }
        kv("interval", seconds(check.interval), "delay_loop");
        let timeout_note = match check.kind {
            CheckKind::Tcp { .. } => "connect_timeout",
            CheckKind::Script { .. } => "misc_timeout",
        };
        kv("timeout", seconds(check.timeout), timeout_note);
        let fall_note = format!("keepalived: down after 1 + retry {} failed checks", check.retry);
        kv("fall", (check.retry + 1).to_string(), &fall_note);
        kv("rise", "1".into(), "keepalived: up again after one success");
        if check.retry > 0 {
            kv("delay_before_retry", seconds(check.delay_before_retry), "");
        }
        match check.initially_up {
            true => kv("initial", quote("up"), "keepalived starts real servers up (no alpha)"),
            false => kv("initial", quote("down"), "alpha"),
        }
        match &check.kind {
            CheckKind::Tcp { port: Some(port) } => kv("connect_port", port.to_string(), ""),
            CheckKind::Tcp { port: None } => {}
            CheckKind::Script { text, shell, dynamic } => {
                let argv = match shell {
                    Some(_) => self::shell(text, false),
                    None => text.split_whitespace().map(str::to_owned).collect(),
                };
                kv("script", list(&argv), "misc_path");
                if *dynamic {
                    kv("dynamic_weight", "true".into(), "misc_dynamic");
                }
            }
        }
    }
}

fn out_line(out: &mut String, text: &str) {
    out.push_str(text);
    out.push('\n');
}

fn push_key(out: &mut String, key: &str, value: &str, note: &str) {
    let assignment = format!("{key} = {value}");
    match note {
        "" => out_line(out, &assignment),
        _ => out_line(out, &format!("{assignment:<31} # {}", comment(note))),
    }
}

/// Why a command needs `/bin/sh -c`, if it does.
fn needs_shell(text: &str) -> Option<&'static str> {
    if text.contains(SHELL_CHARS) {
        Some("it uses shell syntax")
    } else if !text.split_whitespace().next().is_some_and(|w| w.starts_with('/')) {
        Some("its program is not given by an absolute path")
    } else {
        None
    }
}

/// `/bin/sh -c TEXT`; with `pass_args`, `"$@"` hands on the arguments lbd appends.
fn shell(text: &str, pass_args: bool) -> Vec<String> {
    let mut argv = vec!["/bin/sh".to_owned(), "-c".to_owned()];
    if pass_args {
        argv.push(format!("{text} \"$@\""));
        argv.push("sh".to_owned());
    } else {
        argv.push(text.to_owned());
    }
    argv
}

/// The script with the real server's own address (as a whole word) as `${LBD_BACKEND}`,
/// and whether there was one.
fn replace_address(text: &str, address: IpAddr) -> (String, bool) {
    let needle = address.to_string();
    let joined = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.');
    let mut out = String::new();
    let mut last = 0;
    for (i, _) in text.match_indices(&needle) {
        let before = text[..i].chars().next_back();
        let after = text[i + needle.len()..].chars().next();
        if joined(before) || joined(after) || (address.is_ipv6() && (before == Some(':') || after == Some(':'))) {
            continue;
        }
        out.push_str(&text[last..i]);
        out.push_str("${LBD_BACKEND}");
        last = i + needle.len();
    }
    out.push_str(&text[last..]);
    let replaced = last > 0;
    (out, replaced)
}

/// What differs between a real server's check and the one lbd uses, in keepalived's words.
fn differences(theirs: &Check, used: &Check) -> Vec<String> {
    let mut out = Vec::new();
    let mut differ = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name} {a} (used: {b})"));
        }
    };
    if let (CheckKind::Tcp { port: a }, CheckKind::Tcp { port: b }) = (&theirs.kind, &used.kind) {
        let shown = |p: &Option<u16>| p.map_or("the VIP's port".to_owned(), |p| p.to_string());
        differ("connect_port", shown(a), shown(b));
    }
    if let (CheckKind::Script { dynamic: a, .. }, CheckKind::Script { dynamic: b, .. }) = (&theirs.kind, &used.kind) {
        differ("misc_dynamic", a.to_string(), b.to_string());
    }
    differ("delay_loop", seconds(theirs.interval), seconds(used.interval));
    differ("timeout", seconds(theirs.timeout), seconds(used.timeout));
    differ("retry", theirs.retry.to_string(), used.retry.to_string());
    differ("delay_before_retry", seconds(theirs.delay_before_retry), seconds(used.delay_before_retry));
    differ("alpha", (!theirs.initially_up).to_string(), (!used.initially_up).to_string());
    out
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list<T: ToString>(items: &[T]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| quote(&i.to_string())).collect();
    format!("[{}]", quoted.join(", "))
}

/// Text safe in a TOML comment (no control characters but tab).
fn comment(text: &str) -> String {
    text.chars().map(|c| if c.is_control() && c != '\t' { '?' } else { c }).collect()
}
