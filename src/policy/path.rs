//! Request-path normalisation: the one view of a path that both the policy and the
//! upstream get.
//!
//! The proxy forwards exactly the path it matched, so no encoding trick can make the
//! policy see one path and the upstream another. Unreserved characters that were
//! percent-encoded (`%2e`, `%41`) are decoded, other escapes are kept with upper-case
//! hex, empty segments (`//`) and dot segments (`/./`, `/../`, also when encoded) are
//! resolved as RFC 3986 section 5.2.4 says, and what upstreams disagree about is
//! refused outright: encoded separators (`%2F`, `%5C`), `;` path parameters (raw or
//! encoded), backslashes, control bytes and broken escapes.

use std::borrow::Cow;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is not in origin form (does not start with `/`).
    #[error("the request target must be an absolute path")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("the path has a malformed percent-escape")]
    BadEscape,
    /// An encoded `/` or `\`, which upstreams decode differently.
    #[error("the path has an encoded path separator (%2F or %5C)")]
    EncodedSeparator,
    /// A `;` parameter, which some upstreams strip and others keep.
    #[error("the path has a `;` parameter")]
    Semicolon,
    /// A backslash, NUL or other control byte.
    #[error("the path has a backslash or a control character")]
    ForbiddenByte,
}

/// Normalises `raw` (the path of the request target, without the query).
///
/// Returns the input unchanged (borrowed) when it is already normal, which is the
/// common case and costs one scan.
///
/// ```
/// use authmd_proxy::policy::normalize_path;
/// assert_eq!(normalize_path("/api/v1/../admin/%2e%2E/keys").unwrap(), "/api/keys");
/// assert_eq!(normalize_path("//a/./b/").unwrap(), "/a/b/");
/// assert!(normalize_path("/a%2Fb").is_err());
/// ```
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(bytes)? {
        return Ok(Cow::Borrowed(raw));
    }
    let mut segments: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    for part in raw[1..].split('/') {
        let segment = decode_segment(part)?;
        trailing_slash = true;
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(raw.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// One pass over the bytes: refuses forbidden bytes, and says whether the path needs
/// rewriting (escapes, empty or dot segments).
fn is_normal(bytes: &[u8]) -> Result<bool, PathError> {
    let mut normal = true;
    let mut segment_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' => normal = false,
            b';' => return Err(PathError::Semicolon),
            b'\\' | 0..=0x1f | 0x7f => return Err(PathError::ForbiddenByte),
            b'/' => {
                if i > 0 && !is_plain_segment(&bytes[segment_start..i]) {
                    normal = false;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    let last = &bytes[segment_start..];
    if !last.is_empty() && !is_plain_segment(last) {
        normal = false;
    }
    Ok(normal)
}

fn is_plain_segment(segment: &[u8]) -> bool {
    !matches!(segment, b"" | b"." | b"..")
}

fn decode_segment(part: &str) -> Result<String, PathError> {
    let bytes = part.as_bytes();
    let mut out = String::with_capacity(part.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&hi), Some(&lo)) => (hex(hi)?, hex(lo)?),
                    _ => return Err(PathError::BadEscape),
                };
                let value = hi << 4 | lo;
                match value {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b';' => return Err(PathError::Semicolon),
                    0..=0x1f | 0x7f => return Err(PathError::ForbiddenByte),
                    v if is_unreserved(v) => out.push(char::from(v)),
                    v => {
                        out.push('%');
                        out.push(char::from(HEX_UPPER[usize::from(v >> 4)]));
                        out.push(char::from(HEX_UPPER[usize::from(v & 0xf)]));
                    }
                }
                i += 3;
            }
            b';' => return Err(PathError::Semicolon),
            b'\\' | 0..=0x1f | 0x7f => return Err(PathError::ForbiddenByte),
            _ => {
                // Copy the run of ordinary bytes up to the next escape in one go.
                let end = bytes[i..]
                    .iter()
                    .position(|&c| matches!(c, b'%' | b';' | b'\\' | 0..=0x1f | 0x7f))
                    .map_or(bytes.len(), |p| i + p);
                out.push_str(&part[i..end]);
                i = end;
            }
        }
    }
    Ok(out)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex(b: u8) -> Result<u8, PathError> {
    match b {
        b'0'..=b'9' => Ok(b - b'0'),
        b'a'..=b'f' => Ok(b - b'a' + 10),
        b'A'..=b'F' => Ok(b - b'A' + 10),
        _ => Err(PathError::BadEscape),
    }
}

/// RFC 3986 section 2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The non-empty segments of a normalised path.
pub(crate) fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/a", "/a/b/", "/api/v1/offers/123", "/a/.b/..c/..."] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_and_empty_segments_are_resolved() {
        let cases = [
            ("//admin", "/admin"),
            ("/./admin", "/admin"),
            ("/public/../admin", "/admin"),
            ("/../../admin", "/admin"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/..", "/"),
            ("/a//b///", "/a/b/"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        let cases = [
            ("/%61dmin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2e/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/a%7e", "/a~"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%20b", "/a%20b"),
            ("/100%25", "/100%25"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        let cases = [
            ("a/b", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("/a%2Fb", PathError::EncodedSeparator),
            ("/a%2fb", PathError::EncodedSeparator),
            ("/a%5cb", PathError::EncodedSeparator),
            ("/admin;x=1", PathError::Semicolon),
            ("/admin%3bx", PathError::Semicolon),
            ("/a\\b", PathError::ForbiddenByte),
            ("/a%00", PathError::ForbiddenByte),
            ("/a%0a", PathError::ForbiddenByte),
            ("/a%", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
            ("/a%zz", PathError::BadEscape),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw), Err(want), "{raw}");
        }
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent(raw in "/[a-zA-Z0-9./%;~_-]{0,40}") {
            if let Ok(once) = normalize_path(&raw) {
                let twice = normalize_path(&once).expect("a normal path stays acceptable");
                prop_assert_eq!(&*twice, &*once);
                if !once.contains('%') {
                    prop_assert!(matches!(twice, Cow::Borrowed(_)));
                }
                prop_assert!(!once.contains("//"));
                prop_assert!(segments(&once).all(|s| s != "." && s != ".."));
            }
        }
    }
}
