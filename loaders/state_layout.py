"""Comparing a state dict's key/shape layout with the one a module expects (for clear load errors)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence


@dataclass(frozen=True)
class LayoutDifferences:
    missing: list[str]  # expected keys the state dict lacks
    unknown: list[str]  # keys the module does not have
    wrong: list[str]  # "key (shape) (expected shape)" for keys present in both

    def __bool__(self) -> bool:
        return bool(self.missing or self.unknown or self.wrong)


def layout_differences(expected: Mapping[str, Sequence[int]], actual: Mapping[str, Sequence[int]]) -> LayoutDifferences:
    return LayoutDifferences(
        missing=sorted(k for k in expected if k not in actual),
        unknown=sorted(k for k in actual if k not in expected),
        wrong=[f"{k} {tuple(actual[k])} (expected {tuple(expected[k])})" for k in expected
               if k in actual and tuple(actual[k]) != tuple(expected[k])],
    )
