"""The bundled renderer against closed-form geometry."""
import math

import pytest
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


def test_box_rotation_matrix_turns_the_box():
    # A 2 x 1 box turned 90° about the viewing axis has the silhouette and depth of a 1 x 2 box.
    cam = Camera(64, 64, 60.0, 60.0, 32.0, 32.0)
    quarter_turn = ((0.0, -1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    turned = render(cam, [Box(centre=(0.1, 0.2, 4.0), size=(2.0, 1.0, 0.5), colour=(1, 0, 0), rotation=quarter_turn,
                              instance=1)])
    upright = render(cam, [Box(centre=(0.1, 0.2, 4.0), size=(1.0, 2.0, 0.5), colour=(1, 0, 0), instance=1)])
    assert torch.equal(turned.instance, upright.instance)
    torch.testing.assert_close(turned.depth, upright.depth)


def _look_at(position, target):
    from diorama.ops.assets import world_to_camera_look_at
    return world_to_camera_look_at(position, target)  # world z up


def test_in_camera_places_a_world_sphere_where_the_camera_looks():
    from diorama.ops.render import in_camera
    target, position, radius = (1.0, 2.0, 0.5), (4.0, -3.0, 2.0), 0.5
    cam = Camera(65, 65, 60.0, 60.0, 32.5, 32.5)
    out = render(cam, [in_camera(Sphere(centre=target, radius=radius, colour=(1, 1, 1), instance=1),
                                 _look_at(position, target))])
    # The optical axis goes through the centre: the nearest surface point is |target - position| - r away.
    expected = math.dist(target, position) - radius
    torch.testing.assert_close(out.depth[32, 32], torch.tensor(expected), rtol=1e-5, atol=1e-5)
    ys, xs = torch.nonzero(out.instance == 1, as_tuple=True)
    assert abs(float(xs.float().mean()) - 32.0) < 0.5 and abs(float(ys.float().mean()) - 32.0) < 0.5


def test_checker_and_light_stay_fixed_to_the_world_across_cameras():
    from diorama.ops.render import in_camera
    ground = Plane(point=(0, 0, 0), normal=(0, 0, 1), colour=(1, 1, 1), checker=1.0)
    light_world = torch.tensor((0.3, -0.2, 1.0))
    cam = Camera(65, 65, 60.0, 60.0, 32.5, 32.5)
    # Centres of four checker squares: (0.5, 0.5) and (-0.5, -0.5) share a colour, the other two are the other colour.
    points = torch.tensor([(0.5, 0.5, 0.0), (-0.5, 0.5, 0.0), (0.5, -0.5, 0.0), (-0.5, -0.5, 0.0)], dtype=torch.float64)
    seen = []
    for position in ((3.0, -4.0, 3.0), (-4.0, -2.0, 2.5)):
        pose = torch.tensor(_look_at(position, (0.0, 0.0, 0.0)), dtype=torch.float64)
        light = tuple((pose[:3, :3].float() @ light_world).tolist())
        out = render(cam, [in_camera(ground, pose.tolist())], light=light)
        in_cam = points @ pose[:3, :3].T + pose[:3, 3]
        cols = (60.0 * in_cam[:, 0] / in_cam[:, 2] + 32.5).floor().long()
        rows = (60.0 * in_cam[:, 1] / in_cam[:, 2] + 32.5).floor().long()
        seen.append(out.rgb[rows, cols, 0])
    torch.testing.assert_close(seen[0], seen[1], atol=1e-5, rtol=0)
    dark, light_ = sorted({round(float(v), 4) for v in seen[0]})
    assert abs(dark / light_ - 0.75) < 1e-3, "the checker darkens every other square to 75 %"
    assert math.isclose(seen[0][0], seen[0][3]) and math.isclose(seen[0][1], seen[0][2])
    assert not math.isclose(seen[0][0], seen[0][1])


def test_cast_shadows_under_a_vertical_light_are_the_footprints():
    # Light straight above (towards the light = −y): a floating box's shadow on the ground is its
    # footprint rectangle, a floating ball's is a disk of its radius under its centre.
    cam = Camera(96, 72, 60.0, 60.0, 48.0, 36.0)
    ground = Plane(point=(0, 1.5, 0), normal=(0, -1, 0), colour=(1, 1, 1), instance=0)
    box = Box(centre=(0.4, 0.8, 4.0), size=(1.0, 0.4, 1.0), colour=(1, 0, 0), instance=1)
    ball = Sphere(centre=(-1.2, 0.9, 4.0), radius=0.35, colour=(0, 0, 1), instance=2)
    plain = render(cam, [ground, box, ball], light=(0.0, -1.0, 0.0))
    out = render(cam, [ground, box, ball], light=(0.0, -1.0, 0.0), shadows=True)
    assert torch.equal(out.depth, plain.depth) and torch.equal(out.instance, plain.instance)
    rows, cols = torch.nonzero(out.instance == 0, as_tuple=True)
    z = out.depth[rows, cols].double()
    x = (cols + 0.5 - 48.0) / 60.0 * z
    in_box = torch.maximum((x - 0.4).abs(), (z - 4.0).abs()) - 0.5
    in_ball = torch.sqrt((x + 1.2) ** 2 + (z - 4.0) ** 2) - 0.35
    inside, outside = (in_box < -0.03) | (in_ball < -0.03), (in_box > 0.03) & (in_ball > 0.03)
    grey = out.rgb[rows, cols, 0]
    assert int(inside.sum()) >= 20 and int(outside.sum()) >= 1000
    torch.testing.assert_close(grey[inside], torch.full_like(grey[inside], 0.35))  # the ambient term only
    torch.testing.assert_close(grey[outside], torch.ones_like(grey[outside]))  # fully lit
    torch.testing.assert_close(out.rgb[out.instance > 0], plain.rgb[out.instance > 0])  # tops face the light


def test_box_checker_follows_the_face_coordinates():
    cam = Camera(101, 101, 100.0, 100.0, 50.5, 50.5)
    box = Box(centre=(0.0, 0.0, 4.0), size=(2.0, 2.0, 1.0), colour=(1, 1, 1), checker=0.5, instance=1)
    out = render(cam, [box], light=(0.0, 0.0, -1.0))  # light from the camera: the front face has shade 1
    for x in (-0.75, -0.25, 0.25, 0.75):
        for y in (-0.75, -0.25, 0.25, 0.75):
            u, v = cam.project(x, y, 3.5)  # a square's centre on the front face (z = 3.5)
            parity = (math.floor(x / 0.5) + math.floor(y / 0.5)) % 2
            assert float(out.rgb[int(v), int(u), 0]) == pytest.approx(0.7 + 0.3 * parity, abs=1e-6)


def test_sphere_checker_and_light_stay_fixed_to_the_world_across_cameras():
    from diorama.ops.render import in_camera
    ball = Sphere(centre=(0.0, 0.0, 1.0), radius=1.0, colour=(1, 1, 1), checker=8, instance=1)  # 45° cells
    light_world = torch.tensor((1.0, 0.0, 0.5))
    cam = Camera(201, 201, 200.0, 200.0, 100.5, 100.5)
    # Cell centres (azimuth, elevation) facing both cameras; parity = lon cell + lat cell, mod 2.
    angles = [(22.5, 22.5), (22.5, -22.5), (-22.5, 22.5), (-22.5, -22.5)]
    points = torch.tensor([(math.cos(math.radians(e)) * math.cos(math.radians(a)),
                            math.cos(math.radians(e)) * math.sin(math.radians(a)), 1 + math.sin(math.radians(e)))
                           for a, e in angles], dtype=torch.float64)
    seen = []
    for position in ((5.0, -1.0, 2.0), (4.0, 2.0, 2.5)):
        pose = torch.tensor(_look_at(position, (0.0, 0.0, 1.0)), dtype=torch.float64)
        light = tuple((pose[:3, :3].float() @ light_world).tolist())
        out = render(cam, [in_camera(ball, pose.tolist())], light=light)
        in_cam = points @ pose[:3, :3].T + pose[:3, 3]
        cols = (200.0 * in_cam[:, 0] / in_cam[:, 2] + 100.5).floor().long()
        rows = (200.0 * in_cam[:, 1] / in_cam[:, 2] + 100.5).floor().long()
        seen.append(out.rgb[rows, cols, 0])
    # Pixel centres miss the exact points by < 1 px, where the smooth shading changes by < 0.02;
    # a checker tied to the camera instead of the ball would differ by 30 % between the views.
    torch.testing.assert_close(seen[0], seen[1], atol=0.02, rtol=0)
    # (22.5°, 22.5°) and (−22.5°, 22.5°) mirror each other in the light, so they differ only by the checker.
    assert float(seen[0][0] / seen[0][2]) == pytest.approx(0.7, abs=0.02)  # parity 0 is the darker square
