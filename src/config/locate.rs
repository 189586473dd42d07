//! Where each field of a YAML document stands: a map from field path
//! (`routes[3].scopes[0]`) to line and column, so that every config error can name
//! its place even when it is found after parsing, during validation.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, Span};

/// Line and column (both 1-based) of each field path.
#[derive(Debug, Default)]
pub(crate) struct Locations {
    map: HashMap<String, (usize, usize)>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

impl Locations {
    /// Indexes a document. A document the indexer cannot read yields an empty index
    /// (errors are then reported without a position, never lost).
    pub(crate) fn index(text: &str) -> Locations {
        let mut locations = Locations::default();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else {
                break;
            };
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map { path, key }) = stack.last_mut() {
                        if key.is_none() {
                            let field = join(path, &value);
                            locations.record(&field, span);
                            *key = Some(value.into_owned());
                            continue;
                        }
                    }
                    let path = child_path(&stack);
                    locations.record(&path, span);
                    advance(&mut stack);
                }
                Event::Alias(_) => {
                    advance(&mut stack);
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let path = child_path(&stack);
                    locations.record(&path, span);
                    stack.push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Map { path, key: None }
                    } else {
                        Frame::Seq { path, index: 0 }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                    advance(&mut stack);
                }
                _ => {}
            }
        }
        locations
    }

    fn record(&mut self, path: &str, span: Span) {
        self.map
            .entry(path.to_owned())
            .or_insert((span.start.line(), span.start.col() + 1));
    }

    /// The position of `path`, or of its nearest ancestor that has one.
    pub(crate) fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut path = path;
        loop {
            if let Some(found) = self.map.get(path) {
                return Some(*found);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

/// The path of the value about to start in the innermost open collection.
fn child_path(stack: &[Frame]) -> String {
    match stack.last() {
        None => String::new(),
        Some(Frame::Map { path, key }) => join(path, key.as_deref().unwrap_or("")),
        Some(Frame::Seq { path, index }) => format!("{path}[{index}]"),
    }
}

/// A value in the innermost collection is complete.
fn advance(stack: &mut [Frame]) {
    match stack.last_mut() {
        Some(Frame::Map { key, .. }) => *key = None,
        Some(Frame::Seq { index, .. }) => *index += 1,
        None => {}
    }
}

/// `parent.key`, or `key` at the top level.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_lines() {
        let text = "listen: 1\nroutes:\n  - path: /a\n    scopes: [x, y]\n  - path: /b\n    scopes:\n      - z\nkeys: []\n";
        let l = Locations::index(text);
        assert_eq!(l.find("listen"), Some((1, 1)));
        assert_eq!(l.find("routes[0].path"), Some((3, 5)));
        assert_eq!(l.find("routes[0].scopes[1]"), Some((4, 17)));
        assert_eq!(l.find("routes[1].path"), Some((5, 5)));
        assert_eq!(l.find("routes[1].scopes[0]"), Some((7, 9)));
        assert_eq!(l.find("keys"), Some((8, 1)));
        assert_eq!(l.find("routes[1].nothing.deeper"), Some((5, 5)));
    }
}
