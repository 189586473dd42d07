// A third-party OAuth client (panva's oauth4webapi) gets access tokens from a running
// authmd-proxy with the client_credentials grant, authenticating with
// client_secret_basic and then client_secret_post, and calls a protected route with
// each token.
//
//   npm ci --prefix tests/clients
//   node tests/clients/client_credentials.mjs http://127.0.0.1:8080
//
// Run by tests/oauth_client_credentials.rs against a proxy started from
// config.example.yaml (its `example-writer` key is the client: client_id = the key's
// id, client_secret = the key). Exits non-zero, naming the failed step and the
// library's own error, on any failure; on success prints one JSON line.

import { isDeepStrictEqual } from 'node:util';

import * as oauth from 'oauth4webapi';

const CLIENT_ID = 'example-writer';
const SECRET = 'ak_live_ELG2kKEXEd3Ty98ZgEKCTBzmD28tyKbnV2vJrzG';
const insecure = { [oauth.allowInsecureRequests]: true }; // loopback is plain http

class CheckFailed extends Error {}

function expectEqual(actual, expected, what) {
  if (!isDeepStrictEqual(actual, expected)) {
    throw new CheckFailed(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

let currentStep = '(start)';
async function step(name, fn) {
  currentStep = name;
  return fn();
}

async function main(base) {
  const issuer = new URL(base);
  const as = await step('discovery', async () => {
    const response = await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' });
    return oauth.processDiscoveryResponse(issuer, response);
  });
  for (const method of ['client_secret_basic', 'client_secret_post']) {
    if (!as.token_endpoint_auth_methods_supported?.includes(method)) {
      throw new CheckFailed(`metadata does not list ${method}`);
    }
  }
  const client = { client_id: CLIENT_ID };
  const results = {};
  for (const [name, auth] of [
    ['client_secret_basic', oauth.ClientSecretBasic(SECRET)],
    ['client_secret_post', oauth.ClientSecretPost(SECRET)],
  ]) {
    const tokens = await step(`${name}: token`, async () => {
      const response = await oauth.clientCredentialsGrantRequest(
        as,
        client,
        auth,
        new URLSearchParams({ scope: 'offers:read offers:write' }),
        insecure,
      );
      return oauth.processClientCredentialsResponse(as, client, response);
    });
    expectEqual(tokens.token_type, 'bearer', `${name}: token_type (normalised by the library)`);
    expectEqual(tokens.scope, 'offers:read offers:write', `${name}: scope`);
    expectEqual(tokens.access_token.split('.').length, 3, `${name}: the token is a JWT`);
    const echoed = await step(`${name}: call the API`, async () => {
      const response = await oauth.protectedResourceRequest(
        tokens.access_token,
        'POST',
        new URL('/api/v1/offers', base),
        new Headers({ 'content-type': 'application/json' }),
        '{}',
        insecure,
      );
      expectEqual(response.status, 200, `${name}: POST /api/v1/offers`);
      return response.json();
    });
    expectEqual(echoed.headers['x-authmd-principal'], `key:${CLIENT_ID}`, `${name}: principal the API sees`);
    expectEqual(echoed.headers.authorization, undefined, `${name}: the token is not forwarded`);
    results[name] = { expires_in: tokens.expires_in, scope: tokens.scope };
  }

  // A wrong secret: the library sees invalid_client (401, with a Basic challenge).
  const refused = await step('wrong secret', async () => {
    const response = await oauth.clientCredentialsGrantRequest(
      as,
      client,
      oauth.ClientSecretBasic('ak_live_wrong'),
      new URLSearchParams(),
      insecure,
    );
    try {
      await oauth.processClientCredentialsResponse(as, client, response);
    } catch (error) {
      return error;
    }
    throw new CheckFailed('a wrong client secret was accepted');
  });
  let refusal;
  if (refused instanceof oauth.WWWAuthenticateChallengeError) {
    expectEqual(refused.status, 401, 'wrong secret: status');
    refusal = { challenge: refused.cause.map((c) => c.scheme), status: refused.status };
    expectEqual(refusal.challenge.includes('basic'), true, 'wrong secret: Basic challenge');
  } else if (refused instanceof oauth.ResponseBodyError) {
    expectEqual(refused.error, 'invalid_client', 'wrong secret: error');
    refusal = { error: refused.error, status: refused.status };
  } else {
    throw refused;
  }
  return { results, refusal };
}

const base = process.argv[2];
if (!base) {
  console.error('usage: node client_credentials.mjs <proxy base URL>');
  process.exit(2);
}
try {
  const summary = await main(base);
  console.log(JSON.stringify({ ok: true, ...summary }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, step: currentStep, error: `${error?.name}: ${error?.message}` }));
  process.exit(1);
}
