"""Regenerate every example workflow's same-name .jpg from the workflow's own output.

    ./dev.sh python scripts/make_thumbnails.py [--test-models] [--steps N] [WORKFLOW_NAME ...]

ComfyUI's template browser shows the .jpg beside each workflow JSON. The picture is the first
image a SaveImage node of the workflow writes. Workflows run with the models in ComfyUI's model
folders; `--test-models` runs them instead in a throw-away base folder holding the tests' tiny
random-weight models under the same names (the pictures then show where the composite changes
the photo, not what real weights would paint).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test-models", action="store_true", help="use the tests' tiny random-weight models")
    parser.add_argument("--steps", type=int, help="sampling steps instead of each workflow's own (quick previews)")
    parser.add_argument("names", nargs="*", help="workflow names (file stems) to redo; all when none are given")
    args = parser.parse_args()
    from diorama.runner.boot import boot_comfyui
    from diorama.runner.execute import execute_prompt
    from diorama.runner.workflow import apply_overrides, load_workflow, to_api_prompt

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        base = None
        if args.test_models:
            base = scratch / "base"
            (base / "custom_nodes").mkdir(parents=True)
            (base / "custom_nodes" / "diorama").symlink_to(REPO)
        boot_comfyui(base_directory=str(base) if base else None, output_directory=str(scratch / "output"))
        if args.test_models:
            sys.path.insert(0, str(REPO / "tests"))
            import tiny_bifrost
            import tiny_depth
            import tiny_imprint
            import tiny_locate
            import tiny_neural_assets
            import tiny_person
            import tiny_sd

            tiny_depth.write_depth_models(base / "models" / "depth_estimation")
            tiny_sd.write_example_models(base / "models")
            tiny_bifrost.write_example_models(base / "models")
            tiny_neural_assets.write_example_models(base / "models")
            tiny_imprint.write_example_models(base / "models")
            tiny_person.write_example_models(base / "models")
            tiny_locate.write_example_models(base / "models" / "LLM")
            # The learned compositor's TAEF2 is the real one (no tiny version); its model is the one in small_models/.
            import shared_models

            shared_models.link_taef2(base / "models" / "vae_approx")
        for workflow in sorted((REPO / "example_workflows").glob("*.json")):
            if args.names and workflow.stem not in args.names:
                continue
            prompt = to_api_prompt(load_workflow(workflow))
            if args.steps:
                apply_overrides(prompt, [f"{node_id}.steps={args.steps}" for node_id, node in prompt.items()
                                         if "steps" in node["inputs"]])
            report = execute_prompt(prompt)
            saved = [image for out in report.outputs.values() for image in out.get("images", []) if image.get("type") == "output"]
            if not saved:
                sys.stderr.write(f"{workflow.name}: no SaveImage output to make a thumbnail from\n")
                return 1
            picture = Image.open(scratch / "output" / saved[0].get("subfolder", "") / saved[0]["filename"]).convert("RGB")
            picture.thumbnail((512, 512))
            picture.save(workflow.with_suffix(".jpg"), quality=88)
            sys.stdout.write(f"wrote {workflow.with_suffix('.jpg').relative_to(REPO)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
