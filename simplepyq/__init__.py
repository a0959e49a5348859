"""simplepyq: a small, crash-safe task queue persisted in SQLite.

Tasks are grouped in channels; each channel is bound to a function run by a pool
of worker threads. See README.rst for the guarantees and the API.
"""

from simplepyq.errors import DelayException, StoreError
from simplepyq.policy import Backoff
from simplepyq.queue import SimplePyQ
from simplepyq.task import Status, Task

__version__ = "1.0.0"

__all__ = ["Backoff", "DelayException", "SimplePyQ", "Status", "StoreError", "Task", "__version__"]
