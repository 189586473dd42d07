//! `authmd-proxy inject`: golden files of the injected workloads (a Deployment, a
//! StatefulSet, a CronJob as a regular container, a Pod beside an existing native
//! sidecar, a Deployment whose Services are pointed at the proxy), idempotency,
//! untouched documents byte for byte, and clear errors; the warnings on stderr
//! about what the input leaves open (no Service to retarget, a Service port past
//! the proxy, no public URL, a guessed API port); and a proxy started with the
//! injected sidecar's own arguments announcing the annotated public URL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step should fail loudly"
)]

use std::io::Write;
use std::process::{Command, Stdio};

use authmd_proxy::inject::{Defaults, InjectError, inject};

use crate::support;

const BIN: &str = env!("CARGO_BIN_EXE_authmd-proxy");

fn golden(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/inject/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn injected_workloads_match_their_golden_files_and_injecting_twice_changes_nothing() {
    for (input, expected) in [
        ("deployment.yaml", "deployment.injected.yaml"),
        ("workloads.yaml", "workloads.injected.yaml"),
        ("service.yaml", "service.injected.yaml"),
    ] {
        let out = inject(&golden(input), &Defaults::default()).unwrap().yaml;
        assert_eq!(out, golden(expected), "{input}");
        let again = inject(&out, &Defaults::default()).unwrap();
        assert_eq!(
            again.yaml, out,
            "{input}: a second injection changes nothing"
        );
        assert_eq!(again.warnings, [], "{input}: nor warns");
    }
}

#[test]
fn documents_without_the_annotation_pass_through_byte_for_byte() {
    let text = "# a comment that YAML round trips would lose\n\
                apiVersion: v1\nkind: Service\nmetadata: {name: s}   # trailing\n\
                spec:\n  ports: [ {port: 80} ]\n\
                --- \n\
                apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n  annotations: {authmd.dev/inject: disabled}\n\
                spec:\n  template:\n    spec:\n      containers: [{name: a, image: a}]\n\
                ---\n\
                # only a comment\n\
                ---\n\
                apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {\"k\": 'v'}";
    assert_eq!(inject(text, &Defaults::default()).unwrap().yaml, text);
    assert_eq!(inject("", &Defaults::default()).unwrap().yaml, "");
}

#[test]
fn the_sidecar_is_native_unless_asked_otherwise() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {authmd.dev/inject: enabled}\nspec:\n  containers: [{name: app, image: app, ports: [{containerPort: 3000}]}]\n";
    let native: serde_norway::Value =
        serde_norway::from_str(&inject(pod, &Defaults::default()).unwrap().yaml).unwrap();
    let sidecar = &native["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], "authmd-proxy");
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(native["spec"]["containers"].as_sequence().unwrap().len(), 1);
    let args: Vec<&str> = sidecar["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--upstream", "http://127.0.0.1:3000"])
    );

    let legacy = Defaults {
        native: false,
        ..Defaults::default()
    };
    let regular: serde_norway::Value =
        serde_norway::from_str(&inject(pod, &legacy).unwrap().yaml).unwrap();
    let containers = regular["spec"]["containers"].as_sequence().unwrap();
    assert_eq!(containers[1]["name"], "authmd-proxy");
    assert!(containers[1].get("restartPolicy").is_none());
    assert!(regular["spec"].get("initContainers").is_none());
}

#[test]
fn bad_input_is_a_clear_error() {
    let malformed = "apiVersion: v1\nkind: Service\n---\nkind: Pod\nmetadata: {name: [unclosed\n";
    match inject(malformed, &Defaults::default()) {
        Err(InjectError::Yaml { document, line, .. }) => {
            assert_eq!(document, 2);
            assert!((4..=6).contains(&line), "line {line}");
        }
        other => panic!("{other:?}"),
    }
    let pod = |annotations: &str| {
        format!(
            "kind: Pod\nmetadata:\n  name: p\n  annotations: {{authmd.dev/inject: enabled, {annotations}}}\nspec:\n  containers: [{{name: app, image: app, ports: [{{containerPort: 3000}}]}}]\n"
        )
    };
    let error = inject(&pod("authmd.dev/port: http"), &Defaults::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "Pod/p: annotation `authmd.dev/port`: `http` is not a port (1-65535)"
    );
    let error = inject(&pod("authmd.dev/port: '3000'"), &Defaults::default())
        .unwrap_err()
        .to_string();
    assert!(error.contains("both listen on 3000"), "{error}");
    let error = inject(
        &pod("authmd.dev/native-sidecar: maybe"),
        &Defaults::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("`maybe` is not `true` or `false`"),
        "{error}"
    );
    let no_containers =
        "kind: Pod\nmetadata: {name: p, annotations: {authmd.dev/inject: enabled}}\nspec: {}\n";
    let error = inject(no_containers, &Defaults::default())
        .unwrap_err()
        .to_string();
    assert_eq!(error, "Pod/p: the pod spec has no `containers` list");
}

/// Runs the binary with `args` and `input` on its standard input.
fn with_stdin(args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_command_reads_files_or_standard_input_and_exits_64_on_bad_input() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(BIN)
        .args(["inject", &format!("{dir}/tests/inject/deployment.yaml")])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        golden("deployment.injected.yaml")
    );

    let out = with_stdin(
        &["inject", "--image", "example/authmd:9"],
        &golden("deployment.yaml"),
    );
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("image: example/authmd:9"));

    let out = with_stdin(&["inject"], "kind: Pod\nmetadata: {name: [\n");
    assert_eq!(out.status.code(), Some(64));
    let error = String::from_utf8(out.stderr).unwrap();
    assert!(error.contains("<stdin>: document 1"), "{error}");
}

#[test]
fn injected_workloads_validate_against_the_kubernetes_schemas() {
    let Some(validator) = support::kube::validator() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for name in ["deployment.yaml", "workloads.yaml", "service.yaml"] {
        let legacy = Defaults {
            native: false,
            ..Defaults::default()
        };
        for (suffix, defaults) in [("native", Defaults::default()), ("legacy", legacy)] {
            let path = dir.path().join(format!("{suffix}-{name}"));
            std::fs::write(&path, inject(&golden(name), &defaults).unwrap().yaml).unwrap();
            files.push(path);
        }
    }
    let (passed, report) = support::kube::validate(&validator, &files);
    assert!(passed, "{report}");
    assert_eq!(report.matches("passed").count(), 20, "{report}");
}

/// The sidecar's `args` in an injected manifest (the first workload that has one).
fn sidecar_args(injected: &str) -> Vec<String> {
    for document in serde_norway::Deserializer::from_str(injected) {
        let value: serde_norway::Value = serde::Deserialize::deserialize(document).unwrap();
        let template = match value["kind"].as_str() {
            Some("Pod") => &value,
            _ => &value["spec"]["template"],
        };
        let spec = &template["spec"];
        for list in ["initContainers", "containers"] {
            for container in spec[list].as_sequence().into_iter().flatten() {
                if container["name"] == "authmd-proxy" {
                    return container["args"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap().to_owned())
                        .collect();
                }
            }
        }
    }
    panic!("no sidecar in:\n{injected}")
}

/// What the binary wrote on stdout and stderr for `input`, having succeeded.
fn injected(input: &str) -> (String, String) {
    let out = with_stdin(&["inject"], input);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

#[test]
fn services_that_select_an_injected_workload_are_pointed_at_the_proxy() {
    let (stdout, stderr) = injected(&golden("service.yaml"));
    assert_eq!(stdout, golden("service.injected.yaml"));
    // Both of the API's Services now reach it through the proxy, so nothing is left
    // to warn about.
    assert_eq!(stderr, "");
    let (again, stderr) = injected(&stdout);
    assert_eq!(again, stdout, "a second injection changes nothing");
    assert_eq!(stderr, "");
}

#[test]
fn a_workload_without_its_service_in_the_input_warns_naming_the_ports() {
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  annotations:\n    authmd.dev/inject: enabled\n    authmd.dev/public-url: https://api.example.com\n\
                      spec:\n  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n    spec:\n      containers: [{name: api, image: api, ports: [{containerPort: 5000}]}]\n";
    let (stdout, stderr) = injected(deployment);
    assert!(stdout.contains("http://127.0.0.1:5000"), "{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let line = lines[0];
    assert!(
        line.starts_with("authmd-proxy: warning: <stdin>: Deployment/api: "),
        "{line}"
    );
    assert!(line.contains("targetPort 8080"), "{line}");
    assert!(line.contains("5000"), "{line}");

    // A Service of another app in the same input does not count.
    let other = format!(
        "{deployment}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 5000}}]\n"
    );
    let (stdout, stderr) = injected(&other);
    assert!(
        stdout.ends_with("ports: [{port: 80, targetPort: 5000}]\n"),
        "{stdout}"
    );
    assert!(stderr.contains("targetPort 8080"), "{stderr}");
}

#[test]
fn a_service_port_to_another_port_of_the_pod_is_reported() {
    let input = "kind: Pod\nmetadata:\n  name: p\n  labels: {app: p}\n  annotations: {authmd.dev/inject: enabled, authmd.dev/public-url: 'https://p.example.com'}\n\
                 spec:\n  containers: [{name: app, image: app, ports: [{containerPort: 3000}, {name: grpc, containerPort: 9000}]}]\n\
                 ---\nkind: Service\nmetadata: {name: p}\nspec:\n  selector: {app: p}\n  ports: [{name: http, port: 80, targetPort: 3000}, {name: grpc, port: 90, targetPort: grpc}]\n";
    let (stdout, stderr) = injected(input);
    assert!(
        stdout.contains("targetPort: 8080") && stdout.contains("targetPort: grpc"),
        "{stdout}"
    );
    assert!(
        stderr.contains("Service/p: port 90 (grpc)") && stderr.contains("9000"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn the_public_url_annotation_is_the_url_the_proxy_announces() {
    let (stdout, stderr) = injected(&golden("service.yaml"));
    assert!(!stderr.contains("public-url"), "{stderr}");
    let mut args = sidecar_args(&stdout);
    assert!(
        args.windows(2)
            .any(|w| w == ["--public-url", "https://orders.example.com"]),
        "{args:?}"
    );

    // The sidecar's own arguments, with the pod's paths and ports swapped for this
    // test's: the proxy it starts names the annotation's URL in its documents.
    let data = tempfile::tempdir().unwrap();
    let upstream = support::upstream(|_: hyper::Request<hyper::body::Incoming>| async {
        hyper::Response::new(authmd_proxy::body::Body::full("api"))
    })
    .await;
    // The example without its demo sign-in, whose static accounts are for loopback
    // origins only (the annotation's is not).
    let config = data.path().join("config.yaml");
    std::fs::write(&config, support::example_without("login")).unwrap();
    for (flag, value) in [
        ("--config", config.display().to_string()),
        ("--listen", "127.0.0.1:0".to_owned()),
        ("--admin-listen", "127.0.0.1:0".to_owned()),
        ("--upstream", format!("http://{upstream}")),
        ("--data-dir", data.path().display().to_string()),
    ] {
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1] = value;
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = support::Binary::start(&args).await;
    let prm: serde_json::Value = support::client()
        .get(format!(
            "{}/.well-known/oauth-protected-resource",
            proxy.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prm["resource"], "https://orders.example.com", "{prm}");
}

#[test]
fn a_missing_public_url_and_an_assumed_api_port_are_warned_about() {
    let pod = |annotations: &str, ports: &str| {
        format!(
            "kind: Pod\nmetadata:\n  name: p\n  labels: {{app: p}}\n  annotations: {{authmd.dev/inject: enabled{annotations}}}\nspec:\n  containers: [{{name: app, image: app{ports}}}]\n\
             ---\nkind: Service\nmetadata: {{name: p}}\nspec:\n  selector: {{app: p}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
        )
    };
    let (_, stderr) = injected(&pod("", ", ports: [{containerPort: 3000}]"));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("authmd-proxy: warning: <stdin>: Pod/p: no `authmd.dev/public-url`"),
        "{stderr}"
    );
    assert!(stderr.contains("http://localhost:8080"), "{stderr}");

    let (stdout, stderr) = injected(&pod(
        ", authmd.dev/public-url: 'https://p.example.com/'",
        "",
    ));
    assert!(stdout.contains("http://127.0.0.1:3000"), "{stdout}");
    assert!(stdout.contains("https://p.example.com\n"), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("Pod/p: no container declares a port")
            && stderr.contains("3000")
            && stderr.contains("authmd.dev/upstream-port"),
        "{stderr}"
    );

    // An explicit upstream port is not a guess.
    let (_, stderr) = injected(&pod(
        ", authmd.dev/public-url: 'https://p.example.com', authmd.dev/upstream-port: '3000'",
        "",
    ));
    assert_eq!(stderr, "");

    // A URL that is not an origin is refused before it reaches a pod.
    let out = with_stdin(
        &["inject"],
        &pod(", authmd.dev/public-url: 'p.example.com/api'", ""),
    );
    assert_eq!(out.status.code(), Some(64));
    let error = String::from_utf8(out.stderr).unwrap();
    assert!(
        error.contains("annotation `authmd.dev/public-url`: `p.example.com/api` is not an origin"),
        "{error}"
    );
}
