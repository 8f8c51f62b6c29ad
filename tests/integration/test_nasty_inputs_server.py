"""The nasty-string table of tests/support/nasty.py against real gunicorn: never a 5xx.

Query strings go out as raw bytes (``http_request``): gunicorn, not a client
library, decides what a non-UTF-8 or non-ASCII URL becomes.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.nasty import event_bodies, job_bodies, job_queries
from tests.support.server import ServerProcess
from tests.support.sse import http_request

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("nasty"))
    proc.start()
    yield proc
    proc.stop(timeout=10)


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/json", response.text


@pytest.mark.timeout(120)
def test_every_json_string_field_answers_4xx_or_success(server: ServerProcess) -> None:
    for path, bodies in (("/events", event_bodies()), ("/jobs", job_bodies())):
        for raw in bodies:
            check(server.http.post(path, content=raw, headers={"Content-Type": "application/json"}))
    assert "Traceback" not in server.log()


@pytest.mark.timeout(120)
def test_every_query_parameter_of_get_jobs_answers_4xx_or_success(server: ServerProcess) -> None:
    for url in job_queries():
        response = http_request(server.port, f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        assert response.status < 500, (url[:80], response.body[:200])
        if len(url) > 4000:  # past gunicorn's request-line limit: its own (HTML) 4xx, before the app
            continue
        assert response.headers.get("content-type") == "application/json", (url[:80], response.status)
    # A raw non-ASCII digit, unencoded, too.
    for digit in ("¹", "٣"):
        raw = f"GET /jobs?limit={digit} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        assert http_request(server.port, raw).status == 400
    assert "Traceback" not in server.log()
