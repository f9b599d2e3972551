"""One set of local services per PC: a second app finds the first (and brings its window
forward), and a second set of local services on the same broker folder and topics starts no
second replay agent or producer - with the real broker, replay agent and producer."""
from __future__ import annotations

import subprocess

import pytest

from desktop.core.services import ServiceState
from desktop.ui.services import LocalServices
from desktop.ui.single import InstanceServer, ask_running_instance

pytestmark = pytest.mark.integration


def producers_running(prefix: str) -> list[str]:
    """Producer processes on this PC writing to `prefix` topics (found by their command line)."""
    listing = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line for line in listing if " run " in f" {line} " and "--agent" in line and f"--topic-prefix {prefix}" in line]


def test_a_second_start_brings_the_first_window_forward(qtbot, styled_qapp, tmp_path):
    assert not ask_running_instance(tmp_path / "config")
    server = InstanceServer(tmp_path / "config", styled_qapp)
    try:
        with qtbot.waitSignal(server.show_requested, timeout=5_000):
            assert ask_running_instance(tmp_path / "config")
        assert not ask_running_instance(tmp_path / "other-config"), "another settings folder is another app"
    finally:
        server.server.close()
        server.deleteLater()
        qtbot.wait(100)


def test_a_second_set_of_local_services_starts_no_second_producer(qtbot, styled_qapp, tmp_path, topic_prefix):
    data_dir = str(tmp_path / "broker")
    first = LocalServices(replay_speed=5.0, topic_prefix=topic_prefix, broker_data_dir=data_dir)
    second = LocalServices(replay_speed=5.0, topic_prefix=topic_prefix, broker_data_dir=data_dir)
    try:
        with qtbot.waitSignal(first.services_started, timeout=240_000) as started:
            first.start()
        qtbot.waitUntil(lambda: len(producers_running(topic_prefix)) == 1, timeout=30_000)
        with qtbot.waitSignal(second.services_started, timeout=120_000) as again:
            second.start()
        assert again.args == started.args, "the second set must use the running broker"
        assert second.reused and not second.broker_owned
        assert second.states["producer"][0] == ServiceState.RUNNING and "another Machine Monitor" in second.states["producer"][1]
        qtbot.wait(3000)  # anything the second set started would be running by now
        assert len(producers_running(topic_prefix)) == 1, producers_running(topic_prefix)
        assert not second._children, "the second set started a child of its own"
    finally:
        for services in (second, first):
            with qtbot.waitSignal(services.services_stopped, timeout=90_000):
                services.stop()
    assert producers_running(topic_prefix) == []
