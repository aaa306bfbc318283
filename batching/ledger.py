"""The output folder is the job's only durable state, so a rerun of the same command knows what is done.

    OUT/<id>-<hash>/                 a finished row: everything its workflow saved (one atomic rename)
    OUT/errors.jsonl                 the rows of the latest run that failed or are quarantined
    OUT/.diorama-batch/job.json      the workflow the folder belongs to
    OUT/.diorama-batch/lock          held (flock) by the running driver
    OUT/.diorama-batch/partial/<w>/  worker w's row being written, marked with the row's name (never a final
                                     name; cleared by the driver)
    OUT/.diorama-batch/scratch/<w>/  worker w's ComfyUI temp folder (previews), emptied after every row
    OUT/.diorama-batch/attempts/<key>     one line per started attempt, removed when the attempt ends:
                                          lines left behind are attempts that crashed their worker
    OUT/.diorama-batch/quarantine/<key>.json   rows given up after K crashed attempts
    OUT/.diorama-batch/workers/<host>-<pid>.json   one per worker start (boot time)

The out folder must be shared by every worker (local disk for a local run, a shared file system on a cluster).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import platform
import time
import uuid
from pathlib import Path
from typing import Any

STATE = ".diorama-batch"
ERRORS = "errors.jsonl"
STAGING_MARK = ".diorama-row"  # names the row a staging folder holds; removed before the folder is published


class StagingLost(RuntimeError):
    """A worker's staging folder was cleared by a driver while the worker ran a row."""


def write_json_atomically(path: Path, data: Any) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


def worker_name() -> str:
    return f"{platform.node()}-{os.getpid()}"


class Ledger:
    def __init__(self, out_dir: str | Path):
        self.out = Path(out_dir).absolute()
        self.state = self.out / STATE
        for folder in ("partial", "attempts", "quarantine", "workers", "scratch"):
            (self.state / folder).mkdir(parents=True, exist_ok=True)

    # ---- finished rows -------------------------------------------------------------------------
    def output_dir(self, key: str) -> Path:
        return self.out / key

    def is_done(self, key: str) -> bool:
        return self.output_dir(key).is_dir()

    def staging_dir(self) -> Path:
        """This worker's ComfyUI output folder, empty at the start of every row.

        It stays the output folder for the worker's life: SaveImage reads the output folder once, when the
        executor first creates it, and recreates the folder when it is missing."""
        staging = self.state / "partial" / worker_name()
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        return staging

    def begin_row(self, staging: Path, key: str) -> None:
        """Mark the staging folder as holding this row, so publish can tell it was not cleared meanwhile."""
        (staging / STAGING_MARK).write_text(key)

    def publish(self, staging: Path, key: str) -> bool:
        """Rename the staging folder to the row's final name (one atomic step for all its files) and start a new
        empty one; False when another attempt of the row got there first."""
        mark = staging / STAGING_MARK
        if not mark.is_file() or mark.read_text() != key:
            # A driver cleared the folder while this (orphaned) worker ran the row; savers that ran after that
            # recreated it, so it may hold only part of the row's files: never publish it.
            self.discard(staging)
            raise StagingLost(f"the staging folder of row {key} was cleared while it ran; the row was not published")
        mark.unlink()
        try:
            os.rename(staging, self.output_dir(key))
            published = True
        except OSError:
            if not self.is_done(key):
                raise
            # A retried row finished twice (its first worker was presumed dead): keep the first, drop ours.
            shutil.rmtree(staging)
            published = False
        staging.mkdir()
        return published

    def discard(self, staging: Path) -> None:
        """Drop what a failed row wrote."""
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(exist_ok=True)

    def clear_worker_folders(self) -> None:
        """Only a driver holding the lock, with no job running, calls this: no worker is writing there."""
        for folder in (*(self.state / "partial").iterdir(), *(self.state / "scratch").iterdir()):
            shutil.rmtree(folder, ignore_errors=True)

    # ---- attempts and quarantine ---------------------------------------------------------------
    def crashed_attempts(self, key: str) -> int:
        """Attempts that started and never ended: their worker died while running the row."""
        path = self.state / "attempts" / key
        return len(path.read_text().splitlines()) if path.exists() else 0

    def begin_attempt(self, key: str) -> None:
        line = json.dumps({"worker": worker_name(), "time": time.time()}) + "\n"
        descriptor = os.open(self.state / "attempts" / key, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(descriptor, line.encode())
            os.fsync(descriptor)  # must survive the crash it is there to count
        finally:
            os.close(descriptor)

    def end_attempt(self, key: str) -> None:
        (self.state / "attempts" / key).unlink(missing_ok=True)

    def quarantine(self, key: str, row_id: str, message: str) -> None:
        write_json_atomically(self.state / "quarantine" / f"{key}.json", {"id": row_id, "key": key, "error": message})

    def quarantined(self) -> dict[str, dict]:
        return {path.stem: json.loads(path.read_text()) for path in (self.state / "quarantine").glob("*.json")}

    # ---- workers -------------------------------------------------------------------------------
    def register_worker(self, boot_seconds: float) -> None:
        write_json_atomically(self.state / "workers" / f"{worker_name()}.json",
                              {"host": platform.node(), "pid": os.getpid(), "boot_seconds": boot_seconds,
                               "started": time.time()})

    def workers(self) -> list[dict]:
        return [json.loads(path.read_text()) for path in sorted((self.state / "workers").glob("*.json"))]

    def scratch_dir(self) -> Path:
        """A folder of this worker's own (ComfyUI's temp files: previews), emptied after every row."""
        scratch = self.state / "scratch" / worker_name()
        scratch.mkdir(exist_ok=True)
        return scratch

    # ---- the driver's side ---------------------------------------------------------------------
    def claim(self, workflow: Any) -> "DriverLock":
        """Lock the folder for one driver and bind it to one workflow (refused when it holds another's rows)."""
        lock = DriverLock(self.state / "lock")
        digest = hashlib.sha256(json.dumps(workflow, sort_keys=True).encode()).hexdigest()
        job = self.state / "job.json"
        if job.exists():
            recorded = json.loads(job.read_text())["workflow_sha256"]
            if recorded != digest:
                lock.release()
                raise ValueError(f"{self.out} holds the outputs of another workflow (sha256 {recorded[:12]}…, "
                                 f"this one is {digest[:12]}…); use a new --out folder for a changed workflow")
        else:
            write_json_atomically(job, {"workflow_sha256": digest})
        return lock

    def start_error_table(self, entries: list[dict]) -> None:
        with open(self.out / ERRORS, "w") as table:
            table.writelines(json.dumps(entry) + "\n" for entry in entries)

    def add_error(self, entry: dict) -> None:
        with open(self.out / ERRORS, "a") as table:
            table.write(json.dumps(entry) + "\n")

    def errors(self) -> list[dict]:
        path = self.out / ERRORS
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class DriverLock:
    """An exclusive flock on the out folder, so two drivers never run rows into it at once."""

    def __init__(self, path: Path):
        self.file = open(path, "w")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise ValueError(f"another batch driver is running into {path.parent.parent} (it holds {path})") from None

    def release(self) -> None:
        self.file.close()
