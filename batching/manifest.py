"""Batch manifests: JSON Lines, one object per row, `id` plus NODE.INPUT keys addressing workflow inputs
exactly like the runner's `--set NODE.INPUT=VALUE` (NODE is a node id or title), values as JSON:

    {"id": "chair-01", "Background.image": "/data/rooms/01.png", "1.width": 768, "KSampler.seed": 7}

Lines that cannot become a row (bad JSON, no or unsafe id, duplicate id, a key that is not NODE.INPUT)
are returned as RowProblems so the job reports them and runs the others.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..runner.workflow import split_target

# Row ids become file names: no separators, no leading dot, bounded length.
ROW_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class Row:
    id: str
    values: dict[str, Any]  # "NODE.INPUT" → JSON value
    line: int

    @property
    def key(self) -> str:
        """The row's output name: its id and a hash of its values (so changed values never reuse an output)."""
        return f"{self.id}-{values_hash(self.values)}"


@dataclass(frozen=True)
class RowProblem:
    id: str | None
    line: int
    message: str


def values_hash(values: dict[str, Any]) -> str:
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def parse_row(text: str, line: int) -> Row | RowProblem:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        return RowProblem(None, line, f"line {line} is not valid JSON: {error}")
    if not isinstance(data, dict):
        return RowProblem(None, line, f"line {line} must be a JSON object {{\"id\": ..., \"NODE.INPUT\": value, ...}}, "
                                      f"got {type(data).__name__}")
    row_id = data.get("id")
    if not isinstance(row_id, str) or not ROW_ID.fullmatch(row_id):
        return RowProblem(None, line, f"line {line}: \"id\" must be a string of letters, digits, '.', '_' or '-' "
                                      f"(at most 100, not starting with '.', '_' or '-'), got {row_id!r}")
    values = {key: value for key, value in data.items() if key != "id"}
    for key in values:
        try:
            split_target(key)
        except ValueError as error:
            return RowProblem(row_id, line, f"row {row_id!r} (line {line}): key {error}")
    return Row(row_id, values, line)


def read_manifest(path: str | Path) -> tuple[list[Row], list[RowProblem]]:
    """The manifest's rows in file order, and the lines that are not rows (blank lines are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest file not found: {path}")
    rows: list[Row] = []
    problems: list[RowProblem] = []
    seen: dict[str, int] = {}
    for line, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        parsed = parse_row(text, line)
        if isinstance(parsed, Row) and parsed.id in seen:
            parsed = RowProblem(parsed.id, line, f"row {parsed.id!r} (line {line}): the id is already used on line "
                                                 f"{seen[parsed.id]}; ids must be unique")
        if isinstance(parsed, Row):
            seen[parsed.id] = line
            rows.append(parsed)
        else:
            problems.append(parsed)
    return rows, problems
