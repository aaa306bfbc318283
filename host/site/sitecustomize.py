"""Host harness only (never part of the pack): make the CUDA-linked torchvision wheel importable
on a CPU-only torch.

The only torchvision wheel on the index is built against CUDA; its C extension fails to load on
the CPU torch here, and its Python side then dies on `torchvision::nms does not exist` (which also
breaks `import transformers`). Declaring the two operator schemas it looks up before it is first
imported is enough for everything ComfyUI and transformers use from it. The hook is lazy so that
processes that never touch torchvision do not pay for importing torch.
"""
import importlib.abc
import sys


class _DeclareTorchvisionOps(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        import torch

        if not torch.cuda.is_available() and not hasattr(torch.ops.torchvision, "nms"):
            library = torch.library.Library("torchvision", "DEF")
            library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            library.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
            # Keep the definitions alive for the life of the process.
            sys.modules[__name__]._torchvision_library = library
        return None


sys.meta_path.insert(0, _DeclareTorchvisionOps())
