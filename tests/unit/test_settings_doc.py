"""docs/settings.md is generated from server/settings.py and must match it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from scripts import settings_doc
from server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_settings_md_matches_the_code() -> None:
    on_disk = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert on_disk == settings_doc.render(), f"docs/settings.md is out of date: run {settings_doc.COMMAND}"


def test_every_setting_has_a_doc() -> None:
    missing = [f.metadata["env"] for f in dataclasses.fields(Settings) if not f.metadata.get("doc", "").strip()]
    assert missing == [], "give these a doc in server/settings.py"


def test_every_setting_is_listed_once_under_a_group() -> None:
    grouped = [f.metadata["env"] for _, fields in settings_doc.groups() for f in fields]
    assert grouped == [f.metadata["env"] for f in dataclasses.fields(Settings)]
    text = settings_doc.render()
    for env in grouped:
        assert text.count(f"| `{env}` |") == 1, env


def test_groups_follow_the_comments_in_the_class() -> None:
    titles = [title for title, _ in settings_doc.groups()]
    assert titles[0].startswith("Streams") and "Jobs" in titles
    first_of = {title: fields[0].metadata["env"] for title, fields in settings_doc.groups()}
    assert first_of["Jobs"] == "JOBS_DB"


def test_check_fails_until_the_file_is_regenerated(tmp_path: Path) -> None:
    out = tmp_path / "settings.md"
    out.write_text("stale\n", encoding="utf-8")
    assert settings_doc.main(["--check", "--output", str(out)]) == 1
    assert out.read_text(encoding="utf-8") == "stale\n"  # --check never writes
    assert settings_doc.main(["--output", str(out)]) == 0
    assert settings_doc.main(["--check", "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == settings_doc.render()
