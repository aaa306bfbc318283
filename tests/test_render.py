"""The bundled renderer against closed-form geometry."""
import math

import torch

from diorama.ops.render import Box, Camera, Plane, Sphere, render, scaled


def test_fronto_parallel_plane_has_constant_depth():
    cam = Camera(40, 30, 50.0, 50.0, 20.0, 15.0)
    out = render(cam, [Plane(point=(0, 0, 4.0), normal=(0, 0, -1), colour=(1, 1, 1), instance=1)])
    torch.testing.assert_close(out.depth, torch.full((30, 40), 4.0))
    assert bool((out.instance == 1).all())


def test_ground_plane_depth_follows_the_row():
    # A ground plane h below the camera is seen at row v (pixel centre) at depth fy * h / (v - cy).
    cam = Camera(64, 48, 40.0, 40.0, 32.0, 24.0)
    out = render(cam, [Plane(point=(0, 1.5, 0), normal=(0, -1, 0), colour=(1, 1, 1))])
    for row in (30, 40, 47):
        expected = 40.0 * 1.5 / (row + 0.5 - 24.0)
        torch.testing.assert_close(out.depth[row, 10], torch.tensor(expected), rtol=1e-5, atol=1e-5)
    assert bool(torch.isinf(out.depth[:24]).all()), "rows above the horizon see no ground"


def test_sphere_on_axis_depth_and_silhouette():
    cam = Camera(101, 101, 100.0, 100.0, 50.5, 50.5)
    out = render(cam, [Sphere(centre=(0, 0, 5.0), radius=1.0, colour=(1, 0, 0), instance=3)])
    torch.testing.assert_close(out.depth[50, 50], torch.tensor(4.0), rtol=1e-4, atol=1e-4)
    # The silhouette's angular radius is asin(r/d): its image radius is f * tan(asin(1/5)).
    radius_px = 100.0 * math.tan(math.asin(1 / 5))
    area = float((out.instance == 3).sum())
    assert abs(area - math.pi * radius_px ** 2) / area < 0.03


def test_box_corners_project_where_pinhole_geometry_says():
    cam = Camera(200, 200, 100.0, 100.0, 100.0, 100.0)
    out = render(cam, [Box(centre=(0, 0, 4.0), size=(2.0, 1.0, 1.0), colour=(0, 1, 0), instance=2)])
    ys, xs = torch.nonzero(out.instance == 2, as_tuple=True)
    # The front face (z = 3.5) is the largest outline: x in ±1 → u = 100 ± 100/3.5.
    assert abs(int(xs.min()) - (100 - 100 / 3.5)) <= 1 and abs(int(xs.max()) + 1 - (100 + 100 / 3.5)) <= 1
    assert abs(int(ys.min()) - (100 - 50 / 3.5)) <= 1
    torch.testing.assert_close(out.depth[100, 100], torch.tensor(3.5))


def test_scaling_the_world_about_the_camera_scales_depth_only():
    cam = Camera(64, 48, 50.0, 50.0, 32.0, 24.0)
    # Untextured: texture parity flips on float noise exactly at stripe boundaries.
    scene = [Plane(point=(0, 1.0, 0), normal=(0, -1, 0), colour=(0.5, 0.5, 0.5)),
             Box(centre=(0.2, 0.5, 3.0), size=(0.6, 1.0, 0.6), colour=(1, 0, 0), yaw_deg=30, instance=4),
             Sphere(centre=(-0.5, 0.6, 2.5), radius=0.3, colour=(0, 0, 1), instance=5)]
    a, b = render(cam, scene), render(cam, [scaled(p, 2.5) for p in scene])
    assert torch.equal(a.instance, b.instance)
    torch.testing.assert_close(a.rgb, b.rgb, atol=1e-5, rtol=0)
    finite = torch.isfinite(a.depth)
    torch.testing.assert_close(b.depth[finite], 2.5 * a.depth[finite], rtol=1e-5, atol=1e-5)
