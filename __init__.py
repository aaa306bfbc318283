"""Diorama: 3D-aware, identity-preserving object compositing for ComfyUI."""

# The placement editor (web/placement_editor.js); ComfyUI serves it as /extensions/diorama/.
WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    # Imported here so that `python -m diorama.run` can import the package before ComfyUI is booted.
    from comfy_api.latest import ComfyExtension

    from .loaders.model_folders import register_model_folders
    from .nodes import NODES

    class DioramaExtension(ComfyExtension):
        async def get_node_list(self):
            return NODES

    register_model_folders()
    return DioramaExtension()
