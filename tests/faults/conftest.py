"""Every test under tests/faults is a ``faults`` test and an ``integration`` test.

They start real servers (gunicorn, redis-server, nginx) and break the network
between them (tests/support/faults.py), so the unit run (``-m "not
integration"``) leaves them out and the README's ``python -m pytest`` runs
them; ``-m faults`` runs only them. A test that needs network namespaces and
iptables skips, naming what is missing, only where the machine lacks them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.faults import missing_capability

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def network_faults() -> None:
    """Skip (with the reason) where netns, veth or iptables cannot be used."""
    reason = missing_capability()
    if reason is not None:
        pytest.skip(reason)
