"""/openapi.json and /docs: the API description and a Swagger UI that needs no internet."""

from flask import Blueprint, current_app, render_template, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from memlayer.web.openapi import build_spec

bp = Blueprint("docs", __name__)


@bp.get("/openapi.json")
def openapi_json():
    """The OpenAPI 3 document."""
    spec = current_app.extensions.get("memlayer.web.openapi")
    if spec is None:
        spec = current_app.extensions["memlayer.web.openapi"] = build_spec(current_app)
    return spec


@bp.get("/docs")
def docs_page():
    """Swagger UI, served from local files."""
    return render_template("docs.html")


@bp.get("/docs/assets/<path:filename>")
def docs_asset(filename: str):
    """Swagger UI's own JavaScript and CSS, shipped in the swagger-ui-bundle package."""
    return send_from_directory(swagger_ui_path, filename, max_age=86400)
