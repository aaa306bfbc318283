"""Person insertion (Warner & Essa '24): adapter loader and the conditioning node that joins the
reference person's image tokens, a caption and the target skeleton's pose tokens."""
from __future__ import annotations

import comfy.image_encoders.dino2
import torch
import torch.nn.functional as F
from comfy_api.latest import io

from ..loaders.identity_encoder import dinov2_tokens
from ..loaders.model_folders import PERSON_ADAPTER_FOLDER, resolve_model_file, safetensors_files
from ..loaders.person_adapter import LoadedPersonAdapter, load_person_adapter, null_tokens, run_adapter
from ..ops import keypoints as kp
from ..ops.checks import as_mask_batch, as_rgb_batch, common_batch, expand_batch, file_pixels, require_nonempty, require_same_size
from ..ops.identity_tokens import dino_pixels
from ..ops.person_tokens import join_parts
from ..ops.placement import mask_bounding_box
from .common import CATEGORY, KeypointsSocket, intermediate
from .composite import WindowSocket
from .neural_assets import window_fractions

PersonAdapterSocket = io.Custom("DIORAMA_PERSON_ADAPTER")
SUBCATEGORY = f"{CATEGORY}/person"
CROP_FILL = 0.5  # grey where the reference is not the person: neither black nor white biases the encoder


class PersonAdapterLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaPersonAdapterLoader",
            display_name="Diorama Person Adapter Loader",
            category=SUBCATEGORY,
            description=f"Loads a person insertion adapter (image projection, pose projection and their null "
                        f"tokens) from models/{PERSON_ADAPTER_FOLDER}/.",
            inputs=[
                io.Combo.Input("adapter_name", options=safetensors_files(PERSON_ADAPTER_FOLDER),
                               tooltip=f"A person insertion adapter .safetensors in models/{PERSON_ADAPTER_FOLDER}/ "
                                       f"(or a path added for '{PERSON_ADAPTER_FOLDER}' in extra_model_paths.yaml)."),
            ],
            outputs=[PersonAdapterSocket.Output("person_adapter",
                                                tooltip="The adapter, managed by ComfyUI's model management.")],
        )

    @classmethod
    def execute(cls, adapter_name: str) -> io.NodeOutput:
        return io.NodeOutput(load_person_adapter(resolve_model_file(PERSON_ADAPTER_FOLDER, adapter_name)))


def person_crops(image: torch.Tensor, mask: torch.Tensor | None, size: int) -> torch.Tensor:
    """IMAGE [B,H,W,3] (+ MASK) → square crops [B,size,size,3] around the person, grey outside the mask
    and outside the photo, so the encoder sees the segmented person as the method's reference crops."""
    crops = []
    for index in range(image.shape[0]):
        picture = image[index]
        if mask is not None:
            x0, y0, x1, y1 = mask_bounding_box(mask[index])
            keep = (mask[index] > 0.5)[..., None]
            picture = torch.where(keep, picture, torch.full_like(picture, CROP_FILL))
        else:
            x0, y0, x1, y1 = 0, 0, image.shape[2], image.shape[1]
        side = max(x1 - x0, y1 - y0)
        left, top = (x0 + x1 - side) // 2, (y0 + y1 - side) // 2
        square = torch.full((side, side, 3), CROP_FILL, dtype=picture.dtype, device=picture.device)
        sx0, sy0 = max(left, 0), max(top, 0)
        sx1, sy1 = min(left + side, image.shape[2]), min(top + side, image.shape[1])
        square[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = picture[sy0:sy1, sx0:sx1]
        resized = F.interpolate(square.permute(2, 0, 1)[None], size=(size, size), mode="bilinear",
                                align_corners=False, antialias=True)
        crops.append(resized[0].permute(1, 2, 0).clamp(0, 1))
    return torch.stack(crops)


def encoder_kind(clip_vision) -> str:
    model = getattr(clip_vision, "model", None)
    return "dinov2" if isinstance(model, comfy.image_encoders.dino2.Dinov2Model) else "clip_vision"


def image_embeddings(clip_vision, crops: torch.Tensor, adapter: LoadedPersonAdapter) -> torch.Tensor:
    """Pooled embeddings [B, D]: CLIP's image_embeds, or DINOv2's final-norm class token."""
    kind = encoder_kind(clip_vision)
    wanted = adapter.config.image_encoder
    if kind != wanted:
        raise ValueError(f"the person adapter {adapter.name} was trained on {wanted} embeddings but clip_vision is "
                         f"{kind}; load the image encoder the adapter names")
    return pooled_embeddings(clip_vision, crops, kind)


def pooled_embeddings(clip_vision, crops: torch.Tensor, kind: str) -> torch.Tensor:
    """Square crops [B,S,S,3] → [B, D]: DINOv2's final-norm class token or CLIP's image_embeds (also what
    the person training recipe feeds the adapter, so training and inference see the same vectors)."""
    if kind == "dinov2":
        return dinov2_tokens(clip_vision, dino_pixels(file_pixels(crops)))[:, 0]
    # The crop is already square at the adapter's size; crop=False keeps ComfyUI from cutting it again.
    return clip_vision.encode_image(crops, crop=False)["image_embeds"].float()


def caption_entries(caption, name: str, token_dim: int) -> list[tuple[torch.Tensor, dict]]:
    if not caption:
        raise ValueError(f"{name} is an empty CONDITIONING; expected the output of a text encoder node")
    entries = []
    for tokens, extra in caption:
        if tokens.ndim != 3 or tokens.shape[-1] != token_dim:
            raise ValueError(f"{name} has tokens of shape {tuple(tokens.shape)}, {tokens.shape[-1]} wide, but the person "
                             f"adapter makes {token_dim}-wide tokens (its UNet's context width); use the text encoder "
                             f"of the model the adapter was trained for (768 = SD1.x CLIP-L, 1024 = SD2.x OpenCLIP-H)")
        entries.append((intermediate(tokens), dict(extra)))
    return entries


def zeroed(extra: dict) -> dict:
    """A caption's extras for the negative when no negative caption is given (as ConditioningZeroOut)."""
    out = dict(extra)
    if isinstance(out.get("pooled_output"), torch.Tensor):
        out["pooled_output"] = torch.zeros_like(out["pooled_output"])
    return out


class PersonInsertConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DioramaPersonInsertConditioning",
            display_name="Diorama Person Insert Conditioning",
            category=SUBCATEGORY,
            description="One cross-attention sequence image ⊕ caption ⊕ pose for person insertion (Warner & Essa "
                        "'24): the reference person's image embedding and the target skeleton, each through the "
                        "adapter's dense layer, around the caption's tokens. Every part is optional (the paper's "
                        "ablations). Negative: the adapter's learnt null tokens for image and pose, and "
                        "negative_caption (or the caption zeroed) for the text.",
            inputs=[
                PersonAdapterSocket.Input("person_adapter", tooltip="From Diorama Person Adapter Loader."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="The image encoder the adapter names: CLIP vision (ComfyUI's Load CLIP "
                                            "Vision) or DINOv2 (Diorama DINOv2 Loader). Needed with a reference."),
                io.Image.Input("reference", optional=True, tooltip="Photo(s) of the person to insert."),
                io.Mask.Input("reference_mask", optional=True,
                              tooltip="The person's silhouette in the reference (above 0.5 = person); without it "
                                      "the whole reference is the person."),
                io.Conditioning.Input("caption", optional=True,
                                      tooltip="A caption from any text encoder node (CLIPTextEncode), as wide as the "
                                              "adapter's tokens."),
                io.Conditioning.Input("negative_caption", optional=True,
                                      tooltip="The caption part of the negative, e.g. an empty CLIPTextEncode (the "
                                              "blank caption the method trains on). Without it the caption is zeroed."),
                KeypointsSocket.Input("keypoints", optional=True,
                                      tooltip="The target skeleton, in the background image the person goes into."),
                KeypointsSocket.Input("reference_keypoints", optional=True,
                                      tooltip="The reference person's own skeleton, for adapters whose pose layer "
                                              "reads target and reference ('target+reference')."),
                WindowSocket.Input("window", optional=True,
                                   tooltip="Composite Sample's window: the skeleton is re-expressed in the window the "
                                           "model samples; joints outside it become invisible."),
            ],
            outputs=[
                io.Conditioning.Output("positive", tooltip="Tokens image ⊕ caption ⊕ pose for the sampler."),
                io.Conditioning.Output("negative", tooltip="The same parts, each replaced by its null."),
                io.Image.Output("reference_crop", tooltip="The square crop the image encoder sees (black if no reference)."),
            ],
        )

    @classmethod
    def execute(cls, person_adapter: LoadedPersonAdapter, clip_vision=None, reference=None, reference_mask=None,
                caption=None, negative_caption=None, keypoints=None, reference_keypoints=None,
                window=None) -> io.NodeOutput:
        config = person_adapter.config
        if reference_mask is not None and reference is None:
            raise ValueError("reference_mask is connected but reference is not; connect the reference photo too")
        if reference is None and caption is None and keypoints is None:
            raise ValueError("Person Insert Conditioning needs at least one part: a reference (with clip_vision), a "
                             "caption or keypoints; none is connected")
        if reference is not None and clip_vision is None:
            raise ValueError("a reference is connected but no clip_vision; connect the image encoder the adapter "
                             f"names ({config.image_encoder})")
        if reference_keypoints is not None and keypoints is None:
            raise ValueError("reference_keypoints is connected but keypoints (the target skeleton) is not")
        if keypoints is not None:
            wants_reference = config.pose_inputs == "target+reference"
            if wants_reference and reference_keypoints is None:
                raise ValueError(f"the adapter {person_adapter.name} reads the target and the reference skeleton "
                                 "(pose inputs 'target+reference'); connect reference_keypoints")
            if not wants_reference and reference_keypoints is not None:
                raise ValueError(f"the adapter {person_adapter.name} reads only the target skeleton; disconnect "
                                 "reference_keypoints")
        captions = caption_entries(caption, "caption", config.token_dim) if caption is not None else None
        negatives = (caption_entries(negative_caption, "negative_caption", config.token_dim)
                     if negative_caption is not None else None)
        pose_vectors = None
        if keypoints is not None:
            target = keypoints if window is None else kp.crop_to_area(keypoints, window_fractions(window))
            points = kp.hide_outside(target.points)
            kp.validate(points, "keypoints inside the image" if window is None else "keypoints inside the window")
            pose_vectors = kp.pose_vector(points)
            if reference_keypoints is not None:
                reference_points = kp.validate(kp.hide_outside(reference_keypoints.points), "reference_keypoints")
                batch = common_batch({"keypoints": pose_vectors.shape[0],
                                      "reference_keypoints": reference_points.shape[0]})
                pose_vectors = torch.cat([expand_batch(pose_vectors, batch),
                                          expand_batch(kp.pose_vector(reference_points), batch)], dim=1)

        image_tokens, crops = None, None
        if reference is not None:
            image = as_rgb_batch(reference, "reference")
            mask = None
            if reference_mask is not None:
                mask = as_mask_batch(reference_mask, "reference_mask")
                require_same_size(image, mask, "reference", "reference_mask")
                batch = common_batch({"reference": image.shape[0], "reference_mask": mask.shape[0]})
                image, mask = expand_batch(image, batch), expand_batch(mask, batch)
                require_nonempty(mask, "reference_mask")
            crops = person_crops(image, mask, config.image_size)
            image_tokens = run_adapter(person_adapter, "image", image_embeddings(clip_vision, crops, person_adapter))
        pose_tokens = run_adapter(person_adapter, "pose", pose_vectors) if pose_vectors is not None else None

        def sequence(text: torch.Tensor | None, null: bool) -> torch.Tensor:
            parts = []
            if image_tokens is not None:
                parts.append(null_tokens(person_adapter, "image") if null else image_tokens)
            if text is not None:
                parts.append(text)
            if pose_tokens is not None:
                parts.append(null_tokens(person_adapter, "pose") if null else pose_tokens)
            return join_parts(parts)

        if captions is None:
            positive = [[sequence(None, False), {}]]
            negative = [[sequence(None, True), {}]]
        else:
            positive = [[sequence(tokens, False), extra] for tokens, extra in captions]
            if negatives is not None:
                negative = [[sequence(tokens, True), extra] for tokens, extra in negatives]
            else:
                negative = [[sequence(torch.zeros_like(tokens), True), zeroed(extra)] for tokens, extra in captions]
        preview = crops if crops is not None else torch.zeros(1, config.image_size, config.image_size, 3)
        return io.NodeOutput(positive, negative, intermediate(preview))


NODES = [PersonAdapterLoader, PersonInsertConditioning]
