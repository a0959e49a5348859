"""Periodic tasks: one task per tick, across every process, on time zones' terms.

Ticks are computed by ``Spec`` (cron through cronsim, or ``every``) and fired by a
``Ticker`` that any process running workers runs in its housekeeper: the compare-
and-set on the schedule's row makes exactly one task per tick. Most tests drive a
``Ticker`` with a clock of their own on a real store (no waiting for real minutes);
the multi-process ones use real time with a sub-second ``every``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from simplepyq import SimplePyQ, Status, current_task
from simplepyq.periodic import MAX_CATCH_UP, ON_TIME, Spec, Ticker
from simplepyq.storage import open_store
from tests.backends import raw_sql
from tests.support import ROOT, spawn_python, wait_until

HOUR = 3600.0


def at(text: str, zone: str = "UTC") -> float:
    """The epoch time of a local ``YYYY-MM-DD HH:MM`` in ``zone``."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo(zone)).timestamp()


def local(epoch: float, zone: str) -> str:
    return datetime.fromtimestamp(epoch, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def ticks(spec: Spec, start: float, count: int) -> list[float]:
    found, moment = [], start
    for _ in range(count):
        moment = spec.after(moment, start)
        found.append(moment)
    return found


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _next_at(store_path: str, name: str) -> float:
    """A schedule's next tick, as stored."""
    [(next_at,)] = raw_sql(store_path, "SELECT next_at FROM simplepyq_schedules WHERE name = ?",
                           (name,))
    return float(next_at)


def _tasks(store_path: str) -> list[tuple[int, float]]:
    """(task id, tick) of every periodic task, in tick order."""
    return [(int(task_id), float(tick)) for task_id, tick in raw_sql(
        store_path, "SELECT task_id, scheduled_at FROM simplepyq_ticks ORDER BY scheduled_at")]


# -- when ticks come -------------------------------------------------------------


def test_cron_ticks_follow_the_expression_with_names_ranges_steps_and_lists() -> None:
    spec = Spec(cron="15,45 9-10 * * mon-fri").check()
    start = at("2026-11-27 10:50")  # a Friday
    assert [local(t, "UTC") for t in ticks(spec, start, 3)] == [
        "2026-11-30 09:15 UTC", "2026-11-30 09:45 UTC", "2026-11-30 10:15 UTC"]
    assert [local(t, "UTC") for t in ticks(Spec(cron="@monthly").check(), start, 2)] == [
        "2026-12-01 00:00 UTC", "2027-01-01 00:00 UTC"]


def test_day_of_month_and_day_of_week_combine_as_cron_combines_them() -> None:
    spec = Spec(cron="0 12 13 * fri").check()  # the 13th, or any Friday
    days = [local(t, "UTC")[:10] for t in ticks(spec, at("2026-11-01 00:00"), 4)]
    assert days == ["2026-11-06", "2026-11-13", "2026-11-20", "2026-11-27"]


@pytest.mark.parametrize(("zone", "spring", "autumn", "repeated", "summer"), [
    ("Europe/Berlin", "2026-03-29", "2026-10-25", 2, "CEST"),
    ("America/New_York", "2026-03-08", "2026-11-01", 1, "EDT"),
])
def test_a_daily_job_runs_once_on_both_daylight_saving_days(
    zone: str, spring: str, autumn: str, repeated: int, summer: str
) -> None:
    skipped = Spec(cron="30 2 * * *", tz=zone).check()
    day_after = (datetime.strptime(spring, "%Y-%m-%d") + timedelta(days=1)).strftime("%Y-%m-%d")
    # 02:30 does not exist that night: it runs once, at the next valid instant.
    assert [local(t, zone) for t in ticks(skipped, at(f"{spring} 00:00", zone), 2)] == [
        f"{spring} 03:00 {summer}", f"{day_after} 02:30 {summer}"]
    # The hour from {repeated}:00 comes twice that night: {repeated}:30 runs once, the first.
    twice = Spec(cron=f"30 {repeated} * * *", tz=zone).check()
    first, second = ticks(twice, at(f"{autumn} 00:00", zone), 2)
    assert local(first, zone) == f"{autumn} 0{repeated}:30 {summer}"
    assert second - first == 25 * HOUR


def test_every_ticks_count_from_the_first_tick_whatever_the_zone() -> None:
    spec = Spec(every=0.25).check()
    assert ticks(spec, 1000.0, 3) == [1000.25, 1000.5, 1000.75]
    assert spec.after(1001.1, anchor=1000.0) == 1001.25
    # The next tick after a tick is later, whatever the rounding of the division.
    tenth, anchor = Spec(every=0.1).check(), 1795923204.1573107
    assert all(tenth.after(anchor + k * 0.1, anchor) > anchor + k * 0.1 for k in range(5000))


# -- after downtime --------------------------------------------------------------


def test_catch_up_latest_runs_only_the_most_recent_missed_tick_if_it_is_young_enough() -> None:
    spec = Spec(cron="0 * * * *").check()  # hourly: max_delay defaults to an hour
    due, following = spec.due(at("2026-11-29 01:00"), at("2026-11-29 05:30"))
    assert (due, following) == ([at("2026-11-29 05:00")], at("2026-11-29 06:00"))
    daily = Spec(cron="0 3 * * *", max_delay=2 * HOUR).check()
    assert daily.due(at("2026-11-26 03:00"), at("2026-11-29 04:59"))[0] == [at("2026-11-29 03:00")]
    assert daily.due(at("2026-11-26 03:00"), at("2026-11-29 05:01"))[0] == []


def test_catch_up_all_runs_every_missed_tick_up_to_the_cap() -> None:
    spec = Spec(every=60.0, catch_up="all").check()
    due, following = spec.due(1000.0, 1000.0 + 60 * 5 + 1)
    assert due == [1000.0 + 60 * n for n in range(6)] and following == 1000.0 + 60 * 6
    many, _ = spec.due(1000.0, 1000.0 + 60 * 10_000)
    assert len(many) == MAX_CATCH_UP and many[-1] == 1000.0 + 60 * 10_000


def test_catch_up_none_runs_no_tick_missed_while_nothing_ran() -> None:
    spec = Spec(every=HOUR, catch_up="none").check()
    assert spec.due(1000.0, 1000.0 + ON_TIME / 2)[0] == [1000.0]  # merely late
    assert spec.due(1000.0, 1000.0 + 5 * HOUR + ON_TIME / 2)[0] == [1000.0 + 5 * HOUR]
    assert spec.due(1000.0, 1000.0 + 5 * HOUR + ON_TIME + 1)[0] == []


def test_ticks_of_a_short_period_due_at_one_look_all_run_whatever_the_policy() -> None:
    for catch_up in ("latest", "none"):
        spec = Spec(every=0.1, catch_up=catch_up).check()
        assert spec.due(1000.0, 1000.45)[0] == [1000.0, 1000.1, 1000.2, 1000.3, 1000.4]


# -- exactly one task per tick ----------------------------------------------------


@pytest.fixture
def ticking(queue: SimplePyQ, store_path: str) -> Iterator[tuple[SimplePyQ, Any]]:
    """The test's queue with channel "t", and a factory of Tickers on their own stores."""
    queue.declare("t")
    stores: list[Any] = []

    def ticker(clock: Clock) -> Ticker:
        stores.append(open_store(store_path, 30.0))
        return Ticker(stores[-1], clock)

    yield queue, ticker
    for store in stores:
        store.close()


def test_ticks_come_due_with_the_clock_each_enqueued_once_with_its_tick(
    ticking: tuple[SimplePyQ, Any], store_path: str
) -> None:
    queue, ticker = ticking
    queue.add_periodic("report", "t", every=10.0, args={"kind": "report"})
    first = _next_at(store_path, "report")
    clock = Clock(first - 1)
    one, other = ticker(clock), ticker(clock)
    assert one.tick() == 0  # not due yet
    clock.now += 1
    assert (one.tick(), other.tick()) == (1, 0)  # the other finds it fired
    clock.now += 10
    assert (other.tick(), one.tick()) == (1, 0)
    made = _tasks(store_path)
    assert [tick for _, tick in made] == [first, first + 10]
    task = queue.get_task(made[0][0])
    assert task is not None and task.args == {"kind": "report"} and task.channel == "t"
    listed = queue.periodics()[0]
    assert listed.last_task == made[-1][0] and listed.last_status == "pending"
    assert listed.next_run == datetime.fromtimestamp(first + 20, timezone.utc)


def test_tickers_racing_in_threads_make_one_task_per_tick(
    ticking: tuple[SimplePyQ, Any], store_path: str
) -> None:
    queue, ticker = ticking
    queue.add_periodic("fast", "t", every=1.0, catch_up="all")
    start = _next_at(store_path, "fast")
    clocks = [Clock(start) for _ in range(4)]
    tickers = [ticker(clock) for clock in clocks]

    def run(index: int) -> None:
        for step in range(50):
            clocks[index].now = start + step
            tickers[index].tick()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [tick for _, tick in _tasks(store_path)] == [start + n for n in range(50)]


def test_overlap_false_skips_a_tick_while_the_previous_task_is_unfinished(
    ticking: tuple[SimplePyQ, Any], store_path: str
) -> None:
    queue, ticker = ticking
    queue.add_periodic("sync", "t", every=5.0, overlap=False)
    clock = Clock(_next_at(store_path, "sync"))
    tick = ticker(clock)
    assert tick.tick() == 1
    clock.now += 5
    assert tick.tick() == 0  # the first task is still pending
    [(first, _)] = _tasks(store_path)
    queue.add_channel("t", lambda args: None)
    queue.run_until_complete(timeout=30)
    clock.now += 5
    assert tick.tick() == 1
    made = [task_id for task_id, _ in _tasks(store_path)]
    assert len(made) == 2 and made[0] == first


def test_a_periodic_task_knows_its_tick(queue: SimplePyQ) -> None:
    seen: list[Any] = []
    queue.add_channel("t", lambda args: seen.append(current_task().scheduled_at))  # type: ignore[union-attr]
    queue.add_periodic("now", "t", every=0.05, catch_up="all")
    queue.start()
    wait_until(lambda: len(seen) >= 2, timeout=30)
    queue.stop()
    assert all(isinstance(when, datetime) and when.tzinfo is timezone.utc for when in seen)
    assert (seen[1] - seen[0]).total_seconds() == pytest.approx(0.05)
    task_id = queue.enqueue("t", None)
    queue.run_until_complete(timeout=30)
    assert seen[-1] is None and queue.get_task(task_id) is not None


# -- declaring ----------------------------------------------------------------------


def test_declaring_a_schedule_again_keeps_its_next_tick_and_changing_it_replaces_it(
    store_path: str
) -> None:
    with SimplePyQ(store_path) as q:
        q.declare("t")
        q.add_periodic("job", "t", cron="*/5 * * * *", tz="Europe/Berlin")
        first = q.periodics()[0]
    with SimplePyQ(store_path) as q:  # another process declares it as it is
        q.add_periodic("job", "t", cron="*/5 * * * *", tz="Europe/Berlin")
        assert q.periodics() == [first]
    with SimplePyQ(store_path) as q:  # and another, differently
        q.add_periodic("job", "t", cron="@hourly")
        [changed] = q.periodics()
        assert (changed.cron, changed.tz) == ("@hourly", "UTC")
        assert q.remove_periodic("job") is True and q.periodics() == []
        assert q.remove_periodic("job") is False


@pytest.mark.parametrize(("keywords", "error", "message"), [
    ({"cron": "61 * * * *"}, ValueError, r"invalid cron expression '61 \* \* \* \*'"),
    ({"cron": "* * *"}, ValueError, "invalid cron expression"),
    ({"cron": "@daily", "every": 60}, ValueError, "exactly one of cron= and every="),
    ({}, ValueError, "exactly one of cron= and every="),
    ({"every": 0}, ValueError, "every must be more than 0 seconds"),
    ({"every": "5m"}, TypeError, "every must be a number of seconds or a timedelta"),
    ({"cron": "@daily", "tz": "Mars/Olympus"}, ValueError, "unknown time zone 'Mars/Olympus'"),
    ({"every": 1, "catch_up": "some"}, ValueError, "catch_up must be one of latest, all, none"),
])
def test_bad_schedules_are_refused_at_the_call_naming_the_value(
    queue: SimplePyQ, keywords: dict[str, Any], error: type[Exception], message: str
) -> None:
    queue.declare("t")
    with pytest.raises(error, match=message):
        queue.add_periodic("bad", "t", **keywords)
    assert queue.periodics() == []


def test_a_schedule_of_an_unknown_channel_or_a_name_taken_differently_is_refused(
    queue: SimplePyQ
) -> None:
    with pytest.raises(ValueError, match="unknown channel 'nope'"):
        queue.add_periodic("job", "nope", every=60)
    queue.declare("t")
    queue.add_periodic("job", "t", every=60)
    queue.add_periodic("job", "t", every=60)  # the same again: fine
    with pytest.raises(ValueError, match="schedule 'job' was added differently"):
        queue.add_periodic("job", "t", every=30)


def test_a_schedule_row_this_version_cannot_run_is_reported_and_the_others_run(
    ticking: tuple[SimplePyQ, Any], store_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    queue, ticker = ticking
    queue.add_periodic("good", "t", every=10.0)
    queue.add_periodic("newer", "t", every=10.0)
    queue.add_periodic("broken", "t", every=10.0)
    newer = json.loads(raw_sql(store_path, "SELECT spec FROM simplepyq_schedules "
                                           "WHERE name = 'newer'")[0][0]) | {"version": 99}
    raw_sql(store_path, "UPDATE simplepyq_schedules SET spec = ? WHERE name = 'newer'",
            (json.dumps(newer),))
    raw_sql(store_path, "UPDATE simplepyq_schedules SET spec = '{not json' "
                        "WHERE name = 'broken'")
    clock = Clock(time.time() + 10)
    assert ticker(clock).tick() == 1
    warnings = [r.getMessage() for r in caplog.records if "is skipped" in r.getMessage()]
    assert any("'newer'" in w and "newer simplepyq" in w for w in warnings)
    assert any("'broken'" in w and "unreadable schedule" in w for w in warnings)
    assert {p.name: p.error is not None for p in queue.periodics()} == {
        "broken": True, "good": False, "newer": True}


def test_the_command_line_lists_the_schedules(queue: SimplePyQ, store_path: str) -> None:
    queue.declare("t")
    queue.add_periodic("nightly", "t", cron="30 2 * * *", tz="Europe/Berlin")
    out = subprocess.run([sys.executable, "-m", "simplepyq", "--db", store_path, "periodic",
                          "--json"], capture_output=True, text=True, check=True, cwd=ROOT,
                         timeout=60).stdout
    [listed] = json.loads(out)
    assert (listed["name"], listed["cron"], listed["tz"], listed["last_task"]) == (
        "nightly", "30 2 * * *", "Europe/Berlin", None)
    assert datetime.fromisoformat(listed["next_run"]).astimezone(
        ZoneInfo("Europe/Berlin")).strftime("%H:%M") == "02:30"


# -- many processes, and crashes -----------------------------------------------------

WORKER = """
    import sys, time
    from simplepyq import SimplePyQ
    with SimplePyQ(sys.argv[1], poll_interval=0.005) as q:
        q.add_channel("t", lambda args: None, max_workers=4)
        q.add_periodic("fast", "t", every=float(sys.argv[2]), catch_up="all")
        q.start()
        time.sleep(float(sys.argv[3]))
"""


def _expected_ticks(store_path: str, first: float, period: float) -> tuple[list[float], float]:
    """The ticks the schedule has made so far: from ``first`` up to its next tick."""
    [(next_at,)] = raw_sql(store_path, "SELECT next_at FROM simplepyq_schedules")
    count = round((float(next_at) - first) / period)
    return [first + n * period for n in range(count)], float(next_at)


def _fast_schedule(store_path: str, period: float) -> float:
    """Store the schedule the WORKER processes declare; its first tick."""
    with SimplePyQ(store_path) as q:
        q.declare("t")
        q.add_periodic("fast", "t", every=period, catch_up="all")
    return _next_at(store_path, "fast")


def _one_task_per_tick(store_path: str, first: float, period: float) -> int:
    """Check that every tick the schedule has passed made one task, and none more; how
    many ticks."""
    expected, _ = _expected_ticks(store_path, first, period)
    made = [tick for _, tick in _tasks(store_path)]
    assert made == pytest.approx(expected, abs=1e-6)  # each tick once, none missing
    return len(made)


def _wait_for_ticks(store_path: str, count: int) -> None:
    wait_until(lambda: len(_tasks(store_path)) >= count, timeout=120, interval=0.01)


def test_three_processes_of_four_workers_make_exactly_one_task_per_tick(
    store_path: str
) -> None:
    period = 0.05
    first = _fast_schedule(store_path, period)
    children = [spawn_python(WORKER, store_path, str(period), "60") for _ in range(3)]
    try:
        _wait_for_ticks(store_path, 200)
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.communicate(timeout=60)
    assert _one_task_per_tick(store_path, first, period) >= 200


def test_processes_killed_while_ticks_are_due_lose_and_duplicate_none(
    store_path: str
) -> None:
    period = 0.02
    first = _fast_schedule(store_path, period)
    children = [spawn_python(WORKER, store_path, str(period), "60") for _ in range(2)]
    try:
        for round_ in range(6):  # kill one, start another, while ticks keep coming due
            _wait_for_ticks(store_path, 20 * (round_ + 1))
            victim = children.pop(0)
            victim.send_signal(signal.SIGKILL)
            victim.communicate(timeout=60)
            children.append(spawn_python(WORKER, store_path, str(period), "60"))
    finally:
        for child in children:
            child.kill()
            child.communicate(timeout=60)
    assert _one_task_per_tick(store_path, first, period) >= 120
    statuses = {str(row[0]) for row in raw_sql(store_path, "SELECT DISTINCT status FROM tasks")}
    assert statuses <= {Status.DONE.value, Status.PENDING.value, Status.RUNNING.value}



def test_ticks_are_forgotten_with_their_tasks(
    ticking: tuple[SimplePyQ, Any], store_path: str
) -> None:
    queue, ticker = ticking
    queue.add_periodic("often", "t", every=1.0, catch_up="all")
    clock = Clock(_next_at(store_path, "often") + 9)
    assert ticker(clock).tick() == 10
    queue.add_channel("t", lambda args: None)
    queue.run_until_complete(timeout=30)
    ids = [task_id for task_id, _ in _tasks(store_path)]
    raw_sql(store_path, "UPDATE tasks SET finished_at = 1 WHERE id <= ?", (ids[4],))
    queue.set_retention(keep_done=60)
    assert queue.apply_retention() == 5
    assert [task_id for task_id, _ in _tasks(store_path)] == ids[5:]
    assert queue.purge(older_than=0) == 5
    assert _tasks(store_path) == []


@pytest.mark.parametrize(("catch_up", "made"), [("latest", 1), ("all", 6), ("none", 0)])
def test_after_downtime_each_catch_up_policy_enqueues_what_it_says(
    ticking: tuple[SimplePyQ, Any], store_path: str, catch_up: str, made: int
) -> None:
    queue, ticker = ticking
    queue.add_periodic("hourly", "t", every=HOUR, catch_up=catch_up)
    first = _next_at(store_path, "hourly")
    # Nothing ran for five hours and a half: six ticks were missed.
    clock = Clock(first + 5.5 * HOUR)
    assert ticker(clock).tick() == made
    ticks_made = [tick for _, tick in _tasks(store_path)]
    assert ticks_made == [first + n * HOUR for n in range(6)][6 - made:]
    assert _next_at(store_path, "hourly") == first + 6 * HOUR  # then on as before
