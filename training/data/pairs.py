"""Index arithmetic shared by the on-disk sources: every ordered pair of two different members of a group
(frames of one video showing an instance, views of one object), numbered without listing them all."""
from __future__ import annotations

import bisect


class OrderedPairs:
    """Groups of sizes n_0, n_1, …: group g owns n_g·(n_g − 1) consecutive indices, one per ordered pair
    (first, second) of distinct members, first-major."""

    def __init__(self, sizes: list[int]):
        self.sizes = list(sizes)
        self.offsets = [0]
        for size in sizes:
            self.offsets.append(self.offsets[-1] + size * (size - 1))

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int, what: str) -> tuple[int, int, int]:
        """(group, first member, second member) of pair `index` (negative counts from the end)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"{what} has {len(self)} pairs, index {index} is out of range")
        index %= len(self)
        group = bisect.bisect_right(self.offsets, index) - 1
        first, second = divmod(index - self.offsets[group], self.sizes[group] - 1)
        return group, first, second + (second >= first)  # skip the pair of a member with itself
