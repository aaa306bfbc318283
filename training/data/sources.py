"""`open_source(spec)`: the `data:` section of a training config → a map-style sequence of PairedFrames.

`spec["kind"]` picks the source; the other keys are that source's arguments (unknown keys are an
error, so a typo never silently falls back to a default). Every source has `__len__` and a
deterministic `__getitem__`, so a resumed run sees the same pairs.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from .box_video import BoxVideoPairs
from .frames import PairedFrames
from .multiview import MultiviewPairs
from .rendered import RenderedPairs
from .video_segmentation import VideoSegmentationPairs

SOURCES: dict[str, Callable[..., Sequence[PairedFrames]]] = {
    "rendered": RenderedPairs,
    "video_segmentation": VideoSegmentationPairs,
    "multiview": MultiviewPairs,
    "box_video": BoxVideoPairs,
}


def open_source(spec: dict) -> Sequence[PairedFrames]:
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(f"data source spec must be a mapping with a 'kind' ({', '.join(SOURCES)}), got {spec!r}")
    kind = spec["kind"]
    if kind not in SOURCES:
        raise ValueError(f"unknown data source kind {kind!r}; expected one of {', '.join(SOURCES)}")
    factory = SOURCES[kind]
    arguments = {key: value for key, value in spec.items() if key != "kind"}
    parameters = inspect.signature(factory).parameters
    unknown = sorted(set(arguments) - set(parameters))
    if unknown:
        raise ValueError(f"data source {kind!r} has no option {', '.join(map(repr, unknown))}; "
                         f"its options are {', '.join(parameters)}")
    missing = [name for name, p in parameters.items() if p.default is inspect.Parameter.empty and name not in arguments]
    if missing:
        raise ValueError(f"data source {kind!r} needs {', '.join(map(repr, missing))} (options: {', '.join(parameters)})")
    return factory(**arguments)
