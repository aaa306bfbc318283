"""Faults (issue 12, part 3): model files deleted or replaced between prompts, a full disk under the
output folder, a node raising mid-graph while other queued prompts go on.

The executor's output cache matters here. ComfyUI's default (classic) cache keeps a node's output while
the node's inputs are unchanged and the node is part of the current prompt; a loader's inputs are only
its file name, so re-running the *same* prompt after the file changed reuses the model already loaded
and never looks at the disk. A prompt that does not use the loader evicts it; after that the loader
reads the disk again. The model tests below therefore run an unrelated prompt between the change and
the next use, or use a new name, as a user would (a new download usually has a new name)."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfy_server import ComfyServer

from diorama.runner.execute import WorkflowError
from test_server_load import bad_prompt, paste_prompt

FOLDER = "depth_estimation"


def depth_prompt(model_name: str, prefix: str) -> dict:
    return {
        "1": {"class_type": "DioramaBundledScene", "inputs": {"width": 64, "height": 64, "reference_size": 64}},
        "2": {"class_type": "DioramaDepthModelLoader", "inputs": {"model_name": model_name}},
        "3": {"class_type": "DioramaDepthEstimate", "inputs": {"depth_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 1], "filename_prefix": prefix}},
    }


def saved(base_dir: Path, entry_outputs: dict, node: str = "4") -> np.ndarray:
    image = entry_outputs[node]["images"][0]
    return np.asarray(Image.open(base_dir / "output" / image["subfolder"] / image["filename"]))


@pytest.fixture(scope="module")
def server(base_dir, tmp_path_factory, tiny_depth_models):
    with ComfyServer(base_dir, tmp_path_factory.mktemp("fault-server")) as running:
        yield running


def run(server: ComfyServer, prompt: dict) -> dict:
    status, body = server.submit(prompt)
    assert status == 200, body
    return server.wait_history(body["prompt_id"])


def execution_error(entry: dict) -> dict:
    assert entry["status"]["status_str"] == "error", entry["status"]
    return next(data for event, data in entry["status"]["messages"] if event == "execution_error")


def test_model_file_deleted_then_replaced(server, base_dir, tiny_depth_models):
    models = Path(tiny_depth_models)
    folder = models / "fault-depth"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(models / "tiny-dpt", folder)
    first = run(server, depth_prompt("fault-depth", "fault_first"))
    assert first["status"]["status_str"] == "success", first["status"]
    dpt_image = saved(base_dir, first["outputs"])

    # Weights deleted, config.json left: still listed, so the prompt is accepted; the loader must say
    # which folder has no weights. (The paste prompt in between evicts the cached model.)
    (folder / "model.safetensors").unlink()
    assert run(server, paste_prompt(96, "fault_evict"))["status"]["status_str"] == "success"
    error = execution_error(run(server, depth_prompt("fault-depth", "fault_missing")))
    assert error["node_id"] == "2" and error["node_type"] == "DioramaDepthModelLoader"
    assert str(folder) in error["exception_message"] and "no .safetensors weights" in error["exception_message"]
    assert not list((base_dir / "output").glob("fault_missing*"))

    # The whole folder deleted: the loader's choice list is part of its schema, which ComfyUI keeps from
    # start-up, so /prompt still accepts the name; the loader then names the folders it searched.
    shutil.rmtree(folder)
    error = execution_error(run(server, depth_prompt("fault-depth", "fault_gone")))
    assert error["node_id"] == "2" and "'fault-depth'" in error["exception_message"]
    assert "was not found" in error["exception_message"] and str(models) in error["exception_message"]

    # Another model written under the same name is picked up (nothing of the old one is cached).
    shutil.copytree(models / "tiny-depth-anything", folder)
    replaced = run(server, depth_prompt("fault-depth", "fault_replaced"))
    assert replaced["status"]["status_str"] == "success", replaced["status"]
    reference = run(server, depth_prompt("tiny-depth-anything", "fault_reference"))
    assert np.array_equal(saved(base_dir, replaced["outputs"]), saved(base_dir, reference["outputs"]))
    assert not np.array_equal(saved(base_dir, replaced["outputs"]), dpt_image)
    shutil.rmtree(folder)


def test_a_node_raising_mid_graph_leaves_other_queued_prompts_alone(server, base_dir, run_prompt):
    """Good, bad (DepthFuse fails on an empty mask after the scene rendered), good: queued back to back."""
    bad, text, node = bad_prompt("empty mask", 104, "mid_bad")
    ids = [server.submit(p)[1]["prompt_id"] for p in (paste_prompt(96, "mid_a"), bad, paste_prompt(112, "mid_c"))]
    first, failed, last = (server.wait_history(i) for i in ids)
    error = execution_error(failed)
    assert error["node_id"] == node and text in error["exception_message"]
    for entry, width, prefix in ((first, 96, "mid_a"), (last, 112, "mid_c")):
        assert entry["status"]["status_str"] == "success", entry["status"]
        expected = run_prompt(paste_prompt(width, f"mid_single_{width}"))
        assert np.array_equal(saved(base_dir, entry["outputs"]), saved(base_dir, expected.outputs))


def test_output_disk_full_gives_a_clear_error(run_prompt, base_dir, monkeypatch):
    """SaveImage is ComfyUI's node: simulated ENOSPC after half the bytes are written.

    What Diorama controls is the report: the run fails naming the save node and the OS error, and no
    Diorama node writes files of its own. ComfyUI's SaveImage does not remove what it had begun to
    write, so a truncated file is left behind; this is asserted below to document the host's behaviour
    (if a later ComfyUI cleans up, this assertion fails and the README line should change)."""
    import PIL.Image

    original_save = PIL.Image.Image.save

    def save_until_full(self, fp, *args, **kwargs):
        if isinstance(fp, (str, Path)) and Path(fp).name.startswith("disk_full"):
            Path(fp).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)  # the part that fitted
            raise OSError(errno.ENOSPC, "No space left on device", str(fp))
        return original_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image.Image, "save", save_until_full)
    before = set((base_dir / "output").rglob("*"))
    with pytest.raises(WorkflowError) as failure:
        run_prompt(paste_prompt(96, "disk_full"))
    assert failure.value.node_id == "4" and failure.value.node_type == "SaveImage"
    assert "No space left on device" in str(failure.value)
    written = set((base_dir / "output").rglob("*")) - before
    assert [p.name.startswith("disk_full") for p in written] == [True], written
    assert all(p.stat().st_size == 40 for p in written), "only SaveImage's truncated file, nothing from Diorama"
