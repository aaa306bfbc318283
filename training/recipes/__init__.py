"""The recipe registry: RECIPE name (the first argument of `python -m diorama.train`) → factory.

A recipe module in this package registers itself at import with `register(name, factory)`, where
`factory(config: dict, device: torch.device, dtype: torch.dtype) -> Recipe` gets the YAML's `recipe:`
section, the training device and the compute dtype (bf16 or float32; trained parameters stay float32).
Every module of the package is imported on first look-up, so adding a recipe needs no edit here.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

import torch

from ..recipe import Recipe

Factory = Callable[[dict, torch.device, torch.dtype], Recipe]
_FACTORIES: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    if name in _FACTORIES and _FACTORIES[name] is not factory:
        raise ValueError(f"recipe {name!r} is registered twice ({_FACTORIES[name]} and {factory})")
    _FACTORIES[name] = factory


def _import_recipe_modules() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def names() -> list[str]:
    _import_recipe_modules()
    return sorted(_FACTORIES)


def create(name: str, config: dict, device: torch.device, dtype: torch.dtype) -> Recipe:
    """Build the named recipe from its `recipe:` section, or a ValueError listing the known names."""
    known = names()
    if name not in _FACTORIES:
        raise ValueError(f"unknown recipe {name!r}; known recipes: {', '.join(known) or 'none'}")
    return _FACTORIES[name](config, device, dtype)
