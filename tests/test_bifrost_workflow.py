"""BIFRÖST end to end through ComfyUI's executor with tiny models in the released key layout
(converted by Diorama's converter): the detail hint, the depth hint and the identity tokens each
reach the model — change one, the sampled latent changes; change nothing, it does not."""
from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch


def graph(mask_growth: float = 0.02, hint_depth_near: float = 0.9, invert_identity_reference: bool = False,
          prefix: str = "bifrost_e2e") -> dict:
    """Scene → depth → placement → fuse → hints; identity tokens; two ControlNets; a 1-step KSampler
    on a 16² latent (ControlNet resizes the 512² hints to it) whose latent is saved."""
    identity_reference = ["20", 0] if invert_identity_reference else ["1", 2]
    return {
        "1": {"class_type": "DioramaBundledScene", "inputs": {"width": 256, "height": 192, "reference_size": 128}},
        "2": {"class_type": "DioramaDepthModelLoader", "inputs": {"model_name": "Depth-Anything-V2-Small-hf"}},
        "3": {"class_type": "DioramaDepthEstimate", "inputs": {"depth_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "DioramaDepthEstimate", "inputs": {"depth_model": ["2", 0], "image": ["1", 2]}},
        "5": {"class_type": "DioramaPlacementDepthRange",
              "inputs": {"background": ["1", 0], "x": 0.5, "y": 0.45, "width": 0.25, "height": 0.35,
                         "depth_far": 0.7, "depth_near": 0.9}},
        "6": {"class_type": "DioramaBifrostDepthFuse", "inputs": {"background_depth": ["3", 0], "object_depth": ["4", 0],
                                                                   "object_mask": ["1", 3], "placement": ["5", 0]}},
        # A second fusion at another depth feeds only the depth hint (the target mask stays node 6's).
        "7": {"class_type": "DioramaPlacementDepthRange",
              "inputs": {"background": ["1", 0], "x": 0.5, "y": 0.45, "width": 0.25, "height": 0.35,
                         "depth_far": 0.7, "depth_near": hint_depth_near}},
        "8": {"class_type": "DioramaBifrostDepthFuse", "inputs": {"background_depth": ["3", 0], "object_depth": ["4", 0],
                                                                   "object_mask": ["1", 3], "placement": ["7", 0]}},
        "9": {"class_type": "DioramaBifrostHints",
              "inputs": {"background": ["1", 0], "target_mask": ["6", 1], "reference": ["1", 2], "reference_mask": ["1", 3],
                         "crop_ratio": 2.0, "detail_threshold": 50, "mask_growth": mask_growth, "method": "BIFRÖST",
                         "fused_depth": ["8", 0], "placement": ["5", 0]}},
        "10": {"class_type": "UNETLoader", "inputs": {"unet_name": "bifrost_unet.safetensors", "weight_dtype": "default"}},
        "11": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "bifrost_control_detail.safetensors"}},
        "12": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "bifrost_control_depth.safetensors"}},
        "13": {"class_type": "DioramaDinoV2Loader", "inputs": {"clip_name": "bifrost_dinov2_g.safetensors"}},
        "14": {"class_type": "DioramaIdentityAdapterLoader", "inputs": {"adapter_name": "bifrost_identity.safetensors"}},
        "20": {"class_type": "ImageInvert", "inputs": {"image": ["1", 2]}},
        "15": {"class_type": "DioramaIdentityEncode",
               "inputs": {"clip_vision": ["13", 0], "identity_adapter": ["14", 0], "reference": identity_reference,
                          "reference_mask": ["1", 3]}},
        "16": {"class_type": "DioramaApplyControlNets",
               "inputs": {"positive": ["15", 0], "negative": ["15", 1], "detail_control_net": ["11", 0],
                          "detail_hint": ["9", 1], "detail_strength": 1.0, "depth_control_net": ["12", 0],
                          "depth_hint": ["9", 2], "depth_strength": 1.0}},
        "17": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "18": {"class_type": "KSampler",
               "inputs": {"model": ["10", 0], "positive": ["16", 0], "negative": ["16", 1], "latent_image": ["17", 0],
                          "seed": 7, "steps": 1, "cfg": 5.0, "sampler_name": "ddim", "scheduler": "ddim_uniform",
                          "denoise": 1.0}},
        "19": {"class_type": "SaveLatent", "inputs": {"samples": ["18", 0], "filename_prefix": f"latents/{prefix}"}},
    }


@pytest.fixture(scope="module")
def sample(run_prompt, base_dir, tiny_bifrost_models, tiny_depth_models):
    def run(**changes) -> torch.Tensor:
        report = run_prompt(graph(**changes))
        saved = report.outputs["19"]["latents"][0]
        path = Path(base_dir) / "output" / saved["subfolder"] / saved["filename"]
        return safetensors.torch.load_file(str(path))["latent_tensor"]

    return run


@pytest.fixture(scope="module")
def base(sample):
    return sample()


def test_the_same_graph_samples_the_same_latent(sample, base):
    assert torch.equal(sample(prefix="repeat"), base)


@pytest.mark.parametrize("change", [
    dict(mask_growth=0.1),  # the detail hint's mask channel
    dict(hint_depth_near=0.75),  # the depth hint only
    dict(invert_identity_reference=True),  # the identity tokens only
], ids=["detail hint", "depth hint", "identity tokens"])
def test_each_condition_reaches_the_model(sample, base, change):
    changed = sample(**change)
    assert changed.shape == base.shape
    assert not torch.allclose(changed, base, atol=1e-6), f"{change} did not change what the model samples"


def test_ddim_50_in_comfyui_visits_the_reference_timesteps(node_class, tiny_bifrost_models):
    """The reference samples DDIM 50 (timesteps 1, 21, …, 981, η 0) on the linear β schedule; ComfyUI's
    'ddim' sampler with the 'ddim_uniform' scheduler on the converted UNet visits the same noise
    levels, then ends at σ = 0 where the reference's last step ends at ᾱ₀ (σ ≈ 0.029)."""
    import comfy.samplers
    import numpy as np

    from reference_data import reference_dir

    golden = np.load(reference_dir("bifrost") / "ddim_schedule.npz")
    model = node_class("UNETLoader")().load_unet("bifrost_unet.safetensors", "default")[0]
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", 50).double()
    alphas = torch.from_numpy(golden["ddim_alphas"][::-1].copy())
    expected = ((1 - alphas) / alphas).sqrt()
    assert sigmas.shape == (51,) and float(sigmas[-1]) == 0.0
    torch.testing.assert_close(sigmas[:-1], expected, rtol=1e-5, atol=1e-6)
    assert np.array_equal(golden["ddim_timesteps"], np.arange(1, 1000, 20))
