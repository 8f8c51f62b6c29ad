"""pyproject.toml's package metadata agrees with the tree and with requirements.txt.

Building and installing the package is tested in
``tests/integration/test_packaging_install.py``.
"""

from __future__ import annotations

import tomllib
from typing import Any

from tests.support.server import ROOT


def project() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)


def test_runtime_dependencies_are_the_pins_of_requirements_txt() -> None:
    lines = (line.split("#", 1)[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines())
    pinned = [line for line in lines if line]
    assert all("==" in line for line in pinned), pinned
    assert sorted(project()["project"]["dependencies"]) == sorted(pinned)


def test_every_package_of_the_app_is_listed() -> None:
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("server", "streaming", "jobs", "board")
        for init in (ROOT / top).rglob("__init__.py")
    }
    setuptools = project()["tool"]["setuptools"]
    assert sorted(setuptools["packages"]) == sorted(found)
    assert setuptools["py-modules"] == ["app"]


def test_the_jobstream_command_is_the_cli() -> None:
    assert project()["project"]["scripts"] == {"jobstream": "server.cli:main"}
