"""Benchmark simplepyq against its peers on the same workloads, in one command.

Run ``python bench/run.py`` (full, several minutes) or ``python bench/run.py --quick``
(three to five minutes once the peers are installed, two of them the instruction
counts of ``bench/instructions.py``). The first run creates
``bench/.peers-venv`` and installs the pinned peers into it (huey, persist-queue,
litequeue, the published simplepyq 0.1.3, procrastinate, pgqueuer, and matplotlib for
the chart), and ``bench/.peers312-venv`` for oban-py, which needs Python 3.12+, so this
checkout's environment gains no dependency; and ``bench/.baseline-venv`` with simplepyq
as it was at BASELINE, the "no cost when unused" reference. The PostgreSQL peers are
measured, next to simplepyq on PostgreSQL, only when ``SIMPLEPYQ_BENCH_POSTGRES_URL``
names a database.

Every measurement runs in a fresh subprocess on a fresh database file in a temporary
directory: this checkout's simplepyq with ``PYTHONPATH`` set to the repository root,
each peer with the virtualenv's Python. Each library's idiomatic use is in
``bench/peers/<name>.py``. The figures are medians over the runs; ratios are
simplepyq ÷ peer. Results go to ``bench/results.json``, ``bench/chart.png`` and the
"Latest results" section of ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import instructions

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS = BENCH / "peers"
VENV = BENCH / ".peers-venv"
REQUIREMENTS = PEERS / "requirements.txt"
# oban-py needs Python >= 3.12, the other peers run on this one: it has a venv of its own.
VENV312 = BENCH / ".peers312-venv"
REQUIREMENTS312 = PEERS / "requirements312.txt"
RESULTS = BENCH / "results.json"
CHART = BENCH / "chart.png"
README = BENCH / "README.md"
TABLE_START = "<!-- results: start (written by bench/run.py) -->"
TABLE_END = "<!-- results: end -->"

Result = dict[str, Any]


@dataclass(frozen=True)
class Library:
    key: str
    label: str
    script: str
    ours: bool = False
    env: tuple[tuple[str, str], ...] = ()
    postgres: bool = False  # measured only when SIMPLEPYQ_BENCH_POSTGRES_URL is set
    python312: bool = False  # runs with bench/.peers312-venv's Python
    baseline: bool = False  # runs with bench/.baseline-venv's Python (simplepyq at BASELINE)


OURS = Library("simplepyq", "simplepyq (this checkout)", "ours.py", ours=True)
POSTGRES_URL = "SIMPLEPYQ_BENCH_POSTGRES_URL"
ON_POSTGRES = Library("simplepyq-postgres", "simplepyq on PostgreSQL (a local server)",
                      "ours.py", ours=True, env=(("SIMPLEPYQ_BENCH_BACKEND", "postgres"),),
                      postgres=True)
BASELINE = "906af25"
"""The revision before this round's features: no cost when unused is measured against it."""
BASELINE_VENV = BENCH / ".baseline-venv"
AS_BEFORE = Library(f"simplepyq-{BASELINE}", f"simplepyq at {BASELINE}, before this round's "
                    "features (a virtualenv of its own)", "ours.py", baseline=True)
AS_BEFORE_ON_POSTGRES = Library(
    f"simplepyq-{BASELINE}-postgres", f"simplepyq at {BASELINE} on PostgreSQL", "ours.py",
    env=ON_POSTGRES.env, postgres=True, baseline=True)
LIBRARIES = (
    OURS,
    AS_BEFORE,
    ON_POSTGRES,
    AS_BEFORE_ON_POSTGRES,
    Library("simplepyq-power-safe", "simplepyq, power_safe=True (an fsync per commit)",
            "ours.py", ours=True, env=(("SIMPLEPYQ_BENCH_POWER_SAFE", "1"),)),
    Library("simplepyq-0.1.3", "simplepyq 0.1.3", "simplepyq_013.py"),
    Library("huey", "huey 3.5 (SqliteHuey)", "huey_sqlite.py"),
    Library("persist-queue", "persist-queue 1.1 (SQLiteAckQueue)", "persistqueue_ack.py"),
    Library("litequeue", "litequeue 0.9", "litequeue_loop.py"),
    Library("sqlite3", "raw sqlite3 (reference, not a queue)", "sqlite_raw.py"),
    # The PostgreSQL peers, compared with simplepyq-postgres in a table of their own.
    Library("procrastinate", "procrastinate 3.10 (PostgreSQL)", "procrastinate_pg.py",
            postgres=True),
    Library("pgqueuer", "pgqueuer 1.6 (PostgreSQL, asyncpg)", "pgqueuer_pg.py", postgres=True),
    Library("oban-py", "oban-py 0.7 (PostgreSQL, Python 3.12)", "oban_pg.py", postgres=True,
            python312=True),
)
BASELINE_OF = {AS_BEFORE.key: OURS.key, AS_BEFORE_ON_POSTGRES.key: ON_POSTGRES.key}
"""Each baseline column and the library it is measured against, interleaved."""
BY_KEY = {library.key: library for library in LIBRARIES}
QUEUES = tuple(library.key for library in LIBRARIES if library.key != "sqlite3")
ALL = tuple(BY_KEY)
PG_PEERS = ("procrastinate", "pgqueuer", "oban-py")  # the PostgreSQL table's peers


@dataclass(frozen=True)
class Workload:
    """One row of a table: an adapter operation, its parameters, who runs it."""

    key: str
    title: str
    op: str
    libraries: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)
    fill: int = 0  # tasks enqueued (untimed, by another process) before the operation
    deep_rows: int = 0  # finished rows already in the store (W4)
    unit: str = "tasks/s"
    chart: bool = False
    pair: str = ""  # workloads of one pair run interleaved, rep by rep
    feature: bool = False  # a figure of the Features table, not of the comparison


SCALE_PROCESSES = (1, 2, 4)


@dataclass(frozen=True)
class Mode:
    name: str
    reps: int
    budget: float  # seconds one timed operation may take before it stops and reports
    latency_budget: float
    workloads: tuple[Workload, ...]


def _drain(n: int, workers: int, libraries: tuple[str, ...], chart: bool = True) -> Workload:
    return Workload(f"w2_drain_{n // 1000}k_{workers}w",
                    f"W2 drain {n // 1000}k queued, {workers} worker{'s' * (workers > 1)}",
                    "drain", libraries, {"n": n, "workers": workers}, fill=n, chart=chart)


FEATURE_ROWS = (
    # (a feature's workload, the same work without the feature, or "" for the rate limit)
    ("f_max_running", "f_drain"),
    ("f_rate_limit", ""),
    ("f_key", "f_enqueue"),
    ("f_chain", "f_chain_plain"),
    ("f_group", "f_group_plain"),
)
RATE_LIMIT = 1000  # tasks per second
INSTRUCTIONS = "instructions"
"""The key of the instruction counts in the results (by library) and in the run's meta
(how they were counted), and the ``--workloads`` prefix that selects them."""
FLOW_BUDGET = 50.0
"""Seconds a chain or a group may take: they run to their end, as their size is the figure."""


def _features(enqueues: int, drain: int, windows: int) -> tuple[Workload, ...]:
    """The Features table's workloads, simplepyq alone on each backend: each feature
    interleaved, run by run, with the same work without it."""
    def row(key: str, title: str, op: str, params: dict[str, Any], pair: str = "",
            fill: int = 0) -> Workload:
        return Workload(key, title, op, ("simplepyq", "simplepyq-postgres"), params,
                        fill=fill, pair=pair, feature=True)

    sized = {"n": drain, "workers": 4}
    chain = {"n": 1000, "workers": 1, "budget": FLOW_BUDGET}
    group = {"n": 10_000, "workers": 4, "budget": FLOW_BUDGET}
    return (
        row("f_enqueue", f"F enqueue {enqueues // 1000}k, one call each", "enqueue",
            {"n": enqueues}, "f_key"),
        row("f_key", f"F enqueue {enqueues // 1000}k, one call each with a unique key",
            "enqueue_keyed", {"n": enqueues}, "f_key"),
        row("f_drain", f"F drain {drain // 1000}k queued, 4 workers", "drain", sized,
            "f_running", fill=drain),
        row("f_max_running", f"F drain {drain // 1000}k queued, 4 workers, max_running=2",
            "drain_max_running", {**sized, "max_running": 2}, "f_running", fill=drain),
        row("f_rate_limit", f"F rate limit {RATE_LIMIT}/s, 1 process × 4 workers, "
            f"{windows} s of tasks", "rate_limit",
            {"limit": RATE_LIMIT, "processes": 1, "windows": windows}),
        row("f_chain_plain", "F 1,000 tasks stored and drained, 1 worker", "flow",
            {**chain, "workload": "drain"}, "f_chain"),
        row("f_chain", "F chain of 1,000 steps, 1 worker", "flow",
            {**chain, "workload": "chain"}, "f_chain"),
        row("f_group_plain", "F 10k tasks stored and drained, 4 workers", "flow",
            {**group, "workload": "drain"}, "f_group"),
        row("f_group", "F group of 10k + a callback, 4 workers", "flow",
            {**group, "workload": "group"}, "f_group"),
    )


def modes() -> dict[str, Mode]:
    slow_less = tuple(key for key in ALL if key != "simplepyq-0.1.3")
    common = (
        Workload("w1_enqueue", "W1 enqueue 10k, one call each", "enqueue", ALL,
                 {"n": 10_000}, chart=True),
        # No SQLite peer has a batch enqueue; their cells show '—'. The PostgreSQL ones do.
        Workload("w1b_enqueue_many", "W1b enqueue 100k in one batch call", "enqueue_many",
                 ("simplepyq", AS_BEFORE.key, "simplepyq-postgres", AS_BEFORE_ON_POSTGRES.key,
                  "sqlite3", *PG_PEERS), {"n": 100_000}, chart=True),
        _drain(10_000, 1, ALL),
        _drain(10_000, 4, ALL),
    )
    latency = (
        Workload("w3_latency_same", "W3 enqueue → start, same process (p50 / p99)",
                 "latency_same", QUEUES, {"samples": 200}, unit="ms"),
        Workload("w3_latency_other", "W3 enqueue → start, other process (p50 / p99)",
                 "latency_other", QUEUES, {"samples": 60}, unit="ms"),
    )

    def ours_only(deep_rows: int, w4_tasks: int, w5_tasks: int) -> tuple[Workload, ...]:
        # Each pair runs interleaved (a, b, a, b, ...) so that a change of load on the
        # machine during the run does not bias their ratio.
        w4 = {"n": w4_tasks, "workers": 1}
        w5 = {"n": w5_tasks, "workers": 4}
        return (
            Workload("w4_empty", f"W4 drain {w4_tasks // 1000}k, empty table", "drain",
                     ("simplepyq",), w4, fill=w4_tasks, pair="w4"),
            Workload("w4_deep", f"W4 drain {w4_tasks // 1000}k, {deep_rows:,} done rows",
                     "drain", ("simplepyq",), w4, fill=w4_tasks, deep_rows=deep_rows,
                     pair="w4"),
            Workload("w5_one", f"W5 drain {w5_tasks // 1000}k, 1 process × 4 workers",
                     "multiprocess", ("simplepyq",), {**w5, "processes": 1}, fill=w5_tasks,
                     pair="w5"),
            Workload("w5_four", f"W5 drain {w5_tasks // 1000}k, 4 processes × 4 workers",
                     "multiprocess", ("simplepyq",), {**w5, "processes": 4}, fill=w5_tasks,
                     pair="w5"),
        )

    def scale_out(tasks: int) -> tuple[Workload, ...]:
        # Worker processes (4 threads each) draining one store, on each backend.
        return tuple(
            Workload(f"s{processes}_processes", f"S drain {tasks // 1000}k, {processes} "
                     f"process{'es' * (processes > 1)} × 4 workers", "multiprocess",
                     ("simplepyq", "simplepyq-postgres"),
                     {"n": tasks, "workers": 4, "processes": processes}, fill=tasks,
                     pair="scale")
            for processes in SCALE_PROCESSES)

    quick = Mode("quick", reps=1, budget=1.2, latency_budget=1.0, workloads=(
        *common,
        # For the memory figure, and the PostgreSQL ratio of a deep queue to a shallow one.
        _drain(100_000, 1, ("simplepyq", "simplepyq-postgres"), chart=False),
        *latency, *ours_only(100_000, 10_000, 10_000), *scale_out(10_000),
        *_features(10_000, 10_000, 2)))
    full = Mode("full", reps=3, budget=6.0, latency_budget=6.0, workloads=(
        *common, _drain(100_000, 1, slow_less), _drain(100_000, 4, slow_less),
        *latency, *ours_only(1_000_000, 50_000, 40_000), *scale_out(40_000),
        *_features(10_000, 40_000, 3)))
    return {"quick": quick, "full": full}


# -- running adapters ----------------------------------------------------------
@dataclass
class Runner:
    peers_python: Path
    source: Path
    workdir: Path
    log: Callable[[str], None]
    templates: dict[int, Path] = field(default_factory=dict)
    peers312_python: Path | None = None  # for oban-py: bench/.peers312-venv's Python
    baseline_python: Path | None = None  # bench/.baseline-venv's Python (simplepyq at BASELINE)

    def call(self, library: Library, request: dict[str, Any], timeout: float) -> Result:
        """Run one adapter request in a fresh process; its JSON result or an error."""
        env = {**os.environ, **dict(library.env)}
        env.pop("PYTHONPATH", None)
        if library.ours:
            python = sys.executable
            env["PYTHONPATH"] = str(self.source)
        elif library.python312:
            python = str(self.peers312_python)
        elif library.baseline:
            python = str(self.baseline_python)
        else:
            python = str(self.peers_python)
        command = [python, str(PEERS / library.script), json.dumps(request)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  cwd=self.workdir, env=env, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return {"error": f"exit {done.returncode}: {tail}"}
        result: Result = json.loads(lines[-1])
        return result

    def measure(self, workload: Workload, library: Library, mode: Mode, rep: int) -> Result:
        """One run of ``workload`` by ``library`` on a fresh file; removed afterwards."""
        path = self.workdir / f"{workload.key}-{library.key}-{rep}.db"
        try:
            if workload.deep_rows:
                shutil.copyfile(self.template(workload.deep_rows), path)
            if workload.fill:
                filled = self.call(library, {"op": "fill", "path": str(path),
                                             "n": workload.fill}, timeout=600)
                if "error" in filled or filled.get("unsupported"):
                    return filled
            budget = mode.latency_budget if workload.unit == "ms" else mode.budget
            request = {"op": workload.op, "path": str(path), "budget": budget,
                       **workload.params}
            return self.call(library, request, timeout=budget * 3 + 60)
        finally:
            _remove(path)
            if library.postgres:  # its store is a schema of the server's database
                self.call(library, {"op": "drop", "path": str(path)}, timeout=60)

    def template(self, rows: int) -> Path:
        """A fresh store with ``rows`` finished tasks, built once and copied per run."""
        if rows not in self.templates:
            path = self.workdir / f"template-{rows}.db"
            self.log(f"building a store with {rows:,} finished rows")
            built = self.call(OURS, {"op": "deep_template", "path": str(path), "rows": rows},
                              timeout=600)
            if "error" in built:
                raise RuntimeError(f"could not build the W4 store: {built['error']}")
            self.templates[rows] = path
        return self.templates[rows]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def summarize(runs: list[Result]) -> Result:
    """The median of the runs' figures, with every run kept."""
    good = [run for run in runs if run.get("value") is not None]
    if any(run.get("unsupported") for run in runs):
        return {"unsupported": True}
    if not good:
        errors = [run.get("error", "no result") for run in runs]
        return {"error": errors[0], "runs": runs}
    cell: Result = {"value": statistics.median(run["value"] for run in good),
                    "partial": any(run.get("partial") for run in good), "runs": runs}
    for extra in ("p99", "peak_rss_mb", "samples", "done", "n", "locked_errors",
                  "locked_logged", "failed"):
        values = [run[extra] for run in good if run.get(extra) is not None]
        if values:
            cell[extra] = statistics.median(values)
    return cell


# -- the peers' virtualenv -------------------------------------------------------
def ensure_peers(log: Callable[[str], None], venv: Path = VENV,
                 requirements: Path = REQUIREMENTS, base: str = sys.executable) -> Path:
    """The peers' Python, creating ``venv`` with ``base`` and filling it when needed."""
    python = venv / "bin" / "python"
    stamp = venv / "installed-requirements.txt"
    wanted = requirements.read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        log(f"creating {venv.relative_to(ROOT)} (first run only)")
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    log("installing the pinned peers: " + ", ".join(_pinned(requirements)))
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", "-r", str(requirements)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        log(done.stdout + done.stderr)
        raise SystemExit(f"could not install the peers into {venv}")
    stamp.write_text(wanted)
    return python


def _pinned(requirements: Path) -> list[str]:
    return [line for line in requirements.read_text().splitlines()
            if line and not line.startswith("#")]


def find_python312() -> str | None:
    """A Python >= 3.12 for oban-py, the oldest found (nearest this one): python3.12,
    3.13 or 3.14 on PATH, else one of pyenv's versions; None when there is none."""
    on_path = [shutil.which(name) for name in ("python3.12", "python3.13", "python3.14")]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    installed = sorted(pyenv.glob("3.1[2-9]*/bin/python"),
                       key=lambda path: [int(part) for part in path.parent.parent.name.split(".")
                                         if part.isdigit()])
    for python in [*(found for found in on_path if found), *map(str, installed)]:
        # A pyenv shim is on PATH even when its version is not selected: ask each one.
        done = subprocess.run(
            [python, "-c", "import sys, venv; print(sys.version_info >= (3, 12))"],
            capture_output=True, text=True, check=False)
        if done.stdout.strip() == "True":
            return python
    return None


def ensure_peers312(log: Callable[[str], None]) -> Path | None:
    """oban-py's Python (``bench/.peers312-venv``), or None when no Python >= 3.12 exists."""
    if (VENV312 / "bin" / "python").exists():
        return ensure_peers(log, VENV312, REQUIREMENTS312)
    base = find_python312()
    return ensure_peers(log, VENV312, REQUIREMENTS312, base) if base else None


def ensure_baseline(log: Callable[[str], None]) -> Path | None:
    """The baseline's Python, making ``bench/.baseline-venv`` when needed: ``git archive
    BASELINE`` extracted into its ``src`` folder and installed there with pip, with the
    postgres extra and this environment's msgpack and psycopg, so that it differs from
    this checkout only in simplepyq. Made again when BASELINE or those versions change;
    None (and why, logged) when this repository does not have that revision."""
    found = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet",
                            f"{BASELINE}^{{commit}}"], capture_output=True, text=True,
                           check=False)
    if found.returncode != 0:
        log(f"not measured: simplepyq at {BASELINE} (this clone lacks that revision; "
            "fetch its history)")
        return None
    python, stamp = BASELINE_VENV / "bin" / "python", BASELINE_VENV / "installed.txt"
    wanted = "\n".join([found.stdout.strip(), *_same_versions()]) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    log(f"creating {BASELINE_VENV.relative_to(ROOT)}: simplepyq at {BASELINE} (first run only)")
    shutil.rmtree(BASELINE_VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(BASELINE_VENV)], check=True)
    source = BASELINE_VENV / "src"
    source.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE, "simplepyq",
                              "setup.cfg", "pyproject.toml", "README.rst", "LICENSE"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", f"{source}[postgres]",
                           *_same_versions()], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        log(done.stdout + done.stderr)
        raise SystemExit(f"could not install simplepyq at {BASELINE} into {BASELINE_VENV}")
    stamp.write_text(wanted)
    return python


def _same_versions() -> list[str]:
    """This environment's msgpack and psycopg packages, pinned at their versions here."""
    pins = []
    for name in ("msgpack", "psycopg", "psycopg-binary", "psycopg-pool"):
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pins


# -- reporting -----------------------------------------------------------------
def _number(value: float) -> str:
    if value >= 100_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if value >= 10 else f"{value:.2f}"


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def cell_text(cell: Result | None, unit: str) -> str:
    if not cell or cell.get("unsupported"):
        return "—"  # not run, or the library cannot do it
    if "error" in cell:
        return "error" if "timed out" not in cell["error"] else "timeout"
    if cell.get("value") is None:
        return "none"  # ran, but measured nothing in its budget
    star = "*" if cell.get("partial") else ""
    if unit == "ms":
        p99: float = cell["p99"] if "p99" in cell else cell["value"]
        return f"{_ms(cell['value'])} / {_ms(p99)}{star}"
    return f"{_number(cell['value'])}{star}"


def ratio_text(ours: Result | None, peer: Result | None) -> str:
    if not ours or not peer or not ours.get("value") or not peer.get("value"):
        return ""
    ratio = ours["value"] / peer["value"]
    return f" (×{ratio:.0f})" if ratio >= 10 else f" (×{ratio:.2g})"


def comparison_table(results: dict[str, dict[str, Result]], mode: Mode, base: Library = OURS,
                     keys: tuple[str, ...] = ()) -> list[str]:
    """Workloads × libraries; each other cell carries ``base`` ÷ that library in brackets.

    The columns are ``keys`` (by default every library but the PostgreSQL peers and the
    baseline on PostgreSQL, which have a table of their own with simplepyq-postgres as
    the base); the rows are the workloads some library other than the base runs.
    """
    keys = keys or tuple(key for key in ALL
                         if key not in (*PG_PEERS, AS_BEFORE_ON_POSTGRES.key))
    shown = [w for w in mode.workloads if len(w.libraries) > 1 and not w.feature
             and any(key in w.libraries for key in keys if key != base.key)]
    header = ["workload", *(BY_KEY[key].key for key in keys)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for workload in shown:
        row = results.get(workload.key, {})
        ours = row.get(base.key)
        cells = [workload.title + (" (ms)" if workload.unit == "ms" else "")]
        for key in keys:
            cell = row.get(key) if key in workload.libraries else None
            text = cell_text(cell, workload.unit)
            if key != base.key and cell is not None:
                text += ratio_text(ours, cell)
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def postgres_deep_table(results: dict[str, dict[str, Result]]) -> list[str]:
    """simplepyq-postgres draining with 100k tasks queued against 10k: the cost of depth."""
    rows = []
    for workers in (1, 4):
        small = results.get(f"w2_drain_10k_{workers}w", {}).get(ON_POSTGRES.key) or {}
        large = results.get(f"w2_drain_100k_{workers}w", {}).get(ON_POSTGRES.key) or {}
        if small.get("value") and large.get("value"):
            rows.append(f"| W2 ratio drain 100k ÷ 10k queued, {workers} "
                        f"worker{'s' * (workers > 1)} | {large['value'] / small['value']:.2f} |")
    return ["| measurement | simplepyq-postgres |", "|---|---|", *rows] if rows else []


def ours_table(results: dict[str, dict[str, Result]], mode: Mode) -> list[str]:
    """The measurements of simplepyq alone: depth, several processes, memory."""
    def get(key: str) -> Result:
        return results.get(key, {}).get(OURS.key) or {}

    titles = {w.key: w.title for w in mode.workloads}

    def compared(base: str, other: str, ratio: str) -> list[str]:
        rows = [f"| {titles[key]} | {cell_text(get(key), 'tasks/s')}"
                f"{' tasks/s' if get(key).get('value') else ''} |" for key in (base, other)]
        if get(base).get("value") and get(other).get("value"):
            rows.append(f"| {ratio} | {get(other)['value'] / get(base)['value']:.2f} |")
        return rows

    lines = ["| measurement | simplepyq |", "|---|---|",
             *compared("w4_empty", "w4_deep", "W4 ratio deep ÷ empty (target ≥ 0.8)"),
             *compared("w5_one", "w5_four", "W5 ratio 4 processes ÷ 1 (target ≥ 1)")]
    four = get("w5_four")
    if four:
        locked = max((run.get("locked_errors", 0) for run in four.get("runs", [])), default=0)
        failed = max((run.get("failed", 0) for run in four.get("runs", [])), default=0)
        other = max((len(run.get("other_errors", [])) for run in four.get("runs", [])),
                    default=0)
        lines.append(f"| W5 'database is locked' errors reaching user code (worst run) | "
                     f"{locked} (other errors: {other}; failed tasks: {failed}) |")
    small = get("w2_drain_10k_1w")
    large = get("w2_drain_100k_1w")
    for label, cell in (("10k", small), ("100k", large)):
        if cell.get("peak_rss_mb"):
            lines.append(f"| peak RSS of the worker process draining with {label} queued | "
                         f"{cell['peak_rss_mb']:.0f} MiB |")
    return lines


def scaling_table(results: dict[str, dict[str, Result]]) -> list[str]:
    """Tasks/s of 1, 2 and 4 worker processes on each backend, and the gain over one."""
    lines = ["| worker processes (× 4 threads) | SQLite | PostgreSQL |", "|---|---|---|"]
    for processes in SCALE_PROCESSES:
        cells = []
        for library in (OURS, ON_POSTGRES):
            cell = results.get(f"s{processes}_processes", {}).get(library.key)
            one = results.get("s1_processes", {}).get(library.key)
            text = cell_text(cell, "tasks/s")
            if processes > 1 and cell and one and cell.get("value") and one.get("value"):
                text += f" (×{cell['value'] / one['value']:.2f} of one)"
            cells.append(text)
        lines.append(f"| {processes} | " + " | ".join(cells) + " |")
    return lines


def baseline_table(results: dict[str, dict[str, Result]], mode: Mode) -> list[str]:
    """No cost when unused: simplepyq ÷ simplepyq at BASELINE on the plain enqueues and
    drains, on each backend; the target is at least 0.95 (within 5%)."""
    rows = []
    for workload in mode.workloads:
        if AS_BEFORE.key not in workload.libraries or workload.unit != "tasks/s":
            continue
        cells = []
        for now, then in ((OURS, AS_BEFORE), (ON_POSTGRES, AS_BEFORE_ON_POSTGRES)):
            ours = results.get(workload.key, {}).get(now.key) or {}
            before = results.get(workload.key, {}).get(then.key) or {}
            if ours.get("value") and before.get("value"):
                ratio = ours["value"] / before["value"]
                cells.append(f"{ratio:.2f}" + ("" if ratio >= 0.95 else " (below 0.95)"))
            else:
                cells.append("—")
        if any(cell != "—" for cell in cells):
            rows.append(f"| {workload.title} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [f"No cost when unused: simplepyq ÷ simplepyq at {BASELINE} (before this round's "
            "features) on the same workloads, in tasks/s; the target is at least 0.95.", "",
            "| workload | SQLite | PostgreSQL |", "|---|---|---|", *rows]


def features_table(results: dict[str, dict[str, Result]], mode: Mode) -> list[str]:
    """Each feature against the same work without it (feature ÷ plain), simplepyq alone on
    each backend; the rate limit's achieved rate against the limit."""
    workloads = {workload.key: workload for workload in mode.workloads}
    rows = []
    for measured, plain in FEATURE_ROWS:
        if measured not in workloads or measured not in results:
            continue
        feature = workloads[measured]
        against = workloads[plain].title.removeprefix("F ") if plain else "its limit"
        cells = [_feature_cell(feature, results.get(measured, {}).get(library.key),
                               results.get(plain, {}).get(library.key))
                 for library in (OURS, ON_POSTGRES)]
        rows.append(f"| {feature.title.removeprefix('F ')} | {against} | "
                    + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["Features (F rows): simplepyq with each feature ÷ the same work without it, "
            "interleaved run by run, in tasks/s; for the rate limit, the rate of task starts "
            "achieved ÷ the limit.", "",
            "| feature | compared with | SQLite | PostgreSQL |", "|---|---|---|---|", *rows]


def _feature_cell(workload: Workload, cell: Result | None, plain: Result | None) -> str:
    """``feature ÷ plain = ratio``, or ``achieved ÷ limit = ratio`` for a rate limit."""
    if not cell or not cell.get("value"):
        return cell_text(cell, workload.unit)
    if "limit" in workload.params:
        limit = workload.params["limit"]
        return f"{cell['value']:.0f}/s ÷ {limit}/s = {cell['value'] / limit:.3f}"
    if not plain or not plain.get("value"):
        return cell_text(cell, workload.unit)
    ratio = cell["value"] / plain["value"]
    return (f"{cell_text(cell, workload.unit)} ÷ {cell_text(plain, workload.unit)} = "
            + (f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"))


def count_instructions(sources: dict[str, Path], log: Callable[[str], None]
                       ) -> tuple[dict[str, Result], str]:
    """Instructions per task of the simplepyq in each source (``bench/instructions.py``),
    by library key; and a note for the table: how they were counted, or why not."""
    if not instructions.available():
        return {}, "not counted: valgrind is not installed (apt-get install -y valgrind)"
    counts: dict[str, Result] = {}
    for key, source in sources.items():
        log(f"counting instructions per task for {key} with callgrind (about a minute)")
        try:
            counts[key] = instructions.per_task(source, log=log)
        except (RuntimeError, subprocess.SubprocessError) as error:
            log(f"instructions of {key} not counted: {error}")
    small, large = instructions.SIZES
    return counts, (f"callgrind, SQLite, (count at {large:,} tasks - count at {small:,}) ÷ "
                    f"{large - small:,}; {instructions.conditions()}")


def instructions_table(counts: dict[str, Result], note: str) -> list[str]:
    """Instructions per task for this checkout and the baseline, and their ratio."""
    keys = [key for key in (OURS.key, AS_BEFORE.key) if key in counts]
    if not keys:
        return [f"Instructions per task: {note}." if note else
                "Instructions per task: not counted in this run."]
    both = len(keys) == 2
    header = ["instructions per task", *keys,
              *([f"simplepyq ÷ {BASELINE} (below 1: fewer)"] if both else [])]
    lines = [f"Instructions per task ({note}):", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for scenario, label in instructions.SCENARIOS.items():
        cells = [instructions.thousands(counts[key][scenario]) for key in keys]
        if both:
            cells.append(f"{counts[OURS.key][scenario] / counts[AS_BEFORE.key][scenario]:.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def render(results: dict[str, dict[str, Result]], mode: Mode, meta: Result) -> str:
    notes = [
        f"Mode **{mode.name}** (median of {mode.reps} run{'s' * (mode.reps > 1)} per figure; "
        f"a timed operation stops after {mode.budget:g} s and is then not repeated; latency: "
        f"one run of up to {mode.latency_budget:g} s), {meta['date']}, Python {meta['python']}, "
        f"SQLite {meta['sqlite']}, PostgreSQL {meta['postgres']}, {meta['cpus']} CPUs, "
        f"simplepyq at {meta['source']}.",
        "",
        "Tasks per second unless marked; (×r) is simplepyq ÷ that library, so above 1 "
        "simplepyq is faster for throughput and below 1 it is faster for latency. "
        "\\* = stopped at the time budget: the rate over the tasks it did. "
        "— = not measured (the library has no such API, or it is a reference).",
        "",
    ]
    body = [*notes, *comparison_table(results, mode), "", *ours_table(results, mode), "",
            "Scaling out (S rows above):", "", *scaling_table(results), "",
            *postgres_section(results, mode, meta)]
    counted = instructions_table(results.get(INSTRUCTIONS, {}), meta.get(INSTRUCTIONS, ""))
    for table in (baseline_table(results, mode), counted, features_table(results, mode)):
        body += ["", *table] if table else []
    return "\n".join(body)


def postgres_section(results: dict[str, dict[str, Result]], mode: Mode, meta: Result
                     ) -> list[str]:
    """simplepyq-postgres and the PostgreSQL peers: one server, one run, their own table."""
    keys = (ON_POSTGRES.key, AS_BEFORE_ON_POSTGRES.key, *PG_PEERS)
    if not any(key in row for row in results.values() for key in keys):
        return [f"PostgreSQL and its peers: {meta['postgres']}."
                if str(meta["postgres"]).startswith("not measured")
                else "PostgreSQL and its peers: not measured in this run."]
    deep = postgres_deep_table(results)
    return ["PostgreSQL: simplepyq-postgres and the PostgreSQL peers on the same server, in "
            "the same run; here (×r) is simplepyq-postgres ÷ that library.", "",
            *comparison_table(results, mode, ON_POSTGRES, keys), *(["", *deep] if deep else [])]


def update_readme(table: str) -> None:
    text = README.read_text()
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < 0:
        return
    README.write_text(text[:start + len(TABLE_START)] + "\n" + table + "\n" + text[end:])


def render_chart(peers_python: Path, log: Callable[[str], None]) -> None:
    done = subprocess.run([str(peers_python), str(BENCH / "chart.py"), str(RESULTS),
                           str(CHART)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        log(f"chart not rendered: {done.stderr.strip()[-300:]}")


def source_description(source: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(source), *args], capture_output=True,
                              text=True, check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return str(source)
    dirty = git("status", "--porcelain", "--", "simplepyq")
    return f"commit {commit}" + (" + uncommitted changes" if dirty else "")


def postgres_version() -> str:
    """The measured server's version, or why PostgreSQL was not measured."""
    url = os.environ.get(POSTGRES_URL)
    if not url:
        return f"not measured (set {POSTGRES_URL})"
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "unknown"


# -- main ----------------------------------------------------------------------
def plan(mode: Mode, only: set[str] | None, workloads: set[str] | None
         ) -> Iterator[tuple[tuple[Workload, ...], tuple[Library, ...]]]:
    """(workloads run interleaved, libraries run interleaved): a pair's workloads
    together, others alone; simplepyq and its baseline (906af25) on the same backend
    together, rep by rep, so that a change of load during the run does not bias their
    ratio (each other library alone)."""
    chosen = [w for w in mode.workloads
              if not workloads or any(w.key.startswith(prefix) for prefix in workloads)]
    groups: list[tuple[Workload, ...]] = []
    for workload in chosen:
        if groups and workload.pair and groups[-1][0].pair == workload.pair:
            groups[-1] = (*groups[-1], workload)
        else:
            groups.append((workload,))
    for group in groups:
        keys = [key for key in group[0].libraries
                if (only is None or key in only) and (not BY_KEY[key].postgres
                                                      or os.environ.get(POSTGRES_URL))]
        for key in keys:
            if BASELINE_OF.get(key) in keys:
                continue  # run with the library it is the baseline of
            partner = next((base for base, of in BASELINE_OF.items()
                            if of == key and base in keys), None)
            yield group, tuple(BY_KEY[k] for k in (key, partner) if k is not None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true",
                        help="one run per figure, 10k-task drains, 1.2 s budgets (3-5 min)")
    parser.add_argument("--only", help="comma-separated libraries: " + ", ".join(ALL))
    parser.add_argument("--workloads", help="comma-separated workload key prefixes, "
                        "e.g. w1,w3 (default: all)")
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="directory holding the simplepyq package to measure "
                        "(default: this checkout)")
    parser.add_argument("--no-write", action="store_true",
                        help="print the tables only; leave results.json, chart and README")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    mode = modes()["quick" if args.quick else "full"]
    only = set(args.only.split(",")) if args.only else None
    if only and not only <= set(ALL):
        parser.error(f"unknown libraries {', '.join(sorted(only - set(ALL)))}; "
                     f"known: {', '.join(ALL)}")
    chosen = set(args.workloads.split(",")) if args.workloads else None
    if importlib.util.find_spec("msgpack") is None:
        parser.error(f"{sys.executable} cannot import msgpack, which simplepyq needs; "
                     "run this with the project's environment (pip install -e .)")
    peers_python = ensure_peers(log)
    wanted = [key for key in ALL if only is None or key in only]
    if not os.environ.get(POSTGRES_URL):
        wanted = [key for key in wanted if not BY_KEY[key].postgres]
        skipped = [key for key in ALL if key not in wanted and (only is None or key in only)]
        if skipped:
            log(f"not measured: {', '.join(skipped)} (PostgreSQL: set {POSTGRES_URL})")
    peers312_python = None
    if any(BY_KEY[key].python312 for key in wanted):
        peers312_python = ensure_peers312(log)
        if peers312_python is None:
            skipped = [key for key in wanted if BY_KEY[key].python312]
            log(f"not measured: {', '.join(skipped)} (needs Python >= 3.12: none found on "
                "PATH or among pyenv's versions)")
            wanted = [key for key in wanted if key not in skipped]
    baseline_python = None
    if any(BY_KEY[key].baseline for key in wanted):
        baseline_python = ensure_baseline(log)
        if baseline_python is None:
            wanted = [key for key in wanted if not BY_KEY[key].baseline]
    only = set(wanted)
    began = time.perf_counter()
    results: dict[str, dict[str, Result]] = {}
    with tempfile.TemporaryDirectory(prefix="simplepyq-bench-") as workdir:
        runner = Runner(peers_python, args.source.resolve(), Path(workdir), log,
                        peers312_python=peers312_python, baseline_python=baseline_python)
        for group, libraries in plan(mode, only, chosen):
            runs: dict[tuple[str, str], list[Result]] = {
                (library.key, workload.key): [] for library in libraries for workload in group}
            active = list(libraries)
            # Latency is one run of many samples; a run that hit its time budget is not
            # repeated: it already is a long run at a steady rate, and slow peers would
            # otherwise take most of the time.
            for rep in range(1 if group[0].unit == "ms" else mode.reps):
                for library in list(active):
                    for workload in group:
                        clock = time.perf_counter()
                        result = runner.measure(workload, library, mode, rep)
                        runs[library.key, workload.key].append(result)
                        log(f"{workload.title:<52} {library.key:<16} run {rep + 1}: "
                            f"{cell_text(summarize([result]), workload.unit):<14} "
                            f"[{time.perf_counter() - clock:4.1f} s]"
                            + (f"  [{result['error']}]" if "error" in result else ""))
                    if any(runs[library.key, workload.key][-1].get("unsupported")
                           or runs[library.key, workload.key][-1].get("partial")
                           for workload in group):
                        active.remove(library)
                if not active:
                    break
            for library in libraries:
                for workload in group:
                    results.setdefault(workload.key, {})[library.key] = summarize(
                        runs[library.key, workload.key])
    counted = ""  # how the instructions were counted, or why not
    sources = {key: source for key, source in ((OURS.key, args.source.resolve()),
                                               (AS_BEFORE.key, BASELINE_VENV / "src"))
               if key in only}
    if sources and (chosen is None or any(INSTRUCTIONS.startswith(p) for p in chosen)):
        # After the timed runs, which callgrind's CPU-bound processes would slow down.
        results[INSTRUCTIONS], counted = count_instructions(sources, log)
    meta: Result = {
        "mode": mode.name, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "postgres": postgres_version(),
        "cpus": os.cpu_count(), "source": source_description(args.source.resolve()),
        "seconds": round(time.perf_counter() - began, 1),
        "peers": [*_pinned(REQUIREMENTS), *_pinned(REQUIREMENTS312)],
        "workloads": {w.key: {"title": w.title, "unit": w.unit, "chart": w.chart,
                              "libraries": list(w.libraries)} for w in mode.workloads},
        "libraries": {library.key: library.label for library in LIBRARIES},
    }
    meta[INSTRUCTIONS] = counted
    table = render(results, mode, meta)
    print(table)
    log(f"took {meta['seconds']:.0f} s")
    if not args.no_write:
        RESULTS.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
        update_readme(table)
        render_chart(peers_python, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
