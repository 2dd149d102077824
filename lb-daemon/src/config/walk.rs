//! Typed reads from a parsed TOML document, each with its key path (`vip[1].backend[0].weight`)
//! and byte offset, so every problem is reported with file, line and key, in words.
//!
//! The document comes from `toml_edit`, which keeps every key's and value's span, so dotted
//! keys (`director.interfaces = [..]`), inline tables and arrays of tables all read the same
//! as the `[table]` form: nothing here depends on how the file was written.

use toml_edit::{Item, TableLike, Value};

/// Errors collected while reading: (byte offset, key path, message).
#[derive(Default)]
pub struct Problems(pub Vec<(Option<usize>, String, String)>);

impl Problems {
    pub fn add(&mut self, at: Option<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.0.push((at, key.into(), message.into()));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// A table of the document: its key path (empty for the root) and where it starts.
#[derive(Clone, Copy)]
pub struct Table<'a> {
    pub path: &'a str,
    pub table: &'a dyn TableLike,
    pub at: usize,
}

/// One value read from a table, with where it is.
pub struct Read<'a, T> {
    pub value: T,
    pub key: String,
    pub at: usize,
    /// The item itself, for reading inside it (arrays, tables).
    pub item: &'a Item,
}

impl<'a> Read<'a, ()> {
    fn with<T>(self, value: T) -> Read<'a, T> {
        Read {
            value,
            key: self.key,
            at: self.at,
            item: self.item,
        }
    }
}

/// What a TOML item is, in words, for "expected X, found Y".
pub fn describe(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::Value(value) => describe_value(value),
    }
}

fn describe_value(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}

/// `parent.child`, or `child` at the root.
pub fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

impl<'a> Table<'a> {
    /// Where the entry `name` is: its value, else its key, else the table.
    fn offset_of(&self, name: &str) -> usize {
        self.table
            .get_key_value(name)
            .and_then(|(key, item)| item.span().or_else(|| key.span()))
            .map_or(self.at, |span| span.start)
    }

    /// Where the key `name` is written.
    fn key_offset(&self, name: &str) -> usize {
        self.table
            .get_key_value(name)
            .and_then(|(key, _)| key.span())
            .map_or(self.at, |span| span.start)
    }

    /// Reports every key not in `known`, at the key itself.
    pub fn only(&self, known: &[&str], problems: &mut Problems) {
        for (name, _) in self.table.iter() {
            if !known.contains(&name) {
                problems.add(
                    Some(self.key_offset(name)),
                    join(self.path, name),
                    format!("unknown key `{name}` (known here: {})", known.join(", ")),
                );
            }
        }
    }

    /// The entry `name`, if present.
    pub fn get(&self, name: &str) -> Option<Read<'a, ()>> {
        let item = self.table.get(name)?;
        Some(Read {
            value: (),
            key: join(self.path, name),
            at: self.offset_of(name),
            item,
        })
    }

    /// A string entry; a wrong type is reported.
    pub fn string(&self, name: &str, problems: &mut Problems) -> Option<Read<'a, String>> {
        let read = self.get(name)?;
        match read.item.as_str() {
            Some(text) => Some(read.with(text.to_owned())),
            None => {
                wrong_type(&read, "a string", problems);
                None
            }
        }
    }

    /// An integer entry; a wrong type is reported.
    pub fn integer(&self, name: &str, problems: &mut Problems) -> Option<Read<'a, i64>> {
        let read = self.get(name)?;
        match read.item.as_integer() {
            Some(n) => Some(read.with(n)),
            None => {
                wrong_type(&read, "an integer", problems);
                None
            }
        }
    }

    /// A boolean entry; a wrong type is reported.
    pub fn boolean(&self, name: &str, problems: &mut Problems) -> Option<Read<'a, bool>> {
        let read = self.get(name)?;
        match read.item.as_bool() {
            Some(b) => Some(read.with(b)),
            None => {
                wrong_type(&read, "a boolean", problems);
                None
            }
        }
    }

    /// A duration in seconds, integer or fractional (`interval = 0.5`); a wrong type or a
    /// negative or non-finite value is reported.
    pub fn seconds(
        &self,
        name: &str,
        problems: &mut Problems,
    ) -> Option<Read<'a, std::time::Duration>> {
        let read = self.get(name)?;
        let secs = match (read.item.as_integer(), read.item.as_float()) {
            (Some(n), _) => n as f64,
            (None, Some(x)) => x,
            _ => {
                wrong_type(&read, "a number of seconds", problems);
                return None;
            }
        };
        match std::time::Duration::try_from_secs_f64(secs) {
            Ok(d) => Some(read.with(d)),
            Err(_) => {
                problems.add(Some(read.at), read.key, "must be a number of seconds >= 0");
                None
            }
        }
    }

    /// A sub-table entry (`[name]`, `name = {..}` or dotted keys); a wrong type is reported.
    pub fn table(&self, name: &str, path: &'a str, problems: &mut Problems) -> Option<Table<'a>> {
        let read = self.get(name)?;
        match read.item.as_table_like() {
            Some(table) => Some(Table {
                path,
                table,
                at: read.at,
            }),
            None => {
                wrong_type(&read, "a table", problems);
                None
            }
        }
    }

    /// The tables of an array of tables (`[[name]]`, or `name = [{..}, ..]`), with where each
    /// starts; a wrong type is reported.
    pub fn tables(&self, name: &str, problems: &mut Problems) -> Vec<(&'a dyn TableLike, usize)> {
        let Some(read) = self.get(name) else {
            return Vec::new();
        };
        if let Some(array) = read.item.as_array_of_tables() {
            return array
                .iter()
                .map(|t| (t as &dyn TableLike, table_start(t).unwrap_or(read.at)))
                .collect();
        }
        if let Some(array) = read.item.as_array() {
            let mut out = Vec::new();
            for (i, value) in array.iter().enumerate() {
                let at = value.span().map_or(read.at, |s| s.start);
                match value.as_inline_table() {
                    Some(t) => out.push((t as &dyn TableLike, at)),
                    None => problems.add(
                        Some(at),
                        format!("{}[{i}]", read.key),
                        format!("expected a table, found {}", describe_value(value)),
                    ),
                }
            }
            return out;
        }
        wrong_type(&read, "an array of tables", problems);
        Vec::new()
    }
}

/// Where a `[table]` starts: its header, else its first key.
fn table_start(table: &toml_edit::Table) -> Option<usize> {
    table.span().map(|s| s.start).or_else(|| {
        table
            .iter()
            .filter_map(|(name, _)| table.key(name)?.span())
            .map(|s| s.start)
            .min()
    })
}

pub fn wrong_type<T>(read: &Read<'_, T>, expected: &str, problems: &mut Problems) {
    problems.add(
        Some(read.at),
        read.key.clone(),
        format!("expected {expected}, found {}", describe(read.item)),
    );
}

/// The elements of an array value with their offsets; a wrong type is reported.
pub fn array<'a>(read: &Read<'a, ()>, problems: &mut Problems) -> Option<Vec<(&'a Value, usize)>> {
    match read.item.as_array() {
        Some(array) => Some(
            array
                .iter()
                .map(|v| (v, v.span().map_or(read.at, |s| s.start)))
                .collect(),
        ),
        None => {
            wrong_type(read, "an array", problems);
            None
        }
    }
}

/// The string elements of an array, each read with its key (`list[i]`); other elements
/// are reported.
pub fn strings<'a>(list: &Read<'a, ()>, problems: &mut Problems) -> Vec<Read<'a, String>> {
    let elements = array(list, problems).unwrap_or_default();
    let mut out = Vec::new();
    for (i, (value, at)) in elements.into_iter().enumerate() {
        let key = format!("{}[{i}]", list.key);
        match value.as_str() {
            Some(text) => out.push(Read {
                value: text.to_owned(),
                key,
                at,
                item: list.item,
            }),
            None => problems.add(
                Some(at),
                key,
                format!("expected a string, found {}", describe_value(value)),
            ),
        }
    }
    out
}

/// What a value is, in words.
pub fn describe_array_element(value: &Value) -> &'static str {
    describe_value(value)
}
