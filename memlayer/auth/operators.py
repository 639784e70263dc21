"""The operator token (MEMLAYER_METRICS_TOKEN): what lets Prometheus and operators read the service's own numbers."""

import hmac

from flask import current_app, request

from memlayer.web.errors import NotFound, Unauthorized


def require_operator() -> None:
    """404 when no operator token is configured, 401 unless the request presents it as a Bearer token."""
    token = current_app.config.get("METRICS_TOKEN")
    if not token:
        raise NotFound("Not found")
    presented = request.headers.get("Authorization", "").encode()
    if not hmac.compare_digest(presented, f"Bearer {token}".encode()):
        raise Unauthorized("Operator token required")
