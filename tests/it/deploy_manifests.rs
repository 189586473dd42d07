//! The Kubernetes manifests of `deploy/kubernetes`, offline:
//!
//! - every YAML file there is a kustomization or something one of them uses;
//! - every kustomization renders (`kubectl kustomize`, or `AUTHMD_KUSTOMIZE`);
//! - every built-in object of the output validates against the Kubernetes 1.33
//!   schemas (`kubernetes-validate --strict`, or `AUTHMD_KUBE_VALIDATE`), and every
//!   custom resource (PodMonitor, ServiceMonitor, cert-manager's kinds) against its
//!   CRD's schema and model (`tests/clients/validate-crds.mjs`);
//! - the proxy's config in each rendered ConfigMap passes the real binary's `check`
//!   with exactly the environment its container gets from the Deployment and the
//!   rendered Secret, and the wiring agrees (ports, probes, Service, NetworkPolicy,
//!   monitors, termination grace period);
//! - the hand-written sidecar has the shape `authmd-proxy inject` writes;
//! - the optional Redis component (`components/redis`), turned on in the sidecar
//!   exactly as its comments say (two commented blocks uncommented, in a copy),
//!   renders and validates like the rest, hands the proxy a `REDIS_URL` that names
//!   its Service with its password, lets only the proxy's pods in, and keeps Valkey
//!   in memory, non-root and read-only; its start refuses the placeholder password.
//!
//! A missing tool skips its test with a message, unless its environment variable is
//! set (as CI does): then a tool that does not run fails the test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests: a failed step should fail loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use authmd_proxy::inject::{Defaults, inject};
use base64::Engine as _;
use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::support;
use crate::support::commented::uncomment;

const BIN: &str = env!("CARGO_BIN_EXE_authmd-proxy");
const KUSTOMIZE_ENV: &str = "AUTHMD_KUSTOMIZE";
const CRD_SCRIPT: &str = "tests/clients/validate-crds.mjs";
const CRD_PACKAGES: &[&str] = &[
    "@kubernetes-models/prometheus-operator",
    "@kubernetes-models/cert-manager",
    "typescript",
];
/// The sidecar's container name, as `inject` writes it.
const SIDECAR: &str = "authmd-proxy";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// `path` relative to `deploy/kubernetes`, with `/` separators.
fn relative(path: &Path) -> String {
    path.strip_prefix(deploy_dir())
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/")
}

/// Every file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn is_kustomization(path: &Path) -> bool {
    matches!(
        path.file_name().and_then(|n| n.to_str()),
        Some("kustomization.yaml" | "kustomization.yml")
    )
}

/// The directories holding a kustomization, sorted.
fn kustomization_dirs() -> Vec<PathBuf> {
    files_under(&deploy_dir())
        .into_iter()
        .filter(|p| is_kustomization(p))
        .map(|p| p.parent().unwrap().to_owned())
        .collect()
}

fn yaml_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The strings of `value[key]` when it is a list of strings (or one string).
fn strings(value: &Value, key: &str) -> Vec<String> {
    match &value[key] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .unwrap_or_else(|| panic!("`{key}`: {i} is not a string"))
                    .to_owned()
            })
            .collect(),
        Value::Null => Vec::new(),
        other => panic!("`{key}`: {other} is not a list"),
    }
}

/// The files and directories a kustomization names, resolved against its directory.
fn referenced_by(dir: &Path) -> Vec<PathBuf> {
    let file = ["kustomization.yaml", "kustomization.yml"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .unwrap();
    let k = yaml_file(&file);
    let mut names = strings(&k, "resources");
    names.extend(strings(&k, "components"));
    names.extend(strings(&k, "crds"));
    for patch in k["patches"].as_array().into_iter().flatten() {
        names.extend(strings(patch, "path"));
    }
    names.extend(strings(&k, "patchesStrategicMerge"));
    for generator in ["configMapGenerator", "secretGenerator"] {
        for g in k[generator].as_array().into_iter().flatten() {
            for source in strings(g, "files") {
                // `key=path` or `path`.
                names.push(source.rsplit('=').next().unwrap().to_owned());
            }
            names.extend(strings(g, "envs"));
            names.extend(strings(g, "env"));
        }
    }
    names
        .into_iter()
        .map(|name| {
            assert!(
                !name.contains("://"),
                "{}: `{name}`: remote resources cannot be rendered offline",
                file.display()
            );
            let path = dir.join(&name);
            assert!(path.exists(), "{}: `{name}` does not exist", file.display());
            path.canonicalize().unwrap()
        })
        .collect()
}

#[test]
fn every_manifest_is_used_by_a_kustomization() {
    let dirs = kustomization_dirs();
    let names: Vec<String> = dirs.iter().map(|d| relative(d)).collect();
    for expected in [
        "sidecar",
        "monitoring",
        "monitoring/servicemonitor",
        "components/redis",
    ] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    let used: BTreeSet<PathBuf> = dirs.iter().flat_map(|d| referenced_by(d)).collect();
    let mut yaml = 0;
    for file in files_under(&deploy_dir()) {
        let is_yaml = file.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if !is_yaml || is_kustomization(&file) {
            continue;
        }
        yaml += 1;
        assert!(
            used.contains(&file.canonicalize().unwrap()),
            "{} is in no kustomization (resources, patches or generators): \
             `kubectl apply -k` would never apply it",
            relative(&file)
        );
    }
    assert!(yaml >= 8, "only {yaml} YAML files besides kustomizations");
}

/// The kustomize command: `AUTHMD_KUSTOMIZE` split on whitespace (e.g.
/// `kubectl kustomize` or `kustomize build`), else `kubectl kustomize`.
fn kustomize() -> Option<Vec<String>> {
    let configured = std::env::var(KUSTOMIZE_ENV).ok();
    let words: Vec<String> = configured
        .as_deref()
        .unwrap_or("kubectl kustomize")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let runs = !words.is_empty()
        && Command::new(&words[0])
            .args(&words[1..])
            .arg("--help")
            .output()
            .is_ok_and(|o| o.status.success());
    if runs {
        return Some(words);
    }
    assert!(
        configured.is_none(),
        "{KUSTOMIZE_ENV}={configured:?} is set but `{} --help` does not run",
        words.join(" ")
    );
    eprintln!(
        "skipped: `kubectl kustomize` is not available (install kubectl, or set {KUSTOMIZE_ENV})"
    );
    None
}

/// One kustomization's output.
struct Rendered {
    /// Its directory, relative to `deploy/kubernetes`.
    dir: String,
    text: String,
    objects: Vec<Value>,
}

/// The name under which [`render_all`] returns the sidecar with Redis turned on.
const WITH_REDIS: &str = "sidecar+redis";

/// Every kustomization's output, and the sidecar's with the Redis component turned
/// on ([`WITH_REDIS`]).
fn render_all(kustomize: &[String]) -> Vec<Rendered> {
    let mut rendered: Vec<Rendered> = kustomization_dirs()
        .into_iter()
        .map(|dir| render(kustomize, &dir, relative(&dir)))
        .collect();
    rendered.push(render_with_redis(kustomize));
    rendered
}

fn render(kustomize: &[String], dir: &Path, name: String) -> Rendered {
    let out = Command::new(&kustomize[0])
        .args(&kustomize[1..])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {name}: {}",
        kustomize.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let objects: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    assert!(!objects.is_empty(), "{name} renders nothing");
    Rendered {
        dir: name,
        text,
        objects,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The sidecar with the Redis component on, as `components/redis` tells a reader
/// to turn it on: in a copy of `deploy/kubernetes`, the commented `components:` of
/// the sidecar's kustomization and `limits.global` of its config uncommented.
fn render_with_redis(kustomize: &[String]) -> Rendered {
    let temp = tempfile::tempdir().unwrap();
    copy_dir(&deploy_dir(), temp.path());
    let sidecar = temp.path().join("sidecar");
    for (file, block) in [
        ("kustomization.yaml", "components"),
        ("config.yaml", "global"),
    ] {
        let path = sidecar.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, uncomment(&text, block)).unwrap();
    }
    render(kustomize, &sidecar, WITH_REDIS.to_owned())
}

fn kind_of(object: &Value) -> String {
    object["kind"].as_str().unwrap().to_owned()
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap()
}

/// A built-in kind (which kubernetes-validate has schemas for): the core group, an
/// unqualified group (`apps`, `policy`) or one under `k8s.io`.
fn is_builtin(object: &Value) -> bool {
    let api_version = object["apiVersion"].as_str().unwrap();
    match api_version.rsplit_once('/') {
        None => true,
        Some((group, _)) => !group.contains('.') || group.ends_with(".k8s.io"),
    }
}

fn kinds(rendered: &Rendered) -> Vec<String> {
    let mut kinds: Vec<String> = rendered.objects.iter().map(kind_of).collect();
    kinds.sort();
    kinds
}

fn find<'a>(rendered: &'a [Rendered], dir: &str) -> &'a Rendered {
    rendered
        .iter()
        .find(|r| r.dir == dir)
        .unwrap_or_else(|| panic!("no kustomization {dir}"))
}

fn object<'a>(rendered: &'a Rendered, kind: &str) -> &'a Value {
    let mut matching = rendered.objects.iter().filter(|o| kind_of(o) == kind);
    let found = matching
        .next()
        .unwrap_or_else(|| panic!("{}: no {kind}", rendered.dir));
    assert!(
        matching.next().is_none(),
        "{}: several {kind}s",
        rendered.dir
    );
    found
}

/// What each of this test's own kustomizations renders (the injector's belongs to
/// its own tests; it is validated like the rest).
fn assert_expected_kinds(rendered: &[Rendered]) {
    for (dir, expected) in [
        (
            "sidecar",
            &[
                "ConfigMap",
                "Deployment",
                "NetworkPolicy",
                "Secret",
                "Service",
            ][..],
        ),
        ("monitoring", &["PodMonitor"][..]),
        (
            "monitoring/servicemonitor",
            &["Service", "ServiceMonitor"][..],
        ),
        (
            "components/redis",
            &["Deployment", "NetworkPolicy", "Secret", "Service"][..],
        ),
        (
            WITH_REDIS,
            &[
                "ConfigMap",
                "Deployment",
                "Deployment",
                "NetworkPolicy",
                "NetworkPolicy",
                "Secret",
                "Secret",
                "Service",
                "Service",
            ][..],
        ),
    ] {
        assert_eq!(kinds(find(rendered, dir)), expected, "{dir}");
    }
}

#[test]
fn the_rendered_builtin_objects_validate_against_the_kubernetes_schemas() {
    let (Some(kustomize), Some(validator)) = (kustomize(), support::kube::validator()) else {
        return;
    };
    let rendered = render_all(&kustomize);
    assert_expected_kinds(&rendered);
    let temp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let (mut builtin, mut custom) = (0, 0);
    for r in &rendered {
        let path = temp
            .path()
            .join(format!("{}.yaml", r.dir.replace('/', "-")));
        std::fs::write(&path, &r.text).unwrap();
        files.push(path);
        builtin += r.objects.iter().filter(|o| is_builtin(o)).count();
        custom += r.objects.iter().filter(|o| !is_builtin(o)).count();
    }
    let (passed, report) = support::kube::validate(&validator, &files);
    assert!(passed, "{report}");
    // Every built-in object passed; the custom resources are the only ones without a
    // schema here (validate-crds.mjs checks them, in the next test).
    assert!(builtin >= 7, "{report}");
    assert_eq!(
        report.matches(" passed for resource ").count(),
        builtin,
        "{report}"
    );
    assert_eq!(
        report.matches("Couldn't find schema").count(),
        custom,
        "{report}"
    );

    // The validator is strict: a misspelt field fails.
    let typo = temp.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 80, targetPrt: 8080}]\n",
    )
    .unwrap();
    let (passed, report) = support::kube::validate(&validator, &[&typo]);
    assert!(!passed, "an unknown field passed: {report}");
}

#[tokio::test]
async fn the_rendered_custom_resources_validate_against_their_crds() {
    let Some(kustomize) = kustomize() else {
        return;
    };
    if !support::node::ready(CRD_PACKAGES).await {
        return;
    }
    let rendered = render_all(&kustomize);
    assert_expected_kinds(&rendered);
    let entries: Vec<Value> = rendered
        .iter()
        .flat_map(|r| {
            r.objects
                .iter()
                .filter(|o| !is_builtin(o))
                .map(|o| json!({"source": r.dir, "object": o}))
        })
        .collect();
    // At least this test's PodMonitor and ServiceMonitor.
    assert!(entries.len() >= 2, "{entries:?}");
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("custom-resources.json");
    std::fs::write(&path, serde_json::to_string(&entries).unwrap()).unwrap();
    let summary = support::node::run(CRD_SCRIPT, &[path.to_str().unwrap()]).await;
    assert_eq!(summary["validated"], entries.len(), "{summary}");
    assert_eq!(summary["kinds"]["PodMonitor"], 1, "{summary}");
    assert_eq!(summary["kinds"]["ServiceMonitor"], 1, "{summary}");

    // The same objects with two planted mistakes: a value the CRD's schema refuses,
    // and a misspelt field (which a schema without `additionalProperties: false`
    // would let through, and an API server would prune).
    let mut broken = entries.clone();
    for entry in &mut broken {
        match entry["object"]["kind"].as_str() {
            Some("PodMonitor") => {
                entry["object"]["spec"]["podMetricsEndpoints"][0]["interval"] = json!("30 seconds");
            }
            Some("ServiceMonitor") => {
                let endpoint = entry["object"]["spec"]["endpoints"][0]
                    .as_object_mut()
                    .unwrap();
                endpoint.insert("intervall".into(), json!("30s"));
            }
            _ => {}
        }
    }
    std::fs::write(&path, serde_json::to_string(&broken).unwrap()).unwrap();
    let out = tokio::process::Command::new("node")
        .arg(CRD_SCRIPT)
        .arg(&path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "planted mistakes passed: {stdout}");
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    let error = summary["error"].as_str().unwrap();
    assert!(error.starts_with("2 problem(s)"), "{error}");
    assert!(
        error.contains("PodMonitor/authmd-proxy: schema:") && error.contains("interval"),
        "{error}"
    );
    assert!(
        error.contains("ServiceMonitor/authmd-proxy: type:") && error.contains("intervall"),
        "{error}"
    );
}

/// The container named `name` among a pod spec's init containers and containers.
fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["initContainers"]
        .as_array()
        .into_iter()
        .chain(pod["containers"].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn port_number(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no port {name}"))["containerPort"]
        .as_u64()
        .unwrap()
}

/// The value after `flag` in a container's args.
fn arg<'a>(container: &'a Value, flag: &str) -> &'a str {
    let args = container["args"].as_array().unwrap();
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    args[at + 1].as_str().unwrap()
}

fn port_of(address: &str) -> u64 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

fn seconds(value: &Value) -> u64 {
    humantime::parse_duration(value.as_str().unwrap())
        .unwrap()
        .as_secs()
}

/// A Secret's or ConfigMap's entry as text (`data` is base64, `stringData` not).
fn entry(object: &Value, key: &str) -> String {
    if let Some(text) = object["stringData"][key].as_str() {
        return text.to_owned();
    }
    if kind_of(object) == "ConfigMap" {
        return object["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("ConfigMap {} has no {key}", name_of(object)))
            .to_owned();
    }
    let encoded: String = object["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{} has no {key}", name_of(object)))
        .split_whitespace()
        .collect();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap()
}

fn by_name<'a>(rendered: &'a Rendered, kind: &str, name: &str) -> &'a Value {
    rendered
        .objects
        .iter()
        .find(|o| kind_of(o) == kind && name_of(o) == name)
        .unwrap_or_else(|| panic!("{}: no {kind} {name}", rendered.dir))
}

/// `value` as the kubelet expands it: `$(NAME)` of a variable defined earlier in
/// `env` becomes its value, `$$` is one `$`, anything else stays as written.
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let reference = after
            .strip_prefix('(')
            .and_then(|inner| inner.split_once(')'))
            .and_then(|(name, tail)| env.get(name).map(|value| (value, tail)));
        match reference {
            Some((value, tail)) => {
                out.push_str(value);
                rest = tail;
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The environment a container gets from its `env` (literals, with `$(NAME)`
/// expanded as the kubelet does, and Secret or ConfigMap keys, looked up in the
/// rendered objects).
fn container_env(rendered: &Rendered, container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap().to_owned();
        let value = if let Some(value) = var["value"].as_str() {
            expand(value, &env)
        } else if let Some(r) = var["valueFrom"].get("secretKeyRef") {
            let secret = by_name(rendered, "Secret", r["name"].as_str().unwrap());
            entry(secret, r["key"].as_str().unwrap())
        } else if let Some(r) = var["valueFrom"].get("configMapKeyRef") {
            let map = by_name(rendered, "ConfigMap", r["name"].as_str().unwrap());
            entry(map, r["key"].as_str().unwrap())
        } else {
            panic!("{name}: unsupported env source {var}");
        };
        env.insert(name, value);
    }
    env
}

/// Runs `check` on `config` with only `env`, after pointing its signing keys at a
/// freshly generated key (the real ones are mounted from a Secret in the pod).
fn check(config: &str, env: &BTreeMap<String, String>, signing: &[String]) {
    let temp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["tokens", "generate-key"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = temp.path().join("signing.pem");
    std::fs::write(&key, &out.stdout).unwrap();
    let mut text = config.to_owned();
    for path in signing {
        assert!(text.contains(path.as_str()));
        text = text.replace(path.as_str(), key.to_str().unwrap());
    }
    let file = temp.path().join("config.yaml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&file)
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check with the container's environment {:?}: {}",
        env.keys().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A label selector's `matchLabels` matches `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector["matchLabels"].as_object().unwrap();
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels[k] == *v)
}

/// The one `kind` (a Service or a NetworkPolicy) of `rendered` that selects pods
/// labelled `labels`.
fn selecting<'a>(rendered: &'a Rendered, kind: &str, labels: &Value) -> &'a Value {
    let selector = |o: &Value| match kind {
        "Service" => json!({"matchLabels": o["spec"]["selector"]}),
        _ => o["spec"]["podSelector"].clone(),
    };
    let matching: Vec<&Value> = rendered
        .objects
        .iter()
        .filter(|o| kind_of(o) == kind && selects(&selector(o), labels))
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "{}: {} {kind}s select {labels}",
        rendered.dir,
        matching.len()
    );
    matching[0]
}

#[test]
fn the_sidecar_config_passes_check_with_its_container_environment_and_the_wiring_agrees() {
    let Some(kustomize) = kustomize() else {
        return;
    };
    let rendered = render_all(&kustomize);
    assert_expected_kinds(&rendered);

    // Every rendered workload with the sidecar: its config passes `check`.
    let mut checked = 0;
    for r in &rendered {
        for workload in r.objects.iter().filter(|o| kind_of(o) == "Deployment") {
            let pod = &workload["spec"]["template"]["spec"];
            let has_sidecar = pod["initContainers"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["name"] == SIDECAR));
            if !has_sidecar {
                continue;
            }
            let proxy = container(pod, SIDECAR);
            let volumes = pod["volumes"].as_array().unwrap();
            let volume = |name: &str| {
                volumes
                    .iter()
                    .find(|v| v["name"] == name)
                    .unwrap_or_else(|| panic!("no volume {name}"))
            };
            let mount = |name: &str| {
                proxy["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["name"] == name)
                    .unwrap_or_else(|| panic!("no mount of {name}"))["mountPath"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            let config_path = arg(proxy, "--config");
            assert_eq!(
                config_path,
                format!("{}/config.yaml", mount("authmd-config"))
            );
            let map_name = volume("authmd-config")["configMap"]["name"]
                .as_str()
                .unwrap();
            let text = entry(by_name(r, "ConfigMap", map_name), "config.yaml");
            let config: Value = serde_norway::from_str(&text).unwrap();

            // The signing keys are files of the mounted Secret.
            let secret_dir = mount("authmd-secrets");
            let secret_name = volume("authmd-secrets")["secret"]["secretName"]
                .as_str()
                .unwrap();
            let secret = by_name(r, "Secret", secret_name);
            let signing = strings(&config["tokens"], "signing_keys");
            assert!(!signing.is_empty(), "PostgreSQL needs shared signing keys");
            for path in &signing {
                let key = path
                    .strip_prefix(&format!("{secret_dir}/"))
                    .unwrap_or_else(|| panic!("{path} is not in the Secret's mount"));
                // A placeholder, never a usable key published with the repository.
                assert!(!entry(secret, key).contains("PRIVATE KEY"));
            }
            check(&text, &container_env(r, proxy), &signing);
            checked += 1;

            // The flags and the config say the same; the ports are the flags'.
            let listen = port_of(arg(proxy, "--listen"));
            let admin = port_of(arg(proxy, "--admin-listen"));
            assert_eq!(port_of(config["listen"].as_str().unwrap()), listen);
            assert_eq!(port_of(config["admin_listen"].as_str().unwrap()), admin);
            assert_eq!(arg(proxy, "--upstream"), config["upstream"]["url"]);
            assert_eq!(port_number(proxy, "authmd"), listen);
            assert_eq!(port_number(proxy, "authmd-admin"), admin);
            let annotations = &workload["spec"]["template"]["metadata"]["annotations"];
            assert_eq!(annotations["prometheus.io/port"], admin.to_string());
            assert_eq!(annotations["prometheus.io/scrape"], "true");

            // Probes on the admin port; the startup probe never waits for the API.
            for (probe, path) in [
                ("startupProbe", "/healthz"),
                ("readinessProbe", "/readyz"),
                ("livenessProbe", "/healthz"),
            ] {
                assert_eq!(proxy[probe]["httpGet"]["path"], path, "{probe}");
                assert_eq!(proxy[probe]["httpGet"]["port"], "authmd-admin", "{probe}");
            }
            assert_eq!(proxy["restartPolicy"], "Always");
            assert_eq!(proxy["securityContext"]["readOnlyRootFilesystem"], true);
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"],
                "RuntimeDefault"
            );

            // The grace period covers the API's preStop, the shutdown delay and the
            // drain.
            let pre_stop: u64 = pod["containers"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|c| c["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64())
                .max()
                .unwrap_or(0);
            let needed = pre_stop
                + seconds(&config["server"]["shutdown_delay"])
                + seconds(&config["server"]["shutdown_grace"]);
            let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
            assert!(grace > needed, "{grace} s <= {needed} s");

            // The Service reaches the proxy, never the admin port.
            let labels = &workload["spec"]["template"]["metadata"]["labels"];
            let service = selecting(r, "Service", labels);
            let targets: Vec<u64> = service["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["targetPort"].as_u64().expect("a port number"))
                .collect();
            assert_eq!(targets, [listen]);

            // The NetworkPolicy: the proxy's port from anywhere, the admin port from
            // one namespace only, and nothing else in.
            let policy = selecting(r, "NetworkPolicy", labels);
            let ingress = policy["spec"]["ingress"].as_array().unwrap();
            let open: Vec<(u64, bool)> = ingress
                .iter()
                .flat_map(|rule| {
                    let restricted = rule.get("from").is_some();
                    rule["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(move |p| (p["port"].as_u64().expect("a port number"), restricted))
                })
                .collect();
            assert_eq!(open, [(listen, false), (admin, true)]);
        }
    }
    assert_eq!(
        checked, 2,
        "the sidecar's Deployment, without and with Redis"
    );

    // The monitors scrape the admin port.
    let sidecar = find(&rendered, "sidecar");
    let pod = &object(sidecar, "Deployment")["spec"]["template"];
    let proxy = container(&pod["spec"], SIDECAR);
    let monitor = object(find(&rendered, "monitoring"), "PodMonitor");
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "authmd-admin");
    assert_eq!(endpoint["path"], "/metrics");
    let alternative = find(&rendered, "monitoring/servicemonitor");
    let service = object(alternative, "Service");
    assert!(selects(
        &json!({"matchLabels": service["spec"]["selector"]}),
        &pod["metadata"]["labels"]
    ));
    let port = &service["spec"]["ports"][0];
    assert_eq!(port["targetPort"], port_number(proxy, "authmd-admin"));
    let monitor = object(alternative, "ServiceMonitor");
    assert!(selects(
        &monitor["spec"]["selector"],
        &service["metadata"]["labels"]
    ));
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], port["name"]);
}

/// Bytes of a Kubernetes quantity (`128Mi`) or a Redis size (`64mb`).
fn bytes(size: &str) -> u64 {
    let at = size
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(size.len());
    let (number, unit) = size.split_at(at);
    let unit = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "ki" | "kb" => 1 << 10,
        "mi" | "mb" => 1 << 20,
        "gi" | "gb" => 1 << 30,
        other => panic!("unit {other} of {size}"),
    };
    number.parse::<u64>().unwrap() * unit
}

/// Runs Valkey's start (the container's command and args) with `password`, a
/// stand-in `valkey-server` that prints each argument it gets in brackets, and
/// nothing else in the environment: whether it succeeded, stdout and stderr.
fn start_valkey(server: &Value, password: &str) -> (bool, String, String) {
    let stand_in = tempfile::tempdir().unwrap();
    let program = stand_in.path().join("valkey-server");
    std::fs::write(
        &program,
        "#!/bin/sh\nfor a in \"$@\"; do printf '[%s]\\n' \"$a\"; done\n",
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&program).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&program, permissions).unwrap();
    let words: Vec<&str> = server["command"]
        .as_array()
        .unwrap()
        .iter()
        .chain(server["args"].as_array().unwrap())
        .map(|w| w.as_str().unwrap())
        .collect();
    let out = Command::new(words[0])
        .args(&words[1..])
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", stand_in.path().display()),
        )
        .env("AUTHMD_REDIS_PASSWORD", password)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_redis_component_hands_the_proxy_its_url_and_lets_only_the_proxy_in() {
    let Some(kustomize) = kustomize() else {
        return;
    };
    let rendered = render_all(&kustomize);
    assert_expected_kinds(&rendered);

    // Without the component: no Redis, no REDIS_URL, no `limits.global`.
    let plain = find(&rendered, "sidecar");
    let plain_proxy = container(
        &object(plain, "Deployment")["spec"]["template"]["spec"],
        SIDECAR,
    );
    assert!(!container_env(plain, plain_proxy).contains_key("REDIS_URL"));
    let plain_config: Value =
        serde_norway::from_str(&entry(object(plain, "ConfigMap"), "config.yaml")).unwrap();
    assert!(plain_config["limits"].get("global").is_none());

    let r = find(&rendered, WITH_REDIS);
    let api = &by_name(r, "Deployment", "api")["spec"]["template"];
    let api_labels = &api["metadata"]["labels"];
    let proxy = container(&api["spec"], SIDECAR);
    let valkey = by_name(r, "Deployment", "authmd-redis");
    let pod = &valkey["spec"]["template"];
    let valkey_labels = &pod["metadata"]["labels"];
    let server = container(&pod["spec"], "redis");
    let port = port_number(server, "redis");

    // The proxy's config reads the URL the component sets; quotas stay in the store
    // (this Valkey forgets everything when it restarts).
    let config: Value =
        serde_norway::from_str(&entry(object(r, "ConfigMap"), "config.yaml")).unwrap();
    let global = &config["limits"]["global"];
    assert_eq!(global["url"], "${REDIS_URL}");
    assert!(global.get("quotas").is_none_or(|q| q == false), "{global}");

    // The URL names the Service, its port, and the password Valkey starts with.
    let service = selecting(r, "Service", valkey_labels);
    assert_eq!(name_of(service), "authmd-redis");
    assert!(!selects(
        &json!({"matchLabels": service["spec"]["selector"]}),
        api_labels
    ));
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(service_port["targetPort"], port);
    let server_env = container_env(r, server);
    let password = &server_env["AUTHMD_REDIS_PASSWORD"];
    assert_eq!(
        container_env(r, proxy)["REDIS_URL"],
        format!(
            "redis://:{password}@{}:{}/0",
            name_of(service),
            service_port["port"]
        )
    );

    // Only the proxy's pods reach Valkey, and Valkey reaches nothing.
    let policy = selecting(r, "NetworkPolicy", valkey_labels);
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(policy["spec"]["egress"], json!([]));
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1, "{ingress:?}");
    let from = ingress[0]["from"].as_array().unwrap();
    assert_eq!(from.len(), 1, "{from:?}");
    assert_eq!(
        from[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["podSelector"],
        "this namespace's pods only"
    );
    assert!(selects(&from[0]["podSelector"], api_labels));
    assert!(!selects(&from[0]["podSelector"], valkey_labels));
    assert!(!selects(
        &from[0]["podSelector"],
        &by_name(plain, "Deployment", "api")["spec"]["template"]["metadata"]["labels"]
    ));
    assert_eq!(
        ingress[0]["ports"],
        json!([{"port": port, "protocol": "TCP"}])
    );
    // The proxy's own policy lets it out to Valkey.
    let egress = selecting(r, "NetworkPolicy", api_labels)["spec"]["egress"]
        .as_array()
        .unwrap();
    assert!(
        egress.iter().any(|rule| {
            rule["to"]
                .as_array()
                .is_some_and(|to| to.iter().any(|t| selects(&t["podSelector"], valkey_labels)))
                && rule["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["port"] == port)
        }),
        "{egress:?}"
    );

    // Valkey: one, replaced rather than rolled, in memory only, non-root,
    // read-only, bounded.
    assert_eq!(valkey["spec"]["replicas"], 1);
    assert_eq!(valkey["spec"]["strategy"]["type"], "Recreate");
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        assert!(volume.get("emptyDir").is_some(), "{volume}");
    }
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["spec"]["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    let security = &server["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    let limit = bytes(server["resources"]["limits"]["memory"].as_str().unwrap());
    let script = server["args"][0].as_str().unwrap();
    // The kubelet would expand a `$(...)` in the script before the shell sees it.
    assert!(!script.contains("$("), "{script}");

    // The start refuses the placeholder, and anything that is not a long password
    // of letters and digits (it goes into the URL unescaped)...
    let placeholder = password;
    for refused in [
        placeholder.as_str(),
        "",
        &"a".repeat(31),
        &format!("{}-", "a".repeat(40)),
        &format!("{}@x", "a".repeat(40)),
    ] {
        let (ok, stdout, stderr) = start_valkey(server, refused);
        assert!(!ok && stdout.is_empty(), "{refused:?} started: {stdout}");
        assert!(stderr.contains("authmd-redis: "), "{refused:?}: {stderr}");
    }
    // ... and runs the server with a good one, in memory only, under the limit.
    let good = "0123456789abcdef".repeat(4);
    let (ok, stdout, stderr) = start_valkey(server, &good);
    assert!(ok, "{stderr}");
    let args: Vec<&str> = stdout
        .lines()
        .map(|l| l.strip_prefix('[').unwrap().strip_suffix(']').unwrap())
        .collect();
    let after = |flag: &str| {
        let at = args
            .iter()
            .position(|a| *a == flag)
            .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
        args[at + 1]
    };
    assert_eq!(after("--port"), port.to_string());
    assert_eq!(after("--save"), "", "no snapshots");
    assert_eq!(after("--appendonly"), "no");
    assert_eq!(after("--requirepass"), good);
    assert_eq!(after("--maxmemory-policy"), "volatile-ttl");
    let maxmemory = bytes(after("--maxmemory"));
    assert!(
        maxmemory > 0 && maxmemory <= limit * 3 / 4,
        "--maxmemory {maxmemory} leaves too little of the {limit} byte limit"
    );
}

#[test]
fn the_hand_written_sidecar_has_the_shape_inject_writes() {
    let path = deploy_dir().join("sidecar/deployment.yaml");
    let written = yaml_file(&path);
    let pod = &written["spec"]["template"]["spec"];
    let ours = container(pod, SIDECAR).clone();
    let secret = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "authmd-secrets")
        .unwrap()["secret"]["secretName"]
        .clone();

    // The same workload without the sidecar, annotated for `inject`.
    let mut bare = written.clone();
    let spec = &mut bare["spec"]["template"]["spec"];
    spec.as_object_mut().unwrap().remove("initContainers");
    spec.as_object_mut()
        .unwrap()
        .remove("terminationGracePeriodSeconds");
    let volumes = spec["volumes"].as_array_mut().unwrap();
    volumes.retain(|v| !v["name"].as_str().unwrap().starts_with("authmd-"));
    if volumes.is_empty() {
        spec.as_object_mut().unwrap().remove("volumes");
    }
    bare["spec"]["template"]["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    bare["metadata"]["annotations"] = json!({
        "authmd.dev/inject": "enabled",
        "authmd.dev/upstream-port": port_of(arg(&ours, "--upstream")).to_string(),
        "authmd.dev/secret": secret,
    });
    let injected: Value = serde_norway::from_str(
        &inject(
            &serde_norway::to_string(&bare).unwrap(),
            &Defaults::default(),
        )
        .unwrap()
        .yaml,
    )
    .unwrap();
    let injected_pod = &injected["spec"]["template"]["spec"];
    let theirs = container(injected_pod, SIDECAR);

    for field in [
        "image",
        "args",
        "restartPolicy",
        "ports",
        "readinessProbe",
        "livenessProbe",
        "volumeMounts",
    ] {
        assert_eq!(ours[field], theirs[field], "{field}");
    }
    // Ours has at least inject's security context, and its environment.
    for (key, value) in theirs["securityContext"].as_object().unwrap() {
        assert_eq!(
            &ours["securityContext"][key], value,
            "securityContext.{key}"
        );
    }
    for var in theirs["env"].as_array().unwrap() {
        let mine = ours["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == var["name"])
            .unwrap_or_else(|| panic!("no {}", var["name"]));
        let (a, b) = (
            &mine["valueFrom"]["secretKeyRef"],
            &var["valueFrom"]["secretKeyRef"],
        );
        assert_eq!((&a["name"], &a["key"]), (&b["name"], &b["key"]));
    }
    // The same volumes, by name and source.
    let sources = |pod: &Value| -> BTreeMap<String, String> {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let source = v
                    .as_object()
                    .unwrap()
                    .keys()
                    .find(|k| *k != "name")
                    .unwrap();
                let target = v[source]["name"]
                    .as_str()
                    .or(v[source]["secretName"].as_str())
                    .unwrap_or("");
                (
                    v["name"].as_str().unwrap().to_owned(),
                    format!("{source}:{target}"),
                )
            })
            .collect()
    };
    assert_eq!(sources(pod), sources(injected_pod));
    assert_eq!(
        written["spec"]["template"]["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("prometheus.io/"))
            .collect::<Vec<_>>(),
        injected["spec"]["template"]["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("prometheus.io/"))
            .collect::<Vec<_>>()
    );
    assert!(
        pod["terminationGracePeriodSeconds"].as_u64().unwrap()
            >= injected_pod["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap()
    );
}
