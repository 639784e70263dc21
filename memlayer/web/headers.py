"""Headers every answer carries: no MIME sniffing, and no caching of anything but the docs page's assets."""

from flask import Flask, request

CACHEABLE_ENDPOINTS = {"docs.docs_asset", "static"}  # the docs page's JavaScript and CSS: public


def _secure_headers(response):
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Answers carry tokens, messages and memories: no browser or proxy may keep a copy.
    if request.endpoint not in CACHEABLE_ENDPOINTS:
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    """Add the headers to every response, errors included."""
    app.after_request(_secure_headers)
