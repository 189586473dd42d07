// Third-party OAuth clients walking a running authmd-proxy's discovery documents,
// from a 401 on a protected path to the authorization-server metadata.
//
//   npm ci --prefix tests/clients
//   node tests/clients/discovery.mjs http://127.0.0.1:8080
//
// Run by tests/third_party_clients.rs against a proxy started from
// config.example.yaml. Prints one JSON line: a summary of the checks, or the failed
// step and the library's own error (and exits non-zero).
//
// The libraries (exact versions in package.json):
// - oauth4webapi (panva): its challenge parser, RFC 9728 resource discovery with the
//   exact `resource` check, RFC 8414 discovery with the exact `issuer` check.
// - @modelcontextprotocol/sdk: the OAuth discovery MCP hosts run on a 401: its
//   WWW-Authenticate extraction, protected-resource and authorization-server discovery,
//   the resource check `auth()` applies, and `auth()` itself driven by the SDK's
//   Streamable HTTP transport.

import * as oauth from 'oauth4webapi';
import {
  auth,
  discoverAuthorizationServerMetadata,
  discoverOAuthProtectedResourceMetadata,
  discoverOAuthServerInfo,
  extractWWWAuthenticateParams,
  selectResourceURL,
} from '@modelcontextprotocol/sdk/client/auth.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { checkResourceAllowed, resourceUrlFromServerUrl } from '@modelcontextprotocol/sdk/shared/auth-utils.js';
import { OpenIdProviderDiscoveryMetadataSchema } from '@modelcontextprotocol/sdk/shared/auth.js';

import { baseUrl, describeError, expectEqual, fail, run, step, version } from './check.mjs';

const PROTECTED_RESOURCE = '/.well-known/oauth-protected-resource';

// The resource identifier whose RFC 9728 §3.1 metadata URL is `metadataUrl`: the
// well-known segment inserted between the host and the path is taken out again.
function resourceOfMetadataUrl(metadataUrl) {
  const url = new URL(metadataUrl);
  if (url.pathname !== PROTECTED_RESOURCE && !url.pathname.startsWith(`${PROTECTED_RESOURCE}/`)) {
    fail(`resource_metadata ${metadataUrl} is not an RFC 9728 well-known URL`);
  }
  return new URL(url.pathname.slice(PROTECTED_RESOURCE.length) || '/', url.origin);
}

// ---------------------------------------------------------------------------------
// a. oauth4webapi
// ---------------------------------------------------------------------------------

const insecure = { [oauth.allowInsecureRequests]: true }; // loopback is plain http

// oauth4webapi v3 keeps `parseWwwAuthenticateChallenges` internal: its public way to
// a parsed challenge is `protectedResourceRequest`, which runs it on the response and
// throws `WWWAuthenticateChallengeError` with the parsed challenges as `cause`.
async function challengesOf(method, url, accessToken) {
  // With no token the request must carry no credential at all, so the `Authorization`
  // header oauth4webapi always sets is taken out before the request is sent.
  const stripCredential = (input, init) => {
    const headers = { ...init.headers };
    delete headers.authorization;
    return fetch(input, { ...init, headers });
  };
  const options = accessToken ? insecure : { ...insecure, [oauth.customFetch]: stripCredential };
  let response;
  try {
    response = await oauth.protectedResourceRequest(accessToken ?? 'unused', method, new URL(url), undefined, undefined, options);
  } catch (error) {
    if (!(error instanceof oauth.WWWAuthenticateChallengeError)) throw error;
    expectEqual(error.status, 401, `${method} ${url}: status`);
    await error.response.body?.cancel();
    return error.cause;
  }
  await response.body?.cancel();
  return fail(`${method} ${url}: expected 401 with a WWW-Authenticate challenge, got ${response.status} without one`);
}

function bearerOf(challenges, what) {
  const bearer = challenges.find((c) => c.scheme === 'bearer');
  if (!bearer) fail(`${what}: no Bearer challenge among ${JSON.stringify(challenges)}`);
  if (challenges[0] !== bearer) fail(`${what}: the Bearer challenge is not the first one (MCP clients read only a leading Bearer challenge)`);
  return bearer.parameters;
}

async function oauth4webapiWalk(origin, { method, path, resource, scope }) {
  const url = `${origin}${path}`;
  const label = `${method} ${path}`;

  const missing = await step(`oauth4webapi ${label}: 401 without a credential`, async () => {
    const params = bearerOf(await challengesOf(method, url), label);
    if (!params.resource_metadata) fail(`${label}: the Bearer challenge has no resource_metadata: ${JSON.stringify(params)}`);
    expectEqual(params.scope, scope, `${label}: challenge scope`);
    return params;
  });

  await step(`oauth4webapi ${label}: 401 with an unknown bearer token`, async () => {
    const params = bearerOf(await challengesOf(method, url, 'not-a-key-of-this-proxy'), label);
    expectEqual(params.error, 'invalid_token', `${label} with an unknown token: challenge error`);
    expectEqual(params.resource_metadata, missing.resource_metadata, `${label} with an unknown token: resource_metadata`);
  });

  const resourceId = await step(`oauth4webapi ${label}: resource identifier`, async () => {
    const derived = resourceOfMetadataUrl(missing.resource_metadata);
    expectEqual(derived.href, new URL(resource(origin)).href, `${label}: resource identifier behind resource_metadata`);
    return derived;
  });

  const prm = await step(`oauth4webapi ${label}: protected-resource metadata (RFC 9728)`, async () => {
    const response = await oauth.resourceDiscoveryRequest(resourceId, insecure);
    expectEqual(response.url, missing.resource_metadata, `${label}: the metadata URL oauth4webapi derived from ${resourceId.href} vs the challenge's resource_metadata`);
    return oauth.processResourceDiscoveryResponse(resourceId, response);
  });

  const issuer = await step(`oauth4webapi ${label}: authorization_servers`, async () => {
    if (!Array.isArray(prm.authorization_servers) || prm.authorization_servers.length === 0) {
      fail(`${label}: protected-resource metadata has no authorization_servers: ${JSON.stringify(prm)}`);
    }
    return new URL(prm.authorization_servers[0]);
  });

  const as = await step(`oauth4webapi ${label}: authorization-server metadata (RFC 8414)`, async () => {
    const response = await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' });
    return oauth.processDiscoveryResponse(issuer, response);
  });

  await step(`oauth4webapi ${label}: authorization-server metadata (openid-configuration alias)`, async () => {
    const response = await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oidc' });
    const alias = await oauth.processDiscoveryResponse(issuer, response);
    expectEqual(alias, as, `${label}: openid-configuration vs oauth-authorization-server`);
  });

  return {
    request: label,
    status: 401,
    resource_metadata: missing.resource_metadata,
    scope: missing.scope,
    resource: prm.resource,
    issuer: as.issuer,
    checks: [
      'challenge parsed by oauth4webapi (missing and invalid_token)',
      'metadata URL derived by resourceDiscoveryRequest == resource_metadata',
      'processResourceDiscoveryResponse: resource exact',
      'processDiscoveryResponse (oauth2): issuer exact',
      'processDiscoveryResponse (oidc alias): issuer exact, same document',
    ],
  };
}

// ---------------------------------------------------------------------------------
// b. MCP TypeScript SDK
// ---------------------------------------------------------------------------------

function assertAsMetadata(metadata, issuer, what) {
  if (!metadata) fail(`${what}: the SDK found no authorization-server metadata for ${issuer}`);
  for (const field of ['issuer', 'authorization_endpoint', 'token_endpoint', 'response_types_supported']) {
    if (metadata[field] === undefined) fail(`${what}: ${field} missing from ${JSON.stringify(metadata)}`);
  }
  // The SDK does not compare `issuer` with the URL it fetched from (its own comment says
  // so); RFC 8414 §3.3 requires it, so it is checked here.
  expectEqual(new URL(metadata.issuer).href, new URL(issuer).href, `${what}: issuer`);
}

// The OAuthClientProvider an MCP host hands to the SDK, in memory: a pre-registered
// client (no dynamic registration), recording what the SDK discovered.
function recordingProvider() {
  const seen = { discoveryState: undefined, authorizationUrl: undefined };
  const provider = {
    get redirectUrl() {
      return 'http://127.0.0.1:1/callback';
    },
    get clientMetadata() {
      return { client_name: 'authmd-proxy third-party client check', redirect_uris: ['http://127.0.0.1:1/callback'] };
    },
    clientInformation: () => ({ client_id: 'authmd-proxy-discovery-check' }),
    tokens: () => undefined,
    saveTokens: () => {},
    saveCodeVerifier: () => {},
    codeVerifier: () => 'unused',
    redirectToAuthorization: (url) => {
      seen.authorizationUrl = url.href;
    },
    saveDiscoveryState: (state) => {
      seen.discoveryState = state;
    },
  };
  return { provider, seen };
}

async function mcpSdkWalk(origin) {
  const serverUrl = new URL(`${origin}/mcp`);
  const expectedMetadataUrl = `${origin}${PROTECTED_RESOURCE}/mcp`;

  const challenge = await step('mcp-sdk: 401 on POST /mcp, extractWWWAuthenticateParams', async () => {
    const response = await fetch(serverUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
    });
    await response.body?.cancel();
    expectEqual(response.status, 401, 'POST /mcp without a credential: status');
    const params = extractWWWAuthenticateParams(response);
    expectEqual(params.resourceMetadataUrl?.href, expectedMetadataUrl, 'SDK-extracted resource_metadata');
    expectEqual(params.scope, 'offers:read', 'SDK-extracted scope');
    return params;
  });

  const prm = await step('mcp-sdk: discoverOAuthProtectedResourceMetadata', async () => {
    const derived = await discoverOAuthProtectedResourceMetadata(serverUrl);
    const hinted = await discoverOAuthProtectedResourceMetadata(serverUrl, { resourceMetadataUrl: challenge.resourceMetadataUrl });
    expectEqual(hinted, derived, 'PRM via the challenge URL vs via path-aware discovery');
    expectEqual(derived.resource, serverUrl.href, 'PRM resource');
    return derived;
  });

  const resource = await step('mcp-sdk: resource check (selectResourceURL / checkResourceAllowed)', async () => {
    const requestedResource = resourceUrlFromServerUrl(serverUrl);
    if (!checkResourceAllowed({ requestedResource, configuredResource: prm.resource })) {
      fail(`checkResourceAllowed rejects PRM resource ${prm.resource} for server ${requestedResource.href}`);
    }
    // What auth() runs: throws "Protected resource X does not match expected Y".
    const selected = await selectResourceURL(serverUrl, recordingProvider().provider, prm);
    expectEqual(selected?.href, new URL(prm.resource).href, 'selectResourceURL');
    return selected.href;
  });

  const asMetadata = await step('mcp-sdk: discoverAuthorizationServerMetadata', async () => {
    if (!prm.authorization_servers?.length) fail(`PRM has no authorization_servers: ${JSON.stringify(prm)}`);
    const issuer = prm.authorization_servers[0];
    const metadata = await discoverAuthorizationServerMetadata(issuer);
    assertAsMetadata(metadata, issuer, 'discoverAuthorizationServerMetadata');
    return metadata;
  });

  await step('mcp-sdk: discoverOAuthServerInfo', async () => {
    const info = await discoverOAuthServerInfo(serverUrl, { resourceMetadataUrl: challenge.resourceMetadataUrl });
    expectEqual(info.resourceMetadata, prm, 'discoverOAuthServerInfo resourceMetadata');
    expectEqual(info.authorizationServerUrl, prm.authorization_servers[0], 'discoverOAuthServerInfo authorizationServerUrl');
    expectEqual(info.authorizationServerMetadata, asMetadata, 'discoverOAuthServerInfo authorizationServerMetadata');
  });

  // What an MCP host does: the SDK's Streamable HTTP transport gets the 401 and runs
  // auth() with the challenge's resource_metadata and scope. Discovery and the resource
  // check must pass; the flow may then stop where the proxy offers no grant.
  const host = await step('mcp-sdk: StreamableHTTPClientTransport 401 -> auth()', async () => {
    const { provider, seen } = recordingProvider();
    const transport = new StreamableHTTPClientTransport(serverUrl, { authProvider: provider });
    let outcome = 'no error';
    try {
      await transport.start();
      await transport.send({
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: {
          protocolVersion: '2025-06-18',
          capabilities: {},
          clientInfo: { name: 'authmd-proxy-discovery-check', version: '0.0.0' },
        },
      });
    } catch (error) {
      outcome = describeError(error);
    } finally {
      await transport.close().catch(() => {});
    }
    if (/Protected resource .* does not match expected/.test(outcome)) fail(`auth() rejected the resource: ${outcome}`);
    const state = seen.discoveryState;
    if (!state) fail(`auth() stopped before saving its discovery state: ${outcome}`);
    expectEqual(state.resourceMetadataUrl, expectedMetadataUrl, 'auth() discovery state resourceMetadataUrl');
    expectEqual(state.resourceMetadata, prm, 'auth() discovery state resourceMetadata');
    expectEqual(state.authorizationServerUrl, prm.authorization_servers[0], 'auth() discovery state authorizationServerUrl');
    expectEqual(state.authorizationServerMetadata, asMetadata, 'auth() discovery state authorizationServerMetadata');
    return { outcome, authorization_url: seen.authorizationUrl };
  });

  // Not asserted: whether the openid-configuration alias is a complete OIDC Discovery
  // document by the SDK's schema (the SDK only reads it when the RFC 8414 URL fails).
  const oidcAlias = await step('mcp-sdk: openid-configuration alias (informational)', async () => {
    const response = await fetch(`${origin}/.well-known/openid-configuration`);
    const parsed = OpenIdProviderDiscoveryMetadataSchema.safeParse(await response.json());
    return parsed.success ? 'valid' : `not a complete OIDC document: ${parsed.error.issues.map((i) => i.path.join('.')).join(', ')} required`;
  });

  return {
    server_url: serverUrl.href,
    resource_metadata: challenge.resourceMetadataUrl.href,
    scope: challenge.scope,
    resource,
    issuer: asMetadata.issuer,
    checks: [
      'extractWWWAuthenticateParams: resource_metadata, scope',
      'discoverOAuthProtectedResourceMetadata: path-aware and via resource_metadata, schema-valid',
      'checkResourceAllowed + selectResourceURL (auth()) accept resource',
      'discoverAuthorizationServerMetadata: schema-valid; issuer, authorization_endpoint, token_endpoint, response_types_supported',
      'discoverOAuthServerInfo agrees',
      'StreamableHTTPClientTransport 401 -> auth() discovery state',
    ],
    auth_flow_outcome: host.outcome,
    auth_flow_authorization_url: host.authorization_url,
    openid_configuration_as_oidc: oidcAlias,
  };
}

// ---------------------------------------------------------------------------------

async function main() {
  const origin = baseUrl('discovery.mjs', { originOnly: true }).origin;
  const walks = [];
  for (const target of [
    { method: 'GET', path: '/mcp/tools', resource: (o) => `${o}/mcp`, scope: 'offers:read' },
    { method: 'POST', path: '/api/v1/offers', resource: (o) => o, scope: 'offers:write' },
  ]) {
    walks.push(await oauth4webapiWalk(origin, target));
  }
  const mcp = await mcpSdkWalk(origin);
  return {
    origin,
    node: process.version,
    oauth4webapi: { version: version('oauth4webapi'), walks },
    mcp_sdk: { version: version('@modelcontextprotocol/sdk'), ...mcp },
  };
}

await run(main);
