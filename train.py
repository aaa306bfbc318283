"""python -m diorama.train RECIPE --config FILE.yaml [--out DIR] [--resume CHECKPOINT]

Trains one recipe (IMPRINT's stages, Neural Assets, person insertion, …) on the data the YAML names,
with ComfyUI's model loading for the frozen and fine-tuned models, and writes checkpoints, validation
images, metrics and the adapter files the nodes load into DIR (default: ComfyUI's output folder,
training/RECIPE). A run in a DIR that already holds a checkpoint continues from the newest one.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .runner.boot import boot_comfyui

log = logging.getLogger("diorama.train")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diorama.train", description=__doc__.split("\n\n")[1])
    parser.add_argument("recipe", help="recipe name, e.g. imprint_stage1 (an unknown name lists the known ones)")
    parser.add_argument("--config", required=True, type=Path, help="training YAML (sections train, recipe, data, "
                                                                   "validation)")
    parser.add_argument("--out", type=Path, help="output folder (default: <ComfyUI output>/training/RECIPE)")
    parser.add_argument("--resume", type=Path, help="a checkpoint folder to continue from (default: the newest "
                                                    "one in the output folder, if any)")
    parser.add_argument("--verbose", action="store_true", help="show ComfyUI's start-up log")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("diorama").setLevel(logging.INFO)
    try:
        from .training.recipes import bifrost_placement

        if args.recipe == bifrost_placement.NAME:  # builds a VLM data set; no model is trained, no train: section
            built = bifrost_placement.build_from_config(args.config, args.out)
            log.info("wrote %d examples from %d pairs to %s", built.examples, built.pairs_used, built.jsonl)
            return 0
        from .training.config import load_config

        run = load_config(args.config)  # before ComfyUI boots: a bad file fails in a second
        boot_comfyui()
        import folder_paths

        from .training import recipes
        from .training.data.sources import open_source
        from .training.trainer import precision_dtype, resolve_device, train

        device = resolve_device(run.train)
        recipe = recipes.create(args.recipe, run.recipe, device, precision_dtype(run.train))
        data = open_source(run.data)
        validation = open_source(run.validation) if run.validation else None
        out_dir = args.out or Path(folder_paths.get_output_directory()) / "training" / args.recipe
        result = train(recipe, data, run.train, out_dir, validation=validation, resume_from=args.resume)
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    if result.losses:
        log.info("trained %s: steps %d → %d, loss %.4f → %.4f (%.2f steps/s); checkpoint %s",
                 args.recipe, result.start_step, result.steps, result.losses[0], result.losses[-1],
                 len(result.losses) / result.seconds if result.seconds else 0.0, result.checkpoint)
    for path in result.exported:
        log.info("exported %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
