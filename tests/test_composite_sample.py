"""CompositeSample with tiny SD1.5-shaped checkpoints loaded by ComfyUI's own loaders."""
import pytest
import torch

RESOLUTION = 64  # the tiny models sample 64² windows (8² latents)


@pytest.fixture(scope="module")
def sd(tiny_sd_models, node_class):
    loader = node_class("CheckpointLoaderSimple")()
    model, clip, vae = loader.load_checkpoint(tiny_sd_models["checkpoint"])[:3]
    inpaint_model = loader.load_checkpoint(tiny_sd_models["inpainting"])[0]
    encode = node_class("CLIPTextEncode")()
    positive = encode.encode(clip, "a wooden crate on the floor")[0]
    negative = encode.encode(clip, "")[0]
    controlnet = node_class("ControlNetLoader")().load_controlnet(tiny_sd_models["controlnet"])[0]
    return dict(model=model, inpaint_model=inpaint_model, vae=vae, positive=positive, negative=negative,
                controlnet=controlnet)


def scene(height: int, width: int, box: tuple[int, int, int, int], seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    background = torch.rand(1, height, width, 3, generator=generator)
    blend = torch.zeros(1, height, width)
    x0, y0, x1, y1 = box
    blend[0, y0:y1, x0:x1] = 1.0
    return background, blend


def window_for(node_class, background, blend, vae):
    return node_class("DioramaCompositeWindow").execute(background, 1.5, RESOLUTION, mask=blend, vae=vae).result[0]


def sample(node_class, sd, background, blend, window, model=None, positive=None, seed=7, batch_size=1, init_image=None,
           steps=3, denoise=1.0):
    return node_class("DioramaCompositeSample").execute(
        model or sd["model"], positive or sd["positive"], sd["negative"], sd["vae"], background, window, blend,
        seed, steps, 5.0, "euler", "normal", denoise, batch_size, 2.0, True, init_image=init_image).result


@pytest.mark.parametrize("height, width, box", [
    (200, 300, (120, 80, 170, 140)),
    (1024, 1024, (0, 0, 90, 120)),  # window touching the top-left border
    (217, 333, (280, 150, 333, 217)),  # not a multiple of 8, window touching the bottom-right border
])
@pytest.mark.parametrize("which", ["model", "inpaint_model"])
def test_outside_the_blend_region_the_photo_is_returned_exactly(node_class, sd, height, width, box, which):
    background, blend = scene(height, width, box)
    window = window_for(node_class, background, blend, sd["vae"])
    image, latent, window_image = sample(node_class, sd, background, blend, window, model=sd[which])
    assert image.shape == background.shape
    assert torch.equal(image[blend == 0], background[blend == 0])
    assert not torch.equal(image[blend > 0], background[blend > 0]), "the blend region must be generated"
    assert latent["samples"].shape[-2:] == (window.sample_hw[0] // 8, window.sample_hw[1] // 8)
    assert window_image.shape[1:3] == window.sample_hw


def capture_concat(model):
    """A clone of the model that records the extra input channels its UNet receives."""
    seen = []

    def wrapper(apply_model, args):
        seen.append(args["c"].get("c_concat"))
        return apply_model(args["input"], args["timestep"], **args["c"])

    patched = model.clone()
    patched.set_model_unet_function_wrapper(wrapper)
    return patched, seen


def test_inpainting_model_is_detected_and_reads_the_masked_background(node_class, sd):
    background, blend = scene(200, 300, (120, 80, 170, 140))
    window = window_for(node_class, background, blend, sd["vae"])
    patched, seen = capture_concat(sd["inpaint_model"])
    init = background.clone()
    out_a = sample(node_class, sd, background, blend, window, model=patched, init_image=init)[2]
    assert seen[0] is not None and seen[0].shape[1] == 5, "mask + masked-image latent are concatenated to the input"
    # Change only the known background around the object; the init image stays the same, so the
    # masked-image conditioning is the only way the change can reach the model.
    changed = background.clone()
    changed[0, :, :110] = 1 - changed[0, :, :110]
    out_b = sample(node_class, sd, changed, blend, window, model=sd["inpaint_model"], init_image=init)[2]
    assert not torch.allclose(out_a, out_b)
    plain_a = sample(node_class, sd, background, blend, window, init_image=init)[2]
    plain_b = sample(node_class, sd, changed, blend, window, init_image=init)[2]
    assert torch.equal(plain_a, plain_b), "a regular model gets no masked-image conditioning"
    regular, seen_regular = capture_concat(sd["model"])
    sample(node_class, sd, background, blend, window, model=regular)
    assert seen_regular[0] is None


def test_controlnet_hint_cropped_by_the_window_reaches_the_model(node_class, sd):
    background, blend = scene(200, 300, (120, 80, 170, 140))
    window = window_for(node_class, background, blend, sd["vae"])
    apply = node_class("ControlNetApplyAdvanced")()

    def with_hint(hint_full):
        hint = node_class("DioramaCropToWindow").execute(window, image=hint_full).result[0]
        assert hint.shape[1:3] == window.sample_hw
        positive, negative = apply.apply_controlnet(sd["positive"], sd["negative"], sd["controlnet"], hint, 1.0, 0.0, 1.0)
        return node_class("DioramaCompositeSample").execute(
            sd["model"], positive, negative, sd["vae"], background, window, blend, 7, 3, 5.0, "euler", "normal", 1.0,
            1, 2.0, True).result[2]

    ramp = torch.linspace(0, 1, 300).expand(1, 200, 300)[..., None].expand(-1, -1, -1, 3).contiguous()
    outside_window = ramp.clone()
    rows, cols = window.area.slices
    outside_window[:, :, :cols.start] = 0.0  # differs only outside the window: must not matter
    inside_window = ramp.clone()
    inside_window[:, rows, cols] = 1 - inside_window[:, rows, cols]
    base = with_hint(ramp)
    assert torch.equal(base, with_hint(outside_window)), "the hint is cropped to the window"
    assert not torch.allclose(base, with_hint(inside_window)), "the hint inside the window steers the model"


def test_same_seed_same_output_and_batches_equal_single_runs(node_class, sd):
    background, blend = scene(200, 300, (120, 80, 170, 140))
    other, _ = scene(200, 300, (120, 80, 170, 140), seed=1)
    window = window_for(node_class, background, blend, sd["vae"])
    first = sample(node_class, sd, background, blend, window)[0]
    assert torch.equal(first, sample(node_class, sd, background, blend, window)[0])
    both = sample(node_class, sd, torch.cat([background, other]), blend, window)[0]
    torch.testing.assert_close(both[:1], first, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both[1:], sample(node_class, sd, other, blend, window)[0], atol=1e-4, rtol=1e-4)
    seeds = sample(node_class, sd, background, blend, window, batch_size=2)[0]
    torch.testing.assert_close(seeds[1:], sample(node_class, sd, background, blend, window, seed=8)[0], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(seeds[0], seeds[1])


def test_interruption_stops_within_a_step(node_class, sd):
    import comfy.model_management
    import nodes

    background, blend = scene(200, 300, (120, 80, 170, 140))
    window = window_for(node_class, background, blend, sd["vae"])
    calls = []

    def wrapper(apply_model, args):
        calls.append(1)
        if len(calls) == 2:
            nodes.interrupt_processing(True)
        return apply_model(args["input"], args["timestep"], **args["c"])

    patched = sd["model"].clone()
    patched.set_model_unet_function_wrapper(wrapper)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            sample(node_class, sd, background, blend, window, model=patched, steps=20)
    finally:
        nodes.interrupt_processing(False)
    assert len(calls) <= 3, f"sampling went on for {len(calls)} model calls after the interrupt"


def test_bad_inputs_fail_before_sampling(node_class, sd):
    background, blend = scene(200, 300, (120, 80, 170, 140))
    window = window_for(node_class, background, blend, sd["vae"])
    other_size = torch.rand(1, 210, 300, 3)
    with pytest.raises(ValueError, match="window was made for a 300x200 image but background is 300x210"):
        sample(node_class, sd, other_size, torch.zeros(1, 210, 300), window)
    with pytest.raises(ValueError, match="blend_mask: mask is empty"):
        sample(node_class, sd, background, torch.zeros_like(blend), window)
    far = torch.zeros_like(blend)
    far[0, 0:10, 0:10] = 1
    with pytest.raises(ValueError, match="blend_mask reaches outside the composite window"):
        sample(node_class, sd, background, far, window)
    with pytest.raises(ValueError, match="connect a placement or a mask"):
        node_class("DioramaCompositeWindow").execute(background, 1.5, RESOLUTION)


def test_vae_and_model_latent_channels_must_match(node_class, sd):
    import comfy.sd
    import tiny_sd
    from comfy.taesd.taesd import TAESD

    wide = TAESD(latent_channels=16)
    tiny_sd.initialise(wide, 0)
    vae16 = comfy.sd.VAE(sd={k: v for k, v in wide.state_dict().items() if k.startswith("taesd_")})
    background, blend = scene(200, 300, (120, 80, 170, 140))
    window = window_for(node_class, background, blend, sd["vae"])
    with pytest.raises(ValueError, match="VAE makes 16-channel latents but the model samples 4-channel latents"):
        node_class("DioramaCompositeSample").execute(
            sd["model"], sd["positive"], sd["negative"], vae16, background, window, blend, 0, 2, 5.0, "euler", "normal",
            1.0, 1, 2.0, True)


def test_token_conditioning_reaches_the_model(node_class, sd):
    """Identity or asset tokens arrive as the CONDITIONING tensor itself (any sequence length)."""
    background, blend = scene(200, 300, (120, 80, 170, 140))
    window = window_for(node_class, background, blend, sd["vae"])
    generator = torch.Generator().manual_seed(5)
    tokens_a = [[torch.randn(1, 257, 768, generator=generator), {}]]
    tokens_b = [[torch.randn(1, 257, 768, generator=generator), {}]]
    out_a = sample(node_class, sd, background, blend, window, positive=tokens_a)[2]
    out_b = sample(node_class, sd, background, blend, window, positive=tokens_b)[2]
    assert not torch.allclose(out_a, out_b)


def test_inpainting_model_with_a_batch_of_seeds(node_class, sd):
    """The window and its masked-image conditioning are encoded once and shared by every seed."""
    background, blend = scene(200, 300, (120, 80, 170, 140))
    window = window_for(node_class, background, blend, sd["vae"])
    seeds = sample(node_class, sd, background, blend, window, model=sd["inpaint_model"], batch_size=2)[0]
    single = sample(node_class, sd, background, blend, window, model=sd["inpaint_model"], seed=8)[0]
    torch.testing.assert_close(seeds[1:], single, atol=1e-4, rtol=1e-4)
    assert torch.equal(seeds[0][blend[0] == 0], background[0][blend[0] == 0])
