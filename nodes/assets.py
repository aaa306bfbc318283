"""Neural Assets scene nodes: build a DIORAMA_ASSETS (cameras + 3D boxes), lift it from a photo,
edit it object by object, and preview the boxes. Assets are per scene, never batched."""
from __future__ import annotations

import math

import torch
from comfy_api.latest import io

from ..ops import assets as geometry
from ..ops.asset_json import parse_assets, parse_pixel_boxes
from ..ops.asset_lifting import lift_boxes, lift_masks, lifting_camera, require_metric
from ..ops.asset_preview import draw_assets
from ..ops.checks import as_mask_batch, as_rgb_batch
from .common import CATEGORY, AssetsSocket, DepthSocket, intermediate
from .editor import scene_ui

LENS_MODES = ("field of view (deg)", "focal length (px)")
AXES = ("world", "camera")
CAMERAS = ("target", "source")
SUBCATEGORY = f"{CATEGORY}/neural assets"
EXAMPLE_JSON = """{
  "camera": {"image_size": [256, 256], "fov_deg": 49.1, "position": [0, -8, 3], "look_at": [0, 0, 0.5]},
  "objects": [
    {"centre": [0, 0, 0.5], "size": [1, 1, 1], "yaw_pitch_roll": [30, 0, 0], "source_box": [0.4, 0.4, 0.6, 0.6]}
  ]
}"""


def _assets_in(tooltip: str = "The scene: cameras and per-object 3D boxes.", name: str = "assets"):
    return AssetsSocket.Input(name, tooltip=tooltip)


def _assets_out(tooltip: str = "The edited scene (the input is not changed)."):
    # Its own id: V3 wants input and output ids distinct; it still shows as "assets".
    return AssetsSocket.Output("assets_out", display_name="assets", tooltip=tooltip)


def _index_input():
    return io.Int.Input("index", default=0, min=0, max=1023,
                        tooltip="Which object (0 = the first in the scene's list).")


def _angle(name: str, tooltip: str):
    return io.Float.Input(name, default=0.0, min=-360.0, max=360.0, step=0.5, tooltip=tooltip)


def _coordinate(name: str, default: float, tooltip: str):
    return io.Float.Input(name, default=default, min=-1e5, max=1e5, step=0.01, tooltip=tooltip)


def _lens_inputs() -> list:
    return [
        io.Combo.Input("lens", options=list(LENS_MODES),
                       tooltip="Give the intrinsics as a horizontal field of view or as a focal length in pixels."),
        io.Float.Input("fov_deg", default=60.0, min=0.1, max=179.9, step=0.1,
                       tooltip="Horizontal field of view in degrees (used when lens is 'field of view')."),
        io.Float.Input("focal_px", default=500.0, min=0.01, max=1e6, step=0.1,
                       tooltip="Focal length in pixels of this image size (used when lens is 'focal length'); square pixels."),
        io.Float.Input("cx", default=-1.0, min=-1.0, max=1e5, step=0.1,
                       tooltip="Principal point x in pixels; -1 = the image centre (width / 2)."),
        io.Float.Input("cy", default=-1.0, min=-1.0, max=1e5, step=0.1,
                       tooltip="Principal point y in pixels; -1 = the image centre (height / 2)."),
    ]


def _focal(lens: str, fov_deg: float, focal_px: float, width: int) -> float:
    if lens not in LENS_MODES:
        raise ValueError(f"lens {lens!r} is unknown; expected one of {LENS_MODES}")
    if lens == LENS_MODES[0]:
        return geometry.focal_from_fov(width, fov_deg)
    if not focal_px > 0:
        raise ValueError(f"focal_px must be > 0 pixels, got {focal_px}")
    return focal_px


def _principal(value: float) -> float | None:
    return None if value < 0 else value


def _single_image(image: torch.Tensor, name: str) -> torch.Tensor:
    image = as_rgb_batch(image, name)
    if image.shape[0] != 1:
        raise ValueError(f"{name} has a batch of {image.shape[0]} images; a scene takes one image here (pick one "
                         "with ImageFromBatch)")
    return image[0]


class AssetsFromJSON(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaAssetsFromJSON",
            display_name="Diorama Assets From JSON",
            category=SUBCATEGORY,
            description="A Neural Assets scene from JSON text: cameras (intrinsics, pose; OpenCV conventions, world "
                        "z up) and objects (centre, size, yaw/pitch/roll in degrees or a rotation, source box).",
            inputs=[
                io.String.Input("json", multiline=True, default=EXAMPLE_JSON,
                                tooltip="camera: image_size [H, W]; focal_px, fov_deg or intrinsics (3x3); optional "
                                        "principal_point [cx, cy]; world_to_camera (4x4) or position with look_at "
                                        "(and up) or yaw_pitch_roll (degrees). Optional target_camera (default = "
                                        "camera). objects: centre, size (full extents), yaw_pitch_roll (degrees, "
                                        "R = Rz·Ry·Rx) or rotation (3x3 object → world), source_box [y0, x0, y1, x1] "
                                        "fractions of the source image (ends exclusive; omit if not visible)."),
            ],
            outputs=[_assets_out("The scene; source and target cameras as given.")],
        )

    @classmethod
    def execute(cls, json: str) -> io.NodeOutput:
        return io.NodeOutput(parse_assets(json))


class AssetsCamera(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaAssetsCamera",
            display_name="Diorama Camera",
            category=SUBCATEGORY,
            description="Starts a Neural Assets scene from widgets: one camera (source = target) and no objects "
                        "yet; chain Diorama Add Asset after it. World z is up; at yaw/pitch/roll 0 the camera looks "
                        "along world +y.",
            inputs=[
                io.Int.Input("width", default=256, min=16, max=8192, tooltip="Width in pixels of the image the camera takes."),
                io.Int.Input("height", default=256, min=16, max=8192, tooltip="Height in pixels of that image."),
                *_lens_inputs(),
                _coordinate("x", 0.0, "Camera position x (world units)."),
                _coordinate("y", -8.0, "Camera position y (world units)."),
                _coordinate("z", 2.0, "Camera position z (world units; z is up)."),
                _angle("yaw", "Degrees; turns the camera left about world z (0 = looking along +y)."),
                _angle("pitch", "Degrees; tilts the camera up (negative = looking down)."),
                _angle("roll", "Degrees; turns the camera about its viewing axis (counter-clockwise seen from behind)."),
            ],
            outputs=[_assets_out("A scene with this camera as source and target camera and no objects.")],
        )

    @classmethod
    def execute(cls, width, height, lens, fov_deg, focal_px, cx, cy, x, y, z, yaw, pitch, roll) -> io.NodeOutput:
        focal = _focal(lens, fov_deg, focal_px, width)
        camera = geometry.Camera(
            geometry.intrinsics_from_focal(height, width, focal, cx=_principal(cx), cy=_principal(cy)),
            geometry.world_to_camera_from_ypr((x, y, z), *(math.radians(a) for a in (yaw, pitch, roll))),
            (height, width))
        return io.NodeOutput(geometry.Assets((), camera, camera))


class AddAsset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaAddAsset",
            display_name="Diorama Add Asset",
            category=SUBCATEGORY,
            description="Appends one object (a 3D box and the 2D box of its appearance in the source image) to a scene.",
            inputs=[
                _assets_in(),
                _coordinate("centre_x", 0.0, "Box centre x (world)."),
                _coordinate("centre_y", 0.0, "Box centre y (world)."),
                _coordinate("centre_z", 0.5, "Box centre z (world; z is up)."),
                io.Float.Input("size_x", default=1.0, min=0.0, max=1e5, step=0.01, tooltip="Full extent along the object's own x (> 0)."),
                io.Float.Input("size_y", default=1.0, min=0.0, max=1e5, step=0.01, tooltip="Full extent along the object's own y (> 0)."),
                io.Float.Input("size_z", default=1.0, min=0.0, max=1e5, step=0.01, tooltip="Full extent along the object's own z (> 0)."),
                _angle("yaw", "Degrees about world z (R = Rz(yaw)·Ry(pitch)·Rx(roll))."),
                _angle("pitch", "Degrees about world y."),
                _angle("roll", "Degrees about world x."),
                io.Float.Input("box_y0", default=0.0, min=0.0, max=1.0, step=0.001, tooltip="Source box top, fraction of the source image height."),
                io.Float.Input("box_x0", default=0.0, min=0.0, max=1.0, step=0.001, tooltip="Source box left, fraction of the width."),
                io.Float.Input("box_y1", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Source box bottom (exclusive), fraction of the height. All four 0 = the object "
                                       "is not visible in the source image (no appearance)."),
                io.Float.Input("box_x1", default=0.0, min=0.0, max=1.0, step=0.001, tooltip="Source box right (exclusive), fraction of the width."),
            ],
            outputs=[_assets_out("The scene with the object appended (its index is the old object count).")],
        )

    @classmethod
    def execute(cls, assets, centre_x, centre_y, centre_z, size_x, size_y, size_z, yaw, pitch, roll,
                box_y0, box_x0, box_y1, box_x1) -> io.NodeOutput:
        rotation = geometry.rotation_from_ypr(*(math.radians(a) for a in (yaw, pitch, roll)))
        asset = geometry.Asset((centre_x, centre_y, centre_z), (size_x, size_y, size_z), rotation.tolist(),
                               (box_y0, box_x0, box_y1, box_x1))
        return io.NodeOutput(geometry.add_object(assets, asset))


class LiftAssets(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaLiftAssets",
            display_name="Diorama Lift Assets",
            category=SUBCATEGORY,
            description="Lifts objects of a photo into 3D boxes with metric depth: each mask's pixels are "
                        "back-projected (pixels of other surfaces, beyond a depth jump, left out) and boxed, axis-aligned with the camera. The "
                        "world is the camera's frame with z up (camera at the origin looking along +y); source "
                        "camera = target camera.",
            inputs=[
                io.Image.Input("image", tooltip="The source photo (one image); it gives the size the intrinsics refer to."),
                DepthSocket.Input("depth", tooltip="Metric depth of the photo (metres), same size; disparity is refused."),
                *_lens_inputs(),
                io.Float.Input("min_depth_ratio", default=0.0, min=0.0, max=10.0, step=0.05,
                               tooltip="Masks: the depth extent is what the camera sees of the object, at least this "
                                       "times its smaller width/height (0 = trust the visible surface; 1 = assume "
                                       "objects seen face-on are as deep as they are narrow)."),
                io.Mask.Input("masks", optional=True, tooltip="One mask per object (a MASK batch); preferred over boxes."),
                io.String.Input("boxes", optional=True, multiline=True, default="",
                                tooltip="Or a JSON list of pixel boxes [[x0, y0, x1, y1], ...] (ends exclusive). A box "
                                        "has no silhouette: its front is its nearest depth and its depth extent is "
                                        "assumed equal to its narrower side."),
            ],
            outputs=[
                _assets_out("The lifted scene, one object per mask/box in order."),
                io.Image.Output("preview", tooltip="The photo with every lifted 3D box drawn."),
            ],
        )

    @classmethod
    def execute(cls, image, depth, lens, fov_deg, focal_px, cx, cy, min_depth_ratio, masks=None, boxes="") -> io.NodeOutput:
        photo = _single_image(image, "image")
        require_metric(depth, "depth")
        height, width = photo.shape[:2]
        has_boxes = bool(boxes and boxes.strip())
        if (masks is None) == (not has_boxes):
            raise ValueError("connect masks or write boxes (exactly one of them) to say which objects to lift")
        camera = lifting_camera(height, width, _focal(lens, fov_deg, focal_px, width), _principal(cx), _principal(cy))
        if masks is not None:
            objects = lift_masks(as_mask_batch(masks, "masks").cpu(), depth, camera, min_depth_ratio)
        else:
            objects = lift_boxes(parse_pixel_boxes(boxes), depth, camera)
        assets = geometry.Assets(objects, camera, camera)
        return io.NodeOutput(assets, intermediate(draw_assets(photo[None].cpu(), assets, camera)))


class MoveAsset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaMoveAsset",
            display_name="Diorama Move Asset",
            category=SUBCATEGORY,
            description="Moves one object's 3D box; its appearance (source box) stays.",
            inputs=[
                _assets_in(), _index_input(),
                _coordinate("dx", 0.0, "Offset along x (world x, or the target camera's right)."),
                _coordinate("dy", 0.0, "Offset along y (world y, or the target camera's down)."),
                _coordinate("dz", 0.0, "Offset along z (world z = up, or the target camera's forward = away)."),
                io.Combo.Input("axes", options=list(AXES),
                               tooltip="'world': world axes. 'camera': the target camera's OpenCV axes (x right, y down, z forward)."),
            ],
            outputs=[_assets_out()],
        )

    @classmethod
    def execute(cls, assets, index, dx, dy, dz, axes) -> io.NodeOutput:
        return io.NodeOutput(geometry.move_object(assets, index, (dx, dy, dz), axes), ui=scene_ui(assets))


class RotateAsset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaRotateAsset",
            display_name="Diorama Rotate Asset",
            category=SUBCATEGORY,
            description="Turns one object about its own centre by Rz(yaw)·Ry(pitch)·Rx(roll) in world axes (z up).",
            inputs=[
                _assets_in(), _index_input(),
                _angle("yaw", "Degrees about the vertical (world z)."),
                _angle("pitch", "Degrees about world y."),
                _angle("roll", "Degrees about world x."),
            ],
            outputs=[_assets_out()],
        )

    @classmethod
    def execute(cls, assets, index, yaw, pitch, roll) -> io.NodeOutput:
        edited = geometry.rotate_object(assets, index, *(math.radians(a) for a in (yaw, pitch, roll)))
        return io.NodeOutput(edited, ui=scene_ui(assets))


class ScaleAsset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaScaleAsset",
            display_name="Diorama Scale Asset",
            category=SUBCATEGORY,
            description="Scales one object's 3D box about its centre along its own axes.",
            inputs=[
                _assets_in(), _index_input(),
                io.Float.Input("scale_x", default=1.0, min=0.0, max=1000.0, step=0.01, tooltip="Factor along the object's x (> 0)."),
                io.Float.Input("scale_y", default=1.0, min=0.0, max=1000.0, step=0.01, tooltip="Factor along the object's y (> 0)."),
                io.Float.Input("scale_z", default=1.0, min=0.0, max=1000.0, step=0.01, tooltip="Factor along the object's z (> 0)."),
            ],
            outputs=[_assets_out()],
        )

    @classmethod
    def execute(cls, assets, index, scale_x, scale_y, scale_z) -> io.NodeOutput:
        return io.NodeOutput(geometry.scale_object(assets, index, (scale_x, scale_y, scale_z)))


class RemoveAsset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaRemoveAsset",
            display_name="Diorama Remove Asset",
            category=SUBCATEGORY,
            description="Removes one object; the later objects move up one index.",
            inputs=[_assets_in(), _index_input()],
            outputs=[_assets_out()],
        )

    @classmethod
    def execute(cls, assets, index) -> io.NodeOutput:
        return io.NodeOutput(geometry.remove_object(assets, index))


class TransferAsset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaTransferAsset",
            display_name="Diorama Transfer Asset",
            category=SUBCATEGORY,
            description="Appends an object of another scene with its appearance: it keeps its own source box, and "
                        "its source image travels with the scene (extra source).",
            inputs=[
                _assets_in("The scene that receives the object."),
                _assets_in("The scene the object comes from.", name="from_assets"),
                io.Image.Input("from_image", tooltip="The other scene's source image (one image), the one its source boxes refer to."),
                _index_input(),
                io.Combo.Input("placement", options=list(geometry.TRANSFER_PLACEMENTS),
                               tooltip="'as seen by the camera': the object stands in front of this scene's target "
                                       "camera as it stood in front of the other scene's source camera. 'same world "
                                       "coordinates': its world box is copied unchanged (scenes sharing a world)."),
            ],
            outputs=[_assets_out("The scene with the object appended as its last object.")],
        )

    @classmethod
    def execute(cls, assets, from_assets, from_image, index, placement) -> io.NodeOutput:
        image = _single_image(from_image, "from_image").cpu()
        return io.NodeOutput(geometry.transfer_object(assets, from_assets, index, image, placement))


class SwapBackgroundSource(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaSwapBackgroundSource",
            display_name="Diorama Swap Background Source",
            category=SUBCATEGORY,
            description="The background token takes its appearance from this image instead of the source image "
                        "(the objects keep theirs).",
            inputs=[_assets_in(), io.Image.Input("background", tooltip="The new background (one image).")],
            outputs=[_assets_out()],
        )

    @classmethod
    def execute(cls, assets, background) -> io.NodeOutput:
        return io.NodeOutput(geometry.swap_background_source(assets, _single_image(background, "background").cpu()))


class MoveCamera(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaMoveCamera",
            display_name="Diorama Move Camera",
            category=SUBCATEGORY,
            description="A new target camera: the current target camera turned about itself, then moved. The source "
                        "camera (where the appearance was seen) stays.",
            inputs=[
                _assets_in(),
                _coordinate("dx", 0.0, "Offset along x (the camera's right, or world x)."),
                _coordinate("dy", 0.0, "Offset along y (the camera's down, or world y)."),
                _coordinate("dz", 0.0, "Offset along z (the camera's forward, or world z = up)."),
                io.Combo.Input("axes", options=list(("camera", "world")),
                               tooltip="'camera': the turned camera's OpenCV axes (x right, y down, z forward). 'world': world axes."),
                _angle("yaw", "Degrees; turns the camera left about its own up axis."),
                _angle("pitch", "Degrees; tilts the camera up about its own right axis."),
                _angle("roll", "Degrees; turns it about its viewing axis (counter-clockwise seen from behind)."),
            ],
            outputs=[_assets_out()],
        )

    @classmethod
    def execute(cls, assets, dx, dy, dz, axes, yaw, pitch, roll) -> io.NodeOutput:
        angles = (math.radians(a) for a in (yaw, pitch, roll))
        return io.NodeOutput(geometry.move_camera(assets, (dx, dy, dz), *angles, axes=axes))


class PreviewAssets(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaPreviewAssets",
            display_name="Diorama Preview Assets",
            category=SUBCATEGORY,
            description="Draws every object's 3D box (12 edges, one colour per object) as the chosen camera sees it. "
                        "Edges with a corner behind the camera are not drawn.",
            inputs=[
                io.Image.Input("image", tooltip="Images to draw on (each image of a batch gets the boxes); any size."),
                _assets_in(),
                io.Combo.Input("camera", options=list(CAMERAS),
                               tooltip="'target': where the objects will be rendered. 'source': the photo's camera."),
                io.Int.Input("thickness", default=2, min=1, max=16, tooltip="Line width in pixels."),
            ],
            outputs=[io.Image.Output("preview", tooltip="The images with the boxes drawn.")],
        )

    @classmethod
    def execute(cls, image, assets, camera, thickness) -> io.NodeOutput:
        if camera not in CAMERAS:
            raise ValueError(f"camera {camera!r} is unknown; expected one of {CAMERAS}")
        chosen = assets.target_camera if camera == "target" else assets.source_camera
        images = as_rgb_batch(image, "image").cpu()
        return io.NodeOutput(intermediate(draw_assets(images, assets, chosen, thickness)))


NODES = [AssetsFromJSON, AssetsCamera, AddAsset, LiftAssets, MoveAsset, RotateAsset, ScaleAsset, RemoveAsset,
         TransferAsset, SwapBackgroundSource, MoveCamera, PreviewAssets]
