//! A path → (line, column) index of a YAML document, built from `yaml-rust2` marked events.
//!
//! Paths use the same syntax as `serde_norway` error paths: `servers[1].serverName`. Semantic
//! checks run after deserialisation look up the node they complain about here, so every error
//! points at the offending node.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Positions (1-based line and column) of every node and mapping key of one document.
#[derive(Debug, Default, Clone)]
pub(crate) struct PositionIndex {
    values: HashMap<String, (usize, usize)>,
    keys: HashMap<String, (usize, usize)>,
    /// Second occurrences of mapping keys (duplicate keys).
    duplicate_keys: HashMap<String, (usize, usize)>,
    scalars: HashMap<String, String>,
    /// Whether the (first) document's root node is a mapping.
    pub(crate) root_is_mapping: bool,
    /// Number of YAML documents in the stream.
    pub(crate) documents: usize,
}

/// A YAML syntax error: message and 1-based position.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub(crate) message: String,
    pub(crate) position: (usize, usize),
}

impl PositionIndex {
    /// Builds the index, or returns the first syntax error.
    pub(crate) fn build(text: &str) -> Result<PositionIndex, SyntaxError> {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        parser
            .load(&mut builder, true)
            .map_err(|error| SyntaxError {
                message: error.info().to_owned(),
                position: to_position(error.marker()),
            })?;
        Ok(builder.index)
    }

    /// The position of the node at `path`, falling back to its closest ancestor.
    pub(crate) fn pos(&self, path: &str) -> (usize, usize) {
        let mut path = path;
        loop {
            if let Some(position) = self.values.get(path) {
                return *position;
            }
            match parent(path) {
                Some(parent) => path = parent,
                None => return (1, 1),
            }
        }
    }

    /// The position of the mapping key at `path` (for "this key ..." messages).
    pub(crate) fn key_pos(&self, path: &str) -> (usize, usize) {
        self.keys
            .get(path)
            .copied()
            .unwrap_or_else(|| self.pos(path))
    }

    /// The first (by position) scalar at or below `prefix` whose value is `value`.
    pub(crate) fn find_scalar(&self, prefix: &str, value: &str) -> Option<(usize, usize)> {
        let prefix = if prefix == "." { "" } else { prefix };
        self.scalars
            .iter()
            .filter(|(path, scalar)| {
                scalar.as_str() == value
                    && (prefix.is_empty()
                        || path.as_str() == prefix
                        || path
                            .strip_prefix(prefix)
                            .is_some_and(|rest| rest.starts_with(['.', '['])))
            })
            .filter_map(|(path, _)| self.values.get(path).copied())
            .min()
    }

    /// The position of the second occurrence of the mapping key at `path`, if it is repeated.
    pub(crate) fn duplicate_key_pos(&self, path: &str) -> Option<(usize, usize)> {
        self.duplicate_keys.get(path).copied()
    }

    /// The scalar value at `path`, if the node there is a scalar.
    #[cfg(test)]
    pub(crate) fn scalar(&self, path: &str) -> Option<&str> {
        self.scalars.get(path).map(String::as_str)
    }
}

/// What the header checks need from a document, gathered in one allocation-light pass over the
/// parser's events (no per-node paths): the full [`PositionIndex`] is only built when an error
/// needs a position.
#[derive(Debug, Default)]
pub(crate) struct Header {
    /// Number of YAML documents in the stream.
    pub(crate) documents: usize,
    /// Whether the (first) document's root node is a mapping.
    pub(crate) root_is_mapping: bool,
    /// Top-level `apiVersion` scalar (first occurrence).
    pub(crate) api_version: Option<String>,
    /// Top-level `kind` scalar (first occurrence).
    pub(crate) kind: Option<String>,
}

impl Header {
    /// Scans `text`, or returns the first syntax error (the same one [`PositionIndex::build`]
    /// reports).
    pub(crate) fn scan(text: &str) -> Result<Header, SyntaxError> {
        let mut scanner = HeaderScanner::default();
        let mut parser = Parser::new_from_str(text);
        parser
            .load(&mut scanner, true)
            .map_err(|error| SyntaxError {
                message: error.info().to_owned(),
                position: to_position(error.marker()),
            })?;
        Ok(scanner.header)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Expecting a top-level key.
    Key,
    /// Expecting the value of the top-level key `apiVersion`.
    ApiVersion,
    /// Expecting the value of the top-level key `kind`.
    Kind,
    /// Expecting the value of some other (or complex) top-level key.
    Other,
}

#[derive(Debug)]
struct HeaderScanner {
    header: Header,
    /// Nesting depth of collections in the first document (root collection is depth 1).
    depth: usize,
    /// Within the root mapping: what the next depth-1 node is.
    slot: Slot,
    done: bool,
    seen_root: bool,
}

impl Default for HeaderScanner {
    fn default() -> Self {
        HeaderScanner {
            header: Header::default(),
            depth: 0,
            slot: Slot::Key,
            done: false,
            seen_root: false,
        }
    }
}

impl HeaderScanner {
    /// A node (scalar, alias or collection start) directly inside the root mapping.
    fn top_level_node(&mut self, scalar: Option<&str>) {
        self.slot = match (self.slot, scalar) {
            (Slot::Key, Some("apiVersion")) => Slot::ApiVersion,
            (Slot::Key, Some("kind")) => Slot::Kind,
            (Slot::Key, _) => Slot::Other,
            (Slot::ApiVersion, Some(value)) => {
                if self.header.api_version.is_none() {
                    self.header.api_version = Some(value.to_owned());
                }
                Slot::Key
            }
            (Slot::Kind, Some(value)) => {
                if self.header.kind.is_none() {
                    self.header.kind = Some(value.to_owned());
                }
                Slot::Key
            }
            (Slot::ApiVersion | Slot::Kind | Slot::Other, _) => Slot::Key,
        };
    }
}

impl MarkedEventReceiver for HeaderScanner {
    fn on_event(&mut self, event: Event, _marker: Marker) {
        match event {
            Event::DocumentStart => self.header.documents += 1,
            Event::DocumentEnd => self.done = true,
            _ if self.done => {}
            Event::Scalar(ref value, ..) => {
                if !self.seen_root {
                    self.seen_root = true;
                } else if self.depth == 1 && self.header.root_is_mapping {
                    self.top_level_node(Some(value));
                }
            }
            Event::Alias(..) => {
                if !self.seen_root {
                    self.seen_root = true;
                } else if self.depth == 1 && self.header.root_is_mapping {
                    self.top_level_node(None);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if !self.seen_root {
                    self.seen_root = true;
                    self.header.root_is_mapping = matches!(event, Event::MappingStart(..));
                } else if self.depth == 1 && self.header.root_is_mapping && self.slot == Slot::Key {
                    // A complex key: its value follows once it is closed.
                    self.slot = Slot::Other;
                } else if self.depth == 1 && self.header.root_is_mapping {
                    // A collection value: the next depth-1 node is a key again.
                    self.slot = Slot::Key;
                }
                self.depth += 1;
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.depth = self.depth.saturating_sub(1);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
        }
    }
}

/// `a.b[2].c` → `a.b[2]` → `a.b` → `a` → root (`""`).
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

fn to_position(marker: &Marker) -> (usize, usize) {
    (marker.line().max(1), marker.col() + 1)
}

#[derive(Debug)]
enum Frame {
    Map {
        path: String,
        key: Option<String>,
        first_key_seen: bool,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Debug, Default)]
struct Builder {
    index: PositionIndex,
    stack: Vec<Frame>,
    /// Only the first document is indexed.
    done: bool,
}

impl Builder {
    /// Decides where the next node goes. `None` means it is a mapping key.
    fn child_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map {
                path,
                key: Some(key),
                ..
            }) => Some(join(path, key)),
            Some(Frame::Seq { path, next }) => {
                let child = format!("{path}[{next}]");
                *next += 1;
                Some(child)
            }
        }
    }

    fn value_done(&mut self) {
        if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
            *key = None;
        }
    }

    fn node(&mut self, event: &Event, position: (usize, usize)) {
        let Some(path) = self.child_path() else {
            // A mapping key: remember it; non-scalar keys get a placeholder name.
            let name = match event {
                Event::Scalar(value, ..) => value.clone(),
                _ => "?".to_owned(),
            };
            if let Some(Frame::Map {
                path,
                key,
                first_key_seen,
            }) = self.stack.last_mut()
            {
                let full = join(path, &name);
                match self.index.keys.entry(full) {
                    Entry::Occupied(entry) => {
                        self.index
                            .duplicate_keys
                            .entry(entry.key().clone())
                            .or_insert(position);
                    }
                    Entry::Vacant(entry) => {
                        entry.insert(position);
                    }
                }
                // A block mapping starts where its first key starts (the parser's mark for the
                // mapping itself lies after that key).
                if !*first_key_seen {
                    *first_key_seen = true;
                    self.index.values.insert(path.clone(), position);
                }
                *key = Some(name);
            }
            if matches!(event, Event::MappingStart(..) | Event::SequenceStart(..)) {
                // Complex keys are not indexed; track nesting so the stack stays balanced.
                self.stack.push(Frame::Seq {
                    path: "?".to_owned(),
                    next: 0,
                });
            }
            return;
        };
        if path.is_empty() {
            self.index.root_is_mapping = matches!(event, Event::MappingStart(..));
        }
        self.index.values.entry(path.clone()).or_insert(position);
        match event {
            Event::MappingStart(..) => self.stack.push(Frame::Map {
                path,
                key: None,
                first_key_seen: false,
            }),
            Event::SequenceStart(..) => self.stack.push(Frame::Seq { path, next: 0 }),
            Event::Scalar(value, ..) => {
                self.index
                    .scalars
                    .entry(path)
                    .or_insert_with(|| value.clone());
                self.value_done();
            }
            _ => self.value_done(),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, marker: Marker) {
        match event {
            Event::DocumentStart => self.index.documents += 1,
            Event::DocumentEnd => self.done = true,
            _ if self.done => {}
            Event::Scalar(..)
            | Event::Alias(..)
            | Event::MappingStart(..)
            | Event::SequenceStart(..) => {
                self.node(&event, to_position(&marker));
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let was_key =
                    matches!(self.stack.last(), Some(Frame::Seq { path, .. }) if path == "?");
                self.stack.pop();
                if was_key {
                    // The complex key is done; its value comes next under a placeholder key.
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some("?".to_owned());
                    }
                } else {
                    self.value_done();
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_nested_nodes() {
        let text = "a: 1\nlist:\n  - x: 2\n    y: [3, 4]\n  - z\n";
        let index = PositionIndex::build(text).unwrap();
        assert_eq!(index.pos("a"), (1, 4));
        assert_eq!(index.key_pos("a"), (1, 1));
        assert_eq!(index.pos("list[0].x"), (3, 8));
        assert_eq!(index.pos("list[0].y[1]"), (4, 12));
        assert_eq!(index.pos("list[1]"), (5, 5));
        assert_eq!(index.pos("list[1].nope"), (5, 5));
        assert_eq!(index.scalar("list[1]"), Some("z"));
        assert!(index.root_is_mapping);
    }

    #[test]
    fn header_scan_agrees_with_index() {
        let cases = [
            "apiVersion: v1\nkind: K\n",
            "kind: K\napiVersion: {a: 1}\napiVersion: v2\n",
            "? [a, b]\n: kind\nkind: [x]\nkind: K2\napiVersion: &a v\nx: *a\n",
            "{apiVersion: v, kind: \"K\", nested: {kind: no}}",
            "- kind: K\n",
            "scalar",
            "",
            "a: 1\n---\nkind: K\n",
            "*x : kind\nkind: K\n",
        ];
        for text in cases {
            let (Ok(header), Ok(index)) = (Header::scan(text), PositionIndex::build(text)) else {
                assert!(Header::scan(text).is_err() && PositionIndex::build(text).is_err());
                continue;
            };
            assert_eq!(header.documents, index.documents, "{text:?}");
            assert_eq!(header.root_is_mapping, index.root_is_mapping, "{text:?}");
            assert_eq!(
                header.api_version.as_deref(),
                index.scalar("apiVersion"),
                "{text:?}"
            );
            assert_eq!(header.kind.as_deref(), index.scalar("kind"), "{text:?}");
        }
    }
}
