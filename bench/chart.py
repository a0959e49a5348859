"""Draw bench/chart.png from bench/results.json: tasks/s per library per workload.

Run by ``bench/run.py`` with the peers' virtualenv, which holds matplotlib, so the
project itself does not depend on it: ``python bench/chart.py results.json chart.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use(): the backend is chosen first

COLORS = ["#d62728", "#ff9896", "#1f77b4", "#2ca02c", "#9467bd", "#bcbd22", "#7f7f7f", "#17becf",
          "#8c564b", "#e377c2", "#ff7f0e", "#aec7e8"]


def main(results_path: str, chart_path: str) -> None:
    data: dict[str, Any] = json.loads(Path(results_path).read_text())
    meta, results = data["meta"], data["results"]
    workloads = [key for key, info in meta["workloads"].items()
                 if info["chart"] and key in results]
    # Only the libraries measured in this run (the PostgreSQL ones need a server).
    libraries = [library for library in meta["libraries"]
                 if any((results[workload].get(library) or {}).get("value")
                        for workload in workloads)]
    figure, axes = plt.subplots(figsize=(12, 6.5))
    width = 0.8 / max(len(libraries), 1)
    for index, library in enumerate(libraries):
        xs, heights, marks = [], [], []
        for position, workload in enumerate(workloads):
            cell = results[workload].get(library) or {}
            value = cell.get("value")
            if value:
                xs.append(position + (index - (len(libraries) - 1) / 2) * width)
                heights.append(value)
                marks.append("*" if cell.get("partial") else "")
        bars = axes.bar(xs, heights, width, label=meta["libraries"][library],
                        color=COLORS[index % len(COLORS)])
        for bar, mark, height in zip(bars, marks, heights, strict=True):
            label = f"{height / 1000:.3g}k" if height >= 1000 else f"{height:.0f}"
            axes.annotate(label + mark, (bar.get_x() + bar.get_width() / 2, height),
                          ha="center", va="bottom", fontsize=6, rotation=90,
                          xytext=(0, 2), textcoords="offset points")
    axes.set_yscale("log")
    axes.set_ylabel("tasks per second (log scale)")
    axes.set_xticks(range(len(workloads)))
    axes.set_xticklabels([meta["workloads"][key]["title"].replace(", ", ",\n", 1)
                          for key in workloads], fontsize=8)
    axes.set_title(f"simplepyq vs peers — {meta['mode']} mode, {meta['date']}, "
                   f"{meta['cpus']} CPUs, Python {meta['python']}, SQLite {meta['sqlite']}"
                   "\n(* stopped at its time budget: rate over the tasks it did)",
                   fontsize=9)
    axes.grid(axis="y", which="both", alpha=0.3)
    axes.set_ylim(top=axes.get_ylim()[1] * 3)  # room for the labels on the tallest bars
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    figure.tight_layout()
    figure.savefig(chart_path, dpi=120)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
