"""The README's pictures of the example workflows (docs/workflows/NAME.png, made from the browser tests'
screenshots by scripts/workflow_screenshots.py): one per workflow, shown in the README, small."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
MAX_BYTES = 150_000


def load_script():
    spec = importlib.util.spec_from_file_location("workflow_screenshots", REPO / "scripts" / "workflow_screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_shows_a_small_screenshot_of_every_example_workflow():
    readme = (REPO / "README.md").read_text()
    for path in WORKFLOWS:
        picture = REPO / "docs" / "workflows" / f"{path.stem}.png"
        assert picture.is_file(), f"no screenshot for {path.name}: run scripts/workflow_screenshots.py"
        assert f"](docs/workflows/{path.stem}.png)" in readme, f"the README does not show {picture.name}"
        with Image.open(picture) as image:
            assert image.width <= 1280 and image.height <= 720, (picture.name, image.size)
        assert picture.stat().st_size <= MAX_BYTES, (picture.name, picture.stat().st_size)


def test_screenshots_are_scaled_into_1280x720_as_palette_images(tmp_path):
    tall = tmp_path / "tall.png"
    Image.new("RGB", (1600, 1800), (200, 10, 10)).save(tall)
    picture = load_script().compressed(tall)
    assert picture.mode == "P" and picture.size == (640, 720)  # aspect kept, height bound
