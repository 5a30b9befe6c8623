"""What the SDK's tests share (a module of its own: ``from conftest import`` is ambiguous across suites)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

SDK = Path(__file__).resolve().parents[2] / "sdk"
if str(SDK) not in sys.path:  # `make install` installs sdk/; a checkout without it still runs
    sys.path.insert(0, str(SDK))

# The outage the SDK must ride out. The 30 s is real but long for a suite on two
# cores: RUNWRIGHT_TEST_OUTAGE_SECONDS=30 runs it at full length.
OUTAGE_SECONDS = float(os.environ.get("RUNWRIGHT_TEST_OUTAGE_SECONDS", "3"))
