"""Streams through deploy/nginx.conf over a link with 200 ms latency and 5 % loss, cut once: they resume with Last-Event-ID.

The clients sit in their own network namespace; between them and nginx is
a veth with iptables dropping 5 % of packets each way, then DelayProxy
holding every chunk 200 ms each way (this kernel has no netem; see
docs/reliability.md). Midway the proxy resets every stream, so each one
reconnects through the same bad link and nginx, and the app replays what
it missed. Events are published straight to gunicorn.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import StartServer
from tests.support.delay_proxy import DelayProxy
from tests.support.fault_clients import Publisher, readers_of, running
from tests.support.fault_tally import record, tally, wait_delivered
from tests.support.faults import Netns
from tests.support.nginx import NginxProcess

TOPIC = "faults/nginx"
STREAMS = 5
DELAY = 0.2
LOSS = 0.05


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("network_faults")
def test_streams_through_nginx_over_a_slow_lossy_link_resume_without_loss(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server({"STREAM_KEEPALIVE_INTERVAL": "1"})
    nginx = NginxProcess(tmp_path / "nginx", server.port, ["--set", "worker_processes=1"]).start()
    with Netns() as ns:
        link = ns.link()
        proxy = DelayProxy((link.host_ip, 0), ("127.0.0.1", nginx.http_port), DELAY)
        link.lose(LOSS)

        # Keep-alives every second: 4 s without a byte is a stream whose reset was lost.
        readers = readers_of(proxy.address[1], TOPIC, STREAMS, silence=4, host=link.host_ip, netns=ns)
        publisher = Publisher(server.url(), TOPIC, "tick", rate=20)
        try:
            with running(publisher, readers):
                server.wait_for(lambda: all(r.connects for r in readers), timeout=15)
                publisher.start()
                server.wait_for(lambda: len(publisher.acked) >= 40, timeout=10)
                cut = proxy.cut_all()
                cut_at = time.monotonic()
                server.wait_for(lambda: all(r.connects >= 2 for r in readers), timeout=15)
                server.wait_for(lambda: len(publisher.acked_after(cut_at)) >= 60, timeout=10)
                publisher.stop()
                delivered = wait_delivered(readers, publisher, timeout=20)
                dropped = link.dropped()
        finally:
            proxy.close()
            nginx.stop()
    result = tally(
        "200 ms + 5 % loss to nginx, streams cut once",
        f"iptables statistic DROP 5 % each way on a veth ({dropped} packets dropped) + userspace delay 200 ms each way; {cut} streams reset",
        publisher,
        readers,
        cut_at,
    )
    record(result)
    assert cut == STREAMS
    assert dropped > 0  # the loss was on the path
    # and so was the delay: an event reaches a stream >= 200 ms after its 202
    lags = sorted(r.arrived[i] - publisher.acked[i] for r in readers for i in r.arrived if i in publisher.acked)
    assert lags[len(lags) // 2] >= DELAY * 0.9, lags[len(lags) // 2]
    assert delivered, result
    assert result.lost == 0, result
    assert result.duplicated == 0, result
    assert result.resets == 0, result  # every Last-Event-ID was usable: a replay, not a snapshot
    assert result.recover_s is not None and result.recover_s < 10, result
