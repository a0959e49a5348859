"""Compatibility with simplepyq 0.1.3: its files upgrade in place, its test suite passes."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from simplepyq import SimplePyQ
from tests.support import ROOT

FIXTURE = Path(__file__).parent / "fixtures" / "simplepyq-0.1.3.db"


@pytest.fixture
def legacy_path(tmp_path: Path) -> str:
    """A copy of the store written by 0.1.3 (see tests/fixtures/README.md)."""
    path = tmp_path / "legacy.db"
    shutil.copyfile(FIXTURE, path)
    return str(path)


def _rows(path: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        query = "SELECT id, channel, args, status, retries FROM tasks ORDER BY id"
        return conn.execute(query).fetchall()


def test_opening_a_013_store_upgrades_it_and_loses_nothing(legacy_path: str) -> None:
    before = _rows(legacy_path)
    with SimplePyQ(legacy_path) as q:
        upgraded = q.tasks(limit=100)
    after = _rows(legacy_path)

    assert len(before) == 8
    assert [row[:3] for row in after] == [row[:3] for row in before]
    assert [row[4] for row in after] == [row[4] for row in before]
    assert [t.status for t in upgraded] == [
        "done", "done", "done", "failed", "delayed", "running", "pending", "pending"]
    assert upgraded[0].args == {"to": "a@example.com", "n": 0}
    with sqlite3.connect(legacy_path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
        assert conn.execute("SELECT COUNT(*) FROM tasks WHERE status='failed'").fetchone() == (1,)
    assert {"priority", "attempts", "result", "error", "created_at", "owner"} <= columns


def test_channels_of_a_013_store_are_known_without_registering(legacy_path: str) -> None:
    with SimplePyQ(legacy_path) as q:
        assert set(q.stats()) == {"email", "resize", "report"}
        assert q.enqueue("report", {"month": "2025-02"}) == 9


def test_unfinished_013_tasks_run_as_if_enqueued_by_this_version(legacy_path: str) -> None:
    seen: dict[str, list[object]] = {"email": [], "resize": [], "report": []}
    with SimplePyQ(legacy_path, lease=3600) as q:
        for name, calls in seen.items():
            q.add_channel(name, lambda args, calls=calls: calls.append(args) or "ok")
        q.run_until_complete(timeout=30)
        statuses = {t.id: t.status for t in q.tasks(limit=100)}
        assert seen["email"] == [{"to": "late@example.com", "n": 10},
                                 {"to": "late@example.com", "n": 11}]
        assert seen["resize"] == [{"path": "/img/2.png", "size": [128, 128]}]
        assert seen["report"] == [{"month": "2025-01"}]  # left running by a killed 0.1.3
        assert statuses == {1: "done", 2: "done", 3: "done", 4: "failed", 5: "done",
                            6: "done", 7: "done", 8: "done"}
        assert q.requeue_failed() == 1
        q.run_until_complete(timeout=30)
        assert q.get_task(4).status == "done"  # type: ignore[union-attr]
    assert seen["resize"][-1] == {"path": "/img/1.png", "size": [64, 64]}


@pytest.fixture(scope="session")
def legacy_test_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test module shipped in the published simplepyq 0.1.3 wheel."""
    wheel = os.environ.get("SIMPLEPYQ_LEGACY_WHEEL")
    directory = tmp_path_factory.mktemp("legacy")
    if not wheel:
        download = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             "simplepyq==0.1.3", "-d", str(directory)],
            capture_output=True, text=True, check=False,
        )
        found = sorted(directory.glob("simplepyq-0.1.3-*.whl"))
        if download.returncode != 0 or not found:
            pytest.skip(f"the simplepyq 0.1.3 wheel could not be downloaded: {download.stderr}")
        wheel = str(found[0])
    with zipfile.ZipFile(wheel) as archive:
        target = directory / "test_simplepyq_013.py"
        target.write_bytes(archive.read("tests/test_simplepyq.py"))
    return target


def test_published_013_test_suite_passes_unchanged(
    legacy_test_suite: Path, tmp_path: Path
) -> None:
    shutil.copyfile(legacy_test_suite, tmp_path / legacy_test_suite.name)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "unittest", "-v", legacy_test_suite.stem],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Ran 5 tests" in result.stderr
    assert result.stderr.rstrip().endswith("OK")
