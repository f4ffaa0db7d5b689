"""Where raybench keeps its files by default (no raybench imports: every layer may use it)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    return Path(os.environ.get("RAYBENCH_CACHE", "~/.cache/raybench")).expanduser()
