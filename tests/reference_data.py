"""Where the reference implementations' golden data lives (outside the repo: it is large and not ours).

Searched in order: $DIORAMA_REFERENCE_DIR, the `shared/reference` folder beside the checkout, and
/work/shared/reference. Missing data fails the tests that need it instead of skipping them.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CANDIDATES = [Path(p) for p in (os.environ.get("DIORAMA_REFERENCE_DIR"),) if p] + [
    REPO.parent / "shared" / "reference", Path("/work/shared/reference")]


def reference_dir(method: str) -> Path:
    for root in CANDIDATES:
        if (root / method).is_dir():
            return root / method
    raise FileNotFoundError(f"reference data for {method!r} not found; searched {[str(c) for c in CANDIDATES]}. "
                            "Set DIORAMA_REFERENCE_DIR to the folder that holds it.")
