"""Run an API-format prompt through ComfyUI's PromptExecutor and report what happened."""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

from .event_loop import outside_running_loop


class WorkflowError(RuntimeError):
    """A workflow failed validation or a node raised while executing."""

    def __init__(self, message: str, node_id: str | None = None, node_type: str | None = None):
        super().__init__(message)
        self.node_id = node_id
        self.node_type = node_type


@dataclass
class NodeTiming:
    node_id: str
    node_type: str
    seconds: float
    cached: bool = False


@dataclass
class ExecutionReport:
    prompt_id: str
    outputs: dict
    timings: list[NodeTiming] = field(default_factory=list)


class _EventRecorder:
    """Stands in for PromptServer: records the executor's events instead of sending them to browsers."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.events: list[tuple[float, str, dict]] = []

    def send_sync(self, event, data, sid=None):
        self.events.append((time.perf_counter(), event, data))

    def queue_updated(self):
        pass


def _timings(prompt: dict, events: list[tuple[float, str, dict]], finished: float) -> list[NodeTiming]:
    timings = []
    starts = [(t, data["node"]) for t, event, data in events if event == "executing" and data.get("node")]
    for (start, node_id), (end, _) in zip(starts, starts[1:] + [(finished, None)]):
        timings.append(NodeTiming(node_id, prompt[node_id]["class_type"], end - start))
    for _, event, data in events:
        if event == "execution_cached":
            timings.extend(NodeTiming(n, prompt[n]["class_type"], 0.0, cached=True) for n in data["nodes"])
    return timings


def validate(prompt: dict) -> list[str]:
    """ComfyUI's own validation; returns the output node ids to execute or raises WorkflowError."""
    import execution

    valid, error, outputs, node_errors = outside_running_loop(
        lambda: asyncio.run(execution.validate_prompt(str(uuid.uuid4()), prompt, None)))
    # ComfyUI runs the outputs that did validate; a headless run of a whole workflow must not.
    if valid and not node_errors:
        return outputs
    lines = [f"{error['message']}: {error['details']}" if error else "some nodes failed validation:"]
    for node_id, info in node_errors.items():
        for reason in info["errors"]:
            lines.append(f"  node {node_id} ({info['class_type']}): {reason['message']}: {reason['details']}")
    first = next(iter(node_errors), None)
    raise WorkflowError("\n".join(lines), first, node_errors[first]["class_type"] if first else None)


def execute_prompt(prompt: dict, executor=None) -> ExecutionReport:
    """Validate and execute one API prompt; a node failure raises WorkflowError naming the node."""
    outputs = validate(prompt)
    if executor is None:
        executor = new_executor()
    recorder = executor.server
    recorder.events.clear()
    prompt_id = str(uuid.uuid4())
    outside_running_loop(lambda: executor.execute(prompt, prompt_id, {"client_id": "diorama-runner"}, outputs))
    finished = time.perf_counter()
    if not executor.success:
        for event, data in executor.status_messages:
            if event == "execution_error":
                raise WorkflowError(
                    f"node {data['node_id']} ({data['node_type']}) failed: {data['exception_message']}",
                    data["node_id"],
                    data["node_type"],
                )
            if event == "execution_interrupted":
                raise WorkflowError(f"interrupted at node {data.get('node_id')}", data.get("node_id"), data.get("node_type"))
        raise WorkflowError("the workflow failed without an error message")
    return ExecutionReport(prompt_id, executor.history_result["outputs"], _timings(prompt, recorder.events, finished))


def new_executor():
    """An executor that caches nothing between prompts, so every run recomputes from its inputs."""
    import execution

    return execution.PromptExecutor(
        _EventRecorder(), cache_type=execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0}
    )
