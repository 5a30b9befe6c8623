"""Whole numbers read from untrusted text: query strings, JSON fields, model references.

Python's ``int()`` and ``str.isdigit()`` are too generous for input from a request:
they accept Arabic-Indic and other scripts' digits, superscripts (``isdigit`` says yes,
``int`` then raises), underscores and surrounding spaces, and ``int()`` grows without
bound while a database's BIGINT does not (SQLite raises OverflowError, PostgreSQL a
DataError: both a 500). One parser, ASCII digits only and within BIGINT, for every caller.
"""

from __future__ import annotations

import re

BIGINT_MIN = -(2**63)
BIGINT_MAX = 2**63 - 1

# [0-9], not \d: \d matches every script's digits unless re.ASCII is given.
_DECIMAL = re.compile(r"[+-]?[0-9]{1,19}")


def parse_whole_number(text: object) -> int | None:
    """``text`` as an int if it is plain ASCII decimal within BIGINT's range, else None."""
    if not isinstance(text, str) or _DECIMAL.fullmatch(text) is None:
        return None
    value = int(text)
    return value if BIGINT_MIN <= value <= BIGINT_MAX else None
