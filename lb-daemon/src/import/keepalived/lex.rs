//! keepalived.conf syntax: lines, comments, quotes, braces, line continuations and includes,
//! read into a tree of statements.

use std::io;
use std::path::{Component, Path, PathBuf};

use super::{Fail, Loc, Result};

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

#[derive(Debug, Clone)]
pub(super) struct Word {
    pub text: String,
    pub quoted: bool,
}

/// A keyword line, its arguments and its `{ }` block, if any.
#[derive(Debug, Clone)]
pub(super) struct Stmt {
    pub at: Loc,
    pub words: Vec<Word>,
    pub block: Option<Vec<Stmt>>,
}

impl Stmt {
    pub fn key(&self) -> &str {
        self.words.first().map_or("", |w| w.text.as_str())
    }
    pub fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i + 1).map(|w| w.text.as_str())
    }
    pub fn args(&self) -> &[Word] {
        self.words.get(1..).unwrap_or(&[])
    }
    pub fn body(&self) -> &[Stmt] {
        self.block.as_deref().unwrap_or(&[])
    }
    /// The line as written (quotes kept), for messages and comments.
    pub fn shown(&self) -> String {
        let words: Vec<String> = self
            .words
            .iter()
            .map(|w| {
                if w.quoted {
                    format!("\"{}\"", w.text)
                } else {
                    w.text.clone()
                }
            })
            .collect();
        words.join(" ")
    }
}

/// What reading gave: the statements, every file read (a `Loc` indexes it) and warnings.
pub(super) struct Read {
    pub top: Vec<Stmt>,
    pub files: Vec<PathBuf>,
    pub warnings: Vec<(Loc, String)>,
}

/// Reads `path` and its includes into statements. On failure, the files read so far come
/// with the error, to name the file of its `Loc`.
pub(super) fn read(
    path: &Path,
    read: &dyn Fn(&Path) -> io::Result<String>,
) -> std::result::Result<Read, (Vec<PathBuf>, Fail)> {
    let mut reader = Reader {
        read,
        files: Vec::new(),
        open: Vec::new(),
        tokens: Vec::new(),
        warnings: Vec::new(),
    };
    let top = reader
        .file(path.to_path_buf(), None)
        .and_then(|()| parse_block(&reader.tokens, &mut 0, None, 0));
    match top {
        Ok(top) => Ok(Read {
            top,
            files: reader.files,
            warnings: reader.warnings,
        }),
        Err(fail) => Err((reader.files, fail)),
    }
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
            None => (
                Loc {
                    file: index,
                    line: 0,
                },
                format!("cannot read: {e}"),
            ),
        })?;
        self.open.push(path);
        let mut lines = text.lines().enumerate();
        while let Some((i, line)) = lines.next() {
            let at = Loc {
                file: index,
                line: i + 1,
            };
            let (mut toks, mut continued) = lex_line(line, at)?;
            // A trailing `\` continues the line; the keyword keeps its first line's number.
            while continued {
                let Some((_, next)) = lines.next() else { break };
                let (more, again) = lex_line(next, at)?;
                toks.extend(more);
                continued = again;
            }
            match toks.first() {
                None => {}
                Some(Tok::Word {
                    text,
                    quoted: false,
                }) if text == "include" => self.include(&toks[1..], at)?,
                Some(_) => {
                    self.tokens
                        .extend(toks.into_iter().map(|tok| Token { tok, at }));
                    self.tokens.push(Token {
                        tok: Tok::EndOfLine,
                        at,
                    });
                }
            }
        }
        self.open.pop();
        Ok(())
    }

    fn include(&mut self, args: &[Tok], at: Loc) -> Result<()> {
        let [Tok::Word { text: pattern, .. }] = args else {
            return Err((at, "include takes one file name or pattern".into()));
        };
        // Relative to the including file's directory, as keepalived does.
        let base = self.files[at.file].parent().unwrap_or(Path::new(""));
        let full = base.join(pattern);
        if !has_wildcard(pattern) {
            return self.file(full, Some(at));
        }
        let matches = self.expand(&full);
        if matches.is_empty() {
            let message = format!("include {pattern}: no file matches; nothing included");
            self.warnings.push((at, message));
        }
        for path in matches {
            self.file(path, Some(at))?;
        }
        Ok(())
    }

    /// The files a glob pattern names, sorted per directory level like glob(3). A directory
    /// is listed by reading its path with a trailing `/` (which fails for a file).
    fn expand(&self, pattern: &Path) -> Vec<PathBuf> {
        let mut found = vec![PathBuf::new()];
        for part in pattern.components() {
            let name = part.as_os_str().to_string_lossy();
            if !matches!(part, Component::Normal(_)) || !has_wildcard(&name) {
                for path in &mut found {
                    path.push(part);
                }
                continue;
            }
            let mut next = Vec::new();
            for dir in &found {
                let listing = if dir.as_os_str().is_empty() {
                    PathBuf::from("./")
                } else {
                    dir.join("")
                };
                let Ok(text) = (self.read)(&listing) else {
                    continue;
                };
                let mut names: Vec<&str> = text.lines().filter(|n| glob_match(&name, n)).collect();
                names.sort_unstable();
                next.extend(names.into_iter().map(|n| dir.join(n)));
            }
            found = next;
        }
        // A directory among the matches includes nothing, as in keepalived (it reads no lines).
        found.retain(|path| (self.read)(&path.join("")).is_err());
        found
    }
}

fn has_wildcard(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// `*`, `?` and `[...]` (with `!` or `^` and ranges); a leading dot only matches literally.
pub(super) fn glob_match(pattern: &str, name: &str) -> bool {
    fn in_class(set: &[char], c: char) -> bool {
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
                // A `]` right after `[` or `[!` belongs to the set.
                let from = if matches!(p.get(1), Some('!' | '^')) {
                    3
                } else {
                    2
                };
                let end = p
                    .iter()
                    .skip(from)
                    .position(|&c| c == ']')
                    .map(|e| e + from);
                match (n.first(), end) {
                    (Some(&c), Some(end)) => in_class(&p[1..end], c) && go(&p[end + 1..], &n[1..]),
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
            toks.push(Tok::Word {
                text: std::mem::take(word),
                quoted: false,
            });
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
                        None => {
                            return Err((at, "a quoted string is not closed on its line".into()));
                        }
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

/// Statements up to the `}` closing `opened` (or the end at top level). A `{` alone on its
/// line opens the block of the statement on the line before, as keepalived allows.
/// Blocks nest this deep at most (keepalived's own configs nest four or five): a deeper file
/// is refused at its line instead of overflowing the stack.
const MAX_DEPTH: usize = 64;

fn parse_block(
    toks: &[Token],
    pos: &mut usize,
    opened: Option<Loc>,
    depth: usize,
) -> Result<Vec<Stmt>> {
    let mut out: Vec<Stmt> = Vec::new();
    let mut current: Option<Stmt> = None;
    while let Some(token) = toks.get(*pos) {
        *pos += 1;
        match &token.tok {
            Tok::Word { text, quoted } => current
                .get_or_insert_with(|| Stmt {
                    at: token.at,
                    words: Vec::new(),
                    block: None,
                })
                .words
                .push(Word {
                    text: text.clone(),
                    quoted: *quoted,
                }),
            Tok::EndOfLine => out.extend(current.take()),
            Tok::Open => {
                let mut owner = match current.take() {
                    Some(stmt) => stmt,
                    None => match out.pop() {
                        Some(prev) if prev.block.is_none() => prev,
                        _ => return Err((token.at, "`{` without a keyword before it".into())),
                    },
                };
                if depth >= MAX_DEPTH {
                    return Err((
                        token.at,
                        format!("blocks nested more than {MAX_DEPTH} deep"),
                    ));
                }
                owner.block = Some(parse_block(toks, pos, Some(token.at), depth + 1)?);
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
