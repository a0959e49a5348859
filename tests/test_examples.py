"""The examples in ``examples/`` run as README.rst says, each in a fresh process."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from simplepyq import SimplePyQ
from tests.support import ROOT
from tests.test_first_steps import run_in


def test_the_asyncio_app_answers_its_requests_with_the_tasks_results(tmp_path: Path) -> None:
    result = run_in(tmp_path, sys.executable, str(ROOT / "examples" / "async_app.py"),
                    TMPDIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["signup answered 202",
                         "report answered 200: {'month': 3, 'orders': 43}",
                         "report answered 200: {'month': 4, 'orders': 44}"]
    assert lines[3] == "email task: done 'welcome mail sent to ada@example.com'"
    assert re.fullmatch(r"the loop turned \d+ times in [\d.]+ s", lines[4])
    assert list(tmp_path.iterdir()) == []  # its temporary store is gone


def test_the_example_tests_of_a_view_pass_in_eager_mode_and_with_the_drain(
        tmp_path: Path) -> None:
    result = run_in(tmp_path, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    str(ROOT / "examples" / "test_shop.py"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout
    # The isolated queue kept every task out of the application's own store.
    assert [path.name for path in tmp_path.iterdir()] == ["shop_tasks.db"]

    with SimplePyQ(str(tmp_path / "shop_tasks.db")) as store:
        assert sum(sum(counts.values()) for counts in store.stats().values()) == 0

