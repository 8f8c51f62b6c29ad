"""``jobstream`` (server/cli.py): which checkout it runs and the gunicorn command it becomes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from server import cli
from tests.support.server import ROOT


class Exec(Exception):
    """Raised by the stand-in for ``os.execv``, carrying what would have run."""


def fake_execv(path: str, argv: list[str]) -> None:
    raise Exec(path, argv)


def test_a_checkout_in_the_current_directory_is_run(tmp_path: Path) -> None:
    (tmp_path / "gunicorn.conf.py").write_text("")
    (tmp_path / "app.py").write_text("")
    assert cli.source_tree(tmp_path) == tmp_path


def test_elsewhere_the_tree_of_the_app_module_is_run(tmp_path: Path) -> None:
    # The tests import app from this checkout, as an editable install would.
    assert cli.source_tree(tmp_path) == ROOT


def test_main_becomes_the_readme_command_with_the_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "execv", fake_execv)
    with pytest.raises(Exec) as ran:
        cli.main(["--workers", "2"])
    path, argv = ran.value.args
    assert path == sys.executable
    assert argv == [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--workers", "2", "app:app"]


def test_without_a_checkout_main_says_so_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "source_tree", lambda cwd: None)
    monkeypatch.setattr(os, "execv", fake_execv)
    assert cli.main([]) == 2
    assert "gunicorn.conf.py" in capsys.readouterr().err
