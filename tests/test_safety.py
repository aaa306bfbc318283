"""Safety scan of the pack's Python source (issue 12 part 4), and the test session's network guard.

Scanned: every .py file of the repository except
  tests/   test helpers build tiny models with transformers and talk to a loopback ComfyUI server;
           they run under the network guard in conftest.py instead (checked at the bottom of this file);
  host/    the host harness (sitecustomize for this machine's torchvision), never shipped with the pack;
  .venv/, output/, __pycache__/  not source.
bench/ and runner/ ARE scanned: they ship with the pack and run on users' machines.

Rules, checked on the syntax tree (so comments and strings never trigger them):
  1. every `torch.load(...)` passes the literal `weights_only=True`;
  2. `trust_remote_code` appears only as the keyword `trust_remote_code=False` (an explicit refusal);
     never as a name, attribute, True or a computed value;
  3. no hub downloads: no `huggingface_hub` import and no name/attribute `hf_hub_download`,
     `snapshot_download`, `cached_download`, `hf_hub_url`; every `.from_pretrained(...)` call passes the
     literal `local_files_only=True` (the loaders hand it a folder already resolved inside the model
     folders; local_files_only makes transformers refuse rather than fetch if something is missing);
  4. no calls of the builtins `eval`, `exec` or `compile` (methods such as `module.eval()` are fine);
  5. `pickle.load`/`pickle.loads`/`pickle.Unpickler` only in the conversion modules of PICKLE_ALLOWED,
     and `numpy.load` never with `allow_pickle=True`;
  6. no network modules (socket, urllib, http, requests, httpx, aiohttp, websocket(s)) imported anywhere
     scanned (the load benchmark talks to its loopback server through the tests' harness, which runs
     under the session's network guard).
"""
from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXCLUDED = {"tests", "host", ".venv", "output", "__pycache__", ".git", ".comfy", ".pytest_cache"}
# Conversion modules may read pickles (with weights_only=True torch.load); none calls pickle directly today.
PICKLE_ALLOWED = {"loaders/bifrost_checkpoint.py", "loaders/llava_conversion.py"}
NETWORK_MODULES = {"socket", "urllib", "http", "requests", "httpx", "aiohttp", "websocket", "websockets", "urllib3"}
HUB_NAMES = {"hf_hub_download", "snapshot_download", "cached_download", "hf_hub_url"}


def pack_files() -> list[Path]:
    return sorted(p for p in REPO.rglob("*.py") if not EXCLUDED & set(p.relative_to(REPO).parts))


def keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_literal(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def dotted(node) -> str:
    """'torch.load' for Attribute(Name('torch'), 'load'); '' for anything not a plain dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def violations(path: str, source: str) -> list[str]:
    """Every rule broken in one file, as 'path:line: what'."""
    tree = ast.parse(source)
    found = []

    def report(node, what):
        found.append(f"{path}:{node.lineno}: {what}")

    # Names bound by `from torch import load` / `from pickle import loads as x` count as the module call.
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]

    def resolved(func) -> str:
        name = dotted(func)
        head, _, rest = name.partition(".")
        if head in aliases:
            return aliases[head] + (f".{rest}" if rest else "")
        return name

    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                top = module.split(".")[0]
                if top == "huggingface_hub":
                    report(node, f"imports {module} (hub downloads are not allowed)")
                if top in NETWORK_MODULES:
                    report(node, f"imports the network module {module}")
                if top == "pickle" and path not in PICKLE_ALLOWED:
                    report(node, "imports pickle outside the conversion modules")
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.name in HUB_NAMES:
                        report(node, f"imports {alias.name}")
        elif isinstance(node, ast.Name) and node.id in HUB_NAMES | {"trust_remote_code"}:
            report(node, f"uses the name {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in HUB_NAMES | {"trust_remote_code"}:
            report(node, f"uses the attribute {node.attr}")
        elif isinstance(node, ast.Call):
            target = resolved(node.func)
            for k in node.keywords:
                if k.arg == "trust_remote_code" and not is_literal(k.value, False):
                    report(node, "trust_remote_code is given something other than the literal False")
            if target == "torch.load" and not is_literal(keyword(node, "weights_only"), True):
                report(node, "torch.load without the literal weights_only=True")
            if isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained" \
                    and not is_literal(keyword(node, "local_files_only"), True):
                report(node, "from_pretrained without the literal local_files_only=True")
            if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec", "compile") \
                    and node.func.id not in aliases:
                report(node, f"calls the builtin {node.func.id}")
            if target in ("pickle.load", "pickle.loads", "pickle.Unpickler") and path not in PICKLE_ALLOWED:
                report(node, f"calls {target} outside the conversion modules")
            if target in ("numpy.load", "np.load") and keyword(node, "allow_pickle") is not None \
                    and not is_literal(keyword(node, "allow_pickle"), False):
                report(node, "numpy.load with allow_pickle other than the literal False")
    return found


def test_the_scan_covers_the_pack():
    files = {p.relative_to(REPO).as_posix() for p in pack_files()}
    assert {"__init__.py", "convert.py", "loaders/vlm.py", "loaders/bifrost_checkpoint.py", "nodes/depth.py",
            "runner/execute.py", "bench/__main__.py"} <= files
    assert not any(f.startswith(("tests/", "host/")) for f in files)


def test_pack_source_follows_the_safety_rules():
    problems = [v for p in pack_files() for v in violations(p.relative_to(REPO).as_posix(), p.read_text())]
    assert not problems, "safety rules broken:\n" + "\n".join(problems)


# Each rule must be able to fail: a snippet that breaks it, and one that does not.
@pytest.mark.parametrize("source, broken", [
    ("import torch\ntorch.load(p)", "weights_only"),
    ("import torch\ntorch.load(p, weights_only=False)", "weights_only"),
    ("import torch\ntorch.load(p, weights_only=flag)", "weights_only"),
    ("from torch import load\nload(p)", "weights_only"),
    ("import torch as t\nt.load(p)", "weights_only"),
    ("m = A.from_pretrained(p, trust_remote_code=True, local_files_only=True)", "trust_remote_code"),
    ("kwargs = {'trust_remote_code': True}\nm = A.from_pretrained(p, local_files_only=True, trust_remote_code=x)",
     "trust_remote_code"),
    ("cfg.trust_remote_code = True", "trust_remote_code"),
    ("m = A.from_pretrained('org/model')", "local_files_only"),
    ("m = A.from_pretrained(p, local_files_only=False)", "local_files_only"),
    ("from huggingface_hub import hf_hub_download", "hub"),
    ("import huggingface_hub", "hub"),
    ("x = snapshot_download(repo)", "snapshot_download"),
    ("eval('1+1')", "builtin eval"),
    ("exec(code)", "builtin exec"),
    ("import pickle\npickle.loads(b)", "pickle"),
    ("from pickle import load\nload(f)", "pickle"),
    ("import numpy as np\nnp.load(p, allow_pickle=True)", "allow_pickle"),
    ("import urllib.request", "network"),
    ("from socket import create_connection", "network"),
    ("import requests", "network"),
])
def test_each_rule_catches_its_violation(source, broken):
    found = violations("nodes/example.py", source)
    assert found and any(broken.split()[-1] in v for v in found), found


def test_safe_code_passes_the_rules():
    source = ("import torch\nimport numpy as np\nmodel.eval()\ntorch.load(p, map_location='cpu', weights_only=True)\n"
              "A.from_pretrained(folder, local_files_only=True, trust_remote_code=False)\n"
              "np.load(p, allow_pickle=False)\n# eval(x) torch.load(p) in a comment\ns = 'exec(code)'\n")
    assert violations("nodes/example.py", source) == []
    assert violations("loaders/bifrost_checkpoint.py", "import pickle\npickle.loads(b)") == []
    assert violations("bench/load.py", "import urllib.request")
    assert violations("runner/execute.py", "import socket")


def test_network_guard_refuses_remote_hosts_and_allows_loopback():
    with pytest.raises(RuntimeError, match="refused: tried to connect to .*10.255.255.1"):
        socket.create_connection(("10.255.255.1", 80), timeout=1)
    with pytest.raises(RuntimeError, match="example.com"):  # refused before any DNS lookup
        socket.create_connection(("example.com", 443), timeout=1)
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s, pytest.raises(RuntimeError, match="only loopback"):
        s.connect(("2001:db8::1", 80))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, pytest.raises(RuntimeError, match="only loopback"):
        s.connect_ex(("192.0.2.1", 80))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
