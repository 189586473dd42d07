//! The scalar values several sections share: durations, sizes, addresses and
//! origins, each parsed with the error message that tells how to write it.

use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;

use super::load::Loader;
use super::raw;

impl Loader {
    pub(super) fn duration(
        &mut self,
        value: Option<String>,
        path: &str,
        default: Duration,
    ) -> Duration {
        let Some(text) = value else {
            return default;
        };
        match humantime::parse_duration(&text) {
            Ok(d) => d,
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

    pub(super) fn address(&mut self, text: &str, path: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    path,
                    format!("`{text}` is not an address such as `127.0.0.1:8080`"),
                );
                None
            }
        }
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
