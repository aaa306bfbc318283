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
import json
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


def fill_disk_after_half(monkeypatch, marker: str, full_from: int = 0) -> None:
    """PNG writes to files whose name holds `marker` fail with ENOSPC after writing half a file, from
    the `full_from`-th such write on (the earlier ones succeed), as on a disk that fills up mid-batch."""
    import PIL.Image

    original_save = PIL.Image.Image.save
    writes = []

    def save_until_full(self, fp, *args, **kwargs):
        if isinstance(fp, (str, Path)) and marker in Path(fp).name:
            writes.append(fp)
            if len(writes) > full_from:
                Path(fp).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)  # the part that fitted
                raise OSError(errno.ENOSPC, "No space left on device", str(fp))
        return original_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image.Image, "save", save_until_full)


def output_files(base_dir: Path) -> set[Path]:
    return set((base_dir / "output").rglob("*"))  # hidden temporary files included


def test_output_disk_full_with_comfyuis_save_image_leaves_a_truncated_file(run_prompt, base_dir, monkeypatch):
    """ComfyUI's own SaveImage writes in place and does not clean up: this documents the host's
    behaviour that Diorama Save Image exists for (if a later ComfyUI cleans up, this fails and the
    README line should change)."""
    fill_disk_after_half(monkeypatch, "disk_full_core")
    before = output_files(base_dir)
    with pytest.raises(WorkflowError) as failure:
        run_prompt(paste_prompt(96, "disk_full_core"))
    assert failure.value.node_id == "4" and failure.value.node_type == "SaveImage"
    assert "No space left on device" in str(failure.value)
    written = output_files(base_dir) - before
    assert len(written) == 1 and all(p.stat().st_size == 40 for p in written), written


def atomic_save_prompt(prefix: str, batch: int) -> dict:
    prompt = paste_prompt(96, prefix)
    prompt["5"] = {"class_type": "RepeatImageBatch", "inputs": {"image": prompt["4"]["inputs"]["images"], "amount": batch}}
    prompt["4"] = {"class_type": "DioramaSaveImage", "inputs": {"images": ["5", 0], "filename_prefix": prefix}}
    return prompt


def test_output_disk_full_with_diorama_save_image_leaves_nothing(run_prompt, base_dir, monkeypatch):
    """The disk fills while the second image of a batch of three is written: a clear error naming the
    node, the file, the folder and the cause, and no file at all from this batch, not even the first."""
    fill_disk_after_half(monkeypatch, "disk_full_atomic", full_from=1)
    before = output_files(base_dir)
    with pytest.raises(WorkflowError) as failure:
        run_prompt(atomic_save_prompt("disk_full_atomic", 3))
    assert failure.value.node_id == "4" and failure.value.node_type == "DioramaSaveImage"
    message = str(failure.value)
    assert "No space left on device" in message and "Nothing of this batch was saved" in message
    assert "disk_full_atomic_00002_.png" in message and str(base_dir / "output") in message
    assert output_files(base_dir) - before == set()


def test_diorama_save_image_saves_the_whole_batch_like_save_image(run_prompt, base_dir):
    """Names, counter and embedded prompt as ComfyUI's SaveImage, for every item of a batch; pixels
    rounded where SaveImage truncates, so they differ from SaveImage's by at most one level."""
    ours = run_prompt(atomic_save_prompt("atomic_ok", 2)).outputs["4"]["images"]
    core_prompt = atomic_save_prompt("core_ok", 2)
    core_prompt["4"]["class_type"] = "SaveImage"
    core = run_prompt(core_prompt).outputs["4"]["images"]
    assert [i["filename"] for i in ours] == ["atomic_ok_00001_.png", "atomic_ok_00002_.png"]
    for mine, theirs in zip(ours, core):
        with Image.open(base_dir / "output" / mine["filename"]) as a, Image.open(base_dir / "output" / theirs["filename"]) as b:
            difference = np.asarray(a).astype(int) - np.asarray(b).astype(int)
            assert difference.min() >= 0 and difference.max() <= 1
            assert json.loads(a.info["prompt"])["4"]["class_type"] == "DioramaSaveImage"
    again = run_prompt(atomic_save_prompt("atomic_ok", 1)).outputs["4"]["images"]
    assert again[0]["filename"] == "atomic_ok_00003_.png"  # the counter continues, nothing overwritten


def test_diorama_save_image_gives_back_the_pixels_of_a_loaded_file(run_prompt, base_dir):
    pixels = np.random.default_rng(12).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(base_dir / "input" / "roundtrip.png")
    result = run_prompt({
        "1": {"class_type": "LoadImage", "inputs": {"image": "roundtrip.png"}},
        "2": {"class_type": "DioramaSaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "roundtrip"}},
    })
    with Image.open(base_dir / "output" / result.outputs["2"]["images"][0]["filename"]) as saved_image:
        assert np.array_equal(np.asarray(saved_image), pixels)
