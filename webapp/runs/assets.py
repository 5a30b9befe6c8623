"""Plotly.js, served from the plotly package's bundled copy: no CDN, one version with the Python side.

The file is about 4.6 MB; it is read once per process and also kept gzipped
(about a third the size), which is what nearly every browser asks for.
"""

from __future__ import annotations

import gzip
from functools import cache
from pathlib import Path

import plotly
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.http import condition, require_GET


def plotly_js_path() -> Path:
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@cache
def _plotly_bytes() -> tuple[bytes, bytes]:
    path = plotly_js_path()
    if not path.exists():
        raise RuntimeError(f"plotly.min.js is missing from the plotly package ({path}); reinstall plotly")
    raw = path.read_bytes()
    return raw, gzip.compress(raw, compresslevel=6, mtime=0)


def plotly_js_url() -> str:
    return f"{reverse('plotly_js')}?v={plotly.__version__}"


def _etag(request: HttpRequest) -> str:
    return f"plotly-{plotly.__version__}"


@require_GET
@condition(etag_func=_etag)
def plotly_js(request: HttpRequest) -> HttpResponse:
    raw, packed = _plotly_bytes()
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response = HttpResponse(packed, content_type="text/javascript; charset=utf-8")
        response["Content-Encoding"] = "gzip"
    else:
        response = HttpResponse(raw, content_type="text/javascript; charset=utf-8")
    response["Vary"] = "Accept-Encoding"
    # The URL carries the version, so browsers may keep it for a long time.
    response["Cache-Control"] = "public, max-age=604800"
    return response
