"""The solo gate: ordinary tasks run together; a suspect runs with nothing else held."""

from __future__ import annotations

import threading

from simplepyq.solo import SoloGate
from tests.support import wait_until


def test_ordinary_tasks_enter_together_and_none_while_a_suspect_runs() -> None:
    gate = SoloGate()
    assert gate.enter() and gate.enter()
    gate.leave()
    assert gate.begin()  # the one left in the gate is the suspect's own worker
    assert not gate.enter()
    gate.end()
    assert gate.enter()


def test_a_suspect_waits_until_every_other_holder_has_left() -> None:
    gate = SoloGate()
    assert gate.enter()  # another worker, holding a task
    assert gate.enter()  # the suspect's worker
    began = threading.Event()
    suspect = threading.Thread(target=_begin_then_set, args=(gate, began))
    suspect.start()
    wait_until(lambda: _keeps_others_out(gate), timeout=5)
    assert not began.is_set()  # the other worker still holds its task

    gate.leave()
    suspect.join(5)
    assert began.is_set()


def test_a_second_suspect_is_turned_away_while_one_has_the_gate() -> None:
    gate = SoloGate()
    assert gate.enter() and gate.enter()
    done = threading.Event()
    first = threading.Thread(target=_begin_then_set, args=(gate, done))
    first.start()
    wait_until(lambda: _keeps_others_out(gate), timeout=5)

    assert gate.begin() is False  # the second gives its task back...
    gate.leave()  # ...and leaves, which lets the first begin
    first.join(5)
    assert done.is_set()


def _keeps_others_out(gate: SoloGate) -> bool:
    """Whether a suspect holds the gate now (a try to enter is refused)."""
    if gate.enter():
        gate.leave()
        return False
    return True


def _begin_then_set(gate: SoloGate, began: threading.Event) -> None:
    if gate.begin():
        began.set()
