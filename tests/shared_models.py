"""Where the real pretrained models that are not ours live (outside the repo: the pack stores no checkpoints).

TAEF2 is searched in order: $DIORAMA_TAEF2_DIR, `shared/models/taef2` beside the checkout, and
/work/shared/models/taef2. Missing files fail the tests that need them instead of skipping them.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TAEF2_FILES = ("taef2_encoder.safetensors", "taef2_decoder.safetensors")
TAEF2_CANDIDATES = [Path(p) for p in (os.environ.get("DIORAMA_TAEF2_DIR"),) if p] + [
    REPO.parent / "shared" / "models" / "taef2", Path("/work/shared/models/taef2")]


def taef2_dir() -> Path:
    for root in TAEF2_CANDIDATES:
        if all((root / name).is_file() for name in TAEF2_FILES):
            return root
    raise FileNotFoundError(f"TAEF2 weights ({', '.join(TAEF2_FILES)}) not found; searched "
                            f"{[str(c) for c in TAEF2_CANDIDATES]}. Set DIORAMA_TAEF2_DIR to the folder that holds them.")


def link_taef2(vae_approx: Path, name: str = "taef2") -> Path:
    """Link the real files into a vae_approx folder under `<name>_encoder/_decoder.safetensors`."""
    vae_approx.mkdir(parents=True, exist_ok=True)
    for part, source in zip(("encoder", "decoder"), TAEF2_FILES):
        target = vae_approx / f"{name}_{part}.safetensors"
        if not target.exists():
            target.symlink_to(taef2_dir() / source)
    return vae_approx
