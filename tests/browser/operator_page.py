"""A real browser on the operator page: sign in, claim an agent, revoke its key.

Run by tests/it/browser.rs, which starts the proxy (with a static account),
registers an agent, and runs this script with the agent's claim URL. Chromium
(the system's build, at --chromium) runs headless with JavaScript disabled, so
every step is a plain HTML form or redirect:

1. The operator page, not signed in, leads to the sign-in page; the password
   form signs in and comes back to the operator page, which lists no agent.
2. The claim URL shows the claim page; its button claims the agent.
3. The operator page lists the agent (its name) and its key (its id), with a
   Revoke button.
4. Clicking Revoke posts the form and comes back (POST-redirect-GET) to the
   operator page, which says the key was revoked and offers no button for it.

It prints one JSON line: `{"ok": true, ...}` with the URLs and texts it saw and
the pages' console messages (a CSP violation would show there), or
`{"ok": false, "error": ...}` and exits 1. The Rust test then checks that the
key is refused.
"""

import argparse
import json
import sys
from urllib.parse import urlsplit

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

# How long one navigation or action may take, in milliseconds.
TIMEOUT_MS = 30_000


class Failed(Exception):
    """A check that did not hold."""


def check(condition, message):
    if not condition:
        raise Failed(message)


def scenario(args):
    operator = args.operator
    result = {"console": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=args.chromium, headless=True, timeout=TIMEOUT_MS
        )
        try:
            context = browser.new_context(java_script_enabled=False)
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            page.on("console", lambda m: result["console"].append(f"{m.type}: {m.text}"))

            def click(name):
                with page.expect_navigation(wait_until="load"):
                    page.get_by_role("button", name=name, exact=True).click()

            # 1. Sent to sign in, and back.
            page.goto(operator, wait_until="load")
            check(urlsplit(page.url).path == "/oauth2/login", f"not at sign-in: {page.url}")
            page.get_by_label("Username").fill(args.username)
            page.get_by_label("Password").fill(args.password)
            click("Sign in")
            check(page.url == operator, f"not back at the operator page: {page.url}")
            check(page.title() == "Your agents", f"title: {page.title()!r}")
            text = page.inner_text("body")
            check("You have not claimed any agent" in text, text)

            # 2. Claim the agent.
            page.goto(args.claim, wait_until="load")
            check(page.title() == "Claim this agent", f"title: {page.title()!r}")
            click("Claim this agent")
            check(page.title() == "Claimed", f"after claiming: {page.title()!r}")

            # 3. Listed, with its key.
            page.goto(operator, wait_until="load")
            text = page.inner_text("body")
            for item in (args.agent_name, args.key_id, "Last used"):
                check(item in text, f"the operator page does not show {item!r}:\n{text}")
            result["listed"] = text

            # 4. Revoke.
            click(f"Revoke {args.key_id}")
            after = urlsplit(page.url)
            check(after.path == urlsplit(operator).path, f"not back: {page.url}")
            check(after.query == f"revoked={args.key_id}", f"no notice asked: {page.url}")
            text = page.inner_text("body")
            check("Revoked:" in text and args.key_id in text, f"no notice:\n{text}")
            remaining = page.get_by_role("button", name=f"Revoke {args.key_id}").count()
            check(remaining == 0, "the revoked key still has a Revoke button")
            result["after"] = {"url": page.url, "text": text}
            context.close()
        finally:
            browser.close()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", required=True, help="the Chromium executable")
    parser.add_argument("--operator", required=True, help="the operator page's URL")
    parser.add_argument("--claim", required=True, help="the agent's claim URL")
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--agent-name", required=True, help="the agent's client_name")
    parser.add_argument("--key-id", required=True, help="the agent's key id")
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
