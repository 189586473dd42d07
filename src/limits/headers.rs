//! The rate-limit header fields, written on every response of a limited subject.
//!
//! Three families, chosen in the config (`limits.headers`):
//!
//! - `draft-06`: `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (delta
//!   seconds) for the window with the fewest requests left, and `RateLimit-Policy`
//!   listing every window as `10;w=1, 300;w=60` (what the seeds send);
//! - `structured`: the current draft's `RateLimit-Policy: "free-1s";q=10;w=1, ...`
//!   and `RateLimit: "free-1s";r=9;t=1, ...` (RFC 9651 lists, one item per window);
//! - `x-ratelimit`: `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
//!   `X-RateLimit-Reset`, the last as a unix time in seconds (GitHub's convention).
//!
//! `draft-06` and `structured` both name a field `RateLimit-Policy` with different
//! syntax, so a config picks at most one of them. Reset semantics: seconds until
//! the window is full again, or, when nothing is left, until one more request
//! passes, which is also the `Retry-After` of a 429.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::LazyLock;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{LimitSet, Verdict, Window};

/// Which header families responses carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Styles {
    /// `RateLimit-Limit/Remaining/Reset/Policy` (draft-06 syntax).
    pub draft: bool,
    /// Structured `RateLimit` and `RateLimit-Policy`.
    pub structured: bool,
    /// `X-RateLimit-*`.
    pub legacy: bool,
}

impl Default for Styles {
    fn default() -> Styles {
        Styles {
            draft: true,
            structured: false,
            legacy: true,
        }
    }
}

/// `RateLimit-Limit`.
pub const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`.
pub const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`.
pub const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
/// `RateLimit-Policy`.
pub const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (structured).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `X-RateLimit-Limit`.
pub const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`.
pub const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`.
pub const X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Numbers below this are served from a table of static header values, so most
/// responses add their headers without allocating.
const TABLED: u64 = 10_000;

static NUMBERS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    let mut text = String::new();
    let mut ends = Vec::with_capacity(TABLED as usize);
    for n in 0..TABLED {
        let _ = write!(text, "{n}");
        ends.push(text.len());
    }
    // Built once per process and kept for its life: static values clone for free.
    let text: &'static str = Box::leak(text.into_boxed_str());
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let value = HeaderValue::from_static(&text[start..end]);
            start = end;
            value
        })
        .collect()
});

/// A header value holding `n`: from the table below [`TABLED`], else formatted on
/// the stack and copied into one exact-size allocation (`HeaderValue::from(u64)`
/// takes two).
#[must_use]
pub fn number(n: u64) -> HeaderValue {
    if let Some(value) = usize::try_from(n).ok().and_then(|i| NUMBERS.get(i)) {
        return value.clone();
    }
    let mut digits = itoa::Buffer::new();
    let text = digits.format(n).as_bytes();
    HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(text))
        .unwrap_or_else(|_| HeaderValue::from(n))
}

/// The draft-06 `RateLimit-Policy` of a limit set: `10;w=1, 300;w=60`.
#[must_use]
pub fn draft_policy(windows: &[(u64, u64)]) -> Option<HeaderValue> {
    let text = windows
        .iter()
        .map(|(limit, window)| format!("{limit};w={window}"))
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&text)
        .ok()
        .filter(|_| !windows.is_empty())
}

/// The structured `RateLimit-Policy` of a limit set:
/// `"free-1s";q=10;w=1, "free-day";q=1000;w=86400`.
#[must_use]
pub fn structured_policy(names: &[String], windows: &[(u64, u64)]) -> Option<HeaderValue> {
    let text = names
        .iter()
        .zip(windows)
        .map(|(name, (limit, window))| format!("\"{name}\";q={limit};w={window}"))
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&text)
        .ok()
        .filter(|_| !windows.is_empty())
}

/// Writes the fields of `verdict` onto `headers`; `unix_now` anchors the legacy
/// reset time.
pub fn write(headers: &mut HeaderMap, verdict: &Verdict<'_>, styles: Styles, unix_now: i64) {
    let Some(tightest) = verdict.tightest().copied() else {
        return;
    };
    let limits: &LimitSet = verdict.limits;
    // Room for every field at once: the upstream's map is sized for its own
    // headers, and growing it insert by insert would rehash it more than once.
    headers.reserve(
        4 * usize::from(styles.draft)
            + 2 * usize::from(styles.structured)
            + 3 * usize::from(styles.legacy),
    );
    let limit = match limits
        .limit_values
        .iter()
        .find(|(l, _)| *l == tightest.limit)
    {
        Some((_, value)) => value.clone(),
        None => number(tightest.limit),
    };
    if styles.draft {
        headers.insert(LIMIT, limit.clone());
        headers.insert(REMAINING, number(tightest.remaining));
        headers.insert(RESET, number(tightest.reset_secs));
        if let Some(policy) = &limits.draft_policy {
            headers.insert(POLICY, policy.clone());
        }
    }
    if styles.structured {
        if let Some(policy) = &limits.structured_policy {
            headers.insert(POLICY, policy.clone());
        }
        let mut text = String::with_capacity(64);
        for (name, window) in limits.window_names.iter().zip(active(verdict)) {
            if !text.is_empty() {
                text.push_str(", ");
            }
            let _ = write!(
                text,
                "\"{name}\";r={};t={}",
                window.remaining, window.reset_secs
            );
        }
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.insert(RATELIMIT, value);
        }
    }
    if styles.legacy {
        headers.insert(X_LIMIT, limit);
        headers.insert(X_REMAINING, number(tightest.remaining));
        let reset = u64::try_from(unix_now).unwrap_or(0) + tightest.reset_secs;
        headers.insert(X_RESET, unix_time(reset));
    }
}

thread_local! {
    /// The last `X-RateLimit-Reset` value this thread made. A unix time in seconds
    /// is past the table of [`number`]; most responses in a second carry the same
    /// one, and share it rather than each formatting and allocating its own.
    static LAST_UNIX_TIME: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
}

/// The header value of the unix time `at`, from this thread's last one when equal.
fn unix_time(at: u64) -> HeaderValue {
    LAST_UNIX_TIME.with_borrow_mut(|last| match last {
        Some((time, value)) if *time == at => value.clone(),
        _ => {
            let value = number(at);
            *last = Some((at, value.clone()));
            value
        }
    })
}

/// The windows of a verdict in policy order (rates, then the quota).
fn active<'v>(verdict: &'v Verdict<'_>) -> impl Iterator<Item = &'v Window> {
    verdict.windows.iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::buckets::MAX_WINDOWS;
    use crate::limits::gcra::Rate;
    use crate::limits::quota::{Period, Quota};
    use std::time::Duration;

    fn set() -> LimitSet {
        LimitSet::new(
            "free",
            vec![
                Rate::new(10, Duration::from_secs(1)).unwrap(),
                Rate::new(300, Duration::from_secs(60)).unwrap(),
            ],
            Some(Quota {
                limit: 5000,
                period: Period::Month,
            }),
        )
    }

    fn window(limit: u64, window_secs: u64, remaining: u64, reset_secs: u64) -> Option<Window> {
        Some(Window {
            limit,
            window_secs,
            remaining,
            reset_secs,
        })
    }

    #[test]
    fn every_family_reports_the_tightest_window() {
        let limits = set();
        let mut windows = [None; MAX_WINDOWS + 1];
        windows[0] = window(10, 1, 9, 1);
        windows[1] = window(300, 60, 4, 59);
        windows[MAX_WINDOWS] = window(5000, 2_592_000, 120, 600_000);
        let verdict = Verdict {
            limits: &limits,
            windows,
            exceeded: None,
        };
        let mut headers = HeaderMap::new();
        let styles = Styles {
            draft: true,
            structured: false,
            legacy: true,
        };
        write(&mut headers, &verdict, styles, 1_795_428_000);
        let get = |name: &str| headers[name].to_str().unwrap().to_owned();
        assert_eq!(get("ratelimit-limit"), "300");
        assert_eq!(get("ratelimit-remaining"), "4");
        assert_eq!(get("ratelimit-reset"), "59");
        assert_eq!(get("ratelimit-policy"), "10;w=1, 300;w=60, 5000;w=2592000");
        assert_eq!(get("x-ratelimit-limit"), "300");
        assert_eq!(get("x-ratelimit-remaining"), "4");
        assert_eq!(get("x-ratelimit-reset"), "1795428059");
        assert!(!headers.contains_key("ratelimit"));

        let mut headers = HeaderMap::new();
        let styles = Styles {
            draft: false,
            structured: true,
            legacy: false,
        };
        write(&mut headers, &verdict, styles, 0);
        assert_eq!(
            headers["ratelimit-policy"],
            "\"free-1s\";q=10;w=1, \"free-60s\";q=300;w=60, \"free-month\";q=5000;w=2592000"
        );
        assert_eq!(
            headers["ratelimit"],
            "\"free-1s\";r=9;t=1, \"free-60s\";r=4;t=59, \"free-month\";r=120;t=600000"
        );
        assert!(!headers.contains_key("ratelimit-limit"));
    }

    #[test]
    fn the_reset_time_shared_within_a_second_moves_with_the_clock() {
        let limits = set();
        let mut windows = [None; MAX_WINDOWS + 1];
        windows[0] = window(10, 1, 9, 1);
        let verdict = Verdict {
            limits: &limits,
            windows,
            exceeded: None,
        };
        let reset_at = |unix_now| {
            let mut headers = HeaderMap::new();
            write(&mut headers, &verdict, Styles::default(), unix_now);
            headers["x-ratelimit-reset"].to_str().unwrap().to_owned()
        };
        assert_eq!(reset_at(1_795_428_000), "1795428001");
        assert_eq!(reset_at(1_795_428_000), "1795428001");
        assert_eq!(reset_at(1_795_428_001), "1795428002");
        assert_eq!(reset_at(1_795_427_999), "1795428000");
    }

    #[test]
    fn numbers_beyond_the_table_are_still_right() {
        assert_eq!(number(0), "0");
        assert_eq!(number(9_999), "9999");
        assert_eq!(number(10_000), "10000");
        assert_eq!(number(1_000_000), "1000000");
        assert_eq!(number(u64::MAX), u64::MAX.to_string().as_str());
    }
}
