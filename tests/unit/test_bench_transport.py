"""python -m bench --transport: which targets a run measures."""

from __future__ import annotations

import pytest

from bench import cli, report, suite


def test_ws_puts_each_jobstream_target_next_to_its_websocket_twin() -> None:
    assert cli.over_transports(["jobstream", "jobstream-auth", "nchan"], "sse,ws") == [
        "jobstream",
        "jobstream-ws",
        "jobstream-auth",
        "jobstream-auth-ws",
        "nchan",
    ]


def test_ws_alone_drops_the_sse_peers() -> None:
    assert cli.over_transports(["jobstream", "sse-starlette"], "ws") == ["jobstream-ws"]
    assert cli.over_transports(["jobstream"], "ws,sse") == ["jobstream-ws", "jobstream"]


def test_a_bad_transport_stops_the_run() -> None:
    with pytest.raises(SystemExit, match="--transport"):
        cli.over_transports(["jobstream"], "grpc")


def test_every_target_has_a_launcher_and_ws_twins_are_read_against_sse() -> None:
    assert set(cli.ALL_TARGETS) == set(suite.launchers(cli.ROOT))
    assert report.VARIANTS["jobstream-ws"] == "jobstream"
