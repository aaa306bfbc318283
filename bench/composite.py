"""CompositeSample: cost against the photo's size, and overhead over plain KSampler on the window."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from .measure import median_seconds, peak_rss_mib

STEPS = 4


def bench_composite(node: dict, repeats: int) -> None:
    import folder_paths

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import tiny_sd

    with tempfile.TemporaryDirectory(prefix="diorama-bench-") as scratch:
        checkpoint = tiny_sd.write_checkpoint(Path(scratch) / tiny_sd.CHECKPOINT)
        folder_paths.add_model_folder_path("checkpoints", scratch)
        model, clip, vae = node["CheckpointLoaderSimple"]().load_checkpoint(checkpoint.name)[:3]
    positive = node["CLIPTextEncode"]().encode(clip, "a wooden crate")[0]
    negative = node["CLIPTextEncode"]().encode(clip, "")[0]

    def photo(size: int):
        background = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(0))
        blend = torch.zeros(1, size, size)
        # The same 160² object in both photos, so the 512² window is the same size.
        blend[0, size // 2 - 80:size // 2 + 80, size // 2 - 80:size // 2 + 80] = 1
        window = node["DioramaCompositeWindow"].execute(background, 2.0, 512, mask=blend, vae=vae).result[0]
        return background, blend, window

    def composite(background, blend, window):
        return node["DioramaCompositeSample"].execute(model, positive, negative, vae, background, window, blend, 0, STEPS,
                                                      5.0, "euler", "normal", 1.0, 1, 4.0, True)

    small, large = photo(512), photo(4096)
    window_pixels = node["DioramaCropToWindow"].execute(small[2], image=small[0]).result[0]

    def plain():
        latent = node["VAEEncode"]().encode(vae, window_pixels)[0]
        samples = node["KSampler"]().sample(model, 0, STEPS, 5.0, "euler", "normal", positive, negative, latent)[0]
        return node["VAEDecode"]().decode(vae, samples)

    with torch.inference_mode():
        t_plain = median_seconds(plain, repeats)
        t_small = median_seconds(lambda: composite(*small), repeats)
        t_large = median_seconds(lambda: composite(*large), repeats)
    print(f"CompositeSample, tiny SD1.5-shaped checkpoint, {STEPS} steps, {small[2].sample_hw[1]}x{small[2].sample_hw[0]} window:")
    print(f"  plain VAEEncode+KSampler+VAEDecode on the window: {t_plain * 1000:8.1f} ms")
    print(f"  CompositeSample, 512² background:                 {t_small * 1000:8.1f} ms  overhead {t_small / t_plain - 1:+.1%} (target ≤ 5%)")
    print(f"  CompositeSample, 4096² background:                {t_large * 1000:8.1f} ms  4096²/512² = {t_large / t_small:.3f} (target ≤ 1.15)")
    print(f"  peak RSS after the 4096² runs: {peak_rss_mib():.0f} MiB")
