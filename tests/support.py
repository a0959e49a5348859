"""Shared test helpers: bounded waits and real child processes running queues."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], T | None], timeout: float = 10.0,
               interval: float = 0.002) -> T:
    """Return the first truthy ``predicate()`` value; fail the test if none comes in ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def spawn_python(code: str, *args: str) -> subprocess.Popen[str]:
    """Start a real child interpreter running ``code`` (dedented), with this checkout importable."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def run_python(code: str, *args: str, timeout: float = 60.0) -> str:
    """Run ``code`` in a child interpreter to completion; return its stdout, failing on error."""
    child = spawn_python(code, *args)
    out, err = child.communicate(timeout=timeout)
    assert child.returncode == 0, f"child failed ({child.returncode}):\n{err}"
    return out


def finish_all(children: Sequence[subprocess.Popen[str]],
               timeout: float = 90.0) -> list[tuple[str, str]]:
    """Wait for every child at once; their (stdout, stderr). Kills any left on the way out."""
    try:
        with ThreadPoolExecutor(len(children)) as pool:
            return list(pool.map(lambda child: child.communicate(timeout=timeout), children))
    finally:
        for child in children:
            child.kill()
            child.communicate()
