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
def _fast_password_hashing(settings):
    """Creating Alice, Bob and Charlie in every test should not cost seconds of PBKDF2."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
