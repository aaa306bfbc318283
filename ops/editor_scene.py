"""A Neural Assets scene as the browser's placement editor (web/diorama_geometry.js) reads it: the
target camera and each object's 3D box, plain JSON numbers in ops.assets' conventions (OpenCV
camera, world z up, corners c + R·(sign ⊙ size/2))."""
from __future__ import annotations

from .assets import Assets


def editor_scene(assets: Assets) -> dict:
    camera = assets.target_camera  # the editor draws what the edited scene will be rendered from
    return {
        "camera": {
            "intrinsics": [list(row) for row in camera.intrinsics],
            "world_to_camera": [list(row) for row in camera.world_to_camera],
            "image_hw": list(camera.image_hw),
        },
        "objects": [{"centre": list(a.centre), "size": list(a.size), "rotation": [list(row) for row in a.rotation]}
                    for a in assets.objects],
    }
