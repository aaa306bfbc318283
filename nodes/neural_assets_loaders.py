"""Neural Assets model loaders: the DINO backbone and the adapter (the trained token head)."""
from __future__ import annotations

from comfy_api.latest import io

from ..loaders.dino_features import load_dino
from ..loaders.model_folders import (DINO_FOLDER, NEURAL_ASSETS_FOLDER, resolve_model_file,
                                     resolve_transformers_folder, safetensors_files, transformers_folders)
from ..loaders.neural_assets_adapter import load_neural_assets_adapter
from .common import CATEGORY

DinoSocket = io.Custom("DIORAMA_DINO")
NeuralAssetsAdapterSocket = io.Custom("DIORAMA_NEURAL_ASSETS_ADAPTER")


class DinoLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaDinoLoader",
            display_name="Diorama DINO Loader",
            category=f"{CATEGORY}/neural assets",
            description=f"Loads a DINO (ViT, e.g. facebook/dino-vitb8 as Neural Assets uses) or DINOv2 model saved in "
                        f"transformers format (config.json + model.safetensors) from models/{DINO_FOLDER}/.",
            inputs=[
                io.Combo.Input("model_name", options=transformers_folders(DINO_FOLDER),
                               tooltip=f"A model folder under models/{DINO_FOLDER}/ (or a path added for "
                                       f"'{DINO_FOLDER}' in extra_model_paths.yaml)."),
            ],
            outputs=[DinoSocket.Output("dino", tooltip="The DINO backbone (its name, e.g. dino_vitb8, is checked "
                                                       "against the adapter's), managed by ComfyUI.")],
        )

    @classmethod
    def execute(cls, model_name: str) -> io.NodeOutput:
        return io.NodeOutput(load_dino(resolve_transformers_folder(DINO_FOLDER, model_name)))


class NeuralAssetsAdapterLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        files = safetensors_files(NEURAL_ASSETS_FOLDER)
        return io.Schema(
            node_id="DioramaNeuralAssetsAdapterLoader",
            display_name="Diorama Neural Assets Adapter Loader",
            category=f"{CATEGORY}/neural assets",
            description=f"Loads a Neural Assets adapter (appearance projection, pose and background MLPs, neck) "
                        f"from models/{NEURAL_ASSETS_FOLDER}/; its metadata sets the number of object slots and "
                        "the DINO it reads. Convert the reference's Flax parameters with "
                        "`python -m diorama.convert neural-assets params.npz --slots N`.",
            inputs=[
                io.Combo.Input("adapter_name", options=files,
                               tooltip=f"A Neural Assets adapter .safetensors in models/{NEURAL_ASSETS_FOLDER}/ (or a "
                                       f"path added for '{NEURAL_ASSETS_FOLDER}' in extra_model_paths.yaml)."),
            ],
            outputs=[NeuralAssetsAdapterSocket.Output("adapter", tooltip="The adapter (N slots → 4(N+1) tokens of "
                                                                         "1024), managed by ComfyUI.")],
        )

    @classmethod
    def execute(cls, adapter_name: str) -> io.NodeOutput:
        return io.NodeOutput(load_neural_assets_adapter(resolve_model_file(NEURAL_ASSETS_FOLDER, adapter_name)))
