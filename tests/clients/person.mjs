// The person in an authorization-code flow, played without a browser: a small
// cookie-keeping user agent that follows every redirect by hand, opens the
// authorization URL a client built, signs in on the proxy's static sign-in form,
// allows the consent page, and stops at the redirect back to the client's loopback
// redirect_uri, whose Location it returns (no listener: a native app's loopback
// server would receive exactly that request).
//
// Forms are read from the HTML as a browser would submit them: the form's action
// (resolved against the page), its hidden fields (the CSRF token among them) sent
// back unchanged, the visible fields filled in, and the pressed button's name and
// value added. Nothing here knows the proxy's field names beyond what the page says.
//
// Shared by authcode.mjs (MCP SDK) and authcode_oauth4webapi.mjs (oauth4webapi).

import { fail } from './check.mjs';

const MAX_HOPS = 20;

const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", '#39': "'" };

function decodeEntities(text) {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z0-9]+);/gi, (whole, name) => {
    const lower = name.toLowerCase();
    if (lower.startsWith('#x')) return String.fromCodePoint(parseInt(lower.slice(2), 16));
    if (lower.startsWith('#')) return String.fromCodePoint(parseInt(lower.slice(1), 10));
    return ENTITIES[lower] ?? whole;
  });
}

// The attributes of one start tag's inside (`name="x" value='y' required`), names
// lower-cased, values entity-decoded.
function attributesOf(text) {
  const attributes = {};
  const pattern = /([^\s"'=<>`/]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g;
  for (const m of text.matchAll(pattern)) {
    attributes[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return attributes;
}

function textOf(html) {
  const visible = html.replace(/<(style|script|head)\b[\s\S]*?<\/\1\s*>/gi, ' ').replace(/<[^>]*>/g, ' ');
  return decodeEntities(visible).replace(/\s+/g, ' ').trim();
}

// Every form of a page: its method, action, inputs and submit buttons.
export function formsOf(html) {
  const forms = [];
  for (const m of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form\s*>/gi)) {
    const attributes = attributesOf(m[1]);
    const inputs = [...m[2].matchAll(/<input\b([^>]*)>/gi)].map((i) => attributesOf(i[1]));
    const buttons = [...m[2].matchAll(/<button\b([^>]*)>([\s\S]*?)<\/button\s*>/gi)].map((b) => ({
      ...attributesOf(b[1]),
      text: textOf(b[2]),
    }));
    forms.push({
      method: (attributes.method ?? 'get').toLowerCase(),
      action: attributes.action,
      inputs,
      buttons,
    });
  }
  return forms;
}

// The fields a browser sends for `form` with `values` typed into its visible inputs
// and `button` pressed.
function submission(form, values, button) {
  const fields = new URLSearchParams();
  for (const input of form.inputs) {
    const type = (input.type ?? 'text').toLowerCase();
    if (!input.name || ['submit', 'button', 'reset', 'image', 'file'].includes(type)) continue;
    if (['checkbox', 'radio'].includes(type) && !('checked' in input)) continue;
    const value = type === 'hidden' ? input.value ?? '' : values(input) ?? input.value ?? '';
    fields.append(input.name, value);
  }
  if (button?.name) fields.append(button.name, button.value ?? '');
  return fields;
}

function isLoopback(url) {
  return ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname);
}

// Cookies per origin: host-only, `Path` prefixes honoured, `Max-Age=0` and past
// `Expires` delete. A `Secure` cookie is kept for https and, as browsers treat
// them as secure contexts, for loopback origins.
class CookieJar {
  #cookies = new Map(); // origin -> Map(name -> {value, path})

  store(url, response) {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...rest] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const attributes = Object.fromEntries(
        rest.map((a) => {
          const i = a.indexOf('=');
          return i < 0 ? [a.trim().toLowerCase(), ''] : [a.slice(0, i).trim().toLowerCase(), a.slice(i + 1).trim()];
        }),
      );
      if ('secure' in attributes && url.protocol !== 'https:' && !isLoopback(url)) continue;
      const jar = this.#cookies.get(url.origin) ?? new Map();
      this.#cookies.set(url.origin, jar);
      const expired =
        ('max-age' in attributes && Number(attributes['max-age']) <= 0) ||
        ('expires' in attributes && !('max-age' in attributes) && Date.parse(attributes.expires) <= Date.now());
      if (expired) {
        jar.delete(name);
      } else {
        jar.set(name, { value, path: attributes.path?.startsWith('/') ? attributes.path : '/' });
      }
    }
  }

  header(url) {
    const jar = this.#cookies.get(url.origin);
    if (!jar) return undefined;
    const pairs = [...jar]
      .filter(([, c]) => url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map(([name, c]) => `${name}=${c.value}`);
    return pairs.length > 0 ? pairs.join('; ') : undefined;
  }

  names(url) {
    return [...(this.#cookies.get(url.origin)?.keys() ?? [])];
  }
}

// The redirect reached `redirectUri`: same origin (any port for a loopback
// redirect, RFC 8252 §7.3) and same path.
function isRedirectBack(location, redirectUri) {
  const sameHost = isLoopback(redirectUri)
    ? location.protocol === redirectUri.protocol && location.hostname === redirectUri.hostname
    : location.origin === redirectUri.origin;
  return sameHost && location.pathname === redirectUri.pathname;
}

// A person with a username and password at the proxy's static sign-in, and a
// browser of their own (its cookies outlive one authorization).
export class Person {
  #jar = new CookieJar();

  constructor({ username, password }) {
    this.username = username;
    this.password = password;
  }

  // Opens `authorizationUrl` and does what the pages ask until the proxy redirects
  // to `redirectUri`: returns that Location (as a URL) and the way there (method,
  // path and status of each request; no query strings, which carry codes).
  async authorize(authorizationUrl, redirectUri) {
    const back = new URL(redirectUri);
    const steps = [];
    let request = { method: 'GET', url: new URL(authorizationUrl) };
    for (let hop = 0; hop < MAX_HOPS; hop += 1) {
      const headers = { accept: 'text/html' };
      const cookie = this.#jar.header(request.url);
      if (cookie) headers.cookie = cookie;
      if (request.body) headers['content-type'] = 'application/x-www-form-urlencoded';
      const response = await fetch(request.url, { method: request.method, headers, body: request.body, redirect: 'manual' });
      this.#jar.store(request.url, response);
      const step = { method: request.method, path: request.url.pathname, status: response.status };
      steps.push(step);

      if (response.status >= 300 && response.status < 400) {
        await response.body?.cancel();
        const location = response.headers.get('location');
        if (!location) fail(`${step.method} ${step.path}: ${response.status} without a Location`);
        const next = new URL(location, request.url);
        if (isRedirectBack(next, back)) {
          step.to = 'redirect_uri';
          return { location: next, steps };
        }
        request = { method: 'GET', url: next };
        continue;
      }

      const html = await response.text();
      const contentType = response.headers.get('content-type') ?? '';
      if (response.status !== 200 || !contentType.startsWith('text/html')) {
        fail(`${step.method} ${step.path}: ${response.status} ${contentType}: ${textOf(html).slice(0, 400)}`);
      }
      const forms = formsOf(html);
      const signIn = forms.find((f) => f.inputs.some((i) => i.type?.toLowerCase() === 'password'));
      const consent = forms.find((f) => f.buttons.some((b) => b.text === 'Allow'));
      let form;
      let fields;
      if (signIn) {
        step.page = 'sign-in';
        form = signIn;
        const typed = (input) => {
          if (input.type?.toLowerCase() === 'password') return this.password;
          if (input.autocomplete === 'username' || input.name === 'username') return this.username;
          return undefined;
        };
        const button = signIn.buttons.find((b) => (b.type ?? 'submit') === 'submit');
        fields = submission(signIn, typed, button);
      } else if (consent) {
        step.page = 'consent';
        form = consent;
        fields = submission(consent, () => undefined, consent.buttons.find((b) => b.text === 'Allow'));
      } else {
        fail(`${step.method} ${step.path}: a page with neither a sign-in form nor an Allow button: ${textOf(html).slice(0, 400)}`);
      }
      if (!form.inputs.some((i) => i.type?.toLowerCase() === 'hidden' && /csrf/i.test(i.name ?? ''))) {
        fail(`${step.method} ${step.path}: the ${step.page} form has no hidden CSRF field`);
      }
      const action = new URL(form.action ?? '', request.url);
      request =
        form.method === 'post'
          ? { method: 'POST', url: action, body: fields.toString() }
          : { method: 'GET', url: new URL(`${action.origin}${action.pathname}?${fields}`) };
    }
    return fail(`no redirect to ${back.href} after ${MAX_HOPS} requests: ${JSON.stringify(steps)}`);
  }

  // The names of the cookies the browser holds for `url` (never their values).
  cookieNames(url) {
    return this.#jar.names(new URL(url));
  }
}
