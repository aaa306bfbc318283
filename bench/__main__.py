"""Diorama's benchmarks; every ratio is measured side by side in one run.

geometry: DepthFuse + ShapeMask + DetailMap + DepthAwarePaste at 512² … 4096², each as a ratio to
one forward of a real-size Depth Anything V2-Small (random weights) at 518². Target: under 5% of
that forward at 1024².
composite: CompositeSample on a 512² and a 4096² background with the same object (target ratio
≤ 1.15: cost follows the window), and its overhead over plain VAEEncode + KSampler + VAEDecode
on the same window (target ≤ 5%), on a tiny SD1.5-shaped checkpoint; peak memory.
conversion (only when named; writes ~11 GB to a temporary folder): peak RSS of converting a
synthetic checkpoint of the released BIFRÖST layout, against its largest part and the file size.
bifrost: BIFRÖST's preprocessing (depth fusion, reference crop, detail map, hints, DINOv2 pixels) on
the example's input sizes as a ratio to one real-size SD2.1 UNet + two ControlNets CFG step (random
weights; target ≤ 10%), and a real-size DINOv2-g forward at 224² on its own line.
neural-assets: Neural Assets token construction (two DINO ViT-B/8 passes at 224², RoIAlign, adapter,
CFG-null tokens) for 1, 10 and 23 objects on a 256² source, against one real-size SD2.1 UNet step at 512².
locate (only when named; minutes): Locate Placement with a real-size Qwen2.5-VL-3B-shaped model (random
weights, bf16 where the CPU has it) on a 1024² image: prefill, decode tokens/s, peak memory, and the share
of Locate → Depth Fuse → Depth-Aware Paste spent outside the VLM (target ≤ 2%).
train (only when named; --steps, default 6): steps/s and peak memory of every registered training recipe
at tiny size (the tests' tiny models, rendered pairs) on this machine's device.
load (only when named; --minutes, default 10): a real ComfyUI server fed the depth-aware paste example by
4 clients; prompts/minute sustained and the server's RSS over time, as a table and a PNG plot (--plot).
batch (only when named; needs ray[data]; --rows, default 24): the depth-aware paste example as a Ray Data batch
job with 1 and 2 workers: rows/s, each worker's cold start, and the per-row overhead over the single-machine
runner on the same rows (target ≤ 5%).
"""
from __future__ import annotations

import argparse

import torch

from .measure import median_seconds, peak_rss_mib


def depth_anything_v2_small():
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    # The published depth-anything-v2-small configuration (ViT-S/14 backbone, DPT head).
    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14,
                            image_size=518, out_features=["stage3", "stage6", "stage9", "stage12"],
                            reshape_hidden_states=False, layerscale_value=1.0)
    config = DepthAnythingConfig(backbone_config=backbone, fusion_hidden_size=64, head_hidden_size=32,
                                 neck_hidden_sizes=[48, 96, 192, 384], reassemble_hidden_size=384)
    return DepthAnythingForDepthEstimation(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("which", nargs="*", choices=["geometry", "composite", "conversion", "bifrost", "neural-assets",
                                                      "locate", "load", "batch", "train"],
                        default=["geometry", "composite", "bifrost", "neural-assets"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=10.0, help="load: how long to keep the server busy")
    parser.add_argument("--plot", default="output/bench_load.png", help="load: where to save the PNG plot")
    parser.add_argument("--rows", type=int, default=24, help="batch: manifest rows per run")
    parser.add_argument("--steps", type=int, default=6, help="train: measured steps per recipe")
    parser.add_argument("--recipe", help="train: measure only this recipe, in this process")
    args = parser.parse_args()
    if "conversion" in args.which:  # the converter runs in a child process: no ComfyUI needed here
        from .conversion import bench_conversion

        bench_conversion(optimizer_state=False)
        bench_conversion(optimizer_state=True)
        if set(args.which) == {"conversion"}:
            return
    if "train" in args.which:  # boots ComfyUI itself, on a base folder holding the tiny models it writes
        from .train import bench_train

        bench_train(args.steps, args.recipe)
        if set(args.which) == {"train"}:
            return

    from diorama.runner.boot import boot_comfyui

    boot_comfyui()
    import nodes

    if "geometry" in args.which:
        bench_geometry(nodes.NODE_CLASS_MAPPINGS, args.sizes, args.repeats)
    if "composite" in args.which:
        from .composite import bench_composite

        bench_composite(nodes.NODE_CLASS_MAPPINGS, max(3, args.repeats // 2))
    if "bifrost" in args.which:
        from .bifrost import bench_bifrost

        # Real-size forwards take seconds each: fewer repeats (the median needs at least 2).
        bench_bifrost(nodes.NODE_CLASS_MAPPINGS, args.repeats, max(2, args.repeats // 2))
    if "neural-assets" in args.which:
        from .neural_assets import bench_neural_assets

        bench_neural_assets(args.repeats, max(2, args.repeats // 2))
    if "locate" in args.which:
        from .locate import bench_locate

        bench_locate(nodes.NODE_CLASS_MAPPINGS, args.repeats)
    if "load" in args.which:
        from pathlib import Path

        from .load import bench_load

        bench_load(args.minutes, Path(args.plot))
    if "batch" in args.which:
        from .batch import bench_batch

        bench_batch(args.rows)


def bench_geometry(node: dict, sizes: list[int], repeats: int) -> None:
    torch.manual_seed(0)
    model = depth_anything_v2_small()
    pixels = torch.rand(1, 3, 518, 518)
    with torch.inference_mode():
        forward = median_seconds(lambda: model(pixel_values=pixels), max(3, repeats // 2))
    print(f"Depth Anything V2-Small forward at 518² (random weights): {forward * 1000:.1f} ms")
    print(f"threads: {torch.get_num_threads()}")

    scene = node["DioramaBundledScene"].execute(512, 512, 256).result
    _, _, obj, obj_mask, obj_depth, _, _ = scene
    rows = []
    for size in sizes:
        background = torch.nn.functional.interpolate(scene[0].permute(0, 3, 1, 2), size=(size, size)).permute(0, 2, 3, 1)
        depth_image = torch.nn.functional.interpolate(scene[1].values[:, None] / 12, size=(size, size))[:, 0, ..., None]
        background_depth = node["DioramaDepthFromImage"].execute(depth_image.expand(-1, -1, -1, 3), "metric (white = max_metres)", 12.0).result[0]
        placement = node["DioramaPlacementFromBox"].execute(background, 0.55, 0.35, 0.8, 0.75, "fractions", "value", 5.0, "metric").result[0]
        visible = node["DioramaDepthFuse"].execute(background_depth, obj_depth, obj_mask, placement).result[1]
        steps = {
            "DepthFuse": lambda: node["DioramaDepthFuse"].execute(background_depth, obj_depth, obj_mask, placement),
            "ShapeMask(1)": lambda: node["DioramaShapeMask"].execute(obj_mask, placement, 1),
            "DetailMap": lambda: node["DioramaDetailMap"].execute(obj, obj_mask, 50 / 255, 2),
            "DepthAwarePaste": lambda: node["DioramaDepthAwarePaste"].execute(background, obj, obj_mask, placement, 2.0, 0.5,
                                                                            visible_mask=visible),
        }
        with torch.inference_mode():
            seconds = {name: median_seconds(work, repeats) for name, work in steps.items()}
        total = sum(seconds.values())
        rows.append((size, seconds, total, peak_rss_mib()))

    names = list(rows[0][1])
    header = f"{'size':>6} " + " ".join(f"{n:>16}" for n in names) + f" {'total ms':>9} {'/ DA-V2-S':>9} {'peak RSS MiB':>13}"
    print(header)
    for size, seconds, total, peak in rows:
        cells = " ".join(f"{seconds[n] * 1000:>16.1f}" for n in names)
        print(f"{size:>5}² {cells} {total * 1000:>9.1f} {total / forward:>8.1%} {peak:>13.0f}")
    at_1024 = next((total for size, _, total, _ in rows if size == 1024), None)
    if at_1024 is not None:
        verdict = "met" if at_1024 / forward < 0.05 else "NOT met"
        print(f"target at 1024²: geometry < 5% of the depth forward — {verdict} ({at_1024 / forward:.1%})")


if __name__ == "__main__":
    main()
