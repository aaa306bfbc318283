"""Fixtures for tests that drive ComfyUI's real frontend in a real browser (see frontend.py for helpers).

- `frontend_server` (session): a real ComfyUI server (tests/comfy_server.py, child process) on a free
  loopback port, serving the pinned comfyui-frontend-package, on the session's base folder with every
  tiny model the example workflows load already in models/ (so each example workflow runs in seconds);
  the settings that keep first-run dialogs off the canvas are set. `frontend_server.url`,
  `.wait_history(prompt_id)`, `.submit(prompt)`, `.base_dir` (outputs in base_dir/output).
- `browser_context` (session): Debian's Chromium through playwright, a persistent context in a fresh
  profile folder, flags as DESIGN.md says; requests to anything but the server are aborted.
- `page` (function): a new tab with the app ready (`window.app.vueAppReady && window.app.graph`),
  closed after the test; when the test fails, its screenshot and browser console are saved as
  failed-TEST.png / failed-TEST.console.txt artefacts.
Helpers in frontend.py: load_workflow(page, dict), graph_to_prompt(page) (API prompt, `_meta` dropped),
serialize_graph(page), set_widget(page, node_id, name, value), queue_from_page(page) → (status, body),
run_from_page(page, server) → /history entry, fit_view(page), save_screenshot(page, name) → path in
artifacts_dir() ($DIORAMA_ARTIFACTS, default .artifacts/browser/).
"""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import sync_playwright

from comfy_server import ComfyServer
from frontend import QUIET_SETTINGS, artifacts_dir, launch_browser, open_app, post_settings, save_screenshot

CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


@pytest.fixture(scope="session")
def frontend_server(base_dir, tmp_path_factory, tiny_sd_models, tiny_depth_models, tiny_bifrost_models,
                    tiny_neural_assets_models, tiny_imprint_models, tiny_person_models, tiny_vlm_models, taef2_models):
    with ComfyServer(base_dir, tmp_path_factory.mktemp("frontend-server"), real_frontend=True) as server:
        post_settings(server.url, QUIET_SETTINGS)
        yield server


@pytest.fixture(scope="session")
def browser_context(frontend_server, tmp_path_factory):
    with sync_playwright() as playwright:
        context = launch_browser(playwright, tmp_path_factory.mktemp("chromium-profile"), frontend_server.url)
        yield context
        context.close()


@pytest.fixture
def page(request, browser_context, frontend_server):
    console: list[str] = []
    page = open_app(browser_context, frontend_server.url, console)
    yield page
    if request.node.stash.get(CALL_FAILED, False):
        name = "failed-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        save_screenshot(page, name)
        (artifacts_dir() / f"{name}.console.txt").write_text("\n".join(console))
    page.close()
