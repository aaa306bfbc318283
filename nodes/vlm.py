"""Vision-language model loader (LLaVA-1.5 / BIFRÖST, Qwen2.5-VL, Qwen3-VL, Florence-2)."""
from __future__ import annotations

from comfy_api.latest import io

from ..loaders.model_folders import LLM_FOLDER, resolve_transformers_folder, transformers_folders
from ..loaders.vlm import DTYPES, FAMILIES, load_vlm
from .common import CATEGORY

VlmSocket = io.Custom("DIORAMA_VLM")


class VLMLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaVLMLoader",
            display_name="Diorama VLM Loader",
            category=f"{CATEGORY}/placement",
            description="Loads a vision-language model saved in transformers format (config.json, *.safetensors, "
                        f"tokenizer and processor files) from models/{LLM_FOLDER}/. Families: {', '.join(FAMILIES)}. "
                        "Offline, safetensors only, no remote code.",
            inputs=[
                io.Combo.Input("model_name", options=transformers_folders(LLM_FOLDER),
                               tooltip=f"A model folder under models/{LLM_FOLDER}/ (or a path added for "
                                       f"'{LLM_FOLDER}' in extra_model_paths.yaml). BIFRÖST's LLaVA must be "
                                       "converted first: python -m diorama.convert llava-bifrost."),
                io.Combo.Input("dtype", options=list(DTYPES), default="auto",
                               tooltip="Weight precision. auto: the published dtype where the device computes "
                                       "in it, else fp32."),
            ],
            outputs=[VlmSocket.Output("vlm", tooltip="The model and its processor, managed by ComfyUI's model "
                                                     "management (offloaded when memory is needed).")],
        )

    @classmethod
    def execute(cls, model_name: str, dtype: str) -> io.NodeOutput:
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is unknown; expected one of {list(DTYPES)}")
        return io.NodeOutput(load_vlm(resolve_transformers_folder(LLM_FOLDER, model_name), dtype))
