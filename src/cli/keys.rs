//! `authmd-proxy keys`: mint and hash API keys, and manage the keys in the
//! configured store.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use authmd_proxy::clock::unix_now;
use authmd_proxy::config::{Config, Overrides};
use authmd_proxy::credentials::{KeyHash, api_key};
use authmd_proxy::store::{KeyRecord, Store};
use authmd_proxy::tier::TierId;
use clap::Subcommand;
use zeroize::Zeroizing;

use super::source::Source;
use super::{EX_USAGE, current_thread, fail, out};

/// The `keys` commands.
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Mint a key from the OS random source and print it with its hash.
    Generate {
        /// Key prefix, e.g. `ak_live`.
        #[arg(long)]
        prefix: String,
    },
    /// Print the BLAKE3 hash of a key read from standard input, for the config's
    /// `keys:`. A value that is not a well-formed key (a known prefix, and a valid
    /// checksum where the config requires one) is refused: the proxy would refuse it.
    Hash {
        /// The prefixes a key may have (repeatable); without it, the config's
        /// `credentials.key_prefixes`, or, with no config either, any well-formed one.
        #[arg(long = "prefix", value_name = "PREFIX")]
        prefixes: Vec<String>,
        /// The YAML config file, for its key prefixes and `require_checksum`.
        #[arg(long, short, env = "AUTHMD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Create a key in the configured store and print it (the secret is shown once).
    Create {
        /// The config file and the data directory, as `run` takes them.
        #[command(flatten)]
        source: Source,
        /// A name for the key.
        #[arg(long)]
        name: String,
        /// Scopes, comma- or space-separated (default: the tier's scopes).
        #[arg(long)]
        scopes: Option<String>,
        /// Tier (default: the lowest tier above `anonymous`).
        #[arg(long)]
        tier: Option<String>,
        /// Owner account (keys of the same owner manage each other).
        #[arg(long, default_value = "operator")]
        owner: String,
        /// Rate limits of its own instead of its tier's, e.g. `10/s,300/min`.
        #[arg(long)]
        rate_limits: Option<String>,
        /// A quota of its own instead of its tier's, e.g. `5000/month`.
        #[arg(long)]
        quota: Option<String>,
    },
    /// List the keys in the configured store (never their secrets).
    List {
        /// The config file and the data directory, as `run` takes them.
        #[command(flatten)]
        source: Source,
    },
    /// Revoke a key in the configured store by id.
    Revoke {
        /// The config file and the data directory, as `run` takes them.
        #[command(flatten)]
        source: Source,
        /// The key's id (`key_...`).
        id: String,
    },
}

/// Runs a `keys` command.
pub(crate) fn keys(command: KeysCommand) -> ExitCode {
    match command {
        KeysCommand::Generate { prefix } => match api_key::mint(&prefix) {
            Ok(key) => out(&format!(
                "key:  {}\nhash: {}\n",
                key.secret.as_str(),
                key.hash
            )),
            Err(error) => fail(&error.to_string(), EX_USAGE),
        },
        KeysCommand::Hash { prefixes, config } => hash(prefixes, config.as_deref()),
        KeysCommand::Create {
            source,
            name,
            scopes,
            tier,
            owner,
            rate_limits,
            quota,
        } => with_store(&source, |config, store| async move {
            let limits = own_limits(rate_limits.as_deref(), quota.as_deref())?;
            create_key(
                &config,
                &store,
                name,
                scopes.as_deref(),
                tier.as_deref(),
                owner,
                limits,
            )
            .await
        }),
        KeysCommand::List { source } => {
            with_store(&source, |_, store| async move { list_keys(&store).await })
        }
        KeysCommand::Revoke { source, id } => with_store(&source, |_, store| async move {
            match store.revoke_key(&id, unix_now()).await {
                Ok(Some(_)) => Ok(format!("revoked {id}\n")),
                Ok(None) => Err((format!("no live key `{id}` in the store"), 1)),
                Err(error) => Err((error.to_string(), 1)),
            }
        }),
    }
}

/// Prints the hash of the key on standard input, once it is a key the proxy
/// would accept.
fn hash(prefixes: Vec<String>, config: Option<&Path>) -> ExitCode {
    let (prefixes, require_checksum) = match config {
        Some(path) => match Config::load(path, &Overrides::default()) {
            Ok(config) if prefixes.is_empty() => (
                config.credentials.key_prefixes.clone(),
                config.credentials.require_checksum,
            ),
            Ok(config) => (prefixes, config.credentials.require_checksum),
            Err(errors) => return fail(&errors.to_string(), EX_USAGE),
        },
        None => (prefixes, true),
    };
    let prefixes: Vec<String> = prefixes
        .iter()
        .map(|p| p.strip_suffix('_').unwrap_or(p).to_owned())
        .collect();
    if config.is_some() && prefixes.is_empty() {
        return fail(
            "the config declares no `credentials.key_prefixes`, so the proxy would recognise no key",
            EX_USAGE,
        );
    }
    if let Some(bad) = prefixes.iter().find(|p| !api_key::is_valid_prefix(p)) {
        return fail(
            &format!("`{bad}` is not a key prefix (lowercase words joined by `_`, e.g. `ak_live`)"),
            EX_USAGE,
        );
    }
    let mut input = Zeroizing::new(String::new());
    if let Err(error) = std::io::stdin().read_to_string(&mut input) {
        return fail(&format!("cannot read standard input: {error}"), 1);
    }
    let key = input.trim_end_matches(['\r', '\n']);
    if key.is_empty() {
        return fail("no key on standard input", EX_USAGE);
    }
    match key_problem(key, &prefixes, require_checksum) {
        Some(problem) => fail(
            &format!("the value on standard input is refused: {problem}"),
            EX_USAGE,
        ),
        None => out(&format!("{}\n", KeyHash::of(key))),
    }
}

/// Why the proxy would refuse `key`, in words that never repeat it (only the
/// prefixes, which are not secret); `None` when it would accept it. With no
/// `prefixes`, any well-formed prefix is known.
fn key_problem(key: &str, prefixes: &[String], require_checksum: bool) -> Option<String> {
    const FORMAT: &str = "a key reads `<prefix>_<body><checksum>`, as `keys generate` mints it";
    let candidates: Vec<&str> = if prefixes.is_empty() {
        match key.rsplit_once('_') {
            Some((prefix, _)) if api_key::is_valid_prefix(prefix) => vec![prefix],
            _ => return Some(format!("it is not an API key ({FORMAT})")),
        }
    } else {
        prefixes
            .iter()
            .map(String::as_str)
            .filter(|p| {
                key.strip_prefix(p)
                    .is_some_and(|rest| rest.starts_with('_'))
            })
            .collect()
    };
    if candidates.is_empty() {
        let known: Vec<String> = prefixes.iter().map(|p| format!("`{p}_`")).collect();
        return Some(format!(
            "it does not start with a known key prefix ({}), so the proxy would not recognise it as a key",
            known.join(", ")
        ));
    }
    if require_checksum && !candidates.iter().any(|p| api_key::checksum_ok(key, p)) {
        return Some(format!(
            "after `{}_`, its body or its checksum is wrong (mistyped or cut short?), and \
             `require_checksum: true` refuses it before any lookup; {FORMAT}",
            candidates[0]
        ));
    }
    None
}

/// Runs an operator command against the configured store.
fn with_store<F, Fut>(source: &Source, command: F) -> ExitCode
where
    F: FnOnce(Config, Store) -> Fut,
    Fut: std::future::Future<Output = Result<String, (String, u8)>>,
{
    let config = match source.load() {
        Ok(config) => config,
        Err(errors) => return fail(&errors.to_string(), EX_USAGE),
    };
    let runtime = match current_thread() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let store = match Store::open(&config.lifecycle.store).await {
            Ok(Some(store)) => store,
            Ok(None) => {
                return Err((
                    "the config has `store: {kind: none}`; keys live in the config file".to_owned(),
                    EX_USAGE,
                ));
            }
            Err(error) => return Err((error.to_string(), 1)),
        };
        command(config, store).await
    });
    match result {
        Ok(text) => out(&text),
        Err((message, code)) => fail(&message, code),
    }
}

/// The stored form of `--rate-limits` and `--quota` (checked here, so a key is
/// never stored with limits the proxy would refuse).
fn own_limits(rates: Option<&str>, quota: Option<&str>) -> Result<Option<String>, (String, u8)> {
    if rates.is_none() && quota.is_none() {
        return Ok(None);
    }
    let rates: Option<Vec<&str>> = rates.map(|text| {
        text.split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .collect()
    });
    if let Some(rates) = &rates {
        authmd_proxy::limits::parse_rates(rates).map_err(|errors| {
            let messages: Vec<String> = errors.into_iter().map(|(_, m)| m).collect();
            (messages.join("; "), EX_USAGE)
        })?;
    }
    if let Some(quota) = quota {
        authmd_proxy::limits::parse_quota(quota).map_err(|e| (e, EX_USAGE))?;
    }
    let mut own = serde_json::Map::new();
    if let Some(rates) = rates {
        own.insert("rate_limits".into(), serde_json::json!(rates));
    }
    if let Some(quota) = quota {
        own.insert("quota".into(), serde_json::json!(quota));
    }
    Ok(Some(serde_json::Value::Object(own).to_string()))
}

async fn create_key(
    config: &Config,
    store: &Store,
    name: String,
    scopes: Option<&str>,
    tier: Option<&str>,
    owner: String,
    limits: Option<String>,
) -> Result<String, (String, u8)> {
    let prefix = &config.lifecycle.keys.prefix;
    if prefix.is_empty() {
        return Err((
            "declare `credentials.key_prefixes` first".to_owned(),
            EX_USAGE,
        ));
    }
    let tier = match tier {
        Some(name) => match config.tiers.find(name) {
            Some(id) if id.0 > 0 => id,
            _ => return Err((format!("`{name}` is not a tier a key can have"), EX_USAGE)),
        },
        None => TierId(1),
    };
    let tier = config.tiers.get(tier);
    // Without `--scopes`, the key holds its tier's scopes, as a registered agent's
    // key does: a key of no scopes would be refused where an anonymous caller is not.
    let (names, whence) = match scopes {
        Some(scopes) => {
            let names: Vec<String> = scopes
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if names.is_empty() {
                return Err((
                    "`--scopes` names no scope; leave it out for the tier's scopes".to_owned(),
                    EX_USAGE,
                ));
            }
            if let Err((name, _)) = config.scopes.granted(names.iter().map(String::as_str)) {
                return Err((format!("unknown scope `{name}`"), EX_USAGE));
            }
            (names, String::new())
        }
        None => {
            let names: Vec<String> = config
                .scopes
                .names(&tier.scopes)
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            let whence = format!(" (the `{}` tier's, as no `--scopes` was given)", tier.name);
            (names, whence)
        }
    };
    let tier = tier.name.clone();
    let new = api_key::mint(prefix).map_err(|e| (e.to_string(), 1))?;
    let record = KeyRecord {
        limits,
        ..KeyRecord::new(
            api_key::public_id("key").map_err(|e| (e.to_string(), 1))?,
            new.hash,
            prefix.clone(),
            name,
            owner,
            names,
            tier,
            unix_now(),
        )
    };
    store
        .insert_key(&record)
        .await
        .map_err(|e| (e.to_string(), 1))?;
    Ok(format!(
        "id:     {}\nkey:    {}\nscopes: {}{whence}\ntier:   {}\n(the key is shown once; store it now)\n",
        record.id,
        new.secret.as_str(),
        record.scopes.join(" "),
        record.tier
    ))
}

async fn list_keys(store: &Store) -> Result<String, (String, u8)> {
    let keys = store.all_keys().await.map_err(|e| (e.to_string(), 1))?;
    let mut text = String::from("ID\tNAME\tOWNER\tTIER\tSCOPES\tSTATE\n");
    for key in keys {
        let state = if key.revoked_at.is_some() {
            "revoked"
        } else if !key.is_live(unix_now()) {
            "expired"
        } else {
            "live"
        };
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{state}\n",
            key.id,
            key.name,
            key.owner,
            key.tier,
            key.scopes.join(" ")
        ));
    }
    Ok(text)
}
