"""The Neural Assets golden scenes as Diorama assets (shared by the geometry and conditioning tests)."""
from __future__ import annotations

import numpy as np
import torch

from diorama.ops import assets as A
from reference_data import reference_dir

SLOTS = 10


def load_scene(number: int):
    return dict(np.load(reference_dir("neural_assets") / f"scene{number}.npz"))


def scene_camera(scene, frame: int) -> A.Camera:
    return A.Camera(scene["in_k_pix"].tolist(), scene["in_world2cam_opencv"][frame].tolist(), (256, 256))


def scene_objects(scene, frame: int, boxes=None) -> tuple[A.Asset, ...]:
    count = scene["in_obj_size"].shape[0]
    return tuple(A.Asset(scene["in_obj_center_world"][frame, i].tolist(), scene["in_obj_size"][i].tolist(),
                         A.rotation_from_ypr(*scene["in_obj_ypr"][frame, i]).tolist(),
                         tuple(boxes[i].tolist()) if boxes is not None else (0.0,) * 4) for i in range(count))


def scene_assets(scene) -> A.Assets:
    """The model's view of a scene: appearance boxes from the source frame, 3D boxes of the target frame."""
    boxes = A.boxes_from_segmentation(torch.from_numpy(scene["in_segmentation"][0]), scene["in_obj_size"].shape[0], SLOTS)
    return A.Assets(scene_objects(scene, 1, boxes), scene_camera(scene, 0), scene_camera(scene, 1))
