// Diorama's placement editor: an interactive drawing inside the placement nodes (drag the box, drag its
// corners, wheel for the depth) and the Neural Assets edit nodes (drag an object on the ground plane,
// turn it about its vertical axis). It only writes the nodes' own widgets, so what the queued prompt
// carries is exactly what the editor shows. It adds one canvas-drawn widget that is never serialised.
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import {
  EDGES, NEAR, boxCorners, clamp, fitRect, groundPoint, movedBox, movedObject, project, projectBox,
  resizedBox, rotatedObject, toCamera, worldToCameraAxes, wrapDegrees,
} from "./diorama_geometry.js";

const EDITOR = "diorama_editor";
const BACKGROUND_KEY = "diorama_background"; // nodes/editor.py
const SCENE_KEY = "diorama_scene";
const MARGIN = 8; // graph units around the drawing
const HANDLE = 6; // half size of a corner handle, graph units
const GRAB = 10; // how near (graph units) a press must be to grab a handle
const MIN_HEIGHT = 220;
const WHEEL_NOTCH = 100; // Chromium's deltaY for one wheel notch
const DEPTH_FACTOR = 1.05; // one notch away multiplies metric depth by this
const RANGE_STEP = 0.01; // one notch away lowers a BIFRÖST depth range by this fraction
const BOX_COLOUR = "#ff3333"; // ops/drawing.py draw_box's colour
// ops/asset_preview.py PALETTE
const PALETTE = [[1.0, 0.25, 0.2], [0.2, 0.85, 0.3], [0.25, 0.5, 1.0], [1.0, 0.85, 0.1], [0.9, 0.3, 0.9],
  [0.1, 0.9, 0.9], [1.0, 0.55, 0.1], [0.6, 0.4, 1.0], [0.6, 1.0, 0.4], [1.0, 0.5, 0.7]];
const CORNERS = ["x0y0", "x1y0", "x0y1", "x1y1"];

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

function value(node, name) {
  return widget(node, name)?.value;
}

function setValue(node, name, newValue) {
  const target = widget(node, name);
  if (!target) return;
  target.value = newValue;
  target.callback?.(target.value, app.canvas, node);
}

function colour(index) {
  const [r, g, b] = PALETTE[index % PALETTE.length].map((c) => Math.round(c * 255));
  return `rgb(${r}, ${g}, ${b})`;
}

// --- where the background image comes from ----------------------------------------------------

/** /api/view URL of a Load Image widget value ("sub/name.png [input]" or "name.png"). */
function loadImageUrl(imageValue) {
  const match = /^(.*?)(?: \[(input|output|temp)\])?$/.exec(String(imageValue));
  const path = match[1];
  const slash = path.lastIndexOf("/");
  const params = new URLSearchParams({
    filename: path.slice(slash + 1), subfolder: slash < 0 ? "" : path.slice(0, slash), type: match[2] ?? "input",
  });
  return api.apiURL(`/view?${params}`);
}

function savedImageUrl(saved) {
  const params = new URLSearchParams({ filename: saved.filename, subfolder: saved.subfolder ?? "", type: saved.type });
  return api.apiURL(`/view?${params}`);
}

/** The background: the Load Image feeding the node's background input, else what the last run saw. */
function backgroundUrl(node) {
  const input = node.inputs?.find((i) => i.name === "background");
  const upstream = input?.link != null ? node.getInputNode(node.inputs.indexOf(input)) : null;
  if (upstream?.type === "LoadImage" && value(upstream, "image")) return loadImageUrl(value(upstream, "image"));
  const saved = node.properties?.[BACKGROUND_KEY];
  return saved ? savedImageUrl(saved) : null;
}

// --- the 2D placement nodes: how their widgets express the box and the depth -----------------

const PLACEMENT_NODES = {
  DioramaPlacementFromBox: {
    scale(node, image) {
      return value(node, "unit") === "pixels" ? [image.width, image.height] : [1, 1];
    },
    readBox(node, image) {
      const [sx, sy] = this.scale(node, image);
      return { x0: value(node, "x0") / sx, y0: value(node, "y0") / sy, x1: value(node, "x1") / sx, y1: value(node, "y1") / sy };
    },
    writeBox(node, box, image) {
      const [sx, sy] = this.scale(node, image);
      setValue(node, "x0", box.x0 * sx);
      setValue(node, "y0", box.y0 * sy);
      setValue(node, "x1", box.x1 * sx);
      setValue(node, "y1", box.y1 * sy);
    },
    wheel(node, notchesAway) {
      if (value(node, "depth_source") !== "value") return;
      // Metric depth grows away from the camera, disparity shrinks.
      const exponent = value(node, "depth_kind") === "metric" ? notchesAway : -notchesAway;
      setValue(node, "depth", value(node, "depth") * DEPTH_FACTOR ** exponent);
    },
    depthLabel(node) {
      if (value(node, "depth_source") !== "value") return "depth: ground contact";
      const kind = value(node, "depth_kind");
      return `depth ${Number(value(node, "depth")).toFixed(3)}${kind === "metric" ? " m" : ` (${kind})`}`;
    },
  },
  DioramaPlacementDepthRange: {
    readBox(node) {
      const [x, y] = [value(node, "x"), value(node, "y")];
      return { x0: x, y0: y, x1: x + value(node, "width"), y1: y + value(node, "height") };
    },
    writeBox(node, box) {
      setValue(node, "x", box.x0);
      setValue(node, "y", box.y0);
      setValue(node, "width", box.x1 - box.x0);
      setValue(node, "height", box.y1 - box.y0);
    },
    wheel(node, notchesAway) {
      // 1 = nearest: away lowers both ends, keeping the range's width, inside 0..1.
      const [far, near] = [value(node, "depth_far"), value(node, "depth_near")];
      const newFar = clamp(far - RANGE_STEP * notchesAway, 0, 1 - (near - far));
      setValue(node, "depth_far", newFar);
      setValue(node, "depth_near", newFar + (near - far));
    },
    depthLabel(node) {
      return `depth ${Number(value(node, "depth_far")).toFixed(3)}–${Number(value(node, "depth_near")).toFixed(3)} of the disparity range`;
    },
  },
};

// --- the Neural Assets edit nodes: which edit their widgets make and which handle edits it ----

const ASSET_NODES = {
  DioramaMoveAsset: {
    handle: "move",
    edit(node, object, camera) {
      return movedObject(object, ["dx", "dy", "dz"].map((n) => value(node, n)), value(node, "axes"), camera);
    },
    label(node) {
      return `object ${value(node, "index")}: d = (${["dx", "dy", "dz"].map((n) => Number(value(node, n)).toFixed(2)).join(", ")}) ${value(node, "axes")}`;
    },
  },
  DioramaRotateAsset: {
    handle: "rotate",
    edit(node, object) {
      return rotatedObject(object, value(node, "yaw"), value(node, "pitch"), value(node, "roll"));
    },
    label(node) {
      return `object ${value(node, "index")}: yaw ${Number(value(node, "yaw")).toFixed(1)}°`;
    },
  },
};

// --- the editor of one node ------------------------------------------------------------------

class Editor {
  constructor(node) {
    this.node = node;
    this.image = null; // a loaded HTMLImageElement of the background
    this.url = null;
    this.layout = null; // {x, y, w, h} of the drawing, node-local graph units (set when drawn)
  }

  /** Graph point → node-local point → fractions of the drawing. */
  fractions(canvasX, canvasY) {
    const { x, y, w, h } = this.layout;
    return [(canvasX - this.node.pos[0] - x) / w, (canvasY - this.node.pos[1] - y) / h];
  }

  local(u, v) {
    const { x, y, w, h } = this.layout;
    return [x + u * w, y + v * h];
  }

  area(width, top, height) {
    return { x: MARGIN, y: top + MARGIN, w: width - 2 * MARGIN, h: Math.max(height - 2 * MARGIN, 1) };
  }

  refreshImage() {
    const url = backgroundUrl(this.node);
    if (url === this.url) return;
    this.url = url;
    this.image = null;
    if (!url) return;
    const image = new Image();
    image.onload = () => {
      if (this.url !== url) return; // a newer background was asked for meanwhile
      this.image = image;
      this.node.setDirtyCanvas(true, true);
    };
    image.src = url;
  }

  imageSize() {
    return { width: this.image.naturalWidth, height: this.image.naturalHeight };
  }

  scene() {
    return this.node.properties?.[SCENE_KEY] ?? null;
  }

  message(ctx, area, text) {
    ctx.fillStyle = "#222";
    ctx.fillRect(area.x, area.y, area.w, area.h);
    ctx.fillStyle = "#aaa";
    ctx.font = "12px Arial";
    ctx.textAlign = "center";
    const words = text.split(" ");
    let line = "";
    let row = 0;
    for (const word of words) { // wrap to the area's width
      if (ctx.measureText(`${line} ${word}`).width > area.w - 16 && line) {
        ctx.fillText(line, area.x + area.w / 2, area.y + 20 + 16 * row++);
        line = word;
      } else line = line ? `${line} ${word}` : word;
    }
    ctx.fillText(line, area.x + area.w / 2, area.y + 20 + 16 * row);
  }

  label(ctx, text) {
    ctx.font = "12px Arial";
    ctx.textAlign = "left";
    ctx.fillStyle = "rgba(0, 0, 0, 0.6)";
    ctx.fillRect(this.layout.x, this.layout.y, ctx.measureText(text).width + 8, 18);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, this.layout.x + 4, this.layout.y + 13);
  }

  draw(ctx, width, top, height) {
    const area = this.area(width, top, height);
    if (PLACEMENT_NODES[this.node.type]) this.drawPlacement(ctx, area);
    else this.drawAssets(ctx, area);
  }

  // 2D placement -----------------------------------------------------------------------------

  drawPlacement(ctx, area) {
    this.refreshImage();
    if (!this.image) {
      this.layout = null;
      this.message(ctx, area, "Connect a Load Image to background or run the workflow once to edit the box here.");
      return;
    }
    const size = this.imageSize();
    this.layout = fitRect(size.width, size.height, area);
    const { x, y, w, h } = this.layout;
    ctx.drawImage(this.image, x, y, w, h);
    const spec = PLACEMENT_NODES[this.node.type];
    const box = spec.readBox(this.node, size);
    const [bx0, by0] = this.local(box.x0, box.y0);
    const [bx1, by1] = this.local(box.x1, box.y1);
    ctx.save();
    ctx.beginPath();
    ctx.rect(x, y, w, h);
    ctx.clip();
    ctx.strokeStyle = BOX_COLOUR;
    ctx.lineWidth = 2;
    ctx.strokeRect(bx0, by0, bx1 - bx0, by1 - by0);
    ctx.fillStyle = BOX_COLOUR;
    for (const [cx, cy] of [[bx0, by0], [bx1, by0], [bx0, by1], [bx1, by1]]) {
      ctx.fillRect(cx - HANDLE, cy - HANDLE, 2 * HANDLE, 2 * HANDLE);
    }
    ctx.restore();
    this.label(ctx, spec.depthLabel(this.node));
  }

  pressPlacement(pointer) {
    const spec = PLACEMENT_NODES[this.node.type];
    const size = this.imageSize();
    const start = spec.readBox(this.node, size);
    const { canvasX, canvasY } = pointer.eDown;
    const [u, v] = this.fractions(canvasX, canvasY);
    const grab = [GRAB / this.layout.w, GRAB / this.layout.h];
    const corner = CORNERS.find((c) => Math.abs(u - start[c.slice(0, 2)]) <= grab[0] && Math.abs(v - start[c.slice(2)]) <= grab[1]);
    const inside = u >= start.x0 && u <= start.x1 && v >= start.y0 && v <= start.y1;
    if (!corner && !inside) return;
    pointer.onDrag = (e) => {
      // Whole image pixels: the drag distance in image pixels, rounded.
      const dx = Math.round(((e.canvasX - canvasX) / this.layout.w) * size.width) / size.width;
      const dy = Math.round(((e.canvasY - canvasY) / this.layout.h) * size.height) / size.height;
      const box = corner ? resizedBox(start, corner, dx, dy, [1 / size.width, 1 / size.height]) : movedBox(start, dx, dy);
      spec.writeBox(this.node, box, size);
      this.node.setDirtyCanvas(true, true);
    };
  }

  // Neural Assets ----------------------------------------------------------------------------

  /** The scene's objects with this node's edit applied to the selected one. */
  editedObjects(scene) {
    const spec = ASSET_NODES[this.node.type];
    const index = value(this.node, "index");
    return scene.objects.map((object, i) => (i === index ? spec.edit(this.node, object, scene.camera) : object));
  }

  /** Node-local point of a world point, or null when it is not in front of the camera. */
  screenPoint(point, camera) {
    const cameraPoint = toCamera(point, camera);
    if (cameraPoint[2] <= NEAR) return null;
    const [u, v] = project(cameraPoint, camera);
    return this.local(u, v);
  }

  /** The selected object's handle: its centre (move) or a knob on a ring about its vertical axis (rotate). */
  handle(object) {
    if (ASSET_NODES[this.node.type].handle === "move") return { point: object.centre };
    const radius = 0.75 * Math.max(object.size[0], object.size[1]);
    const axis = [object.rotation[0][0], object.rotation[1][0]]; // the object's own x, seen from above
    const angle = Math.hypot(...axis) > 1e-9 ? Math.atan2(axis[1], axis[0]) : 0;
    const at = (a) => [object.centre[0] + radius * Math.cos(a), object.centre[1] + radius * Math.sin(a), object.centre[2]];
    return { point: at(angle), ring: Array.from({ length: 49 }, (_, i) => at((i / 48) * 2 * Math.PI)) };
  }

  drawAssets(ctx, area) {
    const scene = this.scene();
    if (!scene) {
      this.layout = null;
      this.message(ctx, area, "Run the workflow once: this node then sends its scene here, and you can drag the "
        + (ASSET_NODES[this.node.type].handle === "move" ? "object on the ground." : "ring to turn the object."));
      return;
    }
    const { camera } = scene;
    this.layout = fitRect(camera.image_hw[1], camera.image_hw[0], area);
    const { x, y, w, h } = this.layout;
    ctx.save();
    ctx.fillStyle = "#1b1b1b";
    ctx.fillRect(x, y, w, h);
    ctx.beginPath();
    ctx.rect(x, y, w, h);
    ctx.clip();
    ctx.lineWidth = 2;
    const index = value(this.node, "index");
    const objects = this.editedObjects(scene);
    objects.forEach((object, i) => {
      const points = projectBox(object, camera).map(([u, v]) => this.local(u, v));
      const depths = boxCorners(object).map((corner) => toCamera(corner, camera)[2]);
      ctx.strokeStyle = colour(i);
      ctx.globalAlpha = i === index ? 1 : 0.6;
      ctx.beginPath();
      for (const [a, b] of EDGES) {
        if (depths[a] <= NEAR || depths[b] <= NEAR) continue; // as the Python preview leaves them out
        ctx.moveTo(...points[a]);
        ctx.lineTo(...points[b]);
      }
      ctx.stroke();
      const centre = this.screenPoint(object.centre, camera);
      if (centre && i !== index) { // a dot to select another object
        ctx.fillStyle = colour(i);
        ctx.beginPath();
        ctx.arc(...centre, 4, 0, 2 * Math.PI);
        ctx.fill();
      }
    });
    ctx.globalAlpha = 1;
    const selected = objects[index];
    if (selected) {
      const handle = this.handle(selected);
      if (handle.ring) {
        ctx.strokeStyle = "#fff";
        ctx.lineWidth = 1;
        ctx.beginPath();
        handle.ring.map((p) => this.screenPoint(p, camera)).forEach((p, i, all) => {
          if (p && all[i - 1]) ctx.lineTo(...p);
          else if (p) ctx.moveTo(...p);
        });
        ctx.stroke();
      }
      const point = this.screenPoint(handle.point, camera);
      if (point) {
        ctx.fillStyle = "#fff";
        ctx.strokeStyle = colour(index);
        ctx.lineWidth = 2;
        ctx.beginPath();
        ctx.arc(...point, GRAB - 3, 0, 2 * Math.PI);
        ctx.fill();
        ctx.stroke();
      }
    }
    ctx.restore();
    this.label(ctx, selected ? ASSET_NODES[this.node.type].label(this.node)
      : `object ${index} is not in the scene (it has ${objects.length})`);
  }

  pressAssets(pointer) {
    const scene = this.scene();
    const { camera } = scene;
    const { canvasX, canvasY } = pointer.eDown;
    const local = [canvasX - this.node.pos[0], canvasY - this.node.pos[1]];
    const near = (point) => point && Math.hypot(point[0] - local[0], point[1] - local[1]) <= GRAB;
    const index = value(this.node, "index");
    const objects = this.editedObjects(scene);
    const selected = objects[index];
    if (selected && near(this.screenPoint(this.handle(selected).point, camera))) {
      this.dragAsset(pointer, scene, selected);
      return;
    }
    const other = objects.findIndex((object, i) => i !== index && near(this.screenPoint(object.centre, camera)));
    if (other >= 0) {
      setValue(this.node, "index", other);
      this.node.setDirtyCanvas(true, true);
    }
  }

  dragAsset(pointer, scene, selected) {
    const { camera } = scene;
    const height = selected.centre[2]; // the horizontal plane through the object's centre
    const onGround = (e) => groundPoint(camera, ...this.fractions(e.canvasX, e.canvasY), height);
    const start = onGround(pointer.eDown);
    if (!start) return;
    if (ASSET_NODES[this.node.type].handle === "move") {
      const offset0 = ["dx", "dy", "dz"].map((n) => value(this.node, n));
      pointer.onDrag = (e) => {
        const point = onGround(e);
        if (!point) return;
        const worldDelta = [point[0] - start[0], point[1] - start[1], 0];
        const delta = value(this.node, "axes") === "camera" ? worldToCameraAxes(worldDelta, camera) : worldDelta;
        ["dx", "dy", "dz"].forEach((n, i) => setValue(this.node, n, offset0[i] + delta[i]));
        this.node.setDirtyCanvas(true, true);
      };
    } else {
      const [cx, cy] = selected.centre;
      const angle0 = Math.atan2(start[1] - cy, start[0] - cx);
      const yaw0 = value(this.node, "yaw");
      pointer.onDrag = (e) => {
        const point = onGround(e);
        if (!point) return;
        const turned = ((Math.atan2(point[1] - cy, point[0] - cx) - angle0) * 180) / Math.PI;
        setValue(this.node, "yaw", wrapDegrees(yaw0 + turned));
        this.node.setDirtyCanvas(true, true);
      };
    }
  }

  press(pointer) {
    if (!this.layout) return false;
    if (PLACEMENT_NODES[this.node.type]) this.pressPlacement(pointer);
    else this.pressAssets(pointer);
    return true; // a press on the drawing never drags the node
  }

  /** Wheel over the drawing of a placement node: the depth. True when it was used. */
  wheel(canvasX, canvasY, deltaY) {
    const spec = PLACEMENT_NODES[this.node.type];
    if (!spec || !this.layout) return false;
    const [u, v] = this.fractions(canvasX, canvasY);
    if (u < 0 || u > 1 || v < 0 || v > 1) return false;
    spec.wheel(this.node, -deltaY / WHEEL_NOTCH); // wheel up = away from the viewer
    this.node.setDirtyCanvas(true, true);
    return true;
  }
}

function addEditor(node) {
  const editor = new Editor(node);
  node.dioramaEditor = editor; // the page's handle on it (tests read its layout)
  const drawing = node.addCustomWidget({
    name: EDITOR,
    type: EDITOR,
    value: "",
    serialize: false, // not in widgets_values
    options: { serialize: false }, // not in the prompt
    draw(ctx, _node, width, y) {
      editor.draw(ctx, width, y, this.computedHeight ?? MIN_HEIGHT);
    },
    computeLayoutSize() {
      return { minHeight: MIN_HEIGHT, minWidth: 240 };
    },
    onPointerDown(pointer) {
      return editor.press(pointer);
    },
  });
  drawing.tooltip = PLACEMENT_NODES[node.type]
    ? "Drag the box to move it, its corners to resize it, the mouse wheel over the picture for the depth."
    : "Run the workflow once: the node then sends its scene here. Drag the white handle (move on the ground / turn "
      + "about the vertical); click another object's dot to edit that object.";
  node.setSize([Math.max(node.size[0], 300), Math.max(node.size[1], node.computeSize()[1])]);
}

/** The wheel over an editor's drawing sets the depth instead of scrolling the canvas. */
function onWheel(event) {
  const canvas = app.canvas;
  if (event.target !== canvas?.canvas || !canvas.graph) return;
  const [x, y] = canvas.convertEventToCanvasOffset(event);
  const node = canvas.graph.getNodeOnPos(x, y);
  if (node?.dioramaEditor?.wheel(x, y, event.deltaY)) {
    event.preventDefault();
    event.stopImmediatePropagation();
  }
}

app.registerExtension({
  name: "Diorama.PlacementEditor",
  setup() {
    window.addEventListener("wheel", onWheel, { capture: true, passive: false });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!PLACEMENT_NODES[nodeData.name] && !ASSET_NODES[nodeData.name]) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = created?.apply(this, arguments);
      addEditor(this);
      return result;
    };
    const executed = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      executed?.apply(this, arguments);
      // Kept in the node's properties, so a saved workflow reopens with its picture and scene.
      if (output?.[BACKGROUND_KEY]?.[0]) this.properties[BACKGROUND_KEY] = output[BACKGROUND_KEY][0];
      if (output?.[SCENE_KEY]?.[0]) this.properties[SCENE_KEY] = output[SCENE_KEY][0];
      this.setDirtyCanvas(true, true);
    };
  },
});
