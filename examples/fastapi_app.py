"""A FastAPI application whose endpoints enqueue tasks and await their results, with
workers started and stopped by its lifespan, or beside it.

    uvicorn fastapi_app:app                  # workers in the app's process
    SIMPLEPYQ_WORKERS=none uvicorn fastapi_app:app
    simplepyq worker fastapi_app:queue       # ... and workers beside it

Every call from an endpoint is an ``*_async`` one, so that the event loop never
waits for the store. The store is ``$FASTAPI_TASKS_DB``, or ``fastapi_tasks.db``
in the current directory. The how-to guide "Use it from Django, Flask or FastAPI"
explains it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from simplepyq import SimplePyQ, Status

queue = SimplePyQ(os.environ.get("FASTAPI_TASKS_DB", "fastapi_tasks.db"))


@queue.channel("thumbnail", max_workers=2, time_limit=30)
async def make_thumbnail(args: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.01)  # your image library goes here
    return {"path": args["path"], "thumbnail": f"{args['path']}.thumb.jpg", "size": args["size"]}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the workers with the app, unless ``$SIMPLEPYQ_WORKERS`` is ``none``; stop
    them with it, letting running tasks finish."""
    if os.environ.get("SIMPLEPYQ_WORKERS") != "none":
        queue.start()
    try:
        yield
    finally:
        await asyncio.to_thread(queue.stop)  # waits for running tasks, off the loop


app = FastAPI(lifespan=lifespan)


class Thumbnail(BaseModel):
    path: str
    size: int = 128


@app.post("/thumbnails", status_code=202)
async def create_thumbnail(request: Thumbnail) -> dict[str, int]:
    """Enqueue and answer at once."""
    task_id = await queue.enqueue_async("thumbnail", request.model_dump(), retries=2)
    return {"task": task_id}


@app.get("/thumbnails/{task_id}")
async def get_thumbnail(task_id: int, wait: float = 0) -> dict[str, Any]:
    """The task's status and result; with ``wait``, after awaiting it that many seconds."""
    try:
        task = (await queue.wait_async(task_id, timeout=wait) if wait
                else await queue.get_task_async(task_id))
    except ValueError:
        task = None
    except TimeoutError:
        task = await queue.get_task_async(task_id)
    if task is None:
        raise HTTPException(status_code=404, detail=f"no task {task_id}")
    return {"status": task.status, "result": task.result if task.status is Status.DONE else None}
