"""ComfyUI's node loading, validation and executor each call asyncio.run, which refuses to start in a
thread that already runs an event loop: a Jupyter kernel, an async application, Playwright's sync API.
The runner calls them through `outside_running_loop`, which moves the call to a helper thread then."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


def outside_running_loop(work: Callable[[], T]) -> T:
    """`work()` here, or in a helper thread (waited for) when this thread is running an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return work()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="diorama-runner") as pool:
        return pool.submit(work).result()
