"""The documented command that regenerates docs/board.png and docs/board-phone.png."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scripts.chromium import CHROMIUM

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(90)
def test_screenshot_script_writes_both_pictures_where_it_is_told(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (.ci/run installs it)")
    out = tmp_path / "pictures"
    done = subprocess.run(
        [sys.executable, "-m", "scripts.board_screenshots", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("board.png", "board-phone.png"):
        picture = (out / name).read_bytes()
        assert picture.startswith(PNG) and len(picture) > 10_000, name
    # The phone picture is the full page: taller than wide.
    header = (out / "board-phone.png").read_bytes()[16:24]  # the IHDR chunk's width and height
    width, height = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")
    assert width == 390 and height > 844, (width, height)
