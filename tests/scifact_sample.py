"""The first 300 SciFact documents, bundled (tests/data/scifact_sample.jsonl.gz, BEIR format,
_id/title/text only) so that tests comparing against real text need no file outside the
repository: CI runs on a clean checkout without ../shared."""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent / "data" / "scifact_sample.jsonl.gz"


@lru_cache(maxsize=1)
def scifact_rows() -> tuple[dict[str, str], ...]:
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as handle:
        return tuple(json.loads(line) for line in handle if line.strip())
