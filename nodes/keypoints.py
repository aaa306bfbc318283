"""Keypoint nodes: COCO-17 skeletons from numbers or other packs' OpenPose/DWPose output, retargeted
into a placement box, and drawn as an OpenPose image (preview, or a native OpenPose ControlNet hint)."""
from __future__ import annotations

import json

from comfy_api.latest import io

from ..ops import keypoints as kp
from ..ops.checks import as_rgb_batch
from ..ops.placement import normalised_box
from .common import CATEGORY, KeypointsSocket, PlacementSocket, intermediate

# comfyui_controlnet_aux's keypoint output type, so its OpenPose/DWPose nodes connect here.
PoseKeypointSocket = io.Custom("POSE_KEYPOINT")
SUBCATEGORY = f"{CATEGORY}/person"


class KeypointsFromNumbers(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaKeypointsFromNumbers",
            display_name="Diorama Keypoints From Numbers",
            category=SUBCATEGORY,
            description="A COCO-17 skeleton typed in as JSON: 17 rows [x, y] or [x, y, visibility] in COCO order "
                        "(nose, left eye, right eye, left ear, right ear, left/right shoulder, elbow, wrist, hip, "
                        "knee, ankle), or 51/34 flat numbers, or a list of skeletons for a batch.",
            inputs=[
                io.String.Input("keypoints_json", multiline=True, default="",
                                tooltip="JSON numbers in COCO-17 order; visibility 0 marks a joint that is not shown."),
                io.Combo.Input("unit", options=["fractions", "pixels"],
                               tooltip="x, y as fractions of the image (0..1) or as pixels of width x height."),
                io.Int.Input("width", default=512, min=1, max=16384, tooltip="Width of the image the numbers refer to."),
                io.Int.Input("height", default=512, min=1, max=16384, tooltip="Height of the image the numbers refer to."),
            ],
            outputs=[KeypointsSocket.Output("keypoints", tooltip="The skeleton(s), COCO-17, with their image size.")],
        )

    @classmethod
    def execute(cls, keypoints_json: str, unit: str, width: int, height: int) -> io.NodeOutput:
        try:
            values = json.loads(keypoints_json)
        except json.JSONDecodeError as error:
            raise ValueError(f"keypoints_json is not valid JSON ({error}); expected e.g. [[x, y, v], ... 17 rows]") from None
        return io.NodeOutput(kp.from_numbers(values, height, width, unit))


class KeypointsFromOpenPose(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaKeypointsFromOpenPose",
            display_name="Diorama Keypoints From OpenPose",
            category=SUBCATEGORY,
            description="COCO-17 skeletons from the POSE_KEYPOINT output of OpenPose/DWPose estimator nodes "
                        "(comfyui_controlnet_aux): body keypoints in OpenPose-18, BODY_25 or COCO-WholeBody order, "
                        "one skeleton per image for the chosen person.",
            inputs=[
                PoseKeypointSocket.Input("pose_keypoint", tooltip="POSE_KEYPOINT from an OpenPose/DWPose estimator."),
                io.Int.Input("person_index", default=0, min=0, max=1000,
                             tooltip="Which detected person (0 = the first) to take from every image."),
                io.Combo.Input("coordinates", options=["auto", "normalised", "pixels"],
                               tooltip="OpenPose writes fractions of the canvas, DWPose pixels; 'auto' reads pixels "
                                       "when a visible coordinate exceeds 2."),
            ],
            outputs=[KeypointsSocket.Output("keypoints", tooltip="COCO-17 skeleton(s) on the estimator's canvas.")],
        )

    @classmethod
    def execute(cls, pose_keypoint, person_index: int, coordinates: str) -> io.NodeOutput:
        return io.NodeOutput(kp.from_pose_keypoint(pose_keypoint, person_index, coordinates))


class RetargetKeypoints(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaRetargetKeypoints",
            display_name="Diorama Retarget Keypoints",
            category=SUBCATEGORY,
            description="Moves and scales a skeleton (one scale for both axes, in pixels, so its proportions "
                        "stay) to fit inside a box of the target image: a Diorama placement, or the box numbers. "
                        "Points that leave the image become invisible.",
            inputs=[
                KeypointsSocket.Input("keypoints", tooltip="The skeleton(s) to move."),
                io.Combo.Input("anchor", options=list(kp.ANCHORS),
                               tooltip="'bottom': the lowest joint stands on the box's bottom edge (feet on the "
                                       "ground); 'center': centred in the box."),
                io.Float.Input("x0", default=0.4, min=-10.0, max=10.0, step=0.001,
                               tooltip="Box left edge, fraction of the target width (used without placement)."),
                io.Float.Input("y0", default=0.2, min=-10.0, max=10.0, step=0.001, tooltip="Box top edge (fraction)."),
                io.Float.Input("x1", default=0.6, min=-10.0, max=10.0, step=0.001, tooltip="Box right edge (fraction)."),
                io.Float.Input("y1", default=0.9, min=-10.0, max=10.0, step=0.001, tooltip="Box bottom edge (fraction)."),
                PlacementSocket.Input("placement", optional=True,
                                      tooltip="A Diorama placement: its box and image size replace the numbers."),
                io.Image.Input("target_image", optional=True,
                               tooltip="Gives the target image size for the box numbers (default: the skeleton's own)."),
            ],
            outputs=[KeypointsSocket.Output("retargeted", tooltip="The skeleton(s) in the target image.")],
        )

    @classmethod
    def execute(cls, keypoints: kp.Keypoints, anchor: str, x0: float, y0: float, x1: float, y1: float,
                placement=None, target_image=None) -> io.NodeOutput:
        if placement is not None:
            box, target_hw = placement.box, tuple(placement.image_size)
        else:
            if target_image is not None:
                target_hw = tuple(as_rgb_batch(target_image, "target_image").shape[1:3])
            else:
                target_hw = keypoints.image_hw
            box = normalised_box(x0, y0, x1, y1, target_hw[0], target_hw[1], "fractions")
        moved = kp.retarget(keypoints, box, target_hw, anchor)
        points = kp.hide_outside(moved.points)
        kp.validate(points, "retargeted keypoints (every joint left the image)")
        return io.NodeOutput(kp.Keypoints(points, moved.image_hw))


class DrawKeypoints(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaDrawKeypoints",
            display_name="Diorama Draw Keypoints",
            category=SUBCATEGORY,
            description="Draws skeletons the way OpenPose's renderer does (OpenPose-18 limb colours, neck from the "
                        "shoulders) on black, for a preview or a native OpenPose ControlNet, or over an image.",
            inputs=[
                KeypointsSocket.Input("keypoints", tooltip="The skeleton(s) to draw."),
                io.Float.Input("min_confidence", default=0.3, min=0.0, max=1.0, step=0.01,
                               tooltip="Joints with lower visibility/confidence are left out (DWPose uses 0.3)."),
                io.Image.Input("canvas", optional=True,
                               tooltip="Draw over this image (its size); without it, a black canvas of the "
                                       "skeleton's image size."),
            ],
            outputs=[io.Image.Output("image", tooltip="The skeleton image(s).")],
        )

    @classmethod
    def execute(cls, keypoints: kp.Keypoints, min_confidence: float, canvas=None) -> io.NodeOutput:
        if canvas is not None:
            canvas = as_rgb_batch(canvas, "canvas")
            height, width = canvas.shape[1:3]
        else:
            height, width = keypoints.image_hw
        return io.NodeOutput(intermediate(kp.draw_openpose(keypoints, height, width, min_confidence, canvas)))


NODES = [KeypointsFromNumbers, KeypointsFromOpenPose, RetargetKeypoints, DrawKeypoints]
