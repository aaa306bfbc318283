"""Regenerate every example workflow's same-name .jpg from the workflow's own output.

    ./dev.sh python scripts/make_thumbnails.py

ComfyUI's template browser shows the .jpg beside each workflow JSON. The picture is the first
image a SaveImage node of the workflow writes.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    from diorama.runner.boot import boot_comfyui
    from diorama.runner.execute import execute_prompt
    from diorama.runner.workflow import load_workflow, to_api_prompt

    with tempfile.TemporaryDirectory() as output:
        boot_comfyui(output_directory=output)
        for workflow in sorted((REPO / "example_workflows").glob("*.json")):
            report = execute_prompt(to_api_prompt(load_workflow(workflow)))
            saved = [image for out in report.outputs.values() for image in out.get("images", []) if image.get("type") == "output"]
            if not saved:
                sys.stderr.write(f"{workflow.name}: no SaveImage output to make a thumbnail from\n")
                return 1
            picture = Image.open(Path(output) / saved[0].get("subfolder", "") / saved[0]["filename"]).convert("RGB")
            picture.thumbnail((512, 512))
            picture.save(workflow.with_suffix(".jpg"), quality=88)
            sys.stdout.write(f"wrote {workflow.with_suffix('.jpg').relative_to(REPO)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
