"""A real browser through the proxy's sign-in and consent pages.

Run by tests/it/browser.rs, which starts the proxy, a loopback listener standing
in for the OAuth client's redirect URI, and this script. Chromium (the system's
build, at --chromium; Playwright's own browser downloads are never used) runs
headless with JavaScript disabled (checked on a page of its own), so every
step below is done by plain HTML forms and redirects, as the pages promise.

What it checks, in one browser context (one cookie jar, one person):

1. Framing: a page on another origin (a loopback port this script serves)
   puts the sign-in page in an iframe; the browser must refuse to render it,
   saying that `frame-ancestors 'none'` forbids it, while a control iframe of
   a framable document of the proxy's renders in the same page.
2. Wrong password: the authorization URL for the deny scenario leads to the
   sign-in page; a wrong password shows the form again with an error message
   and the username kept.
3. Sign-in: the right password leads back through the authorization endpoint
   to the consent page, which shows the client's name, the redirect URI's
   host and each scope's description. The consent page, framed as in 1, is
   refused too (the proxy answers the iframe with the consent page, with its
   headers; the browser does not show it).
4. Deny: the Deny button sends the browser to the redirect URI with
   `error=access_denied`.
5. Allow: the authorization URL for the allow scenario goes straight to the
   consent page (the person is signed in, and a denial is not remembered);
   Allow sends the browser to the redirect URI with `code`, `state`, `iss`.

It prints one JSON line: `{"ok": true, ...}` with the callback URLs the browser
reached, the page titles it saw, and the console messages of the pages (a CSP
violation would show there), or `{"ok": false, "error": ...}` and exits 1.
The code itself is exchanged by the Rust test, with the PKCE verifier.
"""

import argparse
import html
import http.server
import json
import sys
import threading
from urllib.parse import parse_qs, urlencode, urlsplit

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import sync_playwright

# How long one navigation or action may take, in milliseconds.
TIMEOUT_MS = 30_000


class Failed(Exception):
    """A check that did not hold."""


def check(condition, message):
    if not condition:
        raise Failed(message)


def query_of(url):
    """The query of `url` as a dict of single values."""
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def origin_of(url):
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Run:
    """The browser session and what it has seen."""

    def __init__(self, page, proxy_origin):
        self.page = page
        self.proxy_origin = proxy_origin
        self.titles = []
        self.console = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))

    def _on_console(self, message):
        self.console.append(f"{message.type}: {message.text}")

    def visit(self, url):
        self.page.goto(url, wait_until="load")
        return self.seen()

    def seen(self):
        """Records and returns the title of the page now shown."""
        title = self.page.title()
        self.titles.append(title)
        return title

    def on_proxy(self):
        return origin_of(self.page.url) == self.proxy_origin

    def text(self):
        return self.page.inner_text("body")

    def sign_in(self, username, password):
        """Fills the password form and submits it, waiting for the next page."""
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        with self.page.expect_navigation(wait_until="load"):
            self.page.get_by_role("button", name="Sign in").click()
        return self.seen()

    def decide(self, button):
        """Clicks Allow or Deny on the consent page; returns the URL reached."""
        with self.page.expect_navigation(wait_until="load"):
            self.page.get_by_role("button", name=button, exact=True).click()
        self.seen()
        return self.page.url


class Framer:
    """A page on another origin (a loopback port of its own) that frames others.

    `GET /?victim=URL&control=URL` answers a page with two iframes: the page
    under test, and a control that may be framed (to show that a frame of the
    proxy's origin does render here, so a blank victim means a refusal). A real
    server rather than Playwright's routing: in a page answered by routing,
    Chromium refused the control frame too (presumably its local network
    access checks, a routed answer having no address), which proves nothing.
    """

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                query = query_of(self.path)
                victim = html.escape(query.get("victim", ""))
                control = html.escape(query.get("control", ""))
                body = (
                    "<!doctype html><title>Framer</title>"
                    # Shows whether scripts run (they must not: JavaScript is off).
                    "<script>document.title = 'scripts run'</script>"
                    f'<iframe name="victim" src="{victim}"></iframe>'
                    f'<iframe name="control" src="{control}"></iframe>'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def frame(self, context, victim, control, control_text):
        """Frames `victim` and `control`; checks that only the control renders."""
        framer = f"{self.origin}/?{urlencode({'victim': victim, 'control': control})}"
        page = context.new_page()
        # What the proxy answered the iframe's request with (the browser then
        # refused to show it).
        answers = []
        page.on("response", lambda response: answers.append(response))
        try:
            try:
                with page.expect_console_message(
                    lambda message: "frame-ancestors" in message.text
                ) as refusal:
                    page.goto(framer, wait_until="load")
            except PlaywrightTimeoutError:
                raise Failed(
                    f"no refusal by frame-ancestors of {victim} within {TIMEOUT_MS} ms "
                    "(framed, or refused for another reason such as X-Frame-Options)"
                ) from None
            shown = {"refusal": refusal.value.text, "scripts_run": page.title() != "Framer"}
            for name in ["victim", "control"]:
                frame = page.frame(name=name)
                check(frame is not None, f"the framing page has no {name} iframe")
                shown[name] = {"url": frame.url, "has_form": "<form" in frame.content()}
            control_shown = page.frame(name="control").content()
            answer = next((a for a in answers if a.url == victim), None)
            check(answer is not None, f"no answer to the iframe's request seen: {victim}")
            shown["victim"]["status"] = answer.status
            shown["victim"]["csp"] = answer.header_value("content-security-policy") or ""
        finally:
            page.close()
        check(not shown["victim"]["has_form"], f"the framed page rendered its form: {shown}")
        check(
            not shown["victim"]["url"].startswith(origin_of(victim)),
            f"the frame shows the proxy's page: {shown}",
        )
        check(
            shown["control"]["url"] == control and control_text in control_shown,
            f"the control frame did not render, so a blank frame proves nothing: {shown}",
        )
        check("frame-ancestors 'none'" in shown["refusal"], shown["refusal"])
        check(not shown["scripts_run"], "JavaScript is on in this browser")
        return shown


def scenario(args):
    proxy_origin = origin_of(args.deny)
    redirect_uri = query_of(args.deny)["redirect_uri"]
    # A document of the proxy's that may be framed: the control frame.
    control = f"{proxy_origin}/.well-known/oauth-authorization-server"
    result = {}
    framer = Framer()
    with sync_playwright() as playwright:
        # Playwright passes --no-sandbox itself (its `chromium_sandbox` defaults
        # to False), which Chromium needs when run as root, as in CI.
        browser = playwright.chromium.launch(
            executable_path=args.chromium, headless=True, timeout=TIMEOUT_MS
        )
        try:
            context = browser.new_context(java_script_enabled=False)
            context.set_default_timeout(TIMEOUT_MS)
            run = Run(context.new_page(), proxy_origin)

            # 1. The sign-in page, framed by another origin.
            result["framed_sign_in"] = framer.frame(
                context, f"{proxy_origin}/oauth2/login", control, "authorization_endpoint"
            )

            # 2. To the sign-in page, and a wrong password.
            title = run.visit(args.deny)
            check(run.on_proxy(), f"not on the proxy: {run.page.url}")
            check(urlsplit(run.page.url).path == "/oauth2/login", run.page.url)
            check(title.startswith("Sign in"), f"sign-in page title: {title!r}")
            title = run.sign_in(args.username, "not the password")
            check(title.startswith("Sign in"), f"after a wrong password: {title!r}")
            text = run.text()
            check("Wrong username or password." in text, f"no error shown: {text}")
            check(
                run.page.get_by_label("Username").input_value() == args.username,
                "the username is not kept",
            )
            check(
                run.page.get_by_label("Password").input_value() == "",
                "the password is kept",
            )
            result["wrong_password"] = {"title": title, "url_path": urlsplit(run.page.url).path}

            # 3. The right password: the consent page.
            title = run.sign_in(args.username, args.password)
            consent_url = run.page.url
            check(run.on_proxy(), f"not on the proxy: {consent_url}")
            check(
                urlsplit(consent_url).path == "/oauth2/authorize",
                f"not back at the authorization endpoint: {consent_url}",
            )
            check(title == f"Allow {args.client_name}?", f"consent page title: {title!r}")
            text = run.text()
            expected = [args.client_name, urlsplit(redirect_uri).netloc, *args.scope]
            for item in expected:
                check(item in text, f"the consent page does not show {item!r}:\n{text}")
            result["consent"] = {"title": title, "shows": expected}
            result["framed_consent"] = framer.frame(
                context, consent_url, control, "authorization_endpoint"
            )

            # 4. Deny.
            denied = run.decide("Deny")
            check(denied.startswith(redirect_uri), f"denied, but went to {denied}")
            result["deny"] = {"callback": denied, "query": query_of(denied)}

            # 5. Allow, on a new authorization request.
            title = run.visit(args.allow)
            check(title == f"Allow {args.client_name}?", f"consent page title: {title!r}")
            allowed = run.decide("Allow")
            check(allowed.startswith(redirect_uri), f"allowed, but went to {allowed}")
            result["allow"] = {"callback": allowed, "query": query_of(allowed)}

            result["titles"] = run.titles
            result["console"] = run.console
            context.close()
        finally:
            browser.close()
            framer.close()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", required=True, help="the Chromium executable")
    parser.add_argument("--deny", required=True, help="the authorization URL to deny")
    parser.add_argument("--allow", required=True, help="the authorization URL to allow")
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--client-name", required=True, help="shown on the consent page")
    parser.add_argument(
        "--scope", action="append", default=[], help="a scope description the page shows"
    )
    args = parser.parse_args()
    try:
        result = scenario(args)
    except (Failed, PlaywrightError) as error:
        print(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}))
        return 1
    print(json.dumps({"ok": True, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
