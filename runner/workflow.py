"""Workflow files: read API or UI (frontend-saved) JSON and turn the UI format into an API prompt.

The UI format stores widget values positionally, so the conversion walks each node's input schema
in the order the frontend creates widgets, skipping the extra values the frontend serialises
(`control_after_generate` after seeds, the upload button of image loaders). Links are followed
through reroutes and bypassed nodes; primitive nodes become literal values; muted nodes, notes
and groups disappear, as they do when the frontend queues a prompt.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

MODE_MUTED = 2
MODE_BYPASSED = 4
FRONTEND_ONLY = {"Reroute", "PrimitiveNode", "Note", "MarkdownNote"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
# Widgets the frontend's own extensions add beside a node's schema, left out of the saved workflow but sent
# in the queued prompt by graphToPrompt (PreviewAny's read-only text box, empty until the node has run).
# The executor ignores inputs a node does not declare; they are copied so the prompts are the same.
FRONTEND_EXTENSION_WIDGETS = {"PreviewAny": {"preview": ""}}

SchemaLookup = Callable[[str], dict]


def load_workflow(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"workflow file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def is_ui_workflow(data: dict) -> bool:
    return isinstance(data.get("nodes"), list) and "links" in data


def comfy_input_schema(class_type: str) -> dict:
    """INPUT_TYPES of a registered node class (V1 and V3 nodes alike)."""
    import nodes

    if class_type not in nodes.NODE_CLASS_MAPPINGS:
        raise ValueError(f"node type {class_type!r} is not installed (is the pack that provides it loaded?)")
    return nodes.NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES()


def _is_widget(spec: tuple) -> bool:
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _extra_serialised_values(name: str, spec: tuple) -> int:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    extra = 0
    if spec[0] in ("INT", "FLOAT") and (options.get("control_after_generate") or name in ("seed", "noise_seed")):
        extra += 1
    if any(options.get(key) for key in UPLOAD_OPTIONS):
        extra += 1
    return extra


def _widget_values(node: dict, schema: dict) -> dict[str, Any]:
    values = node.get("widgets_values") or []
    widget_specs = [
        (name, spec)
        for section in ("required", "optional")
        for name, spec in schema.get(section, {}).items()
        if _is_widget(spec)
    ]
    if isinstance(values, dict):
        return {name: values[name] for name, _ in widget_specs if name in values}
    out, position = {}, 0
    for name, spec in widget_specs:
        if position >= len(values):
            break
        out[name] = values[position]
        position += 1 + _extra_serialised_values(name, spec)
    return out


class _Graph:
    def __init__(self, data: dict):
        if data.get("definitions", {}).get("subgraphs"):
            raise ValueError("workflows with subgraphs are not supported by the Diorama runner; unpack them first")
        self.nodes = {str(n["id"]): n for n in data["nodes"]}
        self.links = {}
        for link in data["links"]:
            if isinstance(link, dict):
                self.links[link["id"]] = (str(link["origin_id"]), link["origin_slot"], link.get("type"))
            else:
                self.links[link[0]] = (str(link[1]), link[2], link[5] if len(link) > 5 else None)

    def source(self, link_id: int, seen: frozenset = frozenset()) -> tuple[str, Any] | None:
        """('link', [node_id, slot]), ('value', literal) or None when the input ends up unconnected."""
        if link_id is None or link_id not in self.links:
            return None
        if link_id in seen:
            raise ValueError(f"link {link_id} forms a cycle through reroutes or bypassed nodes")
        seen = seen | {link_id}
        origin_id, slot, link_type = self.links[link_id]
        origin = self.nodes.get(origin_id)
        if origin is None:
            raise ValueError(f"link {link_id} starts at node {origin_id}, which is not in the workflow")
        if origin["type"] == "PrimitiveNode":
            return ("value", (origin.get("widgets_values") or [None])[0])
        if origin["type"] == "Reroute":
            return self.source(origin["inputs"][0].get("link"), seen)
        mode = origin.get("mode", 0)
        if mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASSED:
            return self._through_bypass(origin, slot, link_type, seen)
        return ("link", [origin_id, slot])

    def _through_bypass(self, node: dict, slot: int, link_type: str | None, seen: frozenset):
        # The frontend forwards a bypassed node's output from its first input of the same type.
        output_type = link_type or node["outputs"][slot]["type"]
        for node_input in node.get("inputs", []):
            if node_input.get("type") == output_type and node_input.get("link") is not None:
                return self.source(node_input["link"], seen)
        return None


def ui_to_api(data: dict, schema_of: SchemaLookup = comfy_input_schema) -> dict:
    """Convert a frontend-saved workflow to the API prompt the frontend would queue."""
    graph = _Graph(data)
    prompt = {}
    for node_id, node in graph.nodes.items():
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASSED):
            continue
        schema = schema_of(node["type"])
        inputs: dict[str, Any] = {**FRONTEND_EXTENSION_WIDGETS.get(node["type"], {}), **_widget_values(node, schema)}
        declared = {**schema.get("required", {}), **schema.get("optional", {})}
        for node_input in node.get("inputs", []):
            name = node_input["name"]
            if name not in declared:
                continue
            resolved = graph.source(node_input.get("link"))
            if resolved is not None:
                inputs[name] = resolved[1]
        prompt[node_id] = {
            "class_type": node["type"],
            "inputs": inputs,
            "_meta": {"title": node.get("title") or node["type"]},
        }
    return prompt


def to_api_prompt(data: dict, schema_of: SchemaLookup = comfy_input_schema) -> dict:
    if is_ui_workflow(data):
        return ui_to_api(data, schema_of)
    if data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        return json.loads(json.dumps(data))
    raise ValueError("not a ComfyUI workflow: expected the UI format (nodes + links) or the API format ({id: {class_type, inputs}})")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def split_target(target: str) -> tuple[str, str]:
    """'NODE.INPUT' → (NODE, INPUT); NODE (an id or a title) may contain dots, INPUT may not."""
    node_ref, dot, input_name = target.rpartition(".")
    if not dot or not node_ref or not input_name:
        raise ValueError(f"{target!r}: expected NODE.INPUT (NODE is a node id or title)")
    return node_ref, input_name


def set_input(prompt: dict, target: str, value: Any, schema_of: SchemaLookup | None = None) -> None:
    """Set NODE.INPUT of an API prompt to a literal; with schema_of, INPUT must be one the node declares."""
    node_ref, input_name = split_target(target)
    matches = [i for i, n in prompt.items() if i == node_ref or n.get("_meta", {}).get("title") == node_ref]
    if len(matches) != 1:
        known = ", ".join(f"{i} ({n.get('_meta', {}).get('title', n['class_type'])})" for i, n in prompt.items())
        problem = "matches no node" if not matches else f"matches several nodes {matches}"
        raise ValueError(f"{target!r}: {node_ref!r} {problem}; nodes are: {known}")
    node = prompt[matches[0]]
    if schema_of is not None:
        schema = schema_of(node["class_type"])
        declared = [*schema.get("required", {}), *schema.get("optional", {})]
        if input_name not in declared:
            raise ValueError(f"{target!r}: node {matches[0]} ({node['class_type']}) has no input {input_name!r}; "
                             f"its inputs are: {', '.join(declared)}")
    node["inputs"][input_name] = value


def apply_overrides(prompt: dict, assignments: list[str]) -> dict:
    """Apply NODE.INPUT=VALUE assignments; NODE is a node id or a node title, VALUE JSON or text."""
    for assignment in assignments:
        target, sep, raw = assignment.partition("=")
        if not sep:
            raise ValueError(f"--set {assignment!r}: expected NODE.INPUT=VALUE (NODE is a node id or title)")
        try:
            set_input(prompt, target, _parse_value(raw))
        except ValueError as error:
            raise ValueError(f"--set {assignment!r}: {error}") from None
    return prompt
