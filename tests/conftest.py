"""Boots ComfyUI once per test session, in this process, with Diorama linked into a throw-away
base directory (custom_nodes/, models/, input/, output/), so tests never touch a user's folders.
Network connections to anything but loopback raise NetworkBlocked for the whole session, from before
ComfyUI and the pack are imported (so import-time network access fails loudly too)."""
from __future__ import annotations

import atexit
import ipaddress
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BASE_DIR = Path(tempfile.mkdtemp(prefix="diorama-tests-"))
(BASE_DIR / "custom_nodes").mkdir()
(BASE_DIR / "custom_nodes" / "diorama").symlink_to(REPO)
for folder in ("models", "input", "output", "temp", "user"):
    (BASE_DIR / folder).mkdir()
atexit.register(shutil.rmtree, BASE_DIR, ignore_errors=True)


class NetworkBlocked(RuntimeError):
    """A test (or the code under test) tried to reach a host other than this machine."""


def is_loopback(address) -> bool:
    """True for this machine only: 127.0.0.0/8, ::1, 'localhost', or a Unix socket path."""
    if isinstance(address, (str, bytes)):  # AF_UNIX path: local by construction
        return True
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: refuse before it is resolved (resolving is itself a network call)
        return False


def _refuse(address) -> None:
    raise NetworkBlocked(f"network access during tests is refused: tried to connect to {address!r}; "
                         "only loopback (127.0.0.1, ::1, localhost) is allowed")


_real_connect, _real_connect_ex = socket.socket.connect, socket.socket.connect_ex
_real_create_connection = socket.create_connection


def _guarded_connect(self, address):
    if not is_loopback(address):
        _refuse(address)
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not is_loopback(address):
        _refuse(address)
    return _real_connect_ex(self, address)


def _guarded_create_connection(address, *args, **kwargs):
    if not is_loopback(address):
        _refuse(address)
    return _real_create_connection(address, *args, **kwargs)


def install_network_guard() -> None:
    socket.socket.connect, socket.socket.connect_ex = _guarded_connect, _guarded_connect_ex
    socket.create_connection = _guarded_create_connection


def remove_network_guard() -> None:
    socket.socket.connect, socket.socket.connect_ex = _real_connect, _real_connect_ex
    socket.create_connection = _real_create_connection


# Installed before ComfyUI and the pack are imported, so network access at import time fails loudly too.
install_network_guard()
# `import diorama` resolves to this checkout for the pure-ops tests.
sys.path.insert(0, str(BASE_DIR / "custom_nodes"))

from diorama.runner.boot import boot_comfyui  # noqa: E402

boot_comfyui(base_directory=str(BASE_DIR))


@pytest.fixture(scope="session", autouse=True)
def network_guard():
    """Every test runs with non-loopback connections raising NetworkBlocked (see install_network_guard)."""
    install_network_guard()
    yield
    remove_network_guard()


@pytest.fixture(scope="session")
def base_dir() -> Path:
    return BASE_DIR


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch with one intra-op thread for a module: on the shared 2-core test machines two threads made
    training steps 10-25x slower (measured: a tiny person-recipe step 4-19 s with 2 threads, 0.3-0.4 s with 1)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def run_prompt():
    """Execute an API prompt through ComfyUI's PromptExecutor; returns the ExecutionReport."""
    from diorama.runner.execute import execute_prompt

    return execute_prompt


@pytest.fixture(scope="session")
def node_class():
    import nodes

    def lookup(name: str):
        return nodes.NODE_CLASS_MAPPINGS[name]

    return lookup


@pytest.fixture(scope="session")
def tiny_sd_models(base_dir):
    """Tiny SD1.5-shaped checkpoints under the names the example workflows use (see tiny_sd.py)."""
    import tiny_sd

    return tiny_sd.write_example_models(base_dir / "models")


@pytest.fixture(scope="session")
def tiny_bifrost_models(base_dir):
    """Tiny BIFRÖST/AnyDoor checkpoints converted into the model folders (see tiny_bifrost.py)."""
    import tiny_bifrost

    return tiny_bifrost.write_example_models(base_dir / "models")


@pytest.fixture(scope="session")
def tiny_neural_assets_models(base_dir):
    """The Neural Assets example workflows' models, tiny and random (see tiny_neural_assets.py)."""
    import tiny_neural_assets

    return tiny_neural_assets.write_example_models(base_dir / "models")


@pytest.fixture(scope="session")
def tiny_depth_models(base_dir):
    """Tiny depth models in models/depth_estimation/ (see tiny_depth.py)."""
    import tiny_depth

    return tiny_depth.write_depth_models(base_dir / "models" / "depth_estimation")


@pytest.fixture(scope="session")
def tiny_imprint_models(base_dir):
    """The IMPRINT example workflow's DINOv2 and content adapter, tiny and random (see tiny_imprint.py)."""
    import tiny_imprint

    return tiny_imprint.write_example_models(base_dir / "models")


@pytest.fixture(scope="session")
def tiny_person_models(base_dir):
    """The person insertion example's DINOv2 and adapter, tiny and random (see tiny_person.py)."""
    import tiny_person

    return tiny_person.write_example_models(base_dir / "models")


@pytest.fixture(scope="session")
def taef2_models(base_dir):
    """The real TAEF2 (shared_models) linked into models/vae_approx/ as 'taef2', the name the workflows use."""
    import shared_models

    return shared_models.link_taef2(base_dir / "models" / "vae_approx")


@pytest.fixture
def small_models_folder(tmp_path, monkeypatch, taef2_models):
    """A temporary diorama_small_models folder as the only one (the shipped models would otherwise be found)."""
    import folder_paths
    from diorama.loaders.model_folders import SMALL_MODEL_FOLDER

    folder = tmp_path / "small_models"
    folder.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, SMALL_MODEL_FOLDER,
                        ([str(folder)], folder_paths.folder_names_and_paths[SMALL_MODEL_FOLDER][1]))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    return folder


@pytest.fixture(scope="session")
def tiny_vlm_models(base_dir):
    """Tiny VLMs in models/LLM/ under the example workflows' names; the Qwen2.5-VL one answers a fixed
    box so the workflow parses a real answer end to end (see tiny_locate.py)."""
    import tiny_locate

    return tiny_locate.write_example_models(base_dir / "models" / "LLM")
