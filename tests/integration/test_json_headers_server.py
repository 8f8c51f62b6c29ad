"""``nosniff`` and ``no-store`` on JSON from a real gunicorn; the stream fast path keeps ``no-cache``."""

from __future__ import annotations

import pytest

from tests.support.server import ServerProcess
from tests.support.sse import SSEClient

pytestmark = pytest.mark.integration


@pytest.mark.timeout(30)
def test_json_from_gunicorn_is_nosniff_and_no_store(shared_server: ServerProcess) -> None:
    http = shared_server.http
    for response, status in (
        (http.get("/health"), 200),
        (http.get("/jobs?limit=%C2%B9"), 400),
        (http.post("/events", json={"topic": "jobs/1", "data": 1}), 400),  # reserved
        (http.post("/jobs/nope/cancel"), 415),
        (http.get("/stream?topic=%FF"), 400),  # a refused stream is JSON too
    ):
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json", response.request.url
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"


@pytest.mark.timeout(30)
def test_the_fast_path_stream_keeps_no_cache(shared_server: ServerProcess) -> None:
    with SSEClient(shared_server.port, params=[("topic", "hdr")]).open() as client:
        assert client.status == 200
        assert client.response_headers["content-type"].startswith("text/event-stream")
        assert client.response_headers["cache-control"] == "no-cache"
        assert "x-content-type-options" not in client.response_headers
