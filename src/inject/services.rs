//! The Services of an injected input: one that selects an injected workload and
//! sends traffic to the API's own port would let that traffic skip the proxy, so
//! its port is pointed at the proxy's instead.
//!
//! A Service selects a workload when it is in the same namespace (both unset
//! counts as the same) and every pair of its non-empty `spec.selector` is among
//! the pod template's labels. A port's `targetPort` (its `port` when unset) is
//! resolved as Kubernetes does: a number is the container port, a name is the
//! container port of that name.

use serde_norway::{Mapping, Value};

use super::{SIDECAR, Settings, Warning};

/// What a Service needs to know about an injected workload.
#[derive(Debug)]
pub(super) struct Workload {
    /// `Kind/name`.
    pub(super) name: String,
    namespace: Option<String>,
    labels: Vec<(String, String)>,
    /// The proxy's port, which agents must reach.
    pub(super) proxy: u16,
    /// The API's port, which only the proxy may reach.
    pub(super) api: u16,
    /// The ports the pod's other containers declare: (name, port).
    ports: Vec<(Option<String>, u16)>,
}

impl Workload {
    /// Reads an injected pod template.
    pub(super) fn of(
        name: String,
        namespace: Option<String>,
        template: &Value,
        settings: &Settings,
    ) -> Workload {
        let labels = match template.get("metadata").and_then(|m| m.get("labels")) {
            Some(Value::Mapping(labels)) => pairs(labels),
            _ => Vec::new(),
        };
        let spec = template.get("spec");
        let ports = ["initContainers", "containers"]
            .into_iter()
            .filter_map(|list| spec.and_then(|s| s.get(list)).and_then(Value::as_sequence))
            .flatten()
            .filter(|c| c.get("name").and_then(Value::as_str) != Some(SIDECAR))
            .filter_map(|c| c.get("ports").and_then(Value::as_sequence))
            .flatten()
            .filter_map(|p| {
                let port = p.get("containerPort").and_then(Value::as_u64)?;
                let name = p.get("name").and_then(Value::as_str).map(str::to_owned);
                Some((name, u16::try_from(port).ok()?))
            })
            .collect();
        Workload {
            name,
            namespace,
            labels,
            proxy: settings.port,
            api: settings.upstream_port,
            ports,
        }
    }

    /// The container port `target` reaches on this workload's pods, if any. The
    /// API's port is one even when no container declares it.
    fn resolve(&self, target: &Value) -> Option<u16> {
        match target {
            Value::Number(number) => number.as_u64().and_then(|p| u16::try_from(p).ok()),
            Value::String(name) => self
                .ports
                .iter()
                .find(|(n, _)| n.as_deref() == Some(name))
                .map(|(_, port)| *port),
            _ => None,
        }
    }
}

/// Points the ports of `service` that reach an injected workload's API at its
/// proxy, marks the workloads it selects in `selected`, and warns about ports
/// that reach another port of their pods; whether it changed.
pub(super) fn retarget(
    service: &mut Value,
    workloads: &[Workload],
    selected: &mut [bool],
    warnings: &mut Vec<Warning>,
) -> bool {
    let metadata = service.get("metadata");
    let name = format!(
        "Service/{}",
        metadata
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>")
    );
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    let selector = match service.get("spec").and_then(|s| s.get("selector")) {
        Some(Value::Mapping(selector)) if !selector.is_empty() => pairs(selector),
        _ => return false,
    };
    let chosen: Vec<usize> = workloads
        .iter()
        .enumerate()
        .filter(|(_, w)| {
            w.namespace.as_deref() == namespace
                && selector.iter().all(|pair| w.labels.contains(pair))
        })
        .map(|(index, _)| index)
        .collect();
    for index in &chosen {
        if let Some(flag) = selected.get_mut(*index) {
            *flag = true;
        }
    }
    let Some(ports) = service
        .get_mut("spec")
        .and_then(|s| s.get_mut("ports"))
        .and_then(Value::as_sequence_mut)
    else {
        return false;
    };
    let mut changed = false;
    for port in ports.iter_mut() {
        let Value::Mapping(port) = port else {
            continue;
        };
        let Some(target) = port.get("targetPort").or_else(|| port.get("port")).cloned() else {
            continue;
        };
        for workload in chosen.iter().filter_map(|index| workloads.get(*index)) {
            match workload.resolve(&target) {
                Some(reached) if reached == workload.api => {
                    // The number, not the sidecar's port name: Services resolve
                    // the named ports of native sidecars only from Kubernetes 1.32.
                    port.insert(Value::from("targetPort"), Value::from(workload.proxy));
                    changed = true;
                    break;
                }
                Some(reached) if reached != workload.proxy && declared(workload, reached) => {
                    warnings.push(Warning::Bypass {
                        service: name.clone(),
                        port: describe(port),
                        target: reached,
                        workload: workload.name.clone(),
                    });
                    break;
                }
                _ => {}
            }
        }
    }
    changed
}

/// Whether a container of the workload (not the sidecar) declares `port`: a port
/// no one declares is most likely nothing at all, and no reason to warn.
fn declared(workload: &Workload, port: u16) -> bool {
    workload.ports.iter().any(|(_, p)| *p == port)
}

/// A Service port as a person names it: its number, and its name when it has one.
fn describe(port: &Mapping) -> String {
    let number = port.get("port").map(scalar).unwrap_or_default();
    match port.get("name").and_then(Value::as_str) {
        Some(name) => format!("{number} ({name})"),
        None => number,
    }
}

/// The string pairs of a label mapping.
fn pairs(map: &Mapping) -> Vec<(String, String)> {
    map.iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), scalar(v))))
        .collect()
}

/// A scalar as the string Kubernetes would see.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}
