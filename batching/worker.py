"""The Ray Data actor that runs manifest rows: ONE in-process ComfyUI per worker, booted in the
constructor, and one PromptExecutor kept for the worker's life, so the executor's cache keeps loader
results (models) across rows whose loader inputs are equal."""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import threading
import time
from typing import Any

import numpy as np

from ..runner.boot import boot_comfyui
from ..runner.execute import WorkflowError, execute_prompt, new_executor, validate
from ..runner.workflow import comfy_input_schema, set_input, to_api_prompt
from .ledger import Ledger, StagingLost, worker_name
from .manifest import Row

log = logging.getLogger(__name__)

# Exit status of a worker that ends itself because a row ignored the interrupt (see RowDeadline).
HUNG_ROW_EXIT = 75
# Undeclared inputs reach no node function, but they are part of ComfyUI's cache key: one that names
# the row makes the output nodes run for every row, even a row whose values equal an earlier row's.
ROW_MARKER_INPUT = "diorama_batch_row"
OUTCOME_COLUMNS = ("id", "key", "status", "message", "node_id", "node_type", "seconds", "execute_seconds", "worker",
                   "finished")


def cancel_point(*_args, **_kwargs) -> None:
    """ComfyUI's progress hook, as its server installs it: every ProgressBar update can raise the interrupt."""
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()


class RowDeadline:
    """Ray has no per-row timeout: at `seconds` this interrupts ComfyUI's execution the way its /interrupt
    does (at the next node or ProgressBar update); if the row is still running `grace` seconds later (a node
    with no cancel point), the worker process exits, Ray restarts it, and the row counts as a crashed attempt."""

    def __init__(self, seconds: float | None, grace: float):
        self.seconds, self.grace = seconds, grace
        self.expired = False
        self._timers: list[threading.Timer] = []

    def _interrupt(self) -> None:
        import comfy.model_management

        self.expired = True
        comfy.model_management.interrupt_current_processing(True)

    def _end_worker(self) -> None:
        log.error("a row ignored the interrupt for %.0f s after its %.0f s timeout: ending worker %s",
                  self.grace, self.seconds, worker_name())
        logging.shutdown()
        os._exit(HUNG_ROW_EXIT)

    def __enter__(self) -> "RowDeadline":
        if self.seconds:
            self._timers = [threading.Timer(self.seconds, self._interrupt),
                            threading.Timer(self.seconds + self.grace, self._end_worker)]
            for timer in self._timers:
                timer.daemon = True
                timer.start()
        return self

    def __exit__(self, *_exc) -> None:
        import comfy.model_management

        for timer in self._timers:
            timer.cancel()
        # A timer that fired just as the row finished must not interrupt the next row.
        comfy.model_management.interrupt_current_processing(False)


class RowWorker:
    """map_batches callable class: `RowWorker(workflow, out_dir, ...)(batch)` → one outcome per row."""

    def __init__(self, workflow: dict, out_dir: str, base_directory: str | None, row_timeout: float | None,
                 max_attempts: int, hang_grace: float, verbose: bool = False):
        started = time.perf_counter()
        # As the runner does: ComfyUI warns about every optional node it cannot import; noise in a batch log.
        logging.getLogger().setLevel(logging.INFO if verbose else logging.ERROR)
        boot_comfyui(base_directory=base_directory)
        import comfy.utils
        import folder_paths

        self.prompt = to_api_prompt(workflow)
        self.executor = new_executor()
        comfy.utils.set_progress_bar_global_hook(cancel_point)
        self.ledger = Ledger(out_dir)
        self.scratch = self.ledger.scratch_dir()
        folder_paths.set_temp_directory(str(self.scratch))
        self.staging = self.ledger.staging_dir()
        folder_paths.set_output_directory(str(self.staging))
        self.row_timeout, self.max_attempts, self.hang_grace = row_timeout, max_attempts, hang_grace
        self.ledger.register_worker(time.perf_counter() - started)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows = [Row(str(i), json.loads(v), int(n)) for i, v, n in zip(batch["id"], batch["values"], batch["line"])]
        outcomes = [self.run_row(row) for row in rows]
        return {column: [outcome[column] for outcome in outcomes] for column in OUTCOME_COLUMNS}

    def run_row(self, row: Row) -> dict[str, Any]:
        started = time.perf_counter()
        key = row.key

        def outcome(status: str, message: str = "", node_id: str | None = None, node_type: str | None = None,
                    execute_seconds: float = 0.0) -> dict:
            return {"id": row.id, "key": key, "status": status, "message": message, "node_id": node_id or "",
                    "node_type": node_type or "", "seconds": time.perf_counter() - started,
                    "execute_seconds": execute_seconds, "worker": worker_name(), "finished": time.time()}

        if self.ledger.is_done(key):  # Ray re-delivers the rows of a block whose worker died
            return outcome("skipped")
        crashed = self.ledger.crashed_attempts(key)
        if crashed >= self.max_attempts:
            message = (f"quarantined: row {row.id!r} ended its worker {crashed} times (a crash, or a hang past the row "
                       f"timeout; limit {self.max_attempts}); "
                       f"delete .diorama-batch/quarantine/{key}.json to try it again")
            self.ledger.quarantine(key, row.id, message)
            self.ledger.end_attempt(key)
            return outcome("quarantined", message)
        self.ledger.begin_attempt(key)
        try:
            return outcome(**self._execute(row, key))
        finally:
            self.ledger.end_attempt(key)
            for leftover in self.scratch.iterdir():
                if leftover.is_dir():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()

    def _execute(self, row: Row, key: str) -> dict[str, Any]:
        """The row's outcome fields: status, and for a failure the message and the node it names."""
        prompt = copy.deepcopy(self.prompt)
        try:
            for target, value in row.values.items():
                set_input(prompt, target, value, comfy_input_schema)
            outputs = validate(prompt)
        except WorkflowError as error:
            return {"status": "failed", "message": f"row {row.id!r}: {error}", "node_id": error.node_id,
                    "node_type": error.node_type}
        except ValueError as error:
            return {"status": "failed", "message": f"row {row.id!r}: {error}"}
        for node_id in outputs:
            prompt[node_id]["inputs"][ROW_MARKER_INPUT] = key
        self.ledger.begin_row(self.staging, key)
        started = time.perf_counter()
        with RowDeadline(self.row_timeout, self.hang_grace) as deadline:
            try:
                execute_prompt(prompt, self.executor)
            except Exception as error:  # the row failed, not the worker: report it and take the next row
                self.ledger.discard(self.staging)
                timed_out = f"timed out after {self.row_timeout:g} s: " if deadline.expired else ""
                return {"status": "failed", "message": f"row {row.id!r}: {timed_out}{error}",
                        "node_id": getattr(error, "node_id", None), "node_type": getattr(error, "node_type", None),
                        "execute_seconds": time.perf_counter() - started}
        execute_seconds = time.perf_counter() - started
        try:
            self.ledger.publish(self.staging, key)
        except StagingLost as error:
            return {"status": "failed", "message": f"row {row.id!r}: {error}", "execute_seconds": execute_seconds}
        return {"status": "done", "execute_seconds": execute_seconds}
