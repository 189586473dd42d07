// Validates the custom resources of deploy/kubernetes (Prometheus Operator's
// PodMonitor and ServiceMonitor, cert-manager's Certificate and Issuer), which
// kubernetes-validate has no schema for, offline, with the kubernetes-models
// packages generated from each project's own CRDs:
//
// 1. the model's `validate()`: the CRD's OpenAPI schema (types, enums, patterns,
//    required fields);
// 2. TypeScript's excess-property check of each object against the model's
//    interface: an unknown or misspelt field is an error, as
//    `kubernetes-validate --strict` makes it for built-in kinds (an API server
//    would prune it silently, or refuse it under strict field validation).
//
//   npm ci --prefix tests/clients
//   node tests/clients/validate-crds.mjs objects.json
//
// objects.json is an array of {"source": "<where it came from>", "object": {...}}.
// A kind this script has no model for is an error, never a silent pass. Run by
// tests/deploy_manifests.rs on the output of `kubectl kustomize` for every
// kustomization under deploy/kubernetes.
//
// Prints exactly one JSON line on stdout: `{"ok":true,"validated":N,...}`, or
// `{"ok":false,"step":...,"error":...}` and a non-zero exit status.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import ts from 'typescript';

import { fail, run, step, version } from './check.mjs';

// apiVersion -> the package whose models cover it, and the kinds accepted.
const MODELS = {
  'monitoring.coreos.com/v1': {
    package: '@kubernetes-models/prometheus-operator',
    kinds: ['PodMonitor', 'ServiceMonitor', 'PrometheusRule'],
  },
  'cert-manager.io/v1': {
    package: '@kubernetes-models/cert-manager',
    kinds: ['Certificate', 'Issuer', 'ClusterIssuer'],
  },
};

function modulePath(apiVersion, kind) {
  const models = MODELS[apiVersion];
  if (!models || !models.kinds.includes(kind)) return null;
  return `${models.package}/${apiVersion}/${kind}`;
}

function describe(entry) {
  const { kind, metadata } = entry.object;
  return `${entry.source}: ${kind}/${metadata?.name ?? '(no name)'}`;
}

// Problems the model's JSON-schema validation finds, one string each.
async function schemaProblems(entries) {
  const problems = [];
  for (const entry of entries) {
    const { apiVersion, kind } = entry.object;
    const Model = (await import(modulePath(apiVersion, kind)))[kind];
    try {
      new Model(entry.object).validate();
    } catch (error) {
      problems.push(`${describe(entry)}: schema: ${error?.message ?? String(error)}`);
    }
  }
  return problems;
}

// Problems TypeScript finds when each object is typed as its model's interface.
// The source exists only in memory, "in" this folder so that the packages resolve.
function typeProblems(entries) {
  const file = fileURLToPath(new URL('./__deploy_manifests__.ts', import.meta.url));
  const lines = [];
  const kinds = [...new Set(entries.map((e) => `${e.object.apiVersion}|${e.object.kind}`))];
  kinds.forEach((key, i) => {
    const [apiVersion, kind] = key.split('|');
    lines.push(`import type { I${kind} as T${i} } from ${JSON.stringify(modulePath(apiVersion, kind))};`);
  });
  const owner = []; // owner[line] = index of the entry whose literal holds that line
  entries.forEach((entry, n) => {
    const type = kinds.indexOf(`${entry.object.apiVersion}|${entry.object.kind}`);
    const literal = JSON.stringify(entry.object, null, 2).split('\n');
    literal[0] = `export const object${n}: T${type} = ${literal[0]}`;
    literal[literal.length - 1] += ';';
    for (const line of literal) {
      owner[lines.length] = n;
      lines.push(line);
    }
  });
  const source = lines.join('\n');

  const options = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
    lib: ['lib.es2022.d.ts'],
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, language, ...rest) =>
    name === file ? ts.createSourceFile(name, source, language) : getSourceFile.call(host, name, language, ...rest);
  host.fileExists = (name) => name === file || fileExists.call(host, name);
  host.readFile = (name) => (name === file ? source : readFile.call(host, name));
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const message = ts.flattenDiagnosticMessageText(d.messageText, ' ');
    if (d.file?.fileName !== file || d.start === undefined) return `typescript: ${message}`;
    const { line } = d.file.getLineAndCharacterOfPosition(d.start);
    const where = owner[line] === undefined ? 'imports' : describe(entries[owner[line]]);
    return `${where}: type: ${message} (at \`${lines[line].trim()}\`)`;
  });
}

run(async () => {
  const entries = await step('read the objects', () => {
    const path = process.argv[2];
    if (!path) fail('usage: node validate-crds.mjs <objects.json>');
    const entries = JSON.parse(readFileSync(path, 'utf8'));
    if (!Array.isArray(entries) || entries.length === 0) fail(`${path}: expected a non-empty array`);
    for (const entry of entries) {
      const { apiVersion, kind } = entry?.object ?? {};
      if (!modulePath(apiVersion, kind)) {
        fail(`${entry?.source}: no model for ${kind} ${apiVersion}; add its package to tests/clients and to MODELS`);
      }
    }
    return entries;
  });
  const problems = [
    ...(await step('validate against the CRD schemas', () => schemaProblems(entries))),
    ...(await step('type-check against the model interfaces', () => typeProblems(entries))),
  ];
  if (problems.length > 0) {
    await step('report', () => fail(`${problems.length} problem(s): ${problems.join('; ')}`));
  }
  const kinds = {};
  for (const { object } of entries) kinds[object.kind] = (kinds[object.kind] ?? 0) + 1;
  return {
    validated: entries.length,
    kinds,
    packages: Object.fromEntries(
      [...Object.values(MODELS).map((m) => m.package), 'typescript'].map((p) => [p, version(p)]),
    ),
  };
});
