"""Credentials in text that diffbench stores, logs or shows (pip specs, index and wheel URLs) are masked here."""

from __future__ import annotations

import re

# A URL's user:password@, and the usual query parameters that carry a token.
CREDENTIALS = re.compile(r"(://)[^/@\s]+@|([?&](?:token|access_token|password|secret|key)=)[^&\s]+", re.I)


def masked(text: str) -> str:
    """`text` with every credential it carries replaced by `***`."""
    return CREDENTIALS.sub(lambda m: f"{m[1]}***@" if m[1] else f"{m[2]}***", text)


def carries_credentials(text: str) -> bool:
    return CREDENTIALS.search(text) is not None
