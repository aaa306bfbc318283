"""python -m diorama.batch WORKFLOW.json MANIFEST.jsonl --out DIR [--workers N] [--gpus-per-worker G] [--address ADDR]

Runs a workflow once per manifest row as a Ray Data job: each worker holds one in-process ComfyUI with
Diorama loaded; finished rows land in DIR/<id>-<hash>/, failed rows in DIR/errors.jsonl; rerunning the
same command resumes.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .batching.job import WorkerStartError, run_batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diorama.batch", description=__doc__.split("\n\n")[1])
    parser.add_argument("workflow", help="workflow JSON, API or UI format")
    parser.add_argument("manifest", help='JSON Lines, one row a line: {"id": "r1", "NODE.INPUT": value, ...}')
    parser.add_argument("--out", required=True, help="output folder (shared by all workers; also the resume state)")
    parser.add_argument("--workers", type=int, default=1, help="number of workers (Ray actors), default 1")
    parser.add_argument("--gpus-per-worker", type=float, default=None,
                        help="GPUs per worker (default: 1 when the Ray cluster has GPUs, else 0)")
    parser.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs per worker (torch threads), default 1")
    parser.add_argument("--address", default=None,
                        help="an existing Ray cluster (ray://host:10001, host:6379 or 'auto'); default: start one here")
    parser.add_argument("--base-dir", default=os.environ.get("DIORAMA_BASE_DIR"),
                        help="ComfyUI base folder of the workers (models/, input/, custom_nodes/); "
                             "default $DIORAMA_BASE_DIR, else the ComfyUI folder")
    parser.add_argument("--row-timeout", type=float, default=None, help="seconds before a row is interrupted")
    parser.add_argument("--hang-grace", type=float, default=30.0,
                        help="seconds after the interrupt before a worker whose row ignores it is restarted")
    parser.add_argument("--max-attempts", type=int, default=3,
                        help="a row that crashes its worker this many times is quarantined (default 3)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true", help="show the workers' ComfyUI logs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray's telemetry would reach out to the network

    try:
        summary = run_batch(args.workflow, args.manifest, args.out, workers=args.workers,
                            gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                            address=args.address, base_directory=args.base_dir, row_timeout=args.row_timeout,
                            max_attempts=args.max_attempts, hang_grace=args.hang_grace, progress=not args.quiet,
                            verbose=args.verbose)
    except (ValueError, FileNotFoundError, WorkerStartError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: finished rows are kept; rerun the same command to resume\n")
        return 130
    sys.stdout.write(f"{summary.rows} rows: {summary.done} done now, {summary.already_done} done before, "
                     f"{summary.failed} failed, {summary.quarantined} quarantined ({summary.seconds:.1f} s)\n")
    for error in summary.errors:
        sys.stdout.write(f"  {error['status']} {error['id'] or 'line ' + str(error['line'])}: {error['error']}\n")
    return 0 if not summary.errors else 1


if __name__ == "__main__":
    sys.exit(main())
