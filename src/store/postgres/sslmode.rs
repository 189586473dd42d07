//! What a PostgreSQL connection asks of TLS: `sslmode` and `sslrootcert`, read as
//! libpq reads them, and taken out of the connection string before the driver (which
//! knows only `disable`, `prefer` and `require`) parses the rest.
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (the default) | when the server offers it | not checked; with a CA file, its chain is |
//! | `require` | always | not checked; with a CA file, its chain is (libpq: as `verify-ca`) |
//! | `verify-ca` | always | chain up to the CA file, or to the public roots |
//! | `verify-full` | always | chain, and the host name of the URL |
//!
//! `allow` (libpq: plain first, TLS only when the server insists) is refused: it
//! sends the password in clear to any server that does not insist, and `prefer`
//! does what it is meant for. `sslrootcert=system` means the public roots (Mozilla's,
//! as webpki-roots packages them) and, as in libpq, asks for `verify-full`.
//!
//! Nothing here ever quotes the connection string: it may hold a password.

use std::fmt;
use std::path::PathBuf;

use crate::tls::ServerCheck;

/// The accepted `sslmode` values, as error messages list them.
pub const SSL_MODES: &str = "`disable`, `prefer`, `require`, `verify-ca` or `verify-full`";

/// How a connection uses TLS (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never.
    Disable,
    /// When the server offers it (libpq's default).
    #[default]
    Prefer,
    /// Always; the certificate is checked only when a CA file is given.
    Require,
    /// Always, with the certificate's chain verified.
    VerifyCa,
    /// Always, with the chain and the host name verified.
    VerifyFull,
}

impl SslMode {
    /// The mode named `text`.
    ///
    /// # Errors
    ///
    /// When `text` is `allow` or no mode at all.
    pub fn parse(text: &str) -> Result<SslMode, TlsSettingError> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => return Err(TlsSettingError::Allow),
            other => {
                // Quoted only when it cannot be anything but a misspelt mode.
                let plain = other.len() <= 20
                    && other
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                return Err(TlsSettingError::UnknownMode(
                    plain.then(|| other.to_owned()),
                ));
            }
        })
    }

    /// The mode's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The driver's mode: it only needs to know whether TLS is off, optional or
    /// required; the certificate checks are the connector's.
    pub(super) fn driver_mode(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// The TLS settings of a PostgreSQL store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostgresTls {
    /// When TLS is used, and how much of the certificate is checked.
    pub mode: SslMode,
    /// A CA bundle (PEM) the server's chain is verified against whenever TLS is
    /// used; without it, `verify-ca` and `verify-full` use the public roots and the
    /// other modes check no certificate.
    pub ca_file: Option<PathBuf>,
}

impl PostgresTls {
    /// The settings from a connection's `sslmode` and `sslrootcert` (either may be
    /// missing), where `resolve` turns a `sslrootcert` file name into a path.
    ///
    /// # Errors
    ///
    /// When `sslrootcert=system` comes with a mode other than `verify-full`, or a CA
    /// file with `sslmode=disable`.
    pub fn from_parts(
        mode: Option<SslMode>,
        root_cert: Option<&str>,
        resolve: impl FnOnce(&str) -> PathBuf,
    ) -> Result<PostgresTls, TlsSettingError> {
        match root_cert {
            Some("system") => match mode {
                None | Some(SslMode::VerifyFull) => Ok(PostgresTls {
                    mode: SslMode::VerifyFull,
                    ca_file: None,
                }),
                Some(_) => Err(TlsSettingError::SystemNeedsVerifyFull),
            },
            Some(file) => match mode {
                Some(SslMode::Disable) => Err(TlsSettingError::CaWithoutTls),
                mode => Ok(PostgresTls {
                    mode: mode.unwrap_or_default(),
                    ca_file: Some(resolve(file)),
                }),
            },
            None => Ok(PostgresTls {
                mode: mode.unwrap_or_default(),
                ca_file: None,
            }),
        }
    }

    /// How much of the server's certificate is checked; `None` when TLS is off.
    #[must_use]
    pub fn check(&self) -> Option<ServerCheck> {
        match self.mode {
            SslMode::Disable => None,
            SslMode::Prefer | SslMode::Require if self.ca_file.is_none() => {
                Some(ServerCheck::Nothing)
            }
            SslMode::Prefer | SslMode::Require | SslMode::VerifyCa => Some(ServerCheck::Chain),
            SslMode::VerifyFull => Some(ServerCheck::ChainAndName),
        }
    }
}

/// For error messages and logs: the mode and what the certificate is checked
/// against (`sslmode=verify-full, CA file /etc/db/ca.pem`). Never secret.
impl fmt::Display for PostgresTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sslmode={}", self.mode.as_str())?;
        match (self.check(), &self.ca_file) {
            (None, _) => Ok(()),
            (Some(ServerCheck::Nothing), _) => f.write_str(", certificate not checked"),
            (Some(_), Some(file)) => write!(f, ", CA file {}", file.display()),
            (Some(_), None) => f.write_str(", public roots"),
        }
    }
}

/// Why the TLS settings of a connection cannot be used. The messages quote no part
/// of the connection string but a misspelt mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsSettingError {
    /// `sslmode` is no mode (quoted when it is plainly a word).
    #[error("{}", unknown_mode(.0.as_deref()))]
    UnknownMode(Option<String>),
    /// `sslmode=allow`.
    #[error(
        "`sslmode=allow` is not supported (it tries without TLS first): use `prefer` (TLS when the server offers it) or `require`"
    )]
    Allow,
    /// A parameter is given twice.
    #[error("`{0}` is given twice")]
    Twice(&'static str),
    /// A parameter is not valid percent-encoded UTF-8.
    #[error("`{0}` is not valid percent-encoded UTF-8")]
    NotUtf8(&'static str),
    /// `sslrootcert=system` with a mode other than `verify-full`.
    #[error("`sslrootcert=system` (the public roots) needs `sslmode=verify-full`, as in libpq")]
    SystemNeedsVerifyFull,
    /// A CA file with TLS turned off.
    #[error("a CA file is given but `sslmode=disable` turns TLS off")]
    CaWithoutTls,
}

fn unknown_mode(shown: Option<&str>) -> String {
    match shown {
        Some(mode) => format!("`sslmode={mode}` is not a mode: use {SSL_MODES}"),
        None => format!("`sslmode` is not a mode: use {SSL_MODES}"),
    }
}

/// A connection string with its TLS parameters taken out.
#[derive(Clone, PartialEq, Eq)]
pub struct UrlTls {
    /// The connection string without `sslmode` and `sslrootcert` (may hold a
    /// password: never formatted).
    pub url: String,
    /// Its `sslmode`, if it has one.
    pub mode: Option<SslMode>,
    /// Its `sslrootcert`, if it has one, percent-decoded.
    pub root_cert: Option<String>,
}

impl fmt::Debug for UrlTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlTls")
            .field("mode", &self.mode)
            .field("root_cert", &self.root_cert)
            .finish_non_exhaustive()
    }
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` or `postgresql://`
/// URL's query. Any other string (the `key=value` form) comes back as it is: the
/// driver reads its `sslmode` itself (`disable`, `prefer` or `require` only).
///
/// The query is found as the driver finds it: after the first `@`, if any, the
/// first `?`.
///
/// # Errors
///
/// When `sslmode` is no mode or `allow`, or either parameter is given twice or is
/// not valid percent-encoded UTF-8.
pub fn split_url(url: &str) -> Result<UrlTls, TlsSettingError> {
    let unchanged = || UrlTls {
        url: url.to_owned(),
        mode: None,
        root_cert: None,
    };
    let Some(body) = url_body(url) else {
        return Ok(unchanged());
    };
    let after_credentials = url[body..].find('@').map_or(body, |at| body + at + 1);
    let Some(query) = url[after_credentials..]
        .find('?')
        .map(|at| after_credentials + at)
    else {
        return Ok(unchanged());
    };
    let (mut mode, mut root_cert) = (None, None);
    let mut kept = Vec::new();
    for pair in url[query + 1..].split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(key).as_deref() {
            Some("sslmode") => {
                let text = percent_decode(value).ok_or(TlsSettingError::NotUtf8("sslmode"))?;
                if mode.replace(SslMode::parse(&text)?).is_some() {
                    return Err(TlsSettingError::Twice("sslmode"));
                }
            }
            Some("sslrootcert") => {
                let file = percent_decode(value).ok_or(TlsSettingError::NotUtf8("sslrootcert"))?;
                if root_cert.replace(file).is_some() {
                    return Err(TlsSettingError::Twice("sslrootcert"));
                }
            }
            _ => kept.push(pair),
        }
    }
    let mut rest = url[..query].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok(UrlTls {
        url: rest,
        mode,
        root_cert,
    })
}

/// Where a `postgres://` or `postgresql://` URL's body starts; `None` for the
/// `key=value` form.
pub(super) fn url_body(url: &str) -> Option<usize> {
    ["postgres://", "postgresql://"]
        .iter()
        .find_map(|prefix| url.starts_with(prefix).then_some(prefix.len()))
}

/// `%XX` sequences decoded (and nothing else: a `+` stays a `+`, as in libpq);
/// `None` when the result is not UTF-8 or a `%` is not followed by two hex digits.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn split(url: &str) -> (String, Option<SslMode>, Option<String>) {
        let parts = split_url(url).unwrap();
        (parts.url, parts.mode, parts.root_cert)
    }

    #[test]
    fn the_tls_parameters_are_taken_out_and_the_rest_kept() {
        assert_eq!(
            split(
                "postgres://u:p@db:5432/x?sslmode=verify-full&application_name=a&sslrootcert=%2Fca%20dir%2Fca.pem"
            ),
            (
                "postgres://u:p@db:5432/x?application_name=a".into(),
                Some(SslMode::VerifyFull),
                Some("/ca dir/ca.pem".into())
            )
        );
        assert_eq!(
            split("postgresql://db/x?sslmode=require"),
            ("postgresql://db/x".into(), Some(SslMode::Require), None)
        );
        assert_eq!(
            split("postgres://db/x?connect_timeout=2"),
            ("postgres://db/x?connect_timeout=2".into(), None, None)
        );
        assert_eq!(
            split("postgres://db/x"),
            ("postgres://db/x".into(), None, None)
        );
        // A `?` in the password is before the `@`: not the query.
        assert_eq!(
            split("postgres://u:a?sslmode=x@db/x?sslmode=disable"),
            (
                "postgres://u:a?sslmode=x@db/x".into(),
                Some(SslMode::Disable),
                None
            )
        );
        // The key=value form is the driver's to read.
        assert_eq!(
            split("host=db sslmode=require"),
            ("host=db sslmode=require".into(), None, None)
        );
    }

    #[test]
    fn unknown_modes_are_refused_quoting_only_a_plain_word() {
        let error = split_url("postgres://u:s3cret@db/x?sslmode=verify_full").unwrap_err();
        assert_eq!(
            error.to_string(),
            "`sslmode=verify_full` is not a mode: use `disable`, `prefer`, `require`, `verify-ca` or `verify-full`"
        );
        let error = split_url("postgres://db/x?sslmode=s3cret%20s3cret").unwrap_err();
        assert_eq!(error, TlsSettingError::UnknownMode(None));
        assert!(!error.to_string().contains("s3cret"), "{error}");
        assert_eq!(
            split_url("postgres://db/x?sslmode=allow").unwrap_err(),
            TlsSettingError::Allow
        );
        assert_eq!(
            split_url("postgres://db/x?sslmode=require&sslmode=disable").unwrap_err(),
            TlsSettingError::Twice("sslmode")
        );
        assert_eq!(
            split_url("postgres://db/x?sslrootcert=%ff").unwrap_err(),
            TlsSettingError::NotUtf8("sslrootcert")
        );
    }

    #[test]
    fn modes_and_root_certs_combine_as_in_libpq() {
        let resolve = |file: &str| Path::new("/conf").join(file);
        let tls = |mode, root| PostgresTls::from_parts(mode, root, resolve);
        assert_eq!(tls(None, None).unwrap(), PostgresTls::default());
        assert_eq!(tls(None, None).unwrap().mode, SslMode::Prefer);
        assert_eq!(tls(None, None).unwrap().check(), Some(ServerCheck::Nothing));
        // A CA file makes `require` (and `prefer`) check the chain.
        let require = tls(Some(SslMode::Require), Some("ca.pem")).unwrap();
        assert_eq!(require.ca_file.as_deref(), Some(Path::new("/conf/ca.pem")));
        assert_eq!(require.check(), Some(ServerCheck::Chain));
        assert_eq!(
            tls(Some(SslMode::Require), None).unwrap().check(),
            Some(ServerCheck::Nothing)
        );
        assert_eq!(
            tls(Some(SslMode::VerifyCa), None).unwrap().check(),
            Some(ServerCheck::Chain)
        );
        assert_eq!(
            tls(Some(SslMode::VerifyFull), None).unwrap().check(),
            Some(ServerCheck::ChainAndName)
        );
        assert_eq!(tls(Some(SslMode::Disable), None).unwrap().check(), None);
        // `system`: the public roots, and verify-full.
        let system = tls(None, Some("system")).unwrap();
        assert_eq!(system.mode, SslMode::VerifyFull);
        assert_eq!(system.ca_file.as_deref(), None);
        assert_eq!(
            tls(Some(SslMode::Require), Some("system")).unwrap_err(),
            TlsSettingError::SystemNeedsVerifyFull
        );
        assert_eq!(
            tls(Some(SslMode::Disable), Some("ca.pem")).unwrap_err(),
            TlsSettingError::CaWithoutTls
        );
    }

    #[test]
    fn the_summary_says_what_is_checked() {
        let tls = |mode, ca: Option<&str>| PostgresTls {
            mode,
            ca_file: ca.map(PathBuf::from),
        };
        assert_eq!(tls(SslMode::Disable, None).to_string(), "sslmode=disable");
        assert_eq!(
            tls(SslMode::Require, None).to_string(),
            "sslmode=require, certificate not checked"
        );
        assert_eq!(
            tls(SslMode::VerifyFull, Some("/ca.pem")).to_string(),
            "sslmode=verify-full, CA file /ca.pem"
        );
        assert_eq!(
            tls(SslMode::VerifyCa, None).to_string(),
            "sslmode=verify-ca, public roots"
        );
    }
}
