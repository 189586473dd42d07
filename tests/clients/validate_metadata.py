"""Authlib validates a running authmd-proxy's authorization-server metadata.

    python3 tests/clients/validate_metadata.py http://127.0.0.1:8080

Fetches ``<base>/.well-known/oauth-authorization-server`` and runs Authlib's RFC 8414
validator on it (``authlib.oauth2.rfc8414.AuthorizationServerMetadata(...).validate()``,
with the RFC 9207 extension, ``authorization_response_iss_parameter_supported``), and
checks the RFC 8414 section 3.3 rule Authlib leaves to its caller: ``issuer`` is the
URL the document was fetched under. Run by tests/it/interactive_clients.rs against a
proxy with and without ``login:`` (whose metadata must validate either way).

Authlib accepts plain http for loopback hosts (RFC 8252 section 7.3), so the check
needs no ``AUTHLIB_INSECURE_TRANSPORT``; it is removed from the environment so the
https rules are applied as written.

Prints exactly one JSON line on stdout: ``{"ok": true, ...}`` on success, or
``{"ok": false, "step": ..., "error": ...}`` and exit status 1 on any failure.
"""

import json
import os
import sys
import urllib.request

WELL_KNOWN = "/.well-known/oauth-authorization-server"
TIMEOUT_SECONDS = 30

# Validation must apply Authlib's https rules, not its test-only escape hatch.
os.environ.pop("AUTHLIB_INSECURE_TRANSPORT", None)


class CheckFailed(Exception):
    pass


def report(line, code):
    sys.stdout.write(json.dumps(line) + "\n")
    sys.exit(code)


def main():
    step = "arguments"
    try:
        if len(sys.argv) != 2:
            raise CheckFailed("usage: validate_metadata.py <proxy base url>")
        base = sys.argv[1].rstrip("/")

        step = "import authlib"
        import authlib
        from authlib.oauth2 import rfc8414, rfc9207

        step = f"GET {WELL_KNOWN}"
        # Loopback only: never through a proxy from the environment.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(base + WELL_KNOWN, headers={"Accept": "application/json"})
        with opener.open(request, timeout=TIMEOUT_SECONDS) as response:
            status = response.status
            content_type = response.headers.get("Content-Type", "")
            body = response.read()
        if status != 200:
            raise CheckFailed(f"status {status}")
        if not content_type.startswith("application/json"):
            raise CheckFailed(f"Content-Type {content_type!r}")
        document = json.loads(body)

        step = "AuthorizationServerMetadata.validate (RFC 8414, RFC 9207)"
        metadata = rfc8414.AuthorizationServerMetadata(document)
        metadata.validate(metadata_classes=[rfc9207.AuthorizationServerMetadata])

        step = "the validator refuses the document without response_types_supported"
        # That it runs at all: the member RFC 8414 section 2 requires, taken out.
        stripped = {k: v for k, v in document.items() if k != "response_types_supported"}
        try:
            rfc8414.AuthorizationServerMetadata(stripped).validate()
        except ValueError:
            pass
        else:
            raise CheckFailed("Authlib accepted metadata without response_types_supported")

        step = "issuer is the URL the document was fetched under (RFC 8414 section 3.3)"
        if metadata["issuer"] != base:
            raise CheckFailed(f"issuer {metadata['issuer']!r}, fetched under {base!r}")

        report(
            {
                "ok": True,
                "authlib": authlib.__version__,
                "python": sys.version.split()[0],
                "issuer": metadata["issuer"],
                "response_types_supported": metadata.response_types_supported,
                "grant_types_supported": metadata.grant_types_supported,
                "code_challenge_methods_supported": metadata.get("code_challenge_methods_supported"),
                "authorization_response_iss_parameter_supported": metadata.get(
                    "authorization_response_iss_parameter_supported"
                ),
                "registration_endpoint": metadata.get("registration_endpoint"),
                "keys": sorted(document),
            },
            0,
        )
    except ImportError as error:
        report({"ok": False, "step": step, "error": f"ImportError: {error}", "missing": "authlib"}, 1)
    except Exception as error:  # every failure is reported as the step that failed
        report({"ok": False, "step": step, "error": f"{type(error).__name__}: {error}"}, 1)


if __name__ == "__main__":
    main()
