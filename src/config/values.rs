//! The scalar values several sections share: durations, sizes, addresses and
//! origins, each parsed with the error message that tells how to write it.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use http::Uri;

use super::load::Loader;
use super::raw;

/// One millisecond, the unit the shortest duration ranges are written in.
pub(super) const MILLISECOND: Duration = Duration::from_millis(1);
/// One second.
pub(super) const SECOND: Duration = Duration::from_secs(1);
/// One minute.
pub(super) const MINUTE: Duration = Duration::from_secs(60);
/// One hour.
pub(super) const HOUR: Duration = Duration::from_secs(3600);
/// One day.
pub(super) const DAY: Duration = Duration::from_secs(24 * 3600);

impl Loader {
    /// A duration such as `5s` or `250ms`, which must lie in `allowed`: every
    /// duration field has a range, because a value far outside it (`0s` for a
    /// timeout, `1y` for a token, `99999999999h` for anything) is a mistake that
    /// would otherwise be accepted silently, and a huge one overflows the clock
    /// arithmetic that uses it.
    pub(super) fn duration(
        &mut self,
        value: Option<String>,
        path: &str,
        default: Duration,
        allowed: RangeInclusive<Duration>,
    ) -> Duration {
        let Some(text) = value else {
            return default;
        };
        match humantime::parse_duration(&text) {
            Ok(d) if allowed.contains(&d) => d,
            Ok(_) => {
                self.error(
                    path,
                    format!("`{text}` is out of range: {}", describe(&allowed)),
                );
                default
            }
            Err(_) => {
                self.error(
                    path,
                    format!("`{text}` is not a duration; write e.g. `5s` or `250ms`"),
                );
                default
            }
        }
    }

    /// A size in bytes: `4096`, `64KiB`, `16MiB` or `1GiB`.
    pub(super) fn size(
        &mut self,
        value: Option<raw::RawSize>,
        path: &str,
        default: usize,
    ) -> usize {
        let text = match value {
            None => return default,
            Some(raw::RawSize::Bytes(n)) if n > 0 => {
                return usize::try_from(n).unwrap_or(usize::MAX);
            }
            Some(raw::RawSize::Bytes(n)) => n.to_string(),
            Some(raw::RawSize::Text(text)) => text,
        };
        let trimmed = text.trim();
        let (digits, unit) = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .map_or((trimmed, ""), |at| trimmed.split_at(at));
        let unit = match unit.trim() {
            "" | "B" => Some(1usize),
            "KiB" => Some(1 << 10),
            "MiB" => Some(1 << 20),
            "GiB" => Some(1 << 30),
            _ => None,
        };
        match (digits.parse::<usize>().ok(), unit) {
            (Some(n), Some(unit)) if n > 0 => n.saturating_mul(unit),
            _ => {
                self.error(
                    path,
                    format!(
                        "`{text}` is not a size; write e.g. `8KiB`, `16MiB` or a number of bytes"
                    ),
                );
                default
            }
        }
    }

    /// A socket address; the message says which part is wrong, so that a value
    /// from the environment, which is not shown, still gets a reason.
    pub(super) fn address(&mut self, text: &str, path: &str) -> Option<SocketAddr> {
        if let Ok(addr) = text.parse() {
            return Some(addr);
        }
        let why = match text.rsplit_once(':') {
            None => "it has no port",
            Some((_, port)) if port.parse::<u16>().is_err() => {
                "its port is not a number between 0 and 65535"
            }
            Some(_) => "its host is not an IP address (`[::1]` for IPv6)",
        };
        self.error(
            path,
            format!("`{text}` is not an address: {why}; write e.g. `127.0.0.1:8080`"),
        );
        None
    }

    pub(super) fn public_url(&mut self, text: &str, path: &str) -> Option<String> {
        let trimmed = text.trim_end_matches('/');
        let ok = trimmed.parse::<Uri>().ok().filter(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some()
                && uri
                    .path_and_query()
                    .is_none_or(|pq| pq.as_str().is_empty() || pq.as_str() == "/")
        });
        if ok.is_none() {
            self.error(
                path,
                format!("`{text}` is not an origin such as `https://api.example.com` (no path, query or fragment)"),
            );
            return None;
        }
        Some(trimmed.to_owned())
    }
}

/// "must be from 1ms to 1h", or "must be at most 1h" when zero is allowed.
fn describe(allowed: &RangeInclusive<Duration>) -> String {
    let max = humantime::format_duration(*allowed.end());
    if allowed.start().is_zero() {
        format!("must be at most {max}")
    } else {
        let min = humantime::format_duration(*allowed.start());
        format!("must be from {min} to {max}")
    }
}
