"""docs/openapi.json on a live server: it is served, and the server honours it.

That the file matches the routes is checked without a server in
``tests/unit/test_openapi.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.openapi import load
from tests.conftest import StartServer
from tests.support.server import ServerProcess
from tests.support.tokens import SECRET

# Run the schemathesis CLI from this interpreter (its console script may not be on PATH).
SCHEMATHESIS = [sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"]


def test_the_served_spec_is_the_file(shared_server: ServerProcess) -> None:
    response = shared_server.http.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == load()
    assert load()["openapi"].startswith("3.")


@pytest.mark.timeout(240)
@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_response_off_spec(start_server: StartServer, tmp_path: Path) -> None:
    # With a token set, so the auth checks (401 without it) run too. /stream
    # never ends and /ws needs a WebSocket client, so both are left out;
    # test_stream.py and test_websocket.py cover their responses.
    # STREAM_AUTH=optional: "private": true is valid input only with stream tokens on.
    server = start_server({"API_TOKEN": "fuzz-token", "JWT_SECRET": SECRET, "STREAM_AUTH": "optional"})
    command = [
        *SCHEMATHESIS, "--config-file", str(Path(__file__).with_name("schemathesis.toml")),
        "run", server.url("/openapi.json"),
        "--exclude-path", "/stream",
        "--exclude-path", "/ws",
        "--header", "Authorization: Bearer fuzz-token",
        "--checks", "all",
        "--max-examples", "25",
        "--seed", "20261128",
        "--request-timeout", "5",
        "--generation-database", "none",
        "--no-color",
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "No issues found" in proc.stdout
    assert "Traceback" not in server.log()
