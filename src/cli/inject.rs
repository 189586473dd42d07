//! `authmd-proxy inject`, which adds the sidecar to manifests, and `authmd-proxy
//! injector`, which serves the same transformation as a Kubernetes admission
//! webhook.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use authmd_proxy::inject::{DEFAULT_IMAGE, Defaults, Injected, Warning};
use authmd_proxy::injector::{self, FailurePolicy, Injector};
use authmd_proxy::server;
use authmd_proxy::tls::{ServerFiles, ServerTls};
use clap::Args;

use super::run::shutdown_signal;
use super::{EX_USAGE, fail, init_logging, out};

/// The arguments of `inject`.
#[derive(Debug, Args)]
pub(crate) struct InjectArgs {
    /// YAML files (multi-document); `-` or none reads standard input.
    files: Vec<PathBuf>,
    /// The sidecar image, unless a workload's `authmd.dev/image` names one.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
    /// Add a regular container instead of a native sidecar (an init container
    /// with `restartPolicy: Always`, Kubernetes 1.29 and later).
    #[arg(long)]
    legacy_sidecar: bool,
}

/// The arguments of `injector`.
#[derive(Debug, Args)]
pub(crate) struct InjectorArgs {
    /// Listen address.
    #[arg(long, env = "AUTHMD_INJECTOR_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// PEM certificate chain, leaf first (its names must include the Service's
    /// DNS name, e.g. `authmd-injector.authmd-system.svc`).
    #[arg(long, default_value = "/etc/authmd-injector/tls/tls.crt")]
    cert_file: PathBuf,
    /// PEM private key.
    #[arg(long, default_value = "/etc/authmd-injector/tls/tls.key")]
    key_file: PathBuf,
    /// The sidecar image, unless a pod's `authmd.dev/image` names one.
    #[arg(long, env = "AUTHMD_SIDECAR_IMAGE", default_value = DEFAULT_IMAGE)]
    image: String,
    /// Add a regular container instead of a native sidecar (clusters before 1.29).
    #[arg(long)]
    legacy_sidecar: bool,
    /// A pod whose annotations cannot be used: `fail` denies it with the
    /// reason, `ignore` creates it without the sidecar and with a warning.
    #[arg(long, default_value = "fail")]
    failure_policy: FailurePolicy,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    json_logs: bool,
}

/// Writes the files (or standard input) to standard output with the sidecar added
/// to every annotated workload.
pub(crate) fn inject(args: InjectArgs) -> ExitCode {
    let InjectArgs {
        files,
        image,
        legacy_sidecar,
    } = args;
    let defaults = Defaults {
        image,
        native: !legacy_sidecar,
    };
    let stdin = files.is_empty() || files.iter().any(|f| f.as_os_str() == "-");
    let mut output = String::new();
    let inputs: Vec<(String, Result<String, std::io::Error>)> = if stdin {
        let mut text = String::new();
        let read = std::io::stdin().read_to_string(&mut text).map(|_| text);
        vec![("<stdin>".to_owned(), read)]
    } else {
        files
            .iter()
            .map(|f| (f.display().to_string(), std::fs::read_to_string(f)))
            .collect()
    };
    for (name, text) in inputs {
        let text = match text {
            Ok(text) => text,
            Err(error) => return fail(&format!("cannot read {name}: {error}"), 1),
        };
        match authmd_proxy::inject::inject(&text, &defaults) {
            Ok(Injected {
                yaml: out,
                warnings,
            }) => {
                warn(&name, &warnings);
                if !output.is_empty() {
                    if !output.ends_with('\n') {
                        output.push('\n');
                    }
                    if !out.starts_with("---") {
                        output.push_str("---\n");
                    }
                }
                output.push_str(&out);
            }
            Err(error) => return fail(&format!("{name}: {error}"), EX_USAGE),
        }
    }
    out(&output)
}

/// Prints what the injection of input `name` could not make safe, one line each,
/// on standard error: standard output is the manifest, meant for `kubectl apply`.
fn warn(name: &str, warnings: &[Warning]) {
    let mut stderr = std::io::stderr().lock();
    for warning in warnings {
        let _ = writeln!(stderr, "authmd-proxy: warning: {name}: {warning}");
    }
}

/// Serves the admission webhook until SIGINT or SIGTERM.
pub(crate) fn injector(args: InjectorArgs) -> ExitCode {
    init_logging("info", args.json_logs);
    let defaults = Defaults {
        image: args.image,
        native: !args.legacy_sidecar,
    };
    let files = ServerFiles {
        cert: args.cert_file,
        key: args.key_file,
        client_ca: None,
    };
    let injector = Injector::new(defaults, args.failure_policy);
    match serve_injector(args.listen, files, injector) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn serve_injector(
    listen: SocketAddr,
    files: ServerFiles,
    injector: Injector,
) -> Result<(), String> {
    /// How often the certificate files are checked for a renewal.
    const RELOAD_INTERVAL: Duration = Duration::from_secs(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    runtime.block_on(async {
        let tls = Arc::new(ServerTls::load(files).map_err(|e| e.to_string())?);
        let listener = server::bind(listen).await.map_err(|e| e.to_string())?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        let watching = tokio::spawn(tls.clone().watch(RELOAD_INTERVAL, |_| ()));
        let stop = shutdown_signal();
        tracing::info!("authmd-proxy injector listening on https://{bound}");
        injector::serve(listener, tls, Arc::new(injector), stop).await;
        watching.abort();
        tracing::info!("stopped");
        Ok(())
    })
}
