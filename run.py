"""python -m diorama.run WORKFLOW.json [--set NODE.INPUT=VALUE ...] [--output DIR]

Executes a workflow (API or UI format) headless through ComfyUI's real executor, prints a
per-node timing table and writes the outputs (SaveImage files) to DIR.
"""
from __future__ import annotations

import argparse
import logging
import sys

from .runner.boot import boot_comfyui
from .runner.execute import WorkflowError, execute_prompt
from .runner.workflow import apply_overrides, load_workflow, to_api_prompt


def _timing_table(report) -> str:
    rows = [("node", "type", "seconds")]
    rows += [(t.node_id, t.node_type, "cached" if t.cached else f"{t.seconds:.3f}") for t in report.timings]
    rows.append(("", "total", f"{sum(t.seconds for t in report.timings):.3f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows)


def _output_files(report) -> list[str]:
    import folder_paths

    files = []
    for node_output in report.outputs.values():
        for image in node_output.get("images", []):
            if image.get("type") == "output":
                files.append(f"{folder_paths.get_output_directory()}/{image.get('subfolder') or ''}/{image['filename']}".replace("//", "/"))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diorama.run", description=__doc__.split("\n\n")[1])
    parser.add_argument("workflow", help="workflow JSON, API or UI format")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="NODE.INPUT=VALUE",
                        help="override an input; NODE is a node id or title, VALUE is JSON or plain text")
    parser.add_argument("--output", help="folder for output files (default: ComfyUI's output folder)")
    parser.add_argument("--verbose", action="store_true", help="show ComfyUI's start-up log")
    args = parser.parse_args(argv)
    # ComfyUI warns about every optional node it cannot import; that is noise for a headless run.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s")

    try:
        data = load_workflow(args.workflow)
        boot_comfyui(output_directory=args.output)
        prompt = apply_overrides(to_api_prompt(data), args.assignments)
        report = execute_prompt(prompt)
    except WorkflowError as error:
        sys.stderr.write(f"workflow failed: {error}\n")
        return 1
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    sys.stdout.write(_timing_table(report) + "\n")
    for path in _output_files(report):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
