"""What the browser's placement editor (web/placement_editor.js) needs from a run, sent with the node's
`ui` dict (ComfyUI hands it to the node in the page; keys other than `images` are not drawn by the
frontend itself): the background a placement node saw, and the scene a Neural Assets edit node edits."""
from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..ops.assets import Assets
from ..ops.editor_scene import editor_scene

BACKGROUND_KEY = "diorama_background"
SCENE_KEY = "diorama_scene"


def background_ui(background: torch.Tensor) -> dict:
    """The first background image saved to ComfyUI's temp folder (as a preview is), for /api/view."""
    saved = ui.ImageSaveHelper.save_images(background[:1], "diorama_editor_background", io.FolderType.temp,
                                           cls=None, compress_level=1)
    return {BACKGROUND_KEY: saved}


def scene_ui(assets: Assets) -> dict:
    return {SCENE_KEY: [editor_scene(assets)]}
