// panva's oauth4webapi gets a person's tokens from a running authmd-proxy with the
// authorization-code flow and PKCE, as a public client that registered itself,
// refreshes them, and calls the protected MCP resource with them.
//
//   npm ci --prefix tests/clients
//   node tests/clients/authcode_oauth4webapi.mjs http://127.0.0.1:8080
//
// Run by tests/it/interactive_clients.rs against a proxy with `login:` (a static
// account `ada`, password in AUTHMD_PERSON_PASSWORD or the tests' default) and
// `oauth:`, in front of the `builtin:echo` upstream.
//
// Every OAuth step is oauth4webapi's own API:
// - resourceDiscoveryRequest / processResourceDiscoveryResponse (RFC 9728, exact
//   `resource` check) from the 401's resource_metadata, then discoveryRequest /
//   processDiscoveryResponse (RFC 8414, exact `issuer` check);
// - dynamicClientRegistrationRequest / processDynamicClientRegistrationResponse
//   (RFC 7591: a public client, `token_endpoint_auth_method: none`);
// - generateRandomCodeVerifier / calculatePKCECodeChallenge (RFC 7636 S256),
//   generateRandomState, and the authorization URL built from the metadata's
//   authorization_endpoint (with `resource`, RFC 8707); person.mjs plays the person
//   (signs in on the static form, allows the consent page) and hands back the
//   redirect to the loopback redirect_uri;
// - validateAuthResponse: state, and the RFC 9207 `iss` (required, as the metadata
//   says `authorization_response_iss_parameter_supported`);
// - authorizationCodeGrantRequest / processAuthorizationCodeResponse (client
//   authentication `None()`), refreshTokenGrantRequest / processRefreshTokenResponse
//   (the refresh token must have rotated), protectedResourceRequest (RFC 6750 §2.1).
//
// Prints exactly one JSON line on stdout: `{"ok":true,...}` on success, or
// `{"ok":false,"step":...,"error":...}` and a non-zero exit status on any failure.

import * as oauth from 'oauth4webapi';

import { baseUrl, expectEqual, fail, run, step, version } from './check.mjs';
import { Person } from './person.mjs';

const REDIRECT_URI = 'http://127.0.0.1:33419/callback';
const USERNAME = 'ada';
const PASSWORD = process.env.AUTHMD_PERSON_PASSWORD ?? 'correct horse battery staple';
const CLIENT_METADATA = {
  client_name: 'oauth4webapi authorization-code check',
  redirect_uris: [REDIRECT_URI],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'none',
};

const insecure = { [oauth.allowInsecureRequests]: true }; // loopback is plain http

function claimsOf(token, what) {
  const parts = token.split('.');
  if (parts.length !== 3) fail(`${what}: the access token is not a compact JWT`);
  try {
    return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch (error) {
    return fail(`${what}: the JWT claims are not base64url JSON (${error.message})`);
  }
}

async function callMcp(url, accessToken, what) {
  const response = await oauth.protectedResourceRequest(
    accessToken,
    'POST',
    url,
    new Headers({ 'content-type': 'application/json', accept: 'application/json, text/event-stream' }),
    JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
    insecure,
  );
  const text = await response.text();
  expectEqual(response.status, 200, `${what}: POST ${url.pathname} status (body ${text.slice(0, 300)})`);
  const echo = JSON.parse(text);
  expectEqual(echo.headers?.authorization, undefined, `${what}: the access token must not reach the upstream`);
  return {
    status: response.status,
    method: echo.method,
    path: echo.path,
    principal: echo.headers?.['x-authmd-principal'],
    scopes: echo.headers?.['x-authmd-scopes'],
    tier: echo.headers?.['x-authmd-tier'],
  };
}

async function main() {
  const base = baseUrl('authcode_oauth4webapi.mjs', { originOnly: true });
  const resourceUrl = new URL('/mcp', base);

  const challenge = await step('POST /mcp without a token: 401 with a Bearer challenge', async () => {
    // oauth4webapi parses challenges only from a response to its own request:
    // protectedResourceRequest throws WWWAuthenticateChallengeError on a 401 with one.
    // Without a token the request must carry no credential at all, so the
    // Authorization header it always sets is taken out before sending.
    const stripCredential = (input, init) => {
      const headers = { ...init.headers };
      delete headers.authorization;
      return fetch(input, { ...init, headers });
    };
    try {
      const response = await oauth.protectedResourceRequest(
        'unused',
        'POST',
        resourceUrl,
        new Headers({ 'content-type': 'application/json' }),
        JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
        { ...insecure, [oauth.customFetch]: stripCredential },
      );
      await response.body?.cancel();
      return fail(`POST /mcp without a credential: ${response.status}, not a 401 with a challenge`);
    } catch (error) {
      if (!(error instanceof oauth.WWWAuthenticateChallengeError)) throw error;
      expectEqual(error.status, 401, 'status');
      await error.response.body?.cancel();
      const bearer = error.cause.find((c) => c.scheme === 'bearer');
      if (!bearer?.parameters.resource_metadata) fail(`no Bearer challenge with resource_metadata: ${JSON.stringify(error.cause)}`);
      if (!bearer.parameters.scope) fail(`the Bearer challenge names no scope: ${JSON.stringify(error.cause)}`);
      return bearer.parameters;
    }
  });

  const prm = await step('resourceDiscoveryRequest + processResourceDiscoveryResponse (RFC 9728)', async () => {
    const response = await oauth.resourceDiscoveryRequest(resourceUrl, insecure);
    expectEqual(response.url, challenge.resource_metadata, 'the metadata URL vs the challenge resource_metadata');
    return oauth.processResourceDiscoveryResponse(resourceUrl, response);
  });

  const as = await step('discoveryRequest + processDiscoveryResponse (RFC 8414)', async () => {
    const issuer = new URL(prm.authorization_servers?.[0] ?? fail('no authorization_servers'));
    const response = await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' });
    const metadata = await oauth.processDiscoveryResponse(issuer, response);
    if (!metadata.response_types_supported?.includes('code')) fail(`response_types_supported: ${metadata.response_types_supported}`);
    if (!metadata.code_challenge_methods_supported?.includes('S256')) {
      fail(`code_challenge_methods_supported: ${metadata.code_challenge_methods_supported}`);
    }
    if (!metadata.registration_endpoint) fail('no registration_endpoint');
    return metadata;
  });

  const client = await step('dynamicClientRegistrationRequest + processDynamicClientRegistrationResponse (RFC 7591)', async () => {
    const response = await oauth.dynamicClientRegistrationRequest(as, CLIENT_METADATA, insecure);
    const registered = await oauth.processDynamicClientRegistrationResponse(response);
    expectEqual(registered.client_secret, undefined, 'a public client got a client_secret');
    expectEqual(registered.redirect_uris, [REDIRECT_URI], 'registered redirect_uris');
    expectEqual(registered.token_endpoint_auth_method, 'none', 'registered token_endpoint_auth_method');
    return registered;
  });

  const verifier = oauth.generateRandomCodeVerifier();
  const state = oauth.generateRandomState();
  const authorizationUrl = await step('calculatePKCECodeChallenge + the authorization URL', async () => {
    const url = new URL(as.authorization_endpoint);
    url.searchParams.set('response_type', 'code');
    url.searchParams.set('client_id', client.client_id);
    url.searchParams.set('redirect_uri', REDIRECT_URI);
    url.searchParams.set('code_challenge', await oauth.calculatePKCECodeChallenge(verifier));
    url.searchParams.set('code_challenge_method', 'S256');
    url.searchParams.set('state', state);
    url.searchParams.set('scope', challenge.scope);
    url.searchParams.set('resource', prm.resource);
    return url;
  });

  const person = new Person({ username: USERNAME, password: PASSWORD });
  const back = await step('the person signs in and consents', () => person.authorize(authorizationUrl, REDIRECT_URI));

  const params = await step('validateAuthResponse (state, RFC 9207 iss)', async () => {
    try {
      return oauth.validateAuthResponse(as, client, back.location, state);
    } catch (error) {
      if (!(error instanceof oauth.AuthorizationResponseError)) throw error;
      return fail(`the authorization answered ${error.error}: ${error.error_description}`);
    }
  });

  const tokens = await step('authorizationCodeGrantRequest + processAuthorizationCodeResponse', async () => {
    const response = await oauth.authorizationCodeGrantRequest(as, client, oauth.None(), params, REDIRECT_URI, verifier, {
      ...insecure,
      additionalParameters: { resource: prm.resource },
    });
    const result = await oauth.processAuthorizationCodeResponse(as, client, response);
    expectEqual(result.token_type, 'bearer', 'token_type');
    if (!result.refresh_token) fail('no refresh_token');
    return result;
  });

  const first = await step('protectedResourceRequest with the access token', () => callMcp(resourceUrl, tokens.access_token, 'first token'));

  const refreshed = await step('refreshTokenGrantRequest + processRefreshTokenResponse (rotated)', async () => {
    const response = await oauth.refreshTokenGrantRequest(as, client, oauth.None(), tokens.refresh_token, {
      ...insecure,
      additionalParameters: { resource: prm.resource },
    });
    const result = await oauth.processRefreshTokenResponse(as, client, response);
    if (!result.refresh_token) fail('the refresh answer has no refresh_token');
    if (result.refresh_token === tokens.refresh_token) fail('the refresh token did not rotate');
    if (result.access_token === tokens.access_token) fail('the refresh returned the same access token');
    return result;
  });

  const upstream = await step('protectedResourceRequest with the refreshed access token', () =>
    callMcp(resourceUrl, refreshed.access_token, 'refreshed token'),
  );

  const claims = claimsOf(refreshed.access_token, 'refreshed access token');
  return {
    base: base.href,
    node: process.version,
    oauth4webapi: version('oauth4webapi'),
    issuer: as.issuer,
    resource: prm.resource,
    challenge: { resource_metadata: challenge.resource_metadata, scope: challenge.scope },
    client: { client_id: client.client_id, token_endpoint_auth_method: client.token_endpoint_auth_method },
    person: { username: USERNAME, steps: back.steps },
    authorization_response: { iss: params.get('iss'), state_matches: params.get('state') === state },
    tokens: { token_type: tokens.token_type, scope: tokens.scope, expires_in: tokens.expires_in, refresh_token: true },
    refresh: {
      rotated: refreshed.refresh_token !== tokens.refresh_token,
      new_access_token: refreshed.access_token !== tokens.access_token,
      scope: refreshed.scope,
    },
    jwt: { iss: claims.iss, sub: claims.sub, aud: claims.aud, client_id: claims.client_id, scope: claims.scope },
    upstream: { first, refreshed: upstream },
  };
}

await run(main);
