"""``jobstream``: the README's run command, ``gunicorn -c gunicorn.conf.py app:app``.

The board (static/, templates/) and docs/openapi.json are read from the source
tree beside app.py, so this runs a checkout: the current directory if it is
one, else the tree an editable install (``pip install -e .``) points at.
Arguments go on to gunicorn (``jobstream --workers 2``); settings come from
the environment, as with the plain command.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

CONFIG = "gunicorn.conf.py"


def source_tree(cwd: Path) -> Path | None:
    """The checkout to run: ``cwd`` if it holds one (gunicorn imports ``app``
    from there first), else the directory the ``app`` module is found in."""
    if (cwd / CONFIG).is_file() and (cwd / "app.py").is_file():
        return cwd
    # find_spec locates app.py without importing it: importing builds the app.
    spec = importlib.util.find_spec("app")
    if spec is not None and spec.origin is not None:
        tree = Path(spec.origin).resolve().parent
        if (tree / CONFIG).is_file():
            return tree
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Replace this process with gunicorn; return 2 if there is no checkout to run."""
    args = list(sys.argv[1:] if argv is None else argv)
    tree = source_tree(Path.cwd())
    if tree is None:
        sys.stderr.write(f"jobstream: no {CONFIG} here or beside the app module; run it in a Jobstream checkout\n")
        return 2
    # The same interpreter, so gunicorn and the app come from this environment.
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", "-c", str(tree / CONFIG), *args, "app:app"])


if __name__ == "__main__":
    sys.exit(main())
