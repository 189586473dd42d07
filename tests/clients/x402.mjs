// The x402 TypeScript client (coinbase's `@x402/core` and `@x402/evm`, with a viem
// account) reads a running authmd-proxy's 402, pays it, and reads the settlement.
//
//   npm ci --prefix tests/clients
//   node tests/clients/x402.mjs http://127.0.0.1:8080/offers ak_live_...
//
// The first argument is the URL of a protected path whose quota the key has used up
// (`GET` there must answer 402); the second is the API key, sent as `X-Agent-Key`.
// Run by tests/x402_client.rs against a proxy whose `payments:` section offers the
// one requirement in EXPECTED below, in front of a local facilitator that accepts
// the payment and settles it.
//
// Every protocol step is the library's own API:
// - `x402HTTPClient.getPaymentRequiredResponse` reads the v2 `PAYMENT-REQUIRED`
//   header (base64 JSON), and with no header the v1 body (`x402Version: 1`);
//   `PaymentRequiredV2Schema` / `PaymentRequiredV1Schema` (zod, `@x402/core/schemas`)
//   validate both as the library defines them.
// - `x402HTTPClient.createPaymentPayload` with `registerExactEvmScheme` (`@x402/evm`)
//   selects the requirement and signs an EIP-3009 `TransferWithAuthorization` with a
//   throwaway viem account (offline: no chain is contacted); viem's
//   `verifyTypedData` checks the signature against the domain the requirement names.
// - `x402HTTPClient.encodePaymentSignatureHeader` gives the `PAYMENT-SIGNATURE`
//   header of the paid retry; `getPaymentSettleResponse` decodes its
//   `PAYMENT-RESPONSE`.
// The same payment presented a second time must be refused (402) without being
// served.
//
// Prints exactly one JSON line on stdout: `{"ok":true,...}` with what was checked
// (and the payment payload sent, so the caller can compare it with what its
// facilitator saw), or `{"ok":false,"step":...,"error":...}` and a non-zero exit
// status on any failure.

import { x402Client, x402HTTPClient } from '@x402/core/client';
import { PaymentPayloadV2Schema, PaymentRequiredV1Schema, PaymentRequiredV2Schema } from '@x402/core/schemas';
import { authorizationTypes } from '@x402/evm';
import { registerExactEvmScheme } from '@x402/evm/exact/client';
import { getAddress, verifyTypedData } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';

import { baseUrl, expectEqual, fail, run, step, version } from './check.mjs';

const KEY_HEADER = 'X-Agent-Key';
// A throwaway key: the payment is only signed, never broadcast.
const PRIVATE_KEY = `0x${'11'.repeat(32)}`;

// What the proxy's `payments:` section offers (tests/x402_client.rs configures it).
const EXPECTED = {
  description: 'Offer search',
  mimeType: 'application/json',
  v2: {
    scheme: 'exact',
    network: 'eip155:84532',
    amount: '10000',
    asset: '0x036CbD53842c5426634e7929541eC2318f3dCF7e',
    payTo: '0x209693Bc6afc0C5328bA36FaF03C514EF312287C',
    maxTimeoutSeconds: 60,
    extra: { name: 'USDC', version: '2' },
  },
  networkV1: 'base-sepolia',
  chainId: 84532,
};

function schemaCheck(schema, value, what) {
  const parsed = schema.safeParse(value);
  if (!parsed.success) fail(`${what} does not pass the library's schema: ${JSON.stringify(parsed.error.issues)}`);
  return parsed.data;
}

async function get(url, headers) {
  const response = await fetch(url, { headers: { [KEY_HEADER]: apiKey(), accept: 'application/json', ...headers } });
  const text = await response.text();
  let body;
  try {
    body = text === '' ? undefined : JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: response.status, headers: response.headers, getHeader: (name) => response.headers.get(name), body, text };
}

function apiKey() {
  const key = process.argv[3];
  if (!key) fail('usage: node x402.mjs <protected url> <api key>, e.g. http://127.0.0.1:8080/offers ak_live_...');
  return key;
}

// The v2 requirements, from the PAYMENT-REQUIRED header.
function checkV2(required, url) {
  const parsed = schemaCheck(PaymentRequiredV2Schema, required, 'PAYMENT-REQUIRED');
  expectEqual(required.x402Version, 2, 'PAYMENT-REQUIRED x402Version');
  expectEqual(required.resource?.url, url.href, 'PAYMENT-REQUIRED resource.url');
  expectEqual(required.resource?.description, EXPECTED.description, 'PAYMENT-REQUIRED resource.description');
  expectEqual(required.resource?.mimeType, EXPECTED.mimeType, 'PAYMENT-REQUIRED resource.mimeType');
  expectEqual(required.accepts, [EXPECTED.v2], 'PAYMENT-REQUIRED accepts');
  if (typeof required.error !== 'string' || required.error === '') {
    fail(`PAYMENT-REQUIRED has no error string: ${JSON.stringify(required.error)}`);
  }
  return parsed;
}

// The v1 requirements, from the body.
function checkV1(required, url) {
  schemaCheck(PaymentRequiredV1Schema, required, 'the v1 body');
  expectEqual(required.x402Version, 1, 'v1 body x402Version');
  const { v2 } = EXPECTED;
  expectEqual(
    required.accepts,
    [
      {
        scheme: v2.scheme,
        network: EXPECTED.networkV1,
        maxAmountRequired: v2.amount,
        asset: v2.asset,
        payTo: v2.payTo,
        resource: url.href,
        description: EXPECTED.description,
        mimeType: EXPECTED.mimeType,
        outputSchema: null,
        maxTimeoutSeconds: v2.maxTimeoutSeconds,
        extra: v2.extra,
      },
    ],
    'v1 body accepts',
  );
}

// The EIP-3009 authorization the exact scheme signed: for the offered amount, to the
// offered recipient, from the account, signed over the token's EIP-712 domain.
async function checkAuthorization(payload, account, requirement) {
  const authorization = payload?.authorization;
  if (!authorization || typeof payload.signature !== 'string') {
    fail(`the exact payload has no authorization and signature: ${JSON.stringify(payload)}`);
  }
  expectEqual(authorization.from, account.address, 'authorization.from');
  expectEqual(getAddress(authorization.to), getAddress(requirement.payTo), 'authorization.to');
  expectEqual(authorization.value, requirement.amount ?? requirement.maxAmountRequired, 'authorization.value');
  const valid = await verifyTypedData({
    address: account.address,
    domain: {
      name: requirement.extra.name,
      version: requirement.extra.version,
      chainId: EXPECTED.chainId,
      verifyingContract: getAddress(requirement.asset),
    },
    types: authorizationTypes,
    primaryType: 'TransferWithAuthorization',
    message: {
      from: getAddress(authorization.from),
      to: getAddress(authorization.to),
      value: BigInt(authorization.value),
      validAfter: BigInt(authorization.validAfter),
      validBefore: BigInt(authorization.validBefore),
      nonce: authorization.nonce,
    },
    signature: payload.signature,
  });
  if (!valid) fail('the EIP-3009 signature does not verify against the offered domain');
}

async function main() {
  apiKey(); // its usage line names both arguments
  const url = baseUrl('x402.mjs');

  const account = privateKeyToAccount(PRIVATE_KEY);
  const client = new x402Client();
  registerExactEvmScheme(client, { signer: account });
  const http = new x402HTTPClient(client);

  const first = await step(`GET ${url.pathname}: 402`, async () => {
    const response = await get(url);
    expectEqual(response.status, 402, `GET ${url.pathname} status (body ${response.text.slice(0, 300)})`);
    if (!response.getHeader('payment-required')) fail('the 402 has no PAYMENT-REQUIRED header');
    return response;
  });

  const required = await step('getPaymentRequiredResponse: v2 PAYMENT-REQUIRED header', async () => {
    const parsed = http.getPaymentRequiredResponse(first.getHeader, first.body);
    checkV2(parsed, url);
    const result = http.parsePaymentResult({ status: first.status, getHeader: first.getHeader, body: first.body });
    expectEqual(result.paymentStatus, 'payment_required', 'parsePaymentResult paymentStatus');
    return parsed;
  });

  const requiredV1 = await step('getPaymentRequiredResponse: v1 body', async () => {
    // The library reads the body only when there is no PAYMENT-REQUIRED header.
    const parsed = http.getPaymentRequiredResponse(() => null, first.body);
    checkV1(parsed, url);
    expectEqual(first.body.error, 'payment_required', 'v1 body error');
    return parsed;
  });

  const paymentV1 = await step('createPaymentPayload: v1 (signed, not sent)', async () => {
    const payment = await http.createPaymentPayload(requiredV1);
    expectEqual(payment.x402Version, 1, 'v1 payment x402Version');
    expectEqual(payment.scheme, 'exact', 'v1 payment scheme');
    expectEqual(payment.network, EXPECTED.networkV1, 'v1 payment network');
    await checkAuthorization(payment.payload, account, requiredV1.accepts[0]);
    expectEqual(Object.keys(http.encodePaymentSignatureHeader(payment)), ['X-PAYMENT'], 'v1 payment header name');
    return payment;
  });

  const payment = await step('createPaymentPayload: v2 exact (EIP-3009)', async () => {
    const created = await http.createPaymentPayload(required);
    schemaCheck(PaymentPayloadV2Schema, created, 'the payment payload');
    expectEqual(created.x402Version, 2, 'payment x402Version');
    expectEqual(created.accepted, EXPECTED.v2, 'payment accepted');
    expectEqual(created.resource, required.resource, 'payment resource');
    await checkAuthorization(created.payload, account, created.accepted);
    return created;
  });

  const headers = await step('encodePaymentSignatureHeader', async () => {
    const encoded = http.encodePaymentSignatureHeader(payment);
    expectEqual(Object.keys(encoded), ['PAYMENT-SIGNATURE'], 'payment header name');
    return encoded;
  });

  const paid = await step(`GET ${url.pathname} with PAYMENT-SIGNATURE: 200`, async () => {
    const response = await get(url, headers);
    expectEqual(response.status, 200, `paid GET ${url.pathname} status (body ${response.text.slice(0, 300)})`);
    return response;
  });

  const settlement = await step('getPaymentSettleResponse: PAYMENT-RESPONSE', async () => {
    if (!paid.getHeader('payment-response')) fail('the paid answer has no PAYMENT-RESPONSE header');
    const settled = http.getPaymentSettleResponse(paid.getHeader);
    expectEqual(settled.success, true, 'settlement success');
    if (typeof settled.transaction !== 'string' || !/^0x[0-9a-fA-F]+$/.test(settled.transaction)) {
      fail(`settlement transaction is not a hex hash: ${JSON.stringify(settled.transaction)}`);
    }
    expectEqual(settled.network, EXPECTED.v2.network, 'settlement network');
    expectEqual(settled.payer, account.address, 'settlement payer');
    const result = http.parsePaymentResult({ status: paid.status, getHeader: paid.getHeader, body: paid.body });
    expectEqual(result.paymentStatus, 'settled', 'parsePaymentResult paymentStatus');
    return settled;
  });

  const replay = await step('the same PAYMENT-SIGNATURE again: refused', async () => {
    const response = await get(url, headers);
    expectEqual(response.status, 402, `replayed payment status (body ${response.text.slice(0, 300)})`);
    const again = http.getPaymentRequiredResponse(response.getHeader, response.body);
    checkV2(again, url);
    return { status: response.status, error: again.error, body_error: response.body?.error };
  });

  return {
    url: url.href,
    node: process.version,
    '@x402/core': version('@x402/core'),
    '@x402/evm': version('@x402/evm'),
    viem: version('viem'),
    payer: account.address,
    payment_required: {
      x402Version: required.x402Version,
      error: required.error,
      resource: required.resource,
      accepts: required.accepts,
    },
    payment_required_v1: { x402Version: requiredV1.x402Version, accepts: requiredV1.accepts },
    payment_v1: { x402Version: paymentV1.x402Version, scheme: paymentV1.scheme, network: paymentV1.network, signed: true, sent: false },
    payment,
    paid: {
      status: paid.status,
      // What the upstream (the proxy's builtin echo) saw of the paid request.
      upstream: {
        path: paid.body?.path,
        principal: paid.body?.headers?.['x-authmd-principal'],
        payment_signature_forwarded: paid.body?.headers?.['payment-signature'] !== undefined,
      },
    },
    settlement,
    replay,
  };
}

await run(main);
