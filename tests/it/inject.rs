//! `authmd-proxy inject`: golden files of the injected workloads (a Deployment, a
//! StatefulSet, a CronJob as a regular container, a Pod beside an existing native
//! sidecar), idempotency, untouched documents byte for byte, and clear errors.
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
    ] {
        let out = inject(&golden(input), &Defaults::default()).unwrap();
        assert_eq!(out, golden(expected), "{input}");
        let again = inject(&out, &Defaults::default()).unwrap();
        assert_eq!(again, out, "{input}: a second injection changes nothing");
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
    assert_eq!(inject(text, &Defaults::default()).unwrap(), text);
    assert_eq!(inject("", &Defaults::default()).unwrap(), "");
}

#[test]
fn the_sidecar_is_native_unless_asked_otherwise() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {authmd.dev/inject: enabled}\nspec:\n  containers: [{name: app, image: app, ports: [{containerPort: 3000}]}]\n";
    let native: serde_norway::Value =
        serde_norway::from_str(&inject(pod, &Defaults::default()).unwrap()).unwrap();
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
        serde_norway::from_str(&inject(pod, &legacy).unwrap()).unwrap();
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
    for name in ["deployment.yaml", "workloads.yaml"] {
        let legacy = Defaults {
            native: false,
            ..Defaults::default()
        };
        for (suffix, defaults) in [("native", Defaults::default()), ("legacy", legacy)] {
            let path = dir.path().join(format!("{suffix}-{name}"));
            std::fs::write(&path, inject(&golden(name), &defaults).unwrap()).unwrap();
            files.push(path);
        }
    }
    let (passed, report) = support::kube::validate(&validator, &files);
    assert!(passed, "{report}");
    assert_eq!(report.matches("passed").count(), 12, "{report}");
}
