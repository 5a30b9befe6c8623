"""Plotly.js, served from the plotly package's bundled copy: no CDN, one version with the Python side."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import plotly
from django.http import FileResponse, HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.http import condition, require_GET


@cache
def plotly_js_path() -> Path:
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.exists():
        raise RuntimeError(f"plotly.min.js is missing from the plotly package ({path}); reinstall plotly")
    return path


def plotly_js_url() -> str:
    return f"{reverse('plotly_js')}?v={plotly.__version__}"


def _etag(request: HttpRequest) -> str:
    return f"plotly-{plotly.__version__}"


@require_GET
@condition(etag_func=_etag)
def plotly_js(request: HttpRequest) -> HttpResponse:
    response = FileResponse(open(plotly_js_path(), "rb"), content_type="text/javascript")  # noqa: SIM115
    # The URL carries the version, so browsers may keep it for a long time.
    response["Cache-Control"] = "public, max-age=604800"
    return response
