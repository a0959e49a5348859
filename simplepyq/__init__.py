"""simplepyq: a small, crash-safe task queue persisted in SQLite or PostgreSQL.

Tasks are grouped in channels; each channel is bound to a function run by a pool
of worker threads. The documentation (docs/, built with Sphinx) tells the
guarantees and the API; every public name is importable from here.
"""

import logging

from simplepyq.context import TaskContext, current_task
from simplepyq.counters import FinishedMinute
from simplepyq.errors import DelayException, StoreError, TaskCancelled, TaskTimeout
from simplepyq.limits import Limits, Rate
from simplepyq.periodic import Periodic
from simplepyq.policy import Backoff
from simplepyq.queue import SimplePyQ
from simplepyq.task import Attempt, Status, Task, TaskId
from simplepyq.workers import Worker
from simplepyq.workflows import Links, Step, TaskFunction, Workflow, WorkflowStatus

__version__ = "1.0.0"

# The library logs, the application decides where logs go: without this, Python
# would print the library's warnings to stderr when the application set up nothing.
logging.getLogger("simplepyq").addHandler(logging.NullHandler())

__all__ = [
    "Attempt", "Backoff", "DelayException", "FinishedMinute", "Limits", "Links", "Periodic",
    "Rate", "SimplePyQ",
    "Status",
    "Step", "StoreError", "Task", "TaskCancelled", "TaskContext", "TaskFunction", "TaskId",
    "TaskTimeout", "Worker", "Workflow", "WorkflowStatus", "__version__", "current_task",
]
