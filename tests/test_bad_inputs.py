"""Bad inputs give clear errors naming the input and what is expected; odd-but-valid inputs work."""
import pytest
import torch

from diorama.runner.execute import WorkflowError


@pytest.fixture(scope="module")
def scene(node_class):
    """The bundled scene's outputs, made by the node so they are the loaded pack's own types."""
    names = ("background", "background_depth", "object", "object_mask", "object_depth", "placement", "truth")
    return dict(zip(names, node_class("DioramaBundledScene").execute(96, 64, 64).result))


def run(node_class, name, *args, **kwargs):
    return node_class(name).execute(*args, **kwargs).result


def box_prompt(**overrides) -> dict:
    inputs = {"background": ["1", 0], "x0": 0.2, "y0": 0.2, "x1": 0.5, "y1": 0.9, "unit": "fractions",
              "depth_source": "value", "depth": 3.0, "depth_kind": "metric"}
    inputs.update(overrides)
    return {
        "1": {"class_type": "DioramaBundledScene", "inputs": {"width": 96, "height": 64, "reference_size": 64}},
        "2": {"class_type": "DioramaPlacementFromBox", "inputs": inputs},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 1]}},
    }


@pytest.mark.parametrize("overrides, message", [
    ({"x0": 0.5, "x1": 0.5}, "zero or negative area"),
    ({"x0": 1.2, "x1": 1.5}, "outside the 96x64 image"),
    ({"depth": 0.0}, "metric depth must be > 0"),
    ({"depth_source": "ground contact in background depth"}, "no background_depth is connected"),
])
def test_box_placement_errors_name_the_node(run_prompt, overrides, message):
    with pytest.raises(WorkflowError, match=message) as error:
        run_prompt(box_prompt(**overrides))
    assert error.value.node_id == "2" and error.value.node_type == "DioramaPlacementFromBox"


def test_empty_mask_is_refused_by_every_node_taking_an_object_mask(node_class, scene):
    empty = torch.zeros_like(scene["object_mask"])
    with pytest.raises(ValueError, match="object_mask: mask is empty"):
        run(node_class, "DioramaDepthFuse", scene["background_depth"], scene["object_depth"], empty, scene["placement"])
    with pytest.raises(ValueError, match="object_mask: mask is empty"):
        run(node_class, "DioramaShapeMask", empty, scene["placement"], 1)
    with pytest.raises(ValueError, match="object_mask: mask is empty"):
        run(node_class, "DioramaDepthAwarePaste", scene["background"], scene["object"], empty, scene["placement"], 2.0, 0.5)
    with pytest.raises(ValueError, match="mask: mask is empty"):
        run(node_class, "DioramaPlacementFromMask", empty, "value", 3.0, "metric")


def test_mask_and_image_size_mismatch(node_class, scene):
    small_mask = scene["object_mask"][:, :32, :32]
    with pytest.raises(ValueError, match="object is 64x64 px but object_mask is 32x32 px"):
        run(node_class, "DioramaDepthAwarePaste", scene["background"], scene["object"], small_mask, scene["placement"], 2.0, 0.5)
    with pytest.raises(ValueError, match="image is 64x64 px but mask is 32x32 px"):
        run(node_class, "DioramaDetailMap", scene["object"], small_mask, 0.2, 2)


def test_batch_size_mismatch(node_class, scene):
    backgrounds = scene["background"].repeat(2, 1, 1, 1)
    objects = scene["object"].repeat(3, 1, 1, 1)
    with pytest.raises(ValueError, match="batch sizes do not match .*background=2, object=3"):
        run(node_class, "DioramaDepthAwarePaste", backgrounds, objects, scene["object_mask"], scene["placement"], 2.0, 0.5)


def test_batch_of_backgrounds_with_one_object_is_broadcast(node_class, scene):
    backgrounds = torch.cat([scene["background"], scene["background"].flip(2)])
    image, alpha = run(node_class, "DioramaDepthAwarePaste", backgrounds, scene["object"], scene["object_mask"],
                       scene["placement"], 2.0, 0.5)
    single, _ = run(node_class, "DioramaDepthAwarePaste", backgrounds[1:], scene["object"], scene["object_mask"],
                    scene["placement"], 2.0, 0.5)
    assert image.shape == backgrounds.shape and alpha.shape == backgrounds.shape[:3]
    torch.testing.assert_close(image[1:], single)


def test_metric_depth_must_be_positive_and_finite(node_class):
    black = torch.zeros(1, 32, 32, 3)
    with pytest.raises(ValueError, match="metric depth must be > 0"):
        run(node_class, "DioramaDepthFromImage", black, "metric (white = max_metres)", 10.0)
    nan = torch.full((1, 32, 32, 3), float("nan"))
    with pytest.raises(ValueError, match="depth_image: contains 3072 NaN or infinite values"):
        run(node_class, "DioramaDepthFromImage", nan, "disparity (white = near)", 10.0)
    inf = torch.ones(1, 32, 32, 3)
    inf[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        run(node_class, "DioramaDepthFromImage", inf, "metric (white = max_metres)", 10.0)


def test_depth_kinds_must_agree(node_class, scene):
    disparity = run(node_class, "DioramaDepthFromImage", torch.rand(1, 64, 96, 3) + 0.1, "disparity (white = near)", 1.0)[0]
    with pytest.raises(ValueError, match="object_depth is 'metric' but background_depth is 'disparity'"):
        run(node_class, "DioramaDepthFuse", disparity, scene["object_depth"], scene["object_mask"], scene["placement"])


def test_images_under_16_px_are_refused(node_class, scene):
    tiny = torch.rand(1, 12, 40, 3)
    with pytest.raises(ValueError, match="background: 40x12 px is too small; both sides must be at least 16 px"):
        run(node_class, "DioramaDepthAwarePaste", tiny, scene["object"], scene["object_mask"], scene["placement"], 2.0, 0.5)


def test_rgba_and_grayscale_images_are_accepted(node_class, scene):
    rgba = torch.cat([scene["background"], torch.ones_like(scene["background"][..., :1])], dim=-1)
    gray = scene["object"].mean(-1, keepdim=True)
    image, _ = run(node_class, "DioramaDepthAwarePaste", rgba, gray, scene["object_mask"], scene["placement"], 2.0, 0.0)
    reference, _ = run(node_class, "DioramaDepthAwarePaste", scene["background"], gray.expand(-1, -1, -1, 3),
                       scene["object_mask"], scene["placement"], 2.0, 0.0)
    assert image.shape[-1] == 3
    torch.testing.assert_close(image, reference)


def test_4096_square_background(node_class, scene):
    size = 4096
    background = torch.nn.functional.interpolate(scene["background"].permute(0, 3, 1, 2), size=(size, size)).permute(0, 2, 3, 1)
    depth_image = torch.rand(1, size, size, 3) * 0.5 + 0.5
    background_depth = run(node_class, "DioramaDepthFromImage", depth_image, "metric (white = max_metres)", 10.0)[0]
    placement = run(node_class, "DioramaPlacementFromBox", background, 1000, 1500, 2200, 3600, "pixels",
                    "value", 4.0, "metric")[0]
    object_depth = run(node_class, "DioramaDepthFromImage", torch.full((1, 64, 64, 3), 0.5), "metric (white = max_metres)", 10.0)[0]
    _, visible, hint = run(node_class, "DioramaDepthFuse", background_depth, object_depth, scene["object_mask"], placement)
    image, alpha = run(node_class, "DioramaDepthAwarePaste", background, scene["object"], scene["object_mask"],
                       placement, 2.0, 0.5, visible_mask=visible)
    assert image.shape == (1, size, size, 3) and hint.shape == (1, size, size, 3)
    outside = alpha[0] == 0
    assert torch.equal(image[0][outside], background[0][outside])
    assert alpha[0, :1500].sum() == 0 and alpha[0, 1500:3600, 1000:2200].sum() > 0
