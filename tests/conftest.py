"""Suite-wide setup.

Each test session's data directory is chosen in webapp/settings.py, because
pytest-django loads the settings before this file is imported.
"""

from __future__ import annotations

import os

import pytest

# Torch in test processes shares two cores with trainers and workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _fast_password_hashing(request, settings):
    """Creating Alice, Bob and Charlie in every test should not cost seconds of PBKDF2.

    Browser tests log in through a server in another process, which checks
    passwords with the real hashers, so they keep them.
    """
    if request.node.get_closest_marker("browser") is None:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
