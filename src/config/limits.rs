//! The `limits:` section and the `rate_limits` / `quota` fields of tiers and keys.
//!
//! A rate is written `10/s`, `300/min`, `1000/hour`, `50/day` or with any window,
//! `100/10s`; a quota `5000/month` or `1000/day`.

use std::time::Duration;

use super::load::Loader;
use super::locate::join;
use super::raw;
use super::values::{MILLISECOND, MINUTE, SECOND};
use crate::limits::gcra::Rate;
use crate::limits::global::{GlobalSettings, Mode, OnUnavailable, Target};
use crate::limits::headers::Styles;
use crate::limits::quota::Quota;
use crate::limits::x402::{Accept, Payments};
use crate::limits::{ANONYMOUS_PER_ADDRESS, LimitSet, LimitSettings, parse_quota, parse_rates};
use crate::tier::{TierId, Tiers};

impl Loader {
    /// The limit set named `name` from its `rate_limits` and `quota` fields at `path`.
    pub(super) fn limit_set(
        &mut self,
        name: &str,
        rates: &[String],
        quota: Option<&str>,
        path: &str,
    ) -> LimitSet {
        let rates = self.rates(rates, path);
        let quota = quota.and_then(|text| self.quota(text, path));
        LimitSet::new(name, rates, quota)
    }

    /// The `rate_limits` field at `path`.
    pub(super) fn rates(&mut self, texts: &[String], path: &str) -> Vec<Rate> {
        parse_rates(texts).unwrap_or_else(|errors| {
            let list = join(path, "rate_limits");
            for (at, message) in errors {
                match at {
                    Some(i) => self.error(&format!("{list}[{i}]"), message),
                    None => self.error(&list, message),
                }
            }
            Vec::new()
        })
    }

    /// The `quota` field at `path`.
    pub(super) fn quota(&mut self, text: &str, path: &str) -> Option<Quota> {
        parse_quota(text)
            .map_err(|message| self.error(&join(path, "quota"), message))
            .ok()
    }

    /// `limits:`; `tiers` gives the anonymous tier's windows the address budget
    /// multiplies.
    pub(super) fn limits(&mut self, raw: raw::RawLimits, tiers: &Tiers) -> LimitSettings {
        let defaults = LimitSettings::default();
        let mut trusted_proxies = Vec::new();
        for (i, text) in raw.trusted_proxies.iter().enumerate() {
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => trusted_proxies.push(net),
                Err(_) => self.error(
                    &format!("limits.trusted_proxies[{i}]"),
                    format!("`{text}` is not an address or network such as `10.0.0.0/8`"),
                ),
            }
        }
        let headers = match raw.headers {
            None => defaults.headers,
            Some(names) => {
                let mut styles = Styles {
                    draft: false,
                    structured: false,
                    legacy: false,
                };
                for (i, name) in names.iter().enumerate() {
                    match name.as_str() {
                        "draft-06" => styles.draft = true,
                        "structured" => styles.structured = true,
                        "x-ratelimit" => styles.legacy = true,
                        other => self.error(
                            &format!("limits.headers[{i}]"),
                            format!("unknown header style `{other}`; write `draft-06`, `structured` or `x-ratelimit`"),
                        ),
                    }
                }
                if styles.draft && styles.structured {
                    self.error(
                        "limits.headers",
                        "`draft-06` and `structured` both send `RateLimit-Policy`, with different syntax; pick one",
                    );
                }
                styles
            }
        };
        let max_principals = raw.max_principals.unwrap_or(defaults.max_principals);
        if max_principals == 0 {
            self.error("limits.max_principals", "must be at least 1");
        }
        let quota_flush = self.duration(
            raw.quota_flush,
            "limits.quota_flush",
            defaults.quota_flush,
            MILLISECOND * 100..=MINUTE * 5,
        );
        let per_address = raw.anonymous_per_address.unwrap_or(ANONYMOUS_PER_ADDRESS);
        let anonymous_budget =
            LimitSet::per_address(&tiers.get(TierId::ANONYMOUS).limits, per_address);
        let global = raw.global.and_then(|raw| self.global_limits(raw));
        LimitSettings {
            trusted_proxies,
            max_principals,
            headers,
            quota_flush,
            payments: None,
            anonymous_budget,
            global,
        }
    }

    /// `limits.global:`.
    fn global_limits(&mut self, raw: raw::RawGlobalLimits) -> Option<GlobalSettings> {
        const AT: &str = "limits.global";
        match raw.backend.as_deref() {
            None | Some("redis") => {}
            Some(other) => self.error(
                &join(AT, "backend"),
                format!("unknown backend `{other}`; `redis` (which includes Valkey and managed Redis) is the one"),
            ),
        }
        let Some(url) = raw.url else {
            self.error(
                &join(AT, "url"),
                "say where Redis is, e.g. `url: redis://redis:6379/0` or `url: ${REDIS_URL}`",
            );
            return None;
        };
        if !raw.nodes.is_empty() && !raw.cluster {
            self.error(
                &join(AT, "nodes"),
                "`nodes` lists a cluster's other seed nodes: set `cluster: true`, or leave it out",
            );
        }
        let mut urls = vec![url];
        urls.extend(raw.nodes);
        for (i, url) in urls.iter().enumerate() {
            let path = if i == 0 {
                join(AT, "url")
            } else {
                format!("{AT}.nodes[{}]", i - 1)
            };
            let scheme_ok = [
                "redis://",
                "rediss://",
                "redis+unix://",
                "unix://",
                "valkey://",
                "valkeys://",
            ]
            .iter()
            .any(|s| url.starts_with(s));
            let target = Target {
                urls: vec![url.clone()],
                cluster: false,
                ca_pem: None,
            };
            if !scheme_ok || target.validate().is_err() {
                // The URL may hold a password: the message never quotes it.
                self.error(
                    &path,
                    "not a Redis URL: write `redis://host:6379/0`, `rediss://host:6380` (TLS) or `redis+unix:///path/to/socket`",
                );
            }
        }
        let ca_pem = raw.ca_file.and_then(|file| {
            let path = join(AT, "ca_file");
            if !urls
                .iter()
                .all(|u| u.starts_with("rediss://") || u.starts_with("valkeys://"))
            {
                self.error(&path, "`ca_file` is for TLS: write the URL as `rediss://`");
            }
            match std::fs::read(self.resolve(&file)) {
                Ok(pem)
                    if String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") =>
                {
                    Some(pem)
                }
                Ok(_) => {
                    self.error(&path, format!("`{file}` holds no PEM certificate"));
                    None
                }
                Err(error) => {
                    self.error(&path, format!("cannot read `{file}`: {error}"));
                    None
                }
            }
        });
        let timeout = self.duration(
            raw.timeout,
            &join(AT, "timeout"),
            Duration::from_millis(50),
            MILLISECOND..=SECOND * 10,
        );
        let mode = match raw.mode.as_deref() {
            None | Some("lease") => Mode::Lease,
            Some("exact") => Mode::Exact,
            Some(other) => {
                self.error(
                    &join(AT, "mode"),
                    format!("unknown mode `{other}`; write `lease` or `exact`"),
                );
                Mode::Lease
            }
        };
        let max_lease = raw.max_lease.unwrap_or(256);
        if !(1..=10_000).contains(&max_lease) {
            self.error(&join(AT, "max_lease"), "must be from 1 to 10000");
        }
        let lease_ttl = self.duration(
            raw.lease_ttl,
            &join(AT, "lease_ttl"),
            SECOND * 2,
            MILLISECOND * 10..=MINUTE,
        );
        let on_unavailable = match raw.on_unavailable.as_deref() {
            None | Some("local") => OnUnavailable::Local,
            Some("open") => OnUnavailable::Open,
            Some("closed") => OnUnavailable::Closed,
            Some(other) => {
                self.error(
                    &join(AT, "on_unavailable"),
                    format!("unknown behaviour `{other}`; write `local` (each replica enforces its share), `open` or `closed`"),
                );
                OnUnavailable::Local
            }
        };
        let breaker = raw.breaker.unwrap_or_default();
        let breaker_failures = breaker.failures.unwrap_or(3);
        if !(1..=1000).contains(&breaker_failures) {
            self.error(&join(AT, "breaker.failures"), "must be from 1 to 1000");
        }
        let breaker_cooldown = self.duration(
            breaker.cooldown,
            &join(AT, "breaker.cooldown"),
            SECOND * 5,
            MILLISECOND * 100..=MINUTE * 10,
        );
        let heartbeat = self.duration(
            raw.heartbeat,
            &join(AT, "heartbeat"),
            SECOND * 2,
            MILLISECOND * 100..=MINUTE,
        );
        let key_prefix = raw.key_prefix.unwrap_or_else(|| "authmd".into());
        let prefix_ok = !key_prefix.is_empty()
            && key_prefix.len() <= 64
            && key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        if !prefix_ok {
            self.error(
                &join(AT, "key_prefix"),
                format!("`{key_prefix}` is not a key prefix: 1 to 64 letters, digits, `-`, `_`, `.` or `:`"),
            );
        }
        let quota_batch = self.duration(
            raw.quota_batch,
            &join(AT, "quota_batch"),
            SECOND,
            MILLISECOND * 10..=MINUTE,
        );
        Some(GlobalSettings {
            target: Target {
                urls,
                cluster: raw.cluster,
                ca_pem,
            },
            timeout,
            mode,
            max_lease: max_lease.clamp(1, 10_000),
            lease_ttl,
            on_unavailable,
            breaker_failures: breaker_failures.clamp(1, 1000),
            breaker_cooldown,
            heartbeat,
            key_prefix,
            quotas: raw.quotas,
            quota_batch,
        })
    }

    /// `payments:`.
    pub(super) fn payments(&mut self, raw: raw::RawPayments) -> Option<Payments> {
        let facilitator = raw.facilitator.trim_end_matches('/').to_owned();
        let valid = facilitator.parse::<http::Uri>().ok().is_some_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
        });
        if !valid {
            self.error(
                "payments.facilitator",
                format!(
                    "`{}` is not a URL such as `https://x402.org/facilitator`",
                    raw.facilitator
                ),
            );
        }
        if raw.accepts.is_empty() {
            self.error("payments.accepts", "list at least one way to pay");
        }
        let mut accepts = Vec::new();
        for (i, accept) in raw.accepts.into_iter().enumerate() {
            let path = format!("payments.accepts[{i}]");
            if !accept.network.contains(':') {
                self.error(
                    &join(&path, "network"),
                    format!(
                        "`{}` is not a CAIP-2 network such as `eip155:8453`",
                        accept.network
                    ),
                );
            }
            if accept.amount.is_empty() || !accept.amount.bytes().all(|b| b.is_ascii_digit()) {
                self.error(
                    &join(&path, "amount"),
                    "write the amount in the asset's atomic units, as a string of digits (`\"10000\"` is 0.01 USDC)",
                );
            }
            for (field, value) in [("asset", &accept.asset), ("pay_to", &accept.pay_to)] {
                if value.is_empty() {
                    self.error(&join(&path, field), "must not be empty");
                }
            }
            let extra = match accept.extra {
                None => None,
                Some(value) => match serde_json::to_value(&value) {
                    Ok(json) => Some(json),
                    Err(_) => {
                        self.error(&join(&path, "extra"), "must be plain JSON-like data");
                        None
                    }
                },
            };
            let network_v1 = accept.network_v1.unwrap_or_else(|| {
                v1_network(&accept.network)
                    .unwrap_or(&accept.network)
                    .to_owned()
            });
            accepts.push(Accept {
                scheme: accept.scheme.unwrap_or_else(|| "exact".into()),
                network: accept.network,
                network_v1,
                amount: accept.amount,
                asset: accept.asset,
                pay_to: accept.pay_to,
                max_timeout_seconds: accept.max_timeout_seconds.unwrap_or(60),
                extra,
            });
        }
        let requests_per_payment = raw.requests_per_payment.unwrap_or(1);
        if requests_per_payment == 0 {
            self.error("payments.requests_per_payment", "must be at least 1");
        }
        let timeout = self.duration(
            raw.timeout,
            "payments.timeout",
            Duration::from_secs(10),
            MILLISECOND..=MINUTE * 5,
        );
        Some(Payments {
            facilitator,
            requests_per_payment,
            description: raw.description.unwrap_or_default(),
            mime_type: raw.mime_type.unwrap_or_else(|| "application/json".into()),
            timeout,
            accepts,
        })
    }
}

/// The x402 v1 name of a CAIP-2 network, for the networks v1 named.
fn v1_network(caip2: &str) -> Option<&'static str> {
    Some(match caip2 {
        "eip155:8453" => "base",
        "eip155:84532" => "base-sepolia",
        "eip155:43114" => "avalanche",
        "eip155:43113" => "avalanche-fuji",
        "eip155:137" => "polygon",
        "eip155:80002" => "polygon-amoy",
        "eip155:1329" => "sei",
        "eip155:1328" => "sei-testnet",
        "eip155:4689" => "iotex",
        "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp" => "solana",
        "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1" => "solana-devnet",
        _ => return None,
    })
}
