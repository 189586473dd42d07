//! Path templates (`/api/v1/offers/{id}`, `/files/{*rest}`) and the specificity order
//! between them.
//!
//! A template matches a set of normalised paths. Template `a` is *at least as specific*
//! as `b` when every path `a` matches is also matched by `b`; that partial order is what
//! "most specific wins" means. [`Template::sort_key`] is a total order that extends it,
//! so scanning templates in key order finds the most specific match first.

use std::fmt;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matches exactly this text.
    Literal(Box<str>),
    /// `{name}`: matches any one non-empty segment.
    Param,
}

/// A compiled path template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    segments: Vec<Segment>,
    /// `{*rest}` at the end: matches zero or more further segments, so that a prefix
    /// rule such as `/admin/{*rest}` also covers `/admin` itself.
    catch_all: bool,
    /// Literal comparison ignores ASCII case (for case-insensitive upstreams).
    ignore_case: bool,
    source: String,
}

impl Template {
    /// Parses a template. The literal segments must already be in normal form.
    pub(crate) fn parse(source: &str, ignore_case: bool) -> Result<Template, String> {
        let Some(rest) = source.strip_prefix('/') else {
            return Err("must start with `/`".into());
        };
        let mut segments = Vec::new();
        let mut catch_all = false;
        let parts: Vec<&str> = rest.split('/').collect();
        let count = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            if catch_all {
                return Err("`{*name}` must be the last segment".into());
            }
            if part.is_empty() {
                if i + 1 == count {
                    break; // a trailing slash is not significant
                }
                return Err("has an empty segment (`//`)".into());
            }
            if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (name, is_rest) = match inner.strip_prefix('*') {
                    Some(name) => (name, true),
                    None => (inner, false),
                };
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!(
                        "parameter `{part}` needs a name of letters, digits or `_`"
                    ));
                }
                if is_rest {
                    catch_all = true;
                } else {
                    segments.push(Segment::Param);
                }
                continue;
            }
            if part.contains(['{', '}']) {
                return Err(format!("segment `{part}` mixes text and a parameter"));
            }
            if part == "." || part == ".." {
                return Err("has a dot segment".into());
            }
            match super::path::normalize_path(&format!("/{part}")) {
                Ok(normal) if normal[1..] == *part => {}
                _ => {
                    return Err(format!(
                        "segment `{part}` is not in normal form (no `;`, `\\`, `%2F`, or escapes of letters and digits)"
                    ));
                }
            }
            segments.push(Segment::Literal(part.into()));
        }
        Ok(Template {
            segments,
            catch_all,
            ignore_case,
            source: source.to_owned(),
        })
    }

    /// True when the normalised `path` is matched.
    pub(crate) fn matches(&self, path: &str) -> bool {
        let mut parts = super::path::segments(path);
        for segment in &self.segments {
            let Some(part) = parts.next() else {
                return false;
            };
            if let Segment::Literal(text) = segment {
                if !self.literal_eq(text, part) {
                    return false;
                }
            }
        }
        self.catch_all || parts.next().is_none()
    }

    fn literal_eq(&self, a: &str, b: &str) -> bool {
        if self.ignore_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    }

    /// A key whose order extends "at least as specific": literals before parameters,
    /// an exact end before a catch-all.
    pub(crate) fn sort_key(&self) -> Vec<u8> {
        let mut key: Vec<u8> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 0,
                Segment::Param => 1,
            })
            .collect();
        key.push(if self.catch_all { 3 } else { 2 });
        key
    }

    /// True when every path `self` matches is also matched by `other`.
    pub(crate) fn is_within(&self, other: &Template) -> bool {
        if self.catch_all && !other.catch_all {
            return false;
        }
        if other.catch_all {
            if self.segments.len() < other.segments.len() {
                return false;
            }
        } else if self.segments.len() != other.segments.len() {
            return false;
        }
        self.segments
            .iter()
            .zip(&other.segments)
            .all(|(a, b)| match (a, b) {
                (_, Segment::Param) => true,
                (Segment::Literal(x), Segment::Literal(y)) => self.literal_eq(x, y),
                (Segment::Param, Segment::Literal(_)) => false,
            })
    }

    /// True when both templates match exactly the same paths.
    pub(crate) fn is_equivalent(&self, other: &Template) -> bool {
        self.is_within(other) && other.is_within(self)
    }

    /// The template matching exactly the paths both match, or `None` if they share none.
    pub(crate) fn intersection(&self, other: &Template) -> Option<Template> {
        let (a, b) = (self, other);
        let len = match (a.catch_all, b.catch_all) {
            (false, false) if a.segments.len() != b.segments.len() => return None,
            (false, true) if a.segments.len() < b.segments.len() => return None,
            (true, false) if b.segments.len() < a.segments.len() => return None,
            _ => a.segments.len().max(b.segments.len()),
        };
        let mut segments = Vec::with_capacity(len);
        for i in 0..len {
            let segment = match (a.segments.get(i), b.segments.get(i)) {
                (Some(Segment::Literal(x)), Some(Segment::Literal(y))) => {
                    if !self.literal_eq(x, y) {
                        return None;
                    }
                    Segment::Literal(x.clone())
                }
                (Some(Segment::Literal(x)), _) | (_, Some(Segment::Literal(x))) => {
                    Segment::Literal(x.clone())
                }
                _ => Segment::Param,
            };
            segments.push(segment);
        }
        let catch_all = a.catch_all && b.catch_all;
        let source = render(&segments, catch_all);
        Some(Template {
            segments,
            catch_all,
            ignore_case: self.ignore_case,
            source,
        })
    }

    /// The leading literal segments, as a path (`/mcp` for `/mcp/{*rest}`; empty
    /// when the template starts with a parameter).
    pub(crate) fn literal_prefix(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => {
                    out.push('/');
                    out.push_str(text);
                }
                Segment::Param => break,
            }
        }
        out
    }

    /// A concrete path this template matches (for error messages).
    pub(crate) fn example(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Param => out.push('x'),
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }
}

fn render(segments: &[Segment], catch_all: bool) -> String {
    let mut out = String::new();
    for (i, segment) in segments.iter().enumerate() {
        out.push('/');
        match segment {
            Segment::Literal(text) => out.push_str(text),
            Segment::Param => out.push_str(&format!("{{p{i}}}")),
        }
    }
    if catch_all {
        out.push_str("/{*rest}");
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Template {
        Template::parse(s, false).unwrap()
    }

    #[test]
    fn matching() {
        assert!(t("/api/v1/offers/{id}").matches("/api/v1/offers/42"));
        assert!(!t("/api/v1/offers/{id}").matches("/api/v1/offers"));
        assert!(!t("/api/v1/offers/{id}").matches("/api/v1/offers/42/x"));
        assert!(t("/files/{*rest}").matches("/files"));
        assert!(t("/files/{*rest}").matches("/files/a/b/c"));
        assert!(!t("/files/{*rest}").matches("/filesx"));
        assert!(t("/").matches("/"));
        assert!(t("/{*rest}").matches("/anything/at/all"));
        assert!(t("/a/").matches("/a/"));
        assert!(!t("/Admin").matches("/admin"));
        assert!(Template::parse("/Admin", true).unwrap().matches("/admin"));
    }

    #[test]
    fn malformed_templates_are_refused() {
        for bad in [
            "api",
            "/a//b",
            "/{}",
            "/{a-b}",
            "/{*rest}/x",
            "/a{id}",
            "/a;b",
            "/%61",
            "/../a",
        ] {
            assert!(Template::parse(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn specificity_order() {
        assert!(t("/a/b").is_within(&t("/a/{x}")));
        assert!(t("/a/{x}").is_within(&t("/a/{*rest}")));
        assert!(t("/a").is_within(&t("/a/{*rest}")));
        assert!(t("/a/{*rest}").is_within(&t("/{*rest}")));
        assert!(!t("/a/{*rest}").is_within(&t("/a/{x}")));
        assert!(!t("/{x}/b").is_within(&t("/a/{y}")));
        assert!(t("/a/{x}").is_equivalent(&t("/a/{y}")));
        let pairs = [
            ("/a/b", "/a/{x}"),
            ("/a/{x}", "/a/{*r}"),
            ("/a", "/a/{*r}"),
            ("/a/{*r}", "/{*r}"),
        ];
        for (a, b) in pairs {
            assert!(t(a).sort_key() < t(b).sort_key(), "{a} < {b}");
        }
    }

    #[test]
    fn intersections() {
        let i = t("/{x}/b").intersection(&t("/a/{y}")).unwrap();
        assert!(i.is_equivalent(&t("/a/b")));
        assert!(t("/a/x").intersection(&t("/b/{*r}")).is_none());
        let i = t("/a/{*r}").intersection(&t("/{x}/b/{*s}")).unwrap();
        assert!(i.is_equivalent(&t("/a/b/{*r}")));
        assert!(t("/a/{x}").intersection(&t("/a")).is_none());
        let i = t("/a/{x}").intersection(&t("/a/{*r}")).unwrap();
        assert!(i.is_equivalent(&t("/a/{x}")));
    }
}
