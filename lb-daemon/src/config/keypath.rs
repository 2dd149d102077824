//! The key path at a byte offset of a TOML text that does not parse, for syntax errors
//! (a file that parses gets exact paths from the document itself, see `walk`).
//!
//! A small scanner walks the text up to the offset, skipping strings and comments: table
//! headers (`[a.b]`, `[[ vip ]]`, quoted segments) set the table, counting arrays of tables
//! for indices; `key = value` lines set the key; brackets and commas inside the value give
//! the element of an array (`director.interfaces[1]`).

use std::collections::HashMap;

/// The dotted key of the place at `offset`, e.g. `vip[1].backend[0].weight`.
pub fn key_path_at(text: &str, offset: usize) -> String {
    let mut scan = Scanner::default();
    let end = offset.min(text.len());
    let mut chars = text[..end].char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match scan.state {
            State::Comment => {
                if c == '\n' {
                    scan.state = State::Code;
                    scan.line_start = true;
                }
            }
            State::Basic { multi } => {
                if c == '\\' {
                    chars.next();
                } else if c == '"' && (!multi || text[i..].starts_with("\"\"\"")) {
                    if multi {
                        chars.next();
                        chars.next();
                    }
                    scan.state = State::Code;
                }
            }
            State::Literal { multi } => {
                if c == '\'' && (!multi || text[i..].starts_with("'''")) {
                    if multi {
                        chars.next();
                        chars.next();
                    }
                    scan.state = State::Code;
                }
            }
            State::Code => scan.code(text, i, c),
        }
    }
    // Inside a key, before its `=`: the key as far as it goes.
    if scan.key.is_none()
        && scan.state == State::Code
        && let Some(from) = scan
            .pending_key
            .or((scan.line_start && scan.depth == 0).then_some(end))
    {
        let rest = &text[from..];
        if !rest.starts_with('[') {
            let until = rest.find(['=', '\n']).unwrap_or(rest.len());
            scan.key = Some(normalize(&rest[..until]));
        }
    }
    scan.path()
}

#[derive(Default, Clone, Copy, PartialEq)]
enum State {
    #[default]
    Code,
    Comment,
    Basic {
        multi: bool,
    },
    Literal {
        multi: bool,
    },
}

#[derive(Default)]
struct Scanner {
    state: State,
    /// Nothing but whitespace since the last newline (outside values).
    line_start: bool,
    /// The current table, with array-of-tables indices (`vip[1].backend[0]`).
    table: String,
    /// Times each array of tables was opened, by its indexed path.
    counts: HashMap<String, usize>,
    /// The key of the current assignment, once its `=` was seen.
    key: Option<String>,
    /// Raw text of the key being read at the start of a line.
    pending_key: Option<usize>,
    /// Nesting of `[`/`{` inside the current value, and the element index at depth 1.
    depth: usize,
    element: usize,
    outer_is_array: bool,
}

impl Scanner {
    fn code(&mut self, text: &str, i: usize, c: char) {
        let start_of_line = self.line_start || i == 0;
        match c {
            '\n' => {
                self.line_start = true;
                if self.depth == 0 {
                    self.key = None;
                    self.pending_key = None;
                }
                return;
            }
            c if c.is_whitespace() => return,
            '#' => self.state = State::Comment,
            '"' => {
                self.state = State::Basic {
                    multi: text[i..].starts_with("\"\"\""),
                }
            }
            '\'' => {
                self.state = State::Literal {
                    multi: text[i..].starts_with("'''"),
                }
            }
            '[' if start_of_line && self.depth == 0 && self.key.is_none() => {
                self.header(text, i);
            }
            '[' | '{' if self.key.is_some() => {
                if self.depth == 0 {
                    self.outer_is_array = c == '[';
                    self.element = 0;
                }
                self.depth += 1;
            }
            ']' | '}' => self.depth = self.depth.saturating_sub(1),
            ',' if self.depth == 1 && self.outer_is_array => self.element += 1,
            '=' if self.key.is_none() && self.depth == 0 => {
                let from = self.pending_key.unwrap_or(i);
                self.key = Some(normalize(&text[from..i]));
            }
            _ => {}
        }
        if start_of_line && self.key.is_none() && self.pending_key.is_none() && c != '[' {
            self.pending_key = Some(i);
        }
        self.line_start = false;
    }

    /// Reads a `[table]` or `[[array]]` header starting at `i` (the scanner skips the rest of
    /// the line as a comment, which also covers a trailing `# note`).
    fn header(&mut self, text: &str, i: usize) {
        let line = text[i..].lines().next().unwrap_or("");
        let array = line.starts_with("[[");
        let inner = line.trim_start_matches('[');
        let inner = inner.split(']').next().unwrap_or("");
        let segments: Vec<String> = split_key(inner);
        let mut path = String::new();
        for (n, segment) in segments.iter().enumerate() {
            path = if path.is_empty() {
                segment.clone()
            } else {
                format!("{path}.{segment}")
            };
            let last = n + 1 == segments.len();
            if last && array {
                let count = self.counts.entry(path.clone()).or_insert(0);
                *count += 1;
                path = format!("{path}[{}]", *count - 1);
            } else if let Some(count) = self.counts.get(&path) {
                path = format!("{path}[{}]", count.saturating_sub(1));
            }
        }
        self.table = path;
        self.key = None;
        self.pending_key = None;
        self.state = State::Comment; // the rest of the header line
    }

    fn path(&self) -> String {
        let mut path = self.table.clone();
        if let Some(key) = &self.key {
            path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if self.depth >= 1 && self.outer_is_array {
                path = format!("{path}[{}]", self.element);
            }
        }
        path
    }
}

/// `a . "b c" .d` -> `a.b c.d`.
fn normalize(raw: &str) -> String {
    split_key(raw).join(".")
}

/// Splits a dotted key on dots outside quotes, trimming whitespace and quotes.
fn split_key(raw: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    for c in raw.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '.') => segments.push(std::mem::take(&mut current).trim().to_owned()),
            (None, c) if c.is_whitespace() => {}
            _ => current.push(c),
        }
    }
    segments.push(current.trim().to_owned());
    segments
}

#[cfg(test)]
mod tests {
    use super::key_path_at;

    fn at(text: &str, needle: &str) -> String {
        key_path_at(text, text.find(needle).expect("needle"))
    }

    #[test]
    fn headers_with_spaces_and_quotes_count_arrays_of_tables() {
        let text = "[director]\ninterfaces = [\"eth0\"]\n[[ vip ]]\nport = 1\n[[ vip ]]\n\
                    [[ \"vip\" . backend ]]\nwieght = 2\n";
        assert_eq!(at(text, "wieght"), "vip[1].backend[0].wieght");
        assert_eq!(at(text, "port"), "vip[0].port");
        assert_eq!(at(text, "interfaces"), "director.interfaces");
    }

    #[test]
    fn an_element_of_a_multi_line_array_is_named() {
        let text = "[director]\ninterfaces = [\n  \"eth0\", # a comment, with a comma\n  \"a,b\",\n  bad\n]\n";
        assert_eq!(at(text, "bad"), "director.interfaces[2]");
    }

    #[test]
    fn top_level_and_dotted_keys() {
        let text = "instance = \"x\"\ndirector.max_flows = oops\n";
        assert_eq!(at(text, "oops"), "director.max_flows");
        assert_eq!(at(text, "\"x\""), "instance");
    }

    #[test]
    fn a_header_with_a_comment_keeps_its_table() {
        let text = "[[vip]] # primary\naddress = oops\n";
        assert_eq!(at(text, "oops"), "vip[0].address");
    }
}
