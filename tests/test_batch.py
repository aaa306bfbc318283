"""Batch runs as a Ray Data job (python -m diorama.batch): one local Ray session (4 CPUs, no GPU) for the
module, workers booting their own ComfyUI on a throw-away base folder, the depth-aware paste example with
its background loaded from a file per row (so rows can name a missing file), and, for the fault tests, a
test-only pass-through node after the paste that crashes, runs slowly or hangs (tests/batch_fault_nodes)."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from PIL import Image

from diorama.batching.job import run_batch
from diorama.batching.ledger import Ledger, StagingLost
from diorama.batching.manifest import Row, read_manifest
from diorama.batching.worker import HUNG_ROW_EXIT
from diorama.ops import bundled_scene
from diorama.runner.workflow import load_workflow, set_input, to_api_prompt

REPO = Path(__file__).resolve().parents[1]
SIZES = [(64 + 8 * (i % 5), 64 + 8 * (i // 5)) for i in range(20)]  # 20 distinct small scenes


@pytest.fixture(scope="module")
def ray_session():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # Ray's telemetry would try the network
    # The session's network guard patches Python sockets only; Ray's processes and its C++ core talk among
    # themselves (on this machine's address) without them, so the guard needs no exception for Ray.
    ray.init(num_cpus=4, num_gpus=0, include_dashboard=False, logging_level="ERROR")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def worker_base(tmp_path_factory) -> Path:
    """The workers' ComfyUI base folder: Diorama and the test-only fault node in custom_nodes/."""
    base = tmp_path_factory.mktemp("batch-base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "diorama").symlink_to(REPO)
    (base / "custom_nodes" / "diorama_test_faults").symlink_to(REPO / "tests" / "batch_fault_nodes")
    for folder in ("models", "input", "output", "temp", "user"):
        (base / folder).mkdir()
    return base


@pytest.fixture(scope="module")
def rooms(tmp_path_factory) -> dict[tuple[int, int], Path]:
    """The bundled room rendered at every test size, as the PNG photos the rows name."""
    folder = tmp_path_factory.mktemp("rooms")
    paths = {}
    for width, height in set(SIZES):
        rgb = bundled_scene.render_background(width, height).rgb.numpy()
        paths[(width, height)] = folder / f"room_{width}x{height}.png"
        Image.fromarray(np.clip(rgb * 255, 0, 255).astype(np.uint8)).save(paths[(width, height)])
    return paths


@pytest.fixture(scope="module")
def paste_prompt() -> dict:
    """The example as an API prompt, its paste taking the background from a LoadImage titled 'Background photo'."""
    prompt = to_api_prompt(load_workflow(REPO / "example_workflows" / "depth_aware_paste.json"))
    prompt["20"] = {"class_type": "LoadImage", "inputs": {"image": "set by each row"},
                    "_meta": {"title": "Background photo"}}
    prompt["3"]["inputs"]["background"] = ["20", 0]
    return prompt


@pytest.fixture(scope="module")
def paste_workflow(paste_prompt, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("workflows") / "paste.json"
    path.write_text(json.dumps(paste_prompt))
    return path


@pytest.fixture(scope="module")
def fault_workflow(paste_prompt, tmp_path_factory) -> Path:
    """The paste workflow with the test fault node between the paste and SaveImage."""
    prompt = copy.deepcopy(paste_prompt)
    prompt["30"] = {"class_type": "DioramaTestFault", "inputs": {"image": ["3", 0], "action": "none", "seconds": 0.0},
                    "_meta": {"title": "Fault"}}
    prompt["4"]["inputs"]["images"] = ["30", 0]
    path = tmp_path_factory.mktemp("workflows") / "fault.json"
    path.write_text(json.dumps(prompt))
    return path


def paste_row(row_id: str, size: tuple[int, int], rooms: dict, **extra) -> dict:
    return {"id": row_id, "1.width": size[0], "1.height": size[1], "Background photo.image": str(rooms[size]), **extra}


def write_manifest(path: Path, rows: list[dict], extra_lines: tuple[str, ...] = ()) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + "".join(line + "\n" for line in extra_lines))
    return path


def row_outputs(out: Path) -> dict[str, list[Path]]:
    """Finished row folder name → the files in it."""
    return {d.name: sorted(d.iterdir()) for d in out.iterdir() if d.is_dir() and not d.name.startswith(".")}


def error_table(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]


def leftover_partial_files(out: Path) -> list[Path]:
    return [p for p in (out / ".diorama-batch" / "partial").rglob("*") if p.is_file()]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def run(workflow: Path, manifest: Path, out: Path, worker_base: Path, **options):
    return run_batch(workflow, manifest, out, base_directory=str(worker_base), progress=False, **options)


def test_twenty_rows_equal_the_single_machine_runner_and_bad_rows_land_in_the_error_table(
        ray_session, worker_base, rooms, paste_prompt, paste_workflow, run_prompt, tmp_path):
    import folder_paths

    good = [paste_row(f"r{i:02d}", size, rooms, **{"3.feather_px": float(i % 4)}) for i, size in enumerate(SIZES)]
    bad = [paste_row("missing-file", SIZES[0], rooms, **{"Background photo.image": str(tmp_path / "no_such_room.png")}),
           paste_row("unknown-input", SIZES[0], rooms, **{"3.opacity": 0.5}),
           paste_row("wrong-type", SIZES[0], rooms, **{"1.width": "wide"})]
    manifest = write_manifest(tmp_path / "rows.jsonl", good + bad, ('{"id": "r00", "1.width": 64}', "not json"))
    out = tmp_path / "out"

    summary = run(paste_workflow, manifest, out, worker_base, workers=2)

    assert (summary.done, summary.already_done, summary.failed, summary.quarantined) == (20, 0, 5, 0)
    errors = {(e["id"], e["line"]): e for e in error_table(out)}
    missing = errors[("missing-file", 21)]
    assert "Invalid image file" in missing["error"] and missing["node_id"] == "20"
    assert "node 3 (DioramaDepthAwarePaste) has no input 'opacity'" in errors[("unknown-input", 22)]["error"]
    assert "feather_px" in errors[("unknown-input", 22)]["error"], "the message lists the inputs there are"
    assert "Failed to convert an input value to a INT value: width, wide" in errors[("wrong-type", 23)]["error"]
    assert "already used on line 1" in errors[("r00", 24)]["error"]
    assert "line 25 is not valid JSON" in errors[(None, 25)]["error"]

    rows, _ = read_manifest(manifest)
    outputs = row_outputs(out)
    assert sorted(outputs) == sorted(row.key for row in rows[:20]), "exactly the good rows, under id-hash names"
    assert not leftover_partial_files(out)
    for row in rows[:20]:
        (saved,) = outputs[row.key]
        prompt = copy.deepcopy(paste_prompt)
        for target, value in row.values.items():
            set_input(prompt, target, value)
        image = run_prompt(prompt).outputs["4"]["images"][0]
        alone = Image.open(Path(folder_paths.get_output_directory()) / image["subfolder"] / image["filename"])
        assert np.array_equal(np.asarray(Image.open(saved)), np.asarray(alone)), row.id


def test_a_killed_worker_is_replaced_and_every_row_has_exactly_one_output(ray_session, worker_base, rooms,
                                                                          fault_workflow, tmp_path):
    rows = [paste_row(f"k{i}", SIZES[i], rooms, **{"Fault.action": "slow", "Fault.seconds": 0.4}) for i in range(10)]
    manifest = write_manifest(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "out"
    result = {}
    driver = threading.Thread(
        target=lambda: result.update(summary=run(fault_workflow, manifest, out, worker_base, workers=2)))
    driver.start()
    attempts = out / ".diorama-batch" / "attempts"
    deadline = time.monotonic() + 120
    while not attempts.is_dir() or len(row_outputs(out)) < 2 or not any(attempts.iterdir()):
        assert time.monotonic() < deadline and driver.is_alive(), "the job never had a row in flight"
        time.sleep(0.02)
    # Kill a worker while it runs a row (an attempt in flight names its worker; rows take 0.4 s).
    in_flight = next(attempts.iterdir())
    victim = int(json.loads(in_flight.read_text().splitlines()[-1])["worker"].rsplit("-", 1)[1])
    os.kill(victim, signal.SIGKILL)
    driver.join(timeout=180)

    summary = result["summary"]
    assert (summary.done, summary.failed, summary.quarantined) == (10, 0, 0)
    assert len(row_outputs(out)[in_flight.name]) == 1, "the row the killed worker was running was retried"
    outputs = row_outputs(out)
    assert sorted(outputs) == sorted(Row(r["id"], {k: v for k, v in r.items() if k != "id"}, 0).key for r in rows)
    assert all(len(files) == 1 and files[0].suffix == ".png" for files in outputs.values())
    assert not leftover_partial_files(out)
    assert not list((out / ".diorama-batch" / "attempts").iterdir()), "the crashed attempt was retried to the end"


def test_a_killed_driver_resumes_with_only_the_missing_rows(ray_session, worker_base, rooms, fault_workflow, tmp_path):
    slow = {"Fault.action": "slow", "Fault.seconds": 0.3}
    rows = [paste_row(f"i{i:02d}", SIZES[i], rooms, **slow) for i in range(12)]
    manifest = write_manifest(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "out"
    # A second driver on the module's Ray session, through the command line and its --address.
    driver = subprocess.Popen(
        [sys.executable, "-m", "diorama.batch", str(fault_workflow), str(manifest), "--out", str(out),
         "--address", ray_session, "--base-dir", str(worker_base), "--quiet", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0"))
    deadline = time.monotonic() + 150
    while not out.is_dir() or len(row_outputs(out)) < 3:
        assert time.monotonic() < deadline and driver.poll() is None, driver.communicate()
        time.sleep(0.05)
    # The harshest interruption: no handler runs, the lock goes with the process, a row may be half-written.
    driver.kill()
    driver.wait(timeout=60)
    # Ray ends a dead driver's workers; wait for that, so no late row lands after the snapshot below.
    workers = [json.loads(p.read_text())["pid"] for p in (out / ".diorama-batch" / "workers").glob("*.json")]
    while any(pid_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, f"the killed driver's workers {workers} are still running"
        time.sleep(0.1)
    before = {name: [f.stat().st_ino for f in files] for name, files in row_outputs(out).items()}
    assert 3 <= len(before) < 12

    summary = run(fault_workflow, manifest, out, worker_base, workers=1)

    assert (summary.already_done, summary.done, summary.failed) == (len(before), 12 - len(before), 0)
    after = row_outputs(out)
    assert len(after) == 12 and all(len(files) == 1 for files in after.values())
    assert all([f.stat().st_ino for f in after[name]] == inodes for name, inodes in before.items()), \
        "rows finished before the interrupt are not written again"
    assert not leftover_partial_files(out)


def test_a_poison_row_is_quarantined_after_k_attempts_and_a_slow_row_times_out(ray_session, worker_base, rooms,
                                                                             fault_workflow, tmp_path):
    rows = [paste_row("crashes", SIZES[4], rooms, **{"Fault.action": "crash"}),
            paste_row("slow", SIZES[5], rooms, **{"Fault.action": "slow", "Fault.seconds": 120.0})]
    rows += [paste_row(f"ok{i}", SIZES[i], rooms) for i in range(4)]
    manifest = write_manifest(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "out"

    summary = run(fault_workflow, manifest, out, worker_base, workers=2, max_attempts=2, row_timeout=5)

    assert (summary.done, summary.failed, summary.quarantined) == (4, 1, 1)
    errors = {e["id"]: e for e in summary.errors}
    assert errors["crashes"]["status"] == "quarantined" and "ended its worker 2 times" in errors["crashes"]["error"]
    # The slow node's only cancel points are its ProgressBar updates: the worker's progress hook makes them one.
    assert errors["slow"]["status"] == "failed" and "timed out after 5 s" in errors["slow"]["error"]
    assert errors["slow"]["node_id"] == "30"
    (quarantined,) = (out / ".diorama-batch" / "quarantine").iterdir()
    assert quarantined.name == Row("crashes", {k: v for k, v in rows[0].items() if k != "id"}, 0).key + ".json"
    assert len(row_outputs(out)) == 4 and not leftover_partial_files(out)

    # The same manifest less the slow row (which would run again): nothing is pending, no worker starts.
    rerun = run(fault_workflow, write_manifest(tmp_path / "rerun.jsonl", [rows[0], *rows[2:]]), out, worker_base,
                workers=2, max_attempts=2)
    assert (rerun.done, rerun.already_done, rerun.quarantined) == (0, 4, 1), "a quarantined row is not tried again"
    assert [(e["id"], e["status"]) for e in error_table(out)] == [("crashes", "quarantined")]


def test_a_row_that_ignores_the_interrupt_ends_its_worker_process():
    """A node with no cancel point: the deadline first raises ComfyUI's interrupt flag, then, after the grace
    period, exits the process (Ray restarts a worker that exits; the row's attempt stays counted)."""
    code = (
        "import sys, time\n"
        "from diorama.runner.boot import find_comfyui_root\n"
        "sys.path.insert(0, str(find_comfyui_root()))\n"
        "from comfy.cli_args import args\n"
        "args.cpu = True\n"
        "import comfy.model_management as mm\n"
        "from diorama.batching.worker import RowDeadline\n"
        "with RowDeadline(0.5, 1.5):\n"
        "    time.sleep(1.0)\n"
        "    print('interrupt raised:', mm.processing_interrupted(), flush=True)\n"
        "    time.sleep(60)\n"
    )
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)

    assert result.returncode == HUNG_ROW_EXIT, result.stderr
    assert "interrupt raised: True" in result.stdout
    assert "ignored the interrupt" in result.stderr
    assert time.monotonic() - started < 60


def test_an_out_folder_takes_one_driver_and_one_workflow(tmp_path):
    ledger = Ledger(tmp_path / "out")
    lock = ledger.claim({"1": {"class_type": "A", "inputs": {}}})
    with pytest.raises(ValueError, match="another batch driver is running into"):
        Ledger(tmp_path / "out").claim({"1": {"class_type": "A", "inputs": {}}})
    lock.release()
    with pytest.raises(ValueError, match="holds the outputs of another workflow .* use a new --out folder"):
        Ledger(tmp_path / "out").claim({"1": {"class_type": "B", "inputs": {}}})
    Ledger(tmp_path / "out").claim({"1": {"class_type": "A", "inputs": {}}}).release()


def test_output_names_follow_the_row_id_and_values_only():
    row = Row("r1", {"1.width": 64, "Save.filename_prefix": "x"}, 1)
    # The hash is of the values in canonical JSON (sorted keys), computed here independently.
    expected = hashlib.sha256(b'{"1.width":64,"Save.filename_prefix":"x"}').hexdigest()[:12]
    assert row.key == f"r1-{expected}"
    assert Row("r1", {"Save.filename_prefix": "x", "1.width": 64}, 9).key == row.key, "key order and line do not matter"
    assert Row("r1", {"1.width": 72, "Save.filename_prefix": "x"}, 1).key != row.key


def test_publishing_a_row_is_one_rename_and_never_duplicates_or_publishes_a_cleared_folder(tmp_path):
    ledger = Ledger(tmp_path / "out")
    staging = ledger.staging_dir()
    ledger.begin_row(staging, "r1-abc")
    (staging / "x_00001_.png").write_bytes(b"first")
    assert ledger.publish(staging, "r1-abc") and ledger.is_done("r1-abc")
    assert [p.name for p in (tmp_path / "out" / "r1-abc").iterdir()] == ["x_00001_.png"], "the mark is not published"
    assert not any(staging.iterdir()), "a new, empty staging folder for the next row"

    ledger.begin_row(staging, "r1-abc")  # a retry of the same row finishing second
    (staging / "x_00001_.png").write_bytes(b"second")
    assert not ledger.publish(staging, "r1-abc")
    assert (tmp_path / "out" / "r1-abc" / "x_00001_.png").read_bytes() == b"first"

    ledger.begin_row(staging, "r2-def")
    (staging / "x_00001_.png").write_bytes(b"one of two files")
    ledger.clear_worker_folders()  # a new driver starts while an orphaned worker still runs r2
    staging.mkdir()  # the row's next saver recreates the folder
    (staging / "y_00001_.png").write_bytes(b"the other file")
    with pytest.raises(StagingLost, match="r2-def was cleared while it ran"):
        ledger.publish(staging, "r2-def")
    assert not ledger.is_done("r2-def")
