"""Suite-wide setup.

Each test session's data directory is chosen in webapp/settings.py, because
pytest-django loads the settings before this file is imported.
"""

from __future__ import annotations

import os

# Torch in test processes shares two cores with trainers and workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")
