// Pure maths of the placement editor (no DOM, no ComfyUI): the 2D placement box edits and the
// Neural Assets 3D boxes. The projection is ops/assets.py's, ported number for number (OpenCV
// camera: x right, y down, z forward; world z up; (u, v) = (K·p)₀,₁ / ((W, H)·(Z + 1e-6)), d = Z),
// so the boxes drawn in the browser are the ones the model is given; tests/browser compares them.

export const EPSILON_DEPTH = 1e-6; // ops/assets.py EPSILON_DEPTH
export const NEAR = 1e-3; // ops/asset_preview.py NEAR: edges with a corner nearer than this are not drawn
// Kubric's corner order (itertools.product((-1, 1), repeat=3) over the object's local x, y, z).
export const CORNER_SIGNS = [-1, 1].flatMap((x) => [-1, 1].flatMap((y) => [-1, 1].map((z) => [x, y, z])));
// Two corners share an edge when their indices differ in one bit (ops/asset_preview.py EDGES).
export const EDGES = [0, 1, 2, 3, 4, 5, 6, 7].flatMap((i) => [1, 2, 4].filter((bit) => i < (i ^ bit)).map((bit) => [i, i ^ bit]));

export function clamp(value, low, high) {
  return Math.min(Math.max(value, low), high);
}

export function matVec(m, v) {
  return m.map((row) => row[0] * v[0] + row[1] * v[1] + row[2] * v[2]);
}

export function matMul(a, b) {
  return a.map((row) => [0, 1, 2].map((j) => row[0] * b[0][j] + row[1] * b[1][j] + row[2] * b[2][j]));
}

export function transpose(m) {
  return [0, 1, 2].map((i) => [m[0][i], m[1][i], m[2][i]]);
}

/** R = Rz(yaw)·Ry(pitch)·Rx(roll), radians (ops/assets.py rotation_from_ypr). */
export function rotationFromYpr(yaw, pitch, roll) {
  const [cz, sz, cy, sy, cx, sx] = [Math.cos(yaw), Math.sin(yaw), Math.cos(pitch), Math.sin(pitch), Math.cos(roll), Math.sin(roll)];
  const rz = [[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]];
  const ry = [[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]];
  const rx = [[1, 0, 0], [0, cx, -sx], [0, sx, cx]];
  return matMul(matMul(rz, ry), rx);
}

/** [8][3] world corners c + R·(sign ⊙ size/2) of {centre, size, rotation}, Kubric's order. */
export function boxCorners(object) {
  return CORNER_SIGNS.map((signs) => {
    const local = signs.map((s, i) => (s * object.size[i]) / 2);
    const turned = matVec(object.rotation, local);
    return turned.map((v, i) => v + object.centre[i]);
  });
}

function cameraRotation(camera) {
  return camera.world_to_camera.slice(0, 3).map((row) => row.slice(0, 3));
}

/** World point → OpenCV camera point (R·p + t of the 4x4 world_to_camera). */
export function toCamera(point, camera) {
  const rotated = matVec(cameraRotation(camera), point);
  return rotated.map((v, i) => v + camera.world_to_camera[i][3]);
}

/** OpenCV camera point → [u, v, d]: fractions of the image (right, down) and the z-depth. */
export function project(point, camera) {
  const k = camera.intrinsics;
  const [height, width] = camera.image_hw;
  const a = k[0][0] * point[0] + k[0][1] * point[1] + k[0][2] * point[2];
  const b = k[1][0] * point[0] + k[1][1] * point[1] + k[1][2] * point[2];
  const denominator = point[2] + EPSILON_DEPTH;
  return [a / (width * denominator), b / (height * denominator), point[2]];
}

/** [8][3] (u, v, d) of an object's box corners seen by the camera. */
export function projectBox(object, camera) {
  return boxCorners(object).map((corner) => project(toCamera(corner, camera), camera));
}

/** Camera-axis vector (x right, y down, z forward) in world axes. */
export function cameraToWorldAxes(vector, camera) {
  return matVec(transpose(cameraRotation(camera)), vector);
}

/** World-axis vector in the camera's axes. */
export function worldToCameraAxes(vector, camera) {
  return matVec(cameraRotation(camera), vector);
}

/** Where the viewing ray through image fractions (u, v) meets the horizontal plane z = height,
 *  or null when it meets it behind the camera (or runs parallel to it). */
export function groundPoint(camera, u, v, height) {
  const k = camera.intrinsics;
  const [imageH, imageW] = camera.image_hw;
  const y = (v * imageH - k[1][2]) / k[1][1];
  const x = (u * imageW - k[0][2] - k[0][1] * y) / k[0][0];
  const direction = cameraToWorldAxes([x, y, 1], camera);
  const t = camera.world_to_camera.slice(0, 3).map((row) => row[3]);
  const origin = cameraToWorldAxes(t, camera).map((value) => -value);
  if (Math.abs(direction[2]) < 1e-12) return null;
  const s = (height - origin[2]) / direction[2];
  return s > 0 ? origin.map((value, i) => value + s * direction[i]) : null;
}

/** Degrees wrapped into [-180, 180). */
export function wrapDegrees(angle) {
  return ((((angle + 180) % 360) + 360) % 360) - 180;
}

/** The object after a Move Asset edit: offset in world axes or in the camera's axes. */
export function movedObject(object, offset, axes, camera) {
  const delta = axes === "camera" ? cameraToWorldAxes(offset, camera) : offset;
  return { ...object, centre: object.centre.map((c, i) => c + delta[i]) };
}

/** The object after a Rotate Asset edit (degrees; about its centre, world axes). */
export function rotatedObject(object, yawDeg, pitchDeg, rollDeg) {
  const turn = rotationFromYpr(...[yawDeg, pitchDeg, rollDeg].map((a) => (a * Math.PI) / 180));
  return { ...object, rotation: matMul(turn, object.rotation) };
}

// --- the 2D placement box: {x0, y0, x1, y1} fractions of the image ------------------------------

/** The box moved by (dx, dy) fractions, kept inside the image with its size unchanged. */
export function movedBox(box, dx, dy) {
  const width = box.x1 - box.x0;
  const height = box.y1 - box.y0;
  const x0 = clamp(box.x0 + dx, Math.min(0, box.x0), Math.max(1 - width, box.x0));
  const y0 = clamp(box.y0 + dy, Math.min(0, box.y0), Math.max(1 - height, box.y0));
  return { x0, y0, x1: x0 + width, y1: y0 + height };
}

/** The box with one corner ("x0y0", "x1y0", "x0y1", "x1y1") moved by (dx, dy) fractions, clamped to the
 *  image and to at least `minimum` = [fraction of one pixel across, down] of size. */
export function resizedBox(box, corner, dx, dy, minimum) {
  const out = { ...box };
  if (corner.includes("x0")) out.x0 = clamp(box.x0 + dx, 0, box.x1 - minimum[0]);
  else out.x1 = clamp(box.x1 + dx, box.x0 + minimum[0], 1);
  if (corner.includes("y0")) out.y0 = clamp(box.y0 + dy, 0, box.y1 - minimum[1]);
  else out.y1 = clamp(box.y1 + dy, box.y0 + minimum[1], 1);
  return out;
}

/** The largest rectangle of aspect width:height centred in the area {x, y, w, h}. */
export function fitRect(width, height, area) {
  const scale = Math.min(area.w / width, area.h / height);
  const w = width * scale;
  const h = height * scale;
  return { x: area.x + (area.w - w) / 2, y: area.y + (area.h - h) / 2, w, h };
}
