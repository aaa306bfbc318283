"""Copy the browser tests' screenshots of the example workflows into docs/workflows/NAME.png (the
README's pictures), scaled to at most 1280×720 and stored as compressed palette PNGs.

    ./dev.sh test tests/browser/test_example_workflows_in_browser.py   # writes the screenshots
    ./dev.sh python scripts/workflow_screenshots.py [--from DIR]

DIR defaults to where the tests put them ($DIORAMA_ARTIFACTS, else .artifacts/browser/). Every example
workflow must have its screenshot there; the script writes nothing otherwise.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "workflows"
MAX_SIZE = (1280, 720)
# 128 colours keep the canvas's text and links legible at a fraction of the RGB file size.
PALETTE_COLOURS = 128


def compressed(screenshot: Path) -> Image.Image:
    picture = Image.open(screenshot).convert("RGB")
    picture.thumbnail(MAX_SIZE)
    return picture.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT)


def main() -> int:
    sys.path.insert(0, str(REPO / "tests" / "browser"))
    from frontend import artifacts_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path, help="folder holding NAME.png screenshots")
    args = parser.parse_args()
    source = args.source or artifacts_dir()
    names = sorted(path.stem for path in (REPO / "example_workflows").glob("*.json"))
    missing = [name for name in names if not (source / f"{name}.png").is_file()]
    if missing:
        sys.stderr.write(f"no screenshot in {source} for: {', '.join(missing)} "
                         "(run tests/browser/test_example_workflows_in_browser.py first)\n")
        return 1
    DOCS.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = DOCS / f"{name}.png"
        compressed(source / f"{name}.png").save(target, optimize=True)
        sys.stdout.write(f"wrote {target.relative_to(REPO)} ({target.stat().st_size // 1024} KiB)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
