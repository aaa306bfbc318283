"""The driver: the manifest's pending rows as a Ray Data dataset, mapped by an actor pool of RowWorkers,
outcomes streamed back into the ledger (error table) and a progress bar."""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..runner.boot import find_comfyui_root
from ..runner.workflow import is_ui_workflow, load_workflow, to_api_prompt
from .ledger import Ledger
from .manifest import Row, read_manifest
from .worker import RowWorker

class WorkerStartError(RuntimeError):
    """A worker could not start (its ComfyUI failed to boot or to read the workflow): no row can run."""


@dataclass
class BatchSummary:
    rows: int  # rows in the manifest (bad lines included)
    done: int  # rows finished by this run
    already_done: int  # rows skipped because an earlier run finished them
    failed: int  # bad lines and rows that failed (this run)
    quarantined: int  # rows given up after crashing their worker K times (this or an earlier run)
    seconds: float
    errors: list[dict] = field(default_factory=list)
    # What each row run by this job reported: id, status, seconds (in its worker; execute_seconds of them inside
    # ComfyUI's executor), worker, finished (epoch s).
    outcomes: list[dict] = field(default_factory=list)


def worker_runtime_env() -> dict:
    """What a worker process needs to import `diorama` and find ComfyUI: the folder holding the pack (the
    driver imported it from there) ahead of the driver's own PYTHONPATH, and DIORAMA_COMFYUI when known."""
    pack_parent = str(Path(__file__).absolute().parents[2])
    env = {"PYTHONPATH": os.pathsep.join(p for p in (pack_parent, os.environ.get("PYTHONPATH")) if p)}
    try:
        env["DIORAMA_COMFYUI"] = str(find_comfyui_root())
    except RuntimeError:  # a cluster driver without ComfyUI: the workers find their own
        pass
    return {"env_vars": env}


def check_workflow(data: dict) -> None:
    """Reject a file that is no workflow before any worker starts (the UI → API conversion needs ComfyUI's
    node schemas, so each worker converts it after booting)."""
    if not is_ui_workflow(data):
        to_api_prompt(data)


def run_batch(workflow_path: str | Path, manifest_path: str | Path, out_dir: str | Path, *, workers: int = 1,
              gpus_per_worker: float | None = None, cpus_per_worker: float = 1, address: str | None = None,
              base_directory: str | None = None, row_timeout: float | None = None, max_attempts: int = 3,
              hang_grace: float = 30.0, progress: bool = True,
              verbose: bool = False) -> BatchSummary:
    """Run every pending manifest row through the workflow; see the module docstring of batching.ledger for
    what lands in out_dir. gpus_per_worker None: 1 when the Ray cluster has GPUs, else 0."""
    if workers < 1 or max_attempts < 1 or (row_timeout is not None and row_timeout <= 0):
        raise ValueError(f"workers ({workers}) and max_attempts ({max_attempts}) must be ≥ 1 and row_timeout "
                         f"({row_timeout}) > 0 when given")
    started = time.perf_counter()
    workflow = load_workflow(workflow_path)
    check_workflow(workflow)
    rows, problems = read_manifest(manifest_path)
    ledger = Ledger(out_dir)
    lock = ledger.claim(workflow)
    try:
        ledger.clear_worker_folders()
        quarantined = ledger.quarantined()
        pending = [row for row in rows if not ledger.is_done(row.key) and row.key not in quarantined]
        errors = [{"id": p.id, "line": p.line, "status": "failed", "error": p.message} for p in problems]
        errors += [{"id": row.id, "line": row.line, "status": "quarantined", "error": quarantined[row.key]["error"]}
                   for row in rows if row.key in quarantined]
        ledger.start_error_table(errors)
        summary = BatchSummary(rows=len(rows) + len(problems), done=0,
                               already_done=sum(ledger.is_done(row.key) for row in rows), failed=len(problems),
                               quarantined=sum(row.key in quarantined for row in rows), seconds=0.0, errors=errors)
        if pending:
            _run_rows(pending, summary, ledger, workflow, workers=workers, gpus_per_worker=gpus_per_worker,
                      cpus_per_worker=cpus_per_worker, address=address, base_directory=base_directory,
                      row_timeout=row_timeout, max_attempts=max_attempts, hang_grace=hang_grace, progress=progress,
                      verbose=verbose)
    finally:
        ledger.clear_worker_folders()  # what a killed worker left half-written
        lock.release()
    summary.seconds = time.perf_counter() - started
    return summary


def _run_rows(pending: list[Row], summary: BatchSummary, ledger: Ledger, workflow: dict, *, workers: int,
              gpus_per_worker: float | None, cpus_per_worker: float, address: str | None, base_directory: str | None,
              row_timeout: float | None, max_attempts: int, hang_grace: float, progress: bool,
              verbose: bool) -> None:
    import ray
    from tqdm import tqdm

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts rows done / failed
    if gpus_per_worker is None:
        gpus_per_worker = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    dataset = ray.data.from_items([{"id": r.id, "values": json.dumps(r.values), "line": r.line} for r in pending],
                                  override_num_blocks=len(pending))  # one row per block: a retry repeats one row
    results = dataset.map_batches(
        RowWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_gpus=gpus_per_worker,
        num_cpus=cpus_per_worker, runtime_env=worker_runtime_env(),
        fn_constructor_kwargs={"workflow": workflow, "out_dir": str(ledger.out), "base_directory": base_directory,
                               "row_timeout": row_timeout, "max_attempts": max_attempts, "hang_grace": hang_grace,
                               "verbose": verbose})
    line_of = {row.id: row.line for row in pending}
    with tqdm(total=len(pending), unit="row", desc="batch", disable=not progress, file=sys.stderr) as bar:
        try:
            _collect(results.iter_rows(), summary, ledger, line_of, bar)
        except ray.exceptions.RayActorError as error:
            # Ray restarts a worker that dies while running rows; one that reaches here failed in its constructor.
            cause = [line for line in str(error).splitlines() if line.strip()][-1]
            raise WorkerStartError(f"a batch worker could not start: {cause}") from None


def _collect(outcomes, summary: BatchSummary, ledger: Ledger, line_of: dict[str, int], bar) -> None:
    """Count each row's outcome and add failures to the error table as they arrive."""
    for outcome in outcomes:
        summary.outcomes.append({k: outcome[k] for k in ("id", "status", "seconds", "execute_seconds", "worker",
                                                         "finished")})
        status = outcome["status"]
        if status in ("done", "skipped"):
            summary.done += 1
        else:
            entry = {"id": outcome["id"], "line": line_of[outcome["id"]], "status": status,
                     "error": outcome["message"], "node_id": outcome["node_id"] or None,
                     "node_type": outcome["node_type"] or None}
            summary.errors.append(entry)
            ledger.add_error(entry)
            summary.failed += status == "failed"
            summary.quarantined += status == "quarantined"
        bar.update(1)
        bar.set_postfix(done=summary.done, failed=summary.failed + summary.quarantined)
