"""An asyncio application that enqueues tasks and awaits their results.

Two request handlers, as a web framework (FastAPI, Starlette, aiohttp) would call
them: ``signup`` enqueues a welcome email and answers at once; ``report`` enqueues
a report and awaits it. Workers run in the same process (``start()``); every call
from the event loop is an ``*_async`` one, so the loop keeps serving while the
store is busy. A ticker counts the loop's turns to show it never stalls.

Run it with ``python examples/async_app.py``; its store lives in a temporary
directory, removed when it ends.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

from simplepyq import SimplePyQ, Status


def send_welcome(args: dict[str, str]) -> str:
    return f"welcome mail sent to {args['email']}"


async def build_report(args: dict[str, int]) -> dict[str, int]:
    await asyncio.sleep(0.05)  # an async def task runs on its worker's own loop
    return {"month": args["month"], "orders": 40 + args["month"]}


async def signup(queue: SimplePyQ, email: str) -> dict[str, object]:
    task_id = await queue.enqueue_async("email", {"email": email}, retries=3)
    return {"status": 202, "task": task_id}


async def report(queue: SimplePyQ, month: int) -> dict[str, object]:
    task_id = await queue.enqueue_async("report", {"month": month})
    task = await queue.wait_async(task_id, timeout=30)
    if task.status is not Status.DONE:
        return {"status": 500, "error": task.error}
    return {"status": 200, "report": task.result}


async def serve(queue: SimplePyQ) -> None:
    turns = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    began = time.monotonic()
    answers = await asyncio.gather(signup(queue, "ada@example.com"),
                                   report(queue, 3), report(queue, 4))
    stop.set()
    await ticking
    welcome, *reports = answers
    print(f"signup answered {welcome['status']}")
    for answer in reports:
        print(f"report answered {answer['status']}: {answer['report']}")
    email = await queue.wait_async(welcome["task"], timeout=30)  # type: ignore[arg-type]
    print(f"email task: {email.status} {email.result!r}")
    print(f"the loop turned {turns} times in {time.monotonic() - began:.2f} s")


def main() -> None:
    with tempfile.TemporaryDirectory() as directory, \
            SimplePyQ(os.path.join(directory, "tasks.db")) as queue:
        queue.add_channel("email", send_welcome)
        queue.add_channel("report", build_report, max_workers=2)
        queue.start()
        asyncio.run(serve(queue))


if __name__ == "__main__":
    main()
