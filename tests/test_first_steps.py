"""A newcomer's first steps, as README.rst's Quick start tells them: the example, the
snippet for one's own code, and the test run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.backends import URL_VARIABLE
from tests.support import ROOT


def readme_block(section: str) -> str:
    """The first Python code block of README.rst's section ``section``, dedented."""
    readme = (ROOT / "README.rst").read_text()
    text = readme.split(f"\n{section}\n{'=' * len(section)}\n", 1)[1]
    match = re.search(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", text)
    assert match is not None, f"README's {section} has no Python code block"
    return "\n".join(line[3:] for line in match[1].splitlines()) + "\n"


def run_in(directory: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key not in env}
    environment["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    return subprocess.run(command, cwd=directory, env={**environment, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_readme_snippet_for_your_own_code_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "snippet.py").write_text(readme_block("Quick start"))
    result = run_in(tmp_path, sys.executable, "snippet.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "sending to ada@example.com\nsent\n"
    assert (tmp_path / "tasks.db").exists()


def test_the_quickstart_example_leaves_no_temporary_directory_behind(tmp_path: Path) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    result = run_in(tmp_path, sys.executable, str(ROOT / "examples" / "quickstart.py"),
                    TMPDIR=str(temporary))
    assert result.returncode == 0, result.stderr
    assert "DONE after 2 attempt(s): 'resized to 65x65'" in result.stdout
    assert list(temporary.iterdir()) == []


def pytest_without_a_server(*options: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run, without a server, tests that have PostgreSQL variants (those of tasks) and
    tests that ask for the server themselves (those of the PostgreSQL store)."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in (URL_VARIABLE, "CI")}
    return subprocess.run([sys.executable, "-m", "pytest", "tests/test_task.py",
                           "tests/test_storage_postgres.py", "-q", "-p", "no:cacheprovider",
                           *options], cwd=ROOT,
                          env={**environment, **env}, capture_output=True, text=True,
                          timeout=120, check=False)


def test_a_test_run_without_a_postgresql_server_says_so_once() -> None:
    result = pytest_without_a_server()
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    summary = [line for line in lines if line.startswith("PostgreSQL backend:")]
    assert len(summary) == 1 and summary[0].startswith("PostgreSQL backend: not tested, ")
    assert URL_VARIABLE in summary[0]
    skipped = [line for line in lines if line.startswith("SKIPPED")]
    assert len(skipped) <= 1, result.stdout  # the tests that ask for a server, folded
    assert re.search(r"\d+ passed, \d+ skipped, \d+ deselected", result.stdout), result.stdout


def test_a_test_run_under_ci_without_a_postgresql_server_fails() -> None:
    result = pytest_without_a_server(CI="true")
    assert result.returncode == 1, result.stdout
    assert "CI must run the PostgreSQL tests" in result.stdout
