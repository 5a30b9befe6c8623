"""Plotly.js is fetched once per browser: its URL names its bytes and says it never changes."""

from __future__ import annotations

import hashlib
import re

from webapp.runs.assets import plotly_js_path


def test_the_run_pages_plotly_url_names_its_bytes_and_is_kept_for_good(client_for, alice, run):
    html = client_for(alice).get(f"/runs/{run.id}/").content.decode()
    url = re.search(r'src="(/vendor/plotly-basic\.min\.js\?v=[^"]+)"', html).group(1)
    digest = hashlib.sha256(plotly_js_path("basic").read_bytes()).hexdigest()[:16]
    assert url.endswith(f"-{digest}")  # a changed file comes under a new URL
    response = client_for(alice).get(url, HTTP_ACCEPT_ENCODING="gzip")
    assert response.status_code == 200
    assert response["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response["ETag"].strip('"').endswith(digest)
