"""Compatibility with simplepyq 0.1.3: its files upgrade in place, its test suite passes.

The store is ``tests/fixtures/simplepyq-0.1.3.db``, written by the published 0.1.3
(rows listed in tests/fixtures/README.md); every test works on a copy of it. 0.1.3
knew SQLite files only, so none of this concerns PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import msgpack
import pytest

from simplepyq import SimplePyQ
from simplepyq.storage.sqlite import SCHEMA_VERSION
from tests.support import ROOT

pytestmark = pytest.mark.sqlite_only

FIXTURE = Path(__file__).parent / "fixtures" / "simplepyq-0.1.3.db"

# The fixture's rows, as listed in tests/fixtures/README.md: id -> (channel, args, status, retries)
ROWS_013 = {
    1: ("email", {"to": "a@example.com", "n": 0}, "done", 0),
    2: ("email", {"to": "a@example.com", "n": 1}, "done", 0),
    3: ("email", {"to": "a@example.com", "n": 2}, "done", 0),
    4: ("resize", {"path": "/img/1.png", "size": [64, 64]}, "failed", 0),
    5: ("resize", {"path": "/img/2.png", "size": [128, 128]}, "delayed", 0),
    6: ("report", {"month": "2025-01"}, "running", 0),
    7: ("email", {"to": "late@example.com", "n": 10}, "pending", 0),
    8: ("email", {"to": "late@example.com", "n": 11}, "pending", 2),
}
FAILED_COUNT_013 = "SELECT COUNT(*) FROM tasks WHERE status='failed'"


@pytest.fixture
def legacy_path(tmp_path: Path) -> str:
    """A copy of the store written by 0.1.3."""
    path = tmp_path / "legacy.db"
    shutil.copyfile(FIXTURE, path)
    return str(path)


def _raw_rows(path: str) -> list[tuple[object, ...]]:
    """The 0.1.3 columns of every row, as stored."""
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(
            "SELECT id, channel, args, status, retries, delay_until FROM tasks ORDER BY id"
        ).fetchall()


def _recorder(calls: list[object]) -> Callable[[object], str]:
    """A channel function that notes its args and returns "ok"."""
    def record(args: object) -> str:
        calls.append(args)
        return "ok"

    return record


def _failed_count(path: str) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute(FAILED_COUNT_013).fetchone()[0])


def test_fixture_holds_the_rows_its_readme_lists(legacy_path: str) -> None:
    rows = _raw_rows(legacy_path)
    assert {row[0]: (row[1], msgpack.unpackb(row[2]), row[3], row[4]) for row in rows} == ROWS_013
    delays = {row[0]: float(str(row[5])) for row in rows if row[5] is not None}
    assert list(delays) == [5]  # only the delayed task has a time, and it is long past
    assert delays[5] < time.time()
    with closing(sqlite3.connect(legacy_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (0,)  # no schema of ours yet


def test_opening_a_013_store_upgrades_it_in_place_and_loses_nothing(legacy_path: str) -> None:
    before = _raw_rows(legacy_path)

    with SimplePyQ(legacy_path) as q:
        tasks = q.tasks(limit=100)

    assert _raw_rows(legacy_path) == before  # ids, args, statuses, retries, delays
    assert {t.id: (t.channel, t.args, t.status, t.retries) for t in tasks} == ROWS_013
    with closing(sqlite3.connect(legacy_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
        channel_columns = {row[1] for row in conn.execute(
            "PRAGMA table_info(simplepyq_channels)")}
    assert {"priority", "attempts", "result", "error", "created_at", "started_at",
            "finished_at", "owner", "recoveries", "history", "key", "time_limit",
            "cancel_requested", "progress"} <= columns
    assert {"rate_count", "rate_period", "max_running"} <= channel_columns
    assert all((t.key, t.time_limit, t.cancel_requested, t.progress) == (None, None, False, None)
               for t in tasks)
    assert _failed_count(legacy_path) == 1  # 0.1.3's own query still works


def test_channels_of_a_013_store_are_known_without_add_channel(legacy_path: str) -> None:
    with SimplePyQ(legacy_path) as q:
        assert set(q.stats()) == {"email", "resize", "report"}
        new_ids = [q.enqueue(name, {"new": name}) for name in ("email", "resize", "report")]
        with pytest.raises(ValueError, match="unknown channel 'emial'"):
            q.enqueue("emial", {})
        assert [(t.channel, t.args, t.status) for t in map(q.get_task, new_ids) if t] == [
            ("email", {"new": "email"}, "pending"),
            ("resize", {"new": "resize"}, "pending"),
            ("report", {"new": "report"}, "pending")]


def test_ids_0_1_3_deleted_before_the_upgrade_are_not_given_again(legacy_path: str) -> None:
    newest = max(ROWS_013)
    with closing(sqlite3.connect(legacy_path, isolation_level=None)) as conn:
        conn.execute("DELETE FROM tasks WHERE id = ?", (newest,))  # only sqlite_sequence knows
    with SimplePyQ(legacy_path) as q:
        assert min(q.enqueue("email", "new"), *q.enqueue_many("email", ["a", "b"])) > newest


def test_task_a_killed_013_process_left_running_is_recovered_at_start(legacy_path: str) -> None:
    with SimplePyQ(legacy_path, lease=3600) as q:
        q.start()  # no channel registered: recovered, but not run
        task = q.get_task(6)
    assert task is not None
    assert (task.channel, task.args, task.status) == ("report", {"month": "2025-01"}, "pending")
    assert (task.error or "").startswith("recovered")


def test_unfinished_013_tasks_run_with_their_original_args_and_the_failed_one_waits(
    legacy_path: str,
) -> None:
    seen: dict[str, list[object]] = {"email": [], "resize": [], "report": []}
    with SimplePyQ(legacy_path, lease=3600) as q:
        for name, calls in seen.items():
            q.add_channel(name, _recorder(calls))
        q.run_until_complete(timeout=20)

        statuses = {t.id: t.status for t in q.tasks(limit=100)}
        assert seen == {
            "email": [{"to": "late@example.com", "n": 10}, {"to": "late@example.com", "n": 11}],
            "resize": [{"path": "/img/2.png", "size": [128, 128]}],  # was delayed
            "report": [{"month": "2025-01"}],  # was left running by a killed 0.1.3
        }
        assert statuses == {1: "done", 2: "done", 3: "done", 4: "failed", 5: "done",
                            6: "done", 7: "done", 8: "done"}
        assert q.get_task(8).retries == 2  # type: ignore[union-attr]
        assert _failed_count(legacy_path) == 1

        assert q.requeue_failed() == 1
        q.run_until_complete(timeout=20)
        requeued = q.get_task(4)

    assert requeued is not None
    assert (requeued.status, requeued.result) == ("done", "ok")
    assert seen["resize"][-1] == {"path": "/img/1.png", "size": [64, 64]}
    assert _failed_count(legacy_path) == 0
    assert len(_raw_rows(legacy_path)) == 8


# -- the published 0.1.3 test suite ----------------------------------------


@pytest.fixture(scope="session")
def legacy_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The published simplepyq 0.1.3 wheel: $SIMPLEPYQ_LEGACY_WHEEL, or downloaded once."""
    given = os.environ.get("SIMPLEPYQ_LEGACY_WHEEL")
    if given:
        assert Path(given).is_file(), f"SIMPLEPYQ_LEGACY_WHEEL={given!r} is not a file"
        return Path(given)
    directory = tmp_path_factory.mktemp("wheel-0.1.3")
    try:
        download = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             "simplepyq==0.1.3", "-d", str(directory)],
            capture_output=True, text=True, check=False, timeout=120,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("downloading the simplepyq 0.1.3 wheel from PyPI timed out after 120s")
    found = sorted(directory.glob("simplepyq-0.1.3-*.whl"))
    if download.returncode != 0 or not found:
        pytest.skip("the simplepyq 0.1.3 wheel could not be downloaded "
                    f"(pip exit {download.returncode}): {download.stderr.strip()[-500:]}")
    return found[0]


def test_published_013_test_suite_passes_unchanged(legacy_wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(legacy_wheel) as wheel:
        (tmp_path / "test_simplepyq.py").write_bytes(wheel.read("tests/test_simplepyq.py"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    imported = run("-c", "import simplepyq; print(simplepyq.__file__)")
    assert Path(imported.stdout.strip()).is_relative_to(ROOT / "simplepyq"), imported
    result = run("-m", "unittest", "-v", "test_simplepyq")

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Ran 5 tests" in output
    assert output.rstrip().endswith("OK"), output
