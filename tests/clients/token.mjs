// A third-party OAuth client (panva's oauth4webapi) gets access tokens from a running
// authmd-proxy with the client_credentials grant, authenticating first with
// client_secret_basic and then with client_secret_post, and calls a protected route
// with each token; a wrong secret must be refused with `invalid_client`.
//
//   npm ci --prefix tests/clients
//   node tests/clients/token.mjs http://127.0.0.1:8080
//
// Run by tests/third_party_clients.rs against a proxy started from
// config.example.yaml (upstream `builtin:echo`); its `example-writer` key is the
// client: client_id = the key's id, client_secret = the key.
//
// Every OAuth step is oauth4webapi's own API: discoveryRequest /
// processDiscoveryResponse (RFC 8414, exact issuer check), clientCredentialsGrantRequest
// / processClientCredentialsResponse (RFC 6749 §4.4, §5.1, §5.2) and
// protectedResourceRequest (RFC 6750 §2.1).
//
// Prints exactly one JSON line on stdout: `{"ok":true,...}` on success, or
// `{"ok":false,"step":...,"error":...}` and a non-zero exit status on any failure.

import * as oauth from 'oauth4webapi';

import { baseUrl, expectEqual, fail, run, step, version } from './check.mjs';

const CLIENT_ID = 'example-writer';
const CLIENT_SECRET = 'ak_live_ELG2kKEXEd3Ty98ZgEKCTBzmD28tyKbnV2vJrzG';
const WRONG_SECRET = 'ak_live_ELG2kKEXEd3Ty98ZgEKCTBzmD28tyKbnV2vJrzH';
const SCOPE = 'offers:read offers:write';
const PROTECTED = { method: 'POST', path: '/api/v1/offers' };

const insecure = { [oauth.allowInsecureRequests]: true }; // loopback is plain http

function decodeJwtPart(part, what) {
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch (error) {
    return fail(`${what} is not base64url JSON (${error.message})`);
  }
}

// A compact JWS: three base64url segments, a JSON header naming a signing algorithm
// (never `none`), a JSON claims set, and a signature.
function jwtOf(token, what) {
  const parts = token.split('.');
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]+$/.test(p))) {
    fail(`${what}: the access token is not a compact JWT: ${token.slice(0, 40)}...`);
  }
  const header = decodeJwtPart(parts[0], `${what}: JWT header`);
  const claims = decodeJwtPart(parts[1], `${what}: JWT claims`);
  if (typeof header.alg !== 'string' || header.alg.toLowerCase() === 'none') {
    fail(`${what}: JWT header has no signing alg: ${JSON.stringify(header)}`);
  }
  if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) {
    fail(`${what}: JWT claims are not an object`);
  }
  return { header, claims };
}

async function getToken(as, client, name, clientAuth) {
  const tokens = await step(`${name}: clientCredentialsGrantRequest + processClientCredentialsResponse`, async () => {
    const response = await oauth.clientCredentialsGrantRequest(as, client, clientAuth, new URLSearchParams({ scope: SCOPE }), insecure);
    return oauth.processClientCredentialsResponse(as, client, response);
  });
  return step(`${name}: token response`, async () => {
    // oauth4webapi lower-cases token_type and rejects types it does not know.
    expectEqual(tokens.token_type, 'bearer', `${name}: token_type`);
    expectEqual(tokens.scope, SCOPE, `${name}: scope`);
    if (typeof tokens.expires_in !== 'number' || !(tokens.expires_in > 0)) {
      fail(`${name}: expires_in is not a positive number: ${JSON.stringify(tokens.expires_in)}`);
    }
    if (tokens.refresh_token !== undefined) fail(`${name}: client_credentials issued a refresh_token (RFC 6749 §4.4.3 says it should not)`);
    const { header, claims } = jwtOf(tokens.access_token, name);
    return { tokens, header, claims };
  });
}

async function callApi(base, name, accessToken) {
  const url = new URL(PROTECTED.path, base);
  const echoed = await step(`${name}: protectedResourceRequest ${PROTECTED.method} ${PROTECTED.path}`, async () => {
    const response = await oauth.protectedResourceRequest(
      accessToken,
      PROTECTED.method,
      url,
      new Headers({ 'content-type': 'application/json', accept: 'application/json' }),
      JSON.stringify({ title: `third-party client check (${name})` }),
      insecure,
    );
    const text = await response.text();
    expectEqual(response.status, 200, `${name}: ${PROTECTED.method} ${PROTECTED.path} status (body ${text.slice(0, 300)})`);
    try {
      return JSON.parse(text);
    } catch {
      return fail(`${name}: the echo upstream's answer is not JSON: ${text.slice(0, 300)}`);
    }
  });
  return step(`${name}: what the upstream saw`, async () => {
    const headers = echoed?.headers;
    if (!headers || typeof headers !== 'object') fail(`${name}: the echo has no headers object: ${JSON.stringify(echoed)}`);
    expectEqual(echoed.method, PROTECTED.method, `${name}: upstream method`);
    expectEqual(echoed.path, PROTECTED.path, `${name}: upstream path`);
    expectEqual(headers['x-authmd-principal'], `key:${CLIENT_ID}`, `${name}: upstream x-authmd-principal`);
    expectEqual(headers.authorization, undefined, `${name}: the access token must not reach the upstream`);
    return { status: 200, principal: headers['x-authmd-principal'] };
  });
}

// What oauth4webapi throws for a refused client: a 401 carrying WWW-Authenticate makes
// it throw WWWAuthenticateChallengeError (the body left unread); otherwise it parses
// the RFC 6749 §5.2 body and throws ResponseBodyError. Either way the error code must
// be invalid_client.
async function refusalOf(error, name) {
  if (error instanceof oauth.ResponseBodyError) {
    return { thrown: error.name, status: error.status, error: error.error, error_description: error.error_description };
  }
  if (error instanceof oauth.WWWAuthenticateChallengeError) {
    let body;
    try {
      body = await error.response.json();
    } catch (e) {
      fail(`${name}: the 401 body is not JSON (${e.message})`);
    }
    const challenges = error.cause.map((c) => ({ scheme: c.scheme, ...c.parameters }));
    const challengeError = challenges.find((c) => c.error !== undefined)?.error;
    if (challengeError !== undefined) expectEqual(challengeError, 'invalid_client', `${name}: challenge error`);
    return { thrown: error.name, status: error.status, error: body?.error, error_description: body?.error_description, challenges };
  }
  throw error;
}

async function wrongSecret(as, client, name, clientAuth) {
  return step(`${name} with a wrong secret: refused`, async () => {
    const response = await oauth.clientCredentialsGrantRequest(as, client, clientAuth, new URLSearchParams({ scope: SCOPE }), insecure);
    let thrown;
    try {
      await oauth.processClientCredentialsResponse(as, client, response);
    } catch (error) {
      thrown = error;
    }
    if (thrown === undefined) fail(`${name}: a wrong client secret was accepted`);
    const refusal = await refusalOf(thrown, name);
    expectEqual(refusal.error, 'invalid_client', `${name}: error`);
    expectEqual(refusal.status, 401, `${name}: status`);
    return refusal;
  });
}

async function main() {
  const base = baseUrl('token.mjs');
  const issuer = base; // the proxy is its own authorization server

  const as = await step('discoveryRequest + processDiscoveryResponse', async () => {
    const response = await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' });
    return oauth.processDiscoveryResponse(issuer, response);
  });
  await step('authorization-server metadata', async () => {
    if (typeof as.token_endpoint !== 'string') fail(`no token_endpoint in ${JSON.stringify(as)}`);
    if (!as.grant_types_supported?.includes('client_credentials')) {
      fail(`grant_types_supported lacks client_credentials: ${JSON.stringify(as.grant_types_supported)}`);
    }
    for (const method of ['client_secret_basic', 'client_secret_post']) {
      if (!as.token_endpoint_auth_methods_supported?.includes(method)) {
        fail(`token_endpoint_auth_methods_supported lacks ${method}: ${JSON.stringify(as.token_endpoint_auth_methods_supported)}`);
      }
    }
  });

  const client = { client_id: CLIENT_ID };
  const methods = {};
  for (const [name, clientAuth] of [
    ['client_secret_basic', oauth.ClientSecretBasic(CLIENT_SECRET)],
    ['client_secret_post', oauth.ClientSecretPost(CLIENT_SECRET)],
  ]) {
    const { tokens, header, claims } = await getToken(as, client, name, clientAuth);
    const api = await callApi(base, name, tokens.access_token);
    methods[name] = {
      token_type: tokens.token_type,
      scope: tokens.scope,
      expires_in: tokens.expires_in,
      jwt: { alg: header.alg, typ: header.typ, kid: header.kid, iss: claims.iss, sub: claims.sub, client_id: claims.client_id, aud: claims.aud },
      api: { request: `${PROTECTED.method} ${PROTECTED.path}`, ...api },
    };
  }

  const refused = await wrongSecret(as, client, 'client_secret_basic', oauth.ClientSecretBasic(WRONG_SECRET));

  return {
    base: base.href,
    node: process.version,
    oauth4webapi: version('oauth4webapi'),
    issuer: as.issuer,
    token_endpoint: as.token_endpoint,
    client_id: CLIENT_ID,
    methods,
    wrong_secret: { method: 'client_secret_basic', ...refused },
  };
}

await run(main);
