"""Loaders for Diorama's own small models: TAEF2 as a VAE and a small UNet as a MODEL."""
from __future__ import annotations

from comfy_api.latest import io

from ..loaders.model_folders import SMALL_MODEL_FOLDER, resolve_model_file, safetensors_files
from ..loaders.small_model import load_small_model
from ..loaders.taef2 import VAE_APPROX_FOLDER, load_taef2, resolve_pair, taef2_pairs
from .common import CATEGORY


class LoadTinyAutoencoder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaLoadTinyAutoencoder",
            display_name="Diorama Load Tiny Autoencoder",
            category=f"{CATEGORY}/loaders",
            description="Loads TAEF2 (the tiny autoencoder of the FLUX.2 latent space: 32 channels at 1/8) as a "
                        "standard VAE for VAE Encode/Decode and Composite Sample. Diorama's small models sample "
                        f"in its latent space. Put taef2_encoder.safetensors and taef2_decoder.safetensors in "
                        f"models/{VAE_APPROX_FOLDER}/.",
            inputs=[
                io.Combo.Input("name", options=sorted(taef2_pairs()),
                               tooltip=f"A TAEF2 encoder/decoder pair in models/{VAE_APPROX_FOLDER}/ "
                                       "(<name>_encoder.safetensors + <name>_decoder.safetensors)."),
            ],
            outputs=[io.Vae.Output("vae", tooltip="TAEF2 as a ComfyUI VAE: RGB ⇄ raw 32-channel latents at 1/8.")],
        )

    @classmethod
    def execute(cls, name: str) -> io.NodeOutput:
        return io.NodeOutput(load_taef2(*resolve_pair(name)))


class LoadSmallModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        files = safetensors_files(SMALL_MODEL_FOLDER)
        return io.Schema(
            node_id="DioramaLoadSmallModel",
            display_name="Diorama Load Small Model",
            category=f"{CATEGORY}/loaders",
            description="Loads a Diorama small diffusion model (an SD-style UNet in TAEF2's latent space whose "
                        "config is stored in the file's metadata) as a standard MODEL for KSampler and Composite "
                        "Sample; decode its latents with Diorama Load Tiny Autoencoder's VAE.",
            inputs=[
                io.Combo.Input("model_name", options=files,
                               tooltip=f"A small model .safetensors in models/{SMALL_MODEL_FOLDER}/, a path added "
                                       f"for '{SMALL_MODEL_FOLDER}' in extra_model_paths.yaml, or the pack's own "
                                       "small_models/ (the models shipped with Diorama)."),
            ],
            outputs=[io.Model.Output("model", tooltip="The UNet as a ComfyUI MODEL (latents: 32 channels at 1/8).")],
        )

    @classmethod
    def execute(cls, model_name: str) -> io.NodeOutput:
        return io.NodeOutput(load_small_model(resolve_model_file(SMALL_MODEL_FOLDER, model_name)))


NODES = [LoadTinyAutoencoder, LoadSmallModel]
