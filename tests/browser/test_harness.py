"""The browser harness itself: the page can reach the server and nothing else (the tests run offline on
a machine with network too)."""
from __future__ import annotations

# no-cors: a reachable cross-origin URL resolves (opaque response, status 0); only a blocked request rejects.
FETCH = ("(url) => fetch(url, { mode: 'no-cors' })"
         ".then((response) => `reached ${response.status}`, (error) => `refused: ${error.message}`)")


def test_the_page_reaches_only_the_server(page, frontend_server):
    assert page.evaluate(FETCH, f"{frontend_server.url}/api/system_stats") == "reached 200"
    # The same server under another name is reachable from this machine: only the browser's guard refuses it.
    same_server_other_origin = frontend_server.url.replace("127.0.0.1", "localhost")
    for url in (f"{same_server_other_origin}/api/system_stats", "https://api.comfy.org/releases", "http://example.com/"):
        assert page.evaluate(FETCH, url).startswith("refused"), url
