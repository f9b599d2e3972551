"""The feed and core threads give way to a busy GUI thread, but never for longer than allowed."""
from __future__ import annotations

import threading
import time

from desktop.core.batch import Record, build_batch
from desktop.core.gui_priority import GuiPriority
from producer import wire


def _in_thread(function) -> threading.Event:
    done = threading.Event()

    def body() -> None:
        function()
        done.set()

    threading.Thread(target=body, daemon=True).start()
    return done


def test_a_worker_waits_while_the_gui_is_busy_and_goes_on_once_it_is_idle():
    priority = GuiPriority(max_wait=30.0)
    priority.gui_busy()
    done = _in_thread(priority.step_aside)
    # Well before max_wait: a worker that did not wait would be done at once.
    assert not done.wait(0.3), "the worker went on while the GUI was busy"
    priority.gui_idle()
    assert done.wait(10), "the worker still waited after the GUI went idle"
    assert priority.waits == 1


def test_a_gui_that_is_never_idle_holds_a_worker_back_for_max_wait_at_most():
    priority = GuiPriority(max_wait=0.05)
    priority.gui_busy()
    began = time.monotonic()
    done = _in_thread(lambda: [priority.step_aside() for _ in range(3)])
    assert done.wait(10), "a busy GUI stopped the worker"
    assert time.monotonic() - began >= 0.15 - 0.01  # it did wait, three times
    assert priority.waits == 3


def test_an_idle_gui_and_the_gui_thread_itself_never_wait():
    priority = GuiPriority(max_wait=30.0)
    done = _in_thread(priority.step_aside)
    assert done.wait(10)
    priority.gui_busy()
    began = time.monotonic()
    priority.step_aside()  # this thread made it: the GUI thread
    assert time.monotonic() - began < 10
    assert priority.waits == 0


def test_decoding_a_big_batch_gives_way_every_chunk_and_keeps_every_record():
    topic = wire.topic_name(wire.OBSERVATIONS)
    observation = {"agent": "http://a:5000", "instance_id": 1, "device_uuid": "d-1", "device_name": "M",
                   "sequence": 1, "timestamp": "2026-12-02T07:00:00.000Z", "component": None, "component_id": None,
                   "data_item_id": "x", "name": None, "category": "EVENT", "type": "EXECUTION", "sub_type": None,
                   "units": None, "value": "ACTIVE"}
    records = [Record(topic, 0, offset, b"d-1", wire.encode(dict(observation, sequence=offset + 1)), 1)
               for offset in range(5000)]
    calls = []
    batch = build_batch(records, pause=lambda: calls.append(1))
    assert len(batch.observations) == 5000
    assert [o["sequence"] for o in batch.observations] == list(range(1, 5001))
    # One pause per 1,024 records: 4 in 5,000.
    assert len(calls) == 4
