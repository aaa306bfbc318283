"""Person insertion (seed 004, Warner & Essa '24): the reference, caption and pose projections of the
person adapter trained on an inpainting UNet, each modality dropped at random so that every subset
of {image, caption, pose} works at inference.

Per pair: the reference is the source frame's person, cropped as Diorama Person Insert Conditioning
crops it (nodes/person.person_crops, grey outside the mask) and embedded by the frozen image encoder
(DINOv2's class token or CLIP's image_embeds); the caption is `PairedFrames.caption` encoded by the
checkpoint's text encoder; the pose is `PairedFrames.keypoints` (COCO-17, pixels of the target) as
fractions of the target. The UNet inpaints the target frame inside the person's box (the coarsest of
IMPRINT's shape masks, the one the example workflow uses), conditioned on image ⊕ caption ⊕ pose as
the node joins them. Each modality is kept with probability 1 − drop[modality]; the kept ones form
the sequence, as the node's positive omits unconnected parts. With probability `null_probability`
(and when every modality is dropped) the sample is the node's negative instead: the adapter's learnt
nulls for image and pose and the empty caption (what the example feeds as negative_caption), so the
nulls are trained for classifier-free guidance.

Renderer data has no people: STAND-IN. When a pair has no caption or keypoints (the renderer), the
pair's object plays the person: the caption is made from the scene's names ("a red box" + its
neighbours), and 17 keypoints are laid out in the object's box by a fixed standing-person template
(`STANDING_TEMPLATE`). That trains the plumbing, not people. Real data needs, per pair: a source frame
with the person's mask (reference), a target frame with the person's mask (inpainting region and
reconstruction target), `caption` (what the person does in the target) and `keypoints` [17, 3] (COCO
order, x/y in target pixels, visibility), e.g. frames of one video with a pose estimator's keypoints.

Export: `person_adapter.safetensors` (models/person_adapters/, format of loaders/person_adapter.py);
with a non-zero UNet rate also `person_unet.safetensors` (models/diffusion_models/, UNETLoader).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F

from ...loaders.identity_encoder import load_dinov2
from ...loaders.model_folders import resolve_model_file
from ...loaders.person_adapter import save_person_adapter
from ...nodes.identity import CLIP_VISION_FOLDER
from ...nodes.person import encoder_kind, person_crops, pooled_embeddings
from ...ops import keypoints as kp
from ...ops.person_tokens import PersonAdapter, PersonAdapterConfig
from ...ops.placement import mask_bounding_box
from .. import diffusion
from ..data.frames import PairedFrames
from . import register

NAME = "person"
MODALITIES = ("image", "caption", "pose")
GROUPS = ("adapter", "unet")
ADAPTER_FILE = "person_adapter.safetensors"
UNET_FILE = "person_unet.safetensors"
# A person standing in its box, COCO-17 order, (x, y) as fractions of the box: the stand-in skeleton.
STANDING_TEMPLATE = (
    (0.50, 0.07), (0.54, 0.05), (0.46, 0.05), (0.58, 0.07), (0.42, 0.07),  # nose, eyes, ears
    (0.68, 0.20), (0.32, 0.20), (0.74, 0.36), (0.26, 0.36), (0.76, 0.50), (0.24, 0.50),  # shoulders, elbows, wrists
    (0.60, 0.52), (0.40, 0.52), (0.60, 0.75), (0.40, 0.75), (0.60, 0.96), (0.40, 0.96),  # hips, knees, ankles
)


@dataclass(frozen=True)
class PersonSettings:
    """The `recipe:` section of a person config."""

    checkpoint: str  # an inpainting checkpoint (checkpoints folder), e.g. sd-v1-5-inpainting.safetensors
    image_encoder: str  # clip_vision file: a DINOv2 (as Diorama DINOv2 Loader loads it) or a CLIP vision model
    image_tokens: int = 4  # m
    pose_tokens: int = 3  # k
    crop_size: int = 224  # side of the reference crop the encoder sees
    resolution: int = 512  # side of the square the UNet is trained at
    drop: dict = field(default_factory=lambda: {"image": 0.2, "caption": 0.2, "pose": 0.2})
    null_probability: float = 0.1
    learning_rates: dict = field(default_factory=lambda: {"adapter": 1e-4, "unet": 0.0})
    adapter_seed: int = 0

    @staticmethod
    def from_config(section: dict) -> "PersonSettings":
        names = {f.name for f in fields(PersonSettings)}
        unknown = sorted(set(section) - names)
        missing = sorted(n for n in ("checkpoint", "image_encoder") if n not in section)
        if unknown or missing:
            raise ValueError(f"recipe section of {NAME}: unknown keys {unknown}, missing keys {missing}; expected "
                             f"{sorted(names)} (checkpoint, image_encoder required)")
        settings = PersonSettings(**section)
        if sorted(settings.drop) != sorted(MODALITIES) or not all(0 <= p <= 1 for p in settings.drop.values()):
            raise ValueError(f"recipe.drop = {settings.drop}; expected a probability for each of {list(MODALITIES)}")
        if sorted(settings.learning_rates) != sorted(GROUPS) or settings.learning_rates["adapter"] <= 0 \
                or settings.learning_rates["unet"] < 0:
            raise ValueError(f"recipe.learning_rates = {settings.learning_rates}; expected adapter > 0 and unet ≥ 0 "
                             "(0 keeps the UNet frozen)")
        if not 0 <= settings.null_probability <= 1:
            raise ValueError(f"recipe.null_probability = {settings.null_probability}; expected a probability")
        return settings


def stand_in_keypoints(box: tuple[int, int, int, int]) -> torch.Tensor:
    """[17, 3] COCO keypoints in pixels: STANDING_TEMPLATE laid into the pixel box (x0, y0, x1, y1), all visible."""
    x0, y0, x1, y1 = box
    template = torch.tensor(STANDING_TEMPLATE, dtype=torch.float32)
    xy = template * torch.tensor([x1 - x0, y1 - y0], dtype=torch.float32) + torch.tensor([x0, y0], dtype=torch.float32)
    return torch.cat([xy, torch.ones(17, 1)], dim=1)


def stand_in_caption(pair: PairedFrames) -> str:
    """'a red box near a blue sphere and a green box': the pair's object and its named neighbours."""
    names = pair.extras.get("names") or {}
    subject = names.get(pair.object_id, "object")
    others = [names[i] for i in pair.target.instance_ids if i != pair.object_id and i in names
              and bool(pair.target.mask_of(i).any())]
    return f"a {subject}" + (f" near a {' and a '.join(others)}" if others else "")


class PersonRecipe:
    name = NAME

    def __init__(self, settings: PersonSettings, device: torch.device, dtype: torch.dtype):
        import comfy.clip_vision

        self.settings, self.device = settings, device
        self.unet, self.clip, self.vae = diffusion.load_trainable_checkpoint(settings.checkpoint, device)
        if "masked_image" not in getattr(self.unet.model, "concat_keys", ()):
            raise ValueError(f"{settings.checkpoint} is not an inpainting checkpoint (its UNet reads no masked image); "
                             "the person recipe trains on an inpainting UNet such as sd-v1-5-inpainting")
        if settings.learning_rates["unet"] == 0:
            self.unet.model.diffusion_model.requires_grad_(False)
        path = resolve_model_file(CLIP_VISION_FOLDER, settings.image_encoder)
        try:
            self.encoder = load_dinov2(path)
        except ValueError:  # not a DINOv2 file: a CLIP vision model, as Load CLIP Vision reads it
            self.encoder = comfy.clip_vision.load(path)
        self.kind = encoder_kind(self.encoder)
        with torch.no_grad():
            probe = pooled_embeddings(self.encoder, torch.full((1, settings.crop_size, settings.crop_size, 3), 0.5), self.kind)
        self._captions: dict[str, torch.Tensor] = {}
        self.empty_caption = self._caption_tokens("")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.adapter_seed)
            self.adapter = PersonAdapter(PersonAdapterConfig(
                self.kind, probe.shape[1], self.empty_caption.shape[-1], settings.image_tokens, settings.pose_tokens,
                image_size=settings.crop_size)).to(device)
        # The adapter's nulls start at zero (ops.person_tokens); small random values let each null differ.
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.adapter_seed + 1)
            for null in (self.adapter.image_null, self.adapter.pose_null):
                null.copy_(torch.randn_like(null) * 0.02)

    # ------------------------------------------------------------------ the trainer's interface
    def modules(self) -> dict[str, torch.nn.Module]:
        trained = {"adapter": self.adapter}
        if self.settings.learning_rates["unet"] > 0:
            trained["unet"] = self.unet.model.diffusion_model
        return trained

    def parameter_groups(self) -> list[dict]:
        return [{"name": name, "params": list(module.parameters())} for name, module in self.modules().items()]

    def learning_rates(self, step: int) -> dict[str, float]:
        return {name: float(self.settings.learning_rates[name]) for name in self.modules()}

    def checkpointed_modules(self) -> list[torch.nn.Module]:
        return diffusion.unet_blocks(self.unet)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{key}": value.detach().clone() for name, module in self.modules().items()
                for key, value in module.state_dict().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, module in self.modules().items():
            module.load_state_dict({k.removeprefix(f"{name}."): v for k, v in state.items() if k.startswith(f"{name}.")})

    def training_loss(self, batch: list[PairedFrames], generator: torch.Generator) -> torch.Tensor:
        losses = []
        for pair in batch:
            subset = tuple(m for m in MODALITIES if float(torch.rand((), generator=generator)) >= self.settings.drop[m])
            null = float(torch.rand((), generator=generator)) < self.settings.null_probability or not subset
            latents, concat = self._inpainting_inputs(pair)
            context = self.sequence(pair, subset or MODALITIES, null)
            losses.append(diffusion.noise_prediction_loss(self.unet, latents, context, generator, concat))
        return torch.stack(losses).mean()

    @torch.no_grad()
    def validate(self, batch: list[PairedFrames], generator: torch.Generator) -> tuple[dict[str, float], torch.Tensor]:
        """ε-loss with every modality and with the negative (same noise), and per pair [target | masked
        input | one-step x̂₀ with every modality]."""
        metrics, strips = {"loss": 0.0, "null_loss": 0.0}, []
        for pair in batch:
            latents, concat = self._inpainting_inputs(pair)
            state = generator.get_state()
            loss, denoised = diffusion.one_step_prediction(self.unet, latents, self.sequence(pair, MODALITIES, False),
                                                           generator, concat)
            generator.set_state(state)
            null_loss, _ = diffusion.one_step_prediction(self.unet, latents, self.sequence(pair, MODALITIES, True),
                                                         generator, concat)
            metrics["loss"] += float(loss.mean()) / len(batch)
            metrics["null_loss"] += float(null_loss.mean()) / len(batch)
            target, masked, _ = self._pixels(pair)
            strips.append(torch.cat((target, masked, diffusion.decode_latents(self.unet, self.vae, denoised)), dim=2))
        return metrics, torch.cat(strips)

    def export(self, directory: Path) -> list[Path]:
        adapter = Path(directory) / ADAPTER_FILE
        save_person_adapter(str(adapter), self.adapter.cpu())
        self.adapter.to(self.device)
        written = [adapter]
        if "unet" in self.modules():
            unet = Path(directory) / UNET_FILE
            state = {k: v.detach().float().cpu().contiguous() for k, v in self.unet.model.diffusion_model.state_dict().items()}
            safetensors.torch.save_file(state, str(unet))
            written.append(unet)
        return written

    # ------------------------------------------------------------------ the maths
    def sequence(self, pair: PairedFrames, subset: tuple[str, ...], null: bool) -> torch.Tensor:
        """[1, n, D] tokens image ⊕ caption ⊕ pose for the modalities in `subset`, as the node's positive
        (null=False) or negative (null=True, the empty caption as the text part)."""
        parts = []
        if "image" in subset:
            parts.append(self.adapter.image_null[None] if null else self.adapter.image(self._embedding(pair)))
        if "caption" in subset:
            parts.append(self.empty_caption if null else self._caption_tokens(pair.caption or stand_in_caption(pair)))
        if "pose" in subset:
            parts.append(self.adapter.pose_null[None] if null else self.adapter.pose(self._pose_vector(pair)))
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def _caption_tokens(self, text: str) -> torch.Tensor:
        """The frozen text encoder's tokens, encoded once per distinct caption (the text encoder costs more
        than a small UNet step)."""
        if text not in self._captions:
            self._captions[text] = self.clip.encode_from_tokens(self.clip.tokenize(text)).float().to(self.device)
        return self._captions[text]

    @torch.no_grad()
    def _embedding(self, pair: PairedFrames) -> torch.Tensor:
        source = pair.source
        crops = person_crops(source.image.permute(1, 2, 0)[None], source.mask_of(pair.object_id).float()[None],
                             self.settings.crop_size)
        return pooled_embeddings(self.encoder, crops, self.kind).float().to(self.device)

    def _pose_vector(self, pair: PairedFrames) -> torch.Tensor:
        height, width = pair.target.image.shape[-2:]
        pixels = pair.keypoints if pair.keypoints is not None else stand_in_keypoints(
            mask_bounding_box(pair.target.mask_of(pair.object_id).float()))
        points = pixels.float().clone()
        points[:, :2] = points[:, :2] / torch.tensor([width, height], dtype=torch.float32)
        points = kp.validate(kp.hide_outside(points[None]), f"keypoints of {pair.origin}")
        return kp.pose_vector(points).to(self.device)

    def _pixels(self, pair: PairedFrames) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Target [1,R,R,3], its masked version (grey in the person's box, as Composite Sample gives
        inpainting models) and the box mask [1,R,R], at the training resolution."""
        target = pair.target
        if not bool(target.mask_of(pair.object_id).any()):
            raise ValueError(f"training pair from {pair.origin}: the person (instance {pair.object_id}) is not visible "
                             "in the target frame; expected a mask with at least one pixel")
        x0, y0, x1, y1 = mask_bounding_box(target.mask_of(pair.object_id).float())
        box = torch.zeros(target.image.shape[-2:])
        box[y0:y1, x0:x1] = 1.0
        size = self.settings.resolution
        image = diffusion.resize_images(target.image.permute(1, 2, 0)[None].float(), size)
        mask = F.interpolate(box[None, None], size=(size, size), mode="nearest")[:, 0]
        keep = (1 - mask)[..., None]
        return image, image * keep + 0.5 * (1 - keep), mask

    def _inpainting_inputs(self, pair: PairedFrames) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean latents and the inpainting channels, built by the model's own concat_cond."""
        image, masked, mask = self._pixels(pair)
        latents = diffusion.image_latents(self.unet, self.vae, image, self.device)
        with torch.no_grad():
            concat = self.unet.model.concat_cond(concat_latent_image=self.vae.encode(masked).float(),
                                                 concat_mask=mask[:, None], noise=latents, device=self.device)
        return latents, concat


def create(config: dict, device: torch.device, dtype: torch.dtype) -> PersonRecipe:
    return PersonRecipe(PersonSettings.from_config(config), device, dtype)


register(NAME, create)
