"""What the nodes send to the browser's placement editor in their `ui` dict (nodes/editor.py): the
placement nodes the background they saw (a temp PNG for /api/view), the Neural Assets edit nodes the
scene they receive (before their own edit), as plain JSON."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from diorama.ops import assets as geometry
from diorama.ops.asset_json import parse_assets

SCENE = json.dumps({
    "camera": {"image_size": [96, 128], "fov_deg": 60.0, "position": [0, -6, 2], "look_at": [0, 0, 0.5]},
    "objects": [{"centre": [0.5, 0.2, 0.5], "size": [1, 0.8, 1], "yaw_pitch_roll": [20, 0, 0], "source_box": [0, 0, 0, 0]},
                {"centre": [-1, 1, 0.3], "size": [0.6, 0.6, 0.6], "yaw_pitch_roll": [0, 0, 0], "source_box": [0, 0, 0, 0]}],
})


def background(height: int = 48, width: int = 64) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    rgb = torch.stack([x * 4, y * 5, torch.full_like(x, 77)], dim=-1).float() / 255
    return torch.stack([rgb, 1 - rgb])  # a batch of two: the editor gets the first


def saved_pixels(base_dir, saved: dict) -> np.ndarray:
    assert saved["type"] == "temp"
    return np.asarray(Image.open(base_dir / "temp" / saved["subfolder"] / saved["filename"]))


@pytest.mark.parametrize("node, args", [
    ("DioramaPlacementFromBox", (0.1, 0.2, 0.5, 0.9, "fractions", "value", 2.0, "metric")),
    ("DioramaPlacementDepthRange", (0.1, 0.2, 0.4, 0.7, 0.3, 0.5)),
])
def test_placement_nodes_send_their_background(node_class, base_dir, node, args):
    image = background()
    output = node_class(node).execute(image, *args)
    (saved,) = output.ui["diorama_background"]
    expected = np.round(image[0].numpy() * 255)  # ComfyUI truncates 255·x: one level off at most
    assert np.abs(saved_pixels(base_dir, saved).astype(int) - expected).max() <= 1
    json.dumps(output.ui)  # it travels to the page as JSON


def test_asset_edit_nodes_send_the_scene_they_receive(node_class):
    scene = parse_assets(SCENE)
    moved = node_class("DioramaMoveAsset").execute(scene, 1, 0.5, -0.25, 0.0, "world")
    rotated = node_class("DioramaRotateAsset").execute(scene, 0, 45.0, 0.0, 0.0)
    for output in (moved, rotated):
        (sent,) = json.loads(json.dumps(output.ui["diorama_scene"]))
        camera = scene.target_camera
        assert sent["camera"] == {"intrinsics": [list(r) for r in camera.intrinsics],
                                  "world_to_camera": [list(r) for r in camera.world_to_camera], "image_hw": [96, 128]}
        assert [o["centre"] for o in sent["objects"]] == [[0.5, 0.2, 0.5], [-1.0, 1.0, 0.3]]  # before the edit
        assert [o["size"] for o in sent["objects"]] == [[1.0, 0.8, 1.0], [0.6, 0.6, 0.6]]
        assert np.allclose(sent["objects"][0]["rotation"], geometry.rotation_from_ypr(math.radians(20), 0, 0), atol=1e-12)
    assert moved.result[0].objects[1].centre == pytest.approx((-0.5, 0.75, 0.3))  # the edit itself is unchanged
