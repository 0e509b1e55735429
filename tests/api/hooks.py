"""schemathesis hooks of `scripts/api-check.sh`.

A client sends a fresh Idempotency-Key with each new request; schemathesis
would draw the same few values again and again, and a key reused for a
different request is refused (422 idempotency_key_reused) — correctly, but
that tests nothing. Each generated case gets its own key.
"""

import uuid

import schemathesis


@schemathesis.hook
def map_headers(ctx, headers):
    if headers is not None and "Idempotency-Key" in headers:
        headers["Idempotency-Key"] = uuid.uuid4().hex
    return headers
