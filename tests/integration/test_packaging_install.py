"""``pip install .`` builds and installs the package, and the ``jobstream`` command comes with it.

Offline and quick: the build uses this environment's setuptools (no build
isolation), the venv sees this environment's packages (``--system-site-packages``)
and nothing else is installed (``--no-deps``). It builds from a copy of what
the package is made of, so no build/ or egg-info is left in the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.support.server import ROOT

# What pyproject.toml builds the package from (its packages, app.py, readme, license).
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "app.py", "server", "streaming", "jobs", "board"]


@pytest.mark.timeout(120)
def test_pip_install_gives_the_packages_and_the_jobstream_script(tmp_path: Path) -> None:
    source = tmp_path / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    env_dir = tmp_path / "venv"
    # No pip of its own: ensurepip would also bring an old setuptools that hides this one.
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps"]
    install += ["--no-build-isolation", str(source)]
    built = subprocess.run(install, capture_output=True, text=True, timeout=100)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]

    # From a directory with no checkout, so only the installed copy can be imported.
    env = {"PATH": "/usr/bin:/bin", "JOBS_DB": str(tmp_path / "jobs.db")}
    check = "import board, jobs, server, server.cli, streaming, streaming.core.events; print(server.__file__)"
    imported = subprocess.run(
        [str(python), "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    assert imported.returncode == 0, imported.stderr
    assert Path(imported.stdout.strip()).is_relative_to(env_dir)

    script = env_dir / "bin" / "jobstream"
    assert script.is_file() and "server.cli" in script.read_text()
    # The script runs; with no checkout to serve it says so instead of starting gunicorn.
    ran = subprocess.run([str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert ran.returncode == 2 and "gunicorn.conf.py" in ran.stderr, ran.stderr
