"""A real ComfyUI server (main.py in a child process) on a free loopback port, for the tests that
talk HTTP to it: /prompt, /history, /queue, /interrupt, /system_stats."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import torch

from diorama.runner.boot import find_comfyui_root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, payload: dict | None = None, timeout: float = 10) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else {}


def post_prompt(url: str, prompt: dict, client_id: str = "diorama-test") -> tuple[int, dict]:
    """(HTTP status, body) of POST /prompt; a prompt that fails validation answers 400 with node_errors."""
    try:
        return 200, http_json(f"{url}/prompt", {"prompt": prompt, "client_id": client_id})
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class ComfyServer:
    """`with ComfyServer(base_dir, work_dir) as server:` — started and answering /system_stats on entry,
    terminated on exit. The log is in work_dir/server.log (its tail is in the error if start fails)."""

    def __init__(self, base_dir: Path, work_dir: Path, start_timeout: float = 120, real_frontend: bool = False):
        """real_frontend: serve the installed comfyui-frontend-package (the browser tests) instead of a stub page."""
        self.base_dir, self.work_dir, self.start_timeout = Path(base_dir), Path(work_dir), start_timeout
        self.real_frontend = real_frontend
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.work_dir / "server.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "ComfyServer":
        command = [sys.executable, str(find_comfyui_root() / "main.py"), "--listen", "127.0.0.1", "--port", str(self.port),
                   "--disable-auto-launch", "--base-directory", str(self.base_dir), "--database-url", "sqlite:///:memory:"]
        if not self.real_frontend:
            # A stub front end: the server only needs an index.html to start, these tests never load the UI.
            web = self.work_dir / "web"
            web.mkdir(parents=True, exist_ok=True)
            (web / "index.html").write_text("<html></html>")
            command += ["--front-end-root", str(web)]
        if not torch.cuda.is_available():
            command += ["--cpu", "--use-pytorch-cross-attention"]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.work_dir)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                http_json(f"{self.url}/system_stats")
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"ComfyUI server did not start; log tail:\n{self.log_tail()}")
                time.sleep(0.3)

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def submit(self, prompt: dict, client_id: str = "diorama-test") -> tuple[int, dict]:
        return post_prompt(self.url, prompt, client_id)

    def wait_history(self, prompt_id: str, timeout: float = 120, poll: float = 0.1) -> dict:
        """The /history entry of a prompt once it has finished (success, error or interrupted)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = http_json(f"{self.url}/history/{prompt_id}")
            if prompt_id in history and history[prompt_id]["status"].get("status_str") in ("success", "error"):
                return history[prompt_id]
            time.sleep(poll)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s; log tail:\n{self.log_tail()}")
