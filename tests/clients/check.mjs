// What the client checks in this folder share: named steps, failures that say which
// step failed and what the library threw, and one JSON line on stdout as the result
// (`{"ok":true,...}`, or `{"ok":false,"step":...,"error":...}` with exit status 1).

import { readFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';

const TIMEOUT_MS = 60_000;

export class CheckFailed extends Error {}

export function fail(message) {
  throw new CheckFailed(message);
}

export function expectEqual(actual, expected, what) {
  if (!isDeepStrictEqual(actual, expected)) {
    fail(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

// An error as one line: its name and message, the status, code and validation
// issues libraries attach, and its causes.
export function describeError(error) {
  if (error instanceof CheckFailed) return error.message;
  const parts = [`${error?.name ?? 'Error'}: ${error?.message ?? String(error)}`];
  if (error?.code) parts.push(`code=${error.code}`);
  if (error?.status !== undefined) parts.push(`status=${error.status}`);
  if (error?.cause instanceof Error) {
    parts.push(`cause=(${describeError(error.cause)})`);
  } else if (error?.cause !== undefined) {
    let cause;
    try {
      cause = JSON.stringify(error.cause, (_, v) => (v instanceof URL ? v.href : v));
    } catch {
      cause = String(error.cause);
    }
    parts.push(`cause=${cause}`);
  }
  if (error?.issues) parts.push(`issues=${JSON.stringify(error.issues)}`);
  return parts.join(' ');
}

let currentStep = '(start)';

// Runs `fn` as the step named `name`: a failure from here on is reported under it.
export async function step(name, fn) {
  currentStep = name;
  return fn();
}

// The installed version of `pkg`.
export function version(pkg) {
  const url = new URL(`./node_modules/${pkg}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(url, 'utf8')).version;
}

// The proxy's base URL from the command line: http(s)://host[:port], without a
// query or fragment, and without a path when `originOnly`.
export function baseUrl(script, { originOnly = false } = {}) {
  const arg = process.argv[2];
  if (!arg) fail(`usage: node ${script} <proxy base url>, e.g. http://127.0.0.1:8080`);
  let url;
  try {
    url = new URL(arg);
  } catch {
    fail(`not a URL: ${arg}`);
  }
  if (!['http:', 'https:'].includes(url.protocol) || url.search || url.hash || (originOnly && url.pathname !== '/')) {
    fail(`the base URL must be http(s)://host[:port]${originOnly ? ' without a path' : ''}, without a query or fragment: ${arg}`);
  }
  return url;
}

function report(line, code) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
  process.exitCode = code;
}

// Runs `main` under a timeout and reports its result (or the failed step) as one
// JSON line.
export async function run(main) {
  const timer = setTimeout(() => {
    report({ ok: false, step: currentStep, error: `timed out after ${TIMEOUT_MS / 1000}s` }, 1);
    process.exit(1);
  }, TIMEOUT_MS);
  timer.unref();
  try {
    report({ ok: true, ...(await main()) }, 0);
  } catch (error) {
    report({ ok: false, step: currentStep, error: describeError(error) }, 1);
    if (!(error instanceof CheckFailed) && error?.stack) process.stderr.write(`${error.stack}\n`);
  }
}
