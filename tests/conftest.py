"""Suite-wide setup: every test session gets its own data directory.

RUNWRIGHT_DATA_DIR must be set before Django reads its settings, so it is set
at import time of this conftest (pytest imports it before pytest-django sets
Django up). Service-backed tests read RUNWRIGHT_DATABASE_URL/RUNWRIGHT_REDIS_URL.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("RUNWRIGHT_DATA_DIR", tempfile.mkdtemp(prefix="runwright-test-"))
# Torch in test processes shares two cores with trainers and workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")
