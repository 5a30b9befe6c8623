"""Plotly.js, served from copies on disk: no CDN, nothing fetched at run time.

Two bundles. Pages whose charts are lines and bars (run, comparison, reports, eval pages,
fleet) get Plotly's official "basic" partial bundle (scatter, bar, pie traces; 1.2 MB),
vendored under ``static/vendor/plotly-basic/`` with its license. Chromium spent about
1.7 s parsing and running the full bundle (4.8 MB) before a run page could draw, on a
2-core machine. Pages that need other trace types (the sweep page's parallel coordinates)
get the full bundle, the plotly package's own copy, so the Python side and it share a version.

Each file is read once per process and also kept gzipped (about a third the size), which
is what nearly every browser asks for.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from functools import cache
from pathlib import Path
from typing import Literal

import plotly
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.http import condition, require_GET

Bundle = Literal["basic", "full"]


def plotly_js_path(bundle: Bundle = "full") -> Path:
    if bundle == "basic":
        return Path(settings.BASE_DIR) / "static" / "vendor" / "plotly-basic" / "plotly-basic.min.js"
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@cache
def _plotly_bytes(bundle: Bundle) -> tuple[bytes, bytes]:
    path = plotly_js_path(bundle)
    if not path.exists():
        raise RuntimeError(
            f"Plotly.js ({bundle} bundle) is missing at {path}; reinstall plotly or restore the file"
        )
    raw = path.read_bytes()
    return raw, gzip.compress(raw, compresslevel=6, mtime=0)


@cache
def plotly_version(bundle: Bundle) -> str:
    """The version in the bundle's header comment (``plotly.js (basic - minified) v4.1.1``)."""
    head = _plotly_bytes(bundle)[0][:300].decode("utf-8", "replace")
    found = re.search(r"plotly\.js.*? v(\d+\.\d+\.\d+)", head)
    if not found:
        raise RuntimeError(f"no version in the header of the {bundle} Plotly.js bundle")
    return found.group(1)


@cache
def plotly_digest(bundle: Bundle) -> str:
    """A digest of the bundle's bytes: its URL changes whenever the file does."""
    return hashlib.sha256(_plotly_bytes(bundle)[0]).hexdigest()[:16]


def plotly_js_url(bundle: Bundle = "basic") -> str:
    """The bundle's URL, its version and a digest of its bytes in the query: a browser keeps
    it for good (``immutable``), and a changed file comes under a new URL."""
    name = "plotly_basic_js" if bundle == "basic" else "plotly_js"
    return f"{reverse(name)}?v={plotly_version(bundle)}-{plotly_digest(bundle)}"


def _serve(request: HttpRequest, bundle: Bundle) -> HttpResponse:
    raw, packed = _plotly_bytes(bundle)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response = HttpResponse(packed, content_type="text/javascript; charset=utf-8")
        response["Content-Encoding"] = "gzip"
    else:
        response = HttpResponse(raw, content_type="text/javascript; charset=utf-8")
    response["Vary"] = "Accept-Encoding"
    # The page's URL names the bytes (plotly_js_url): a second visit neither fetches nor asks
    # again (``immutable``: no revalidation on a reload either), for a year.
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    return response


@require_GET
@condition(etag_func=lambda request: f"plotly-{plotly_digest('full')}")
def plotly_js(request: HttpRequest) -> HttpResponse:
    """The full bundle (every trace type)."""
    return _serve(request, "full")


@require_GET
@condition(etag_func=lambda request: f"plotly-basic-{plotly_digest('basic')}")
def plotly_basic_js(request: HttpRequest) -> HttpResponse:
    """The basic partial bundle (scatter, bar, pie)."""
    return _serve(request, "basic")
