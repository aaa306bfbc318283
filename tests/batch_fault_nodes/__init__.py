"""Test-only custom node for tests/test_batch.py, loaded only by the batch workers' throw-away base folder:
an IMAGE pass-through that can crash its process, run slowly through cancel points, or hang without one."""
import os
import signal
import time

import comfy.utils


class DioramaTestFault:
    CATEGORY = "Diorama/tests"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "action": (["none", "crash", "slow", "hang"],),
                             "seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 600.0})}}

    def run(self, image, action, seconds):
        if action == "crash":  # as a segfault would: no exception, no cleanup
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "slow":  # every ProgressBar update is a cancel point
            steps = max(1, round(seconds / 0.05))
            bar = comfy.utils.ProgressBar(steps)
            for _ in range(steps):
                time.sleep(0.05)
                bar.update(1)
        if action == "hang":  # no cancel point at all
            time.sleep(seconds)
        return (image,)


NODE_CLASS_MAPPINGS = {"DioramaTestFault": DioramaTestFault}
