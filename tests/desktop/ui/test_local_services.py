"""LocalServices drives child processes asynchronously. The children here are a small stand-in
script with the producer CLI's output contract (it is not Kafka): it prints the same
`bootstrap=` / `listening=` lines, exits with the same codes and logs the signals it gets."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import shiboken6

from desktop.core.services import ServiceState
from desktop.ui.services import LocalServices

FAKE_CLI = textwrap.dedent(
    r'''
    import signal, sys, time
    from pathlib import Path

    state, args = Path(sys.argv[1]), sys.argv[2:]
    def log(line):
        with open(state / "log.txt", "a") as f:
            f.write(line + "\n")
    def flag(name):
        return (state / name).exists()

    log("called " + " ".join(args))
    if args[:2] == ["broker", "status"]:
        if flag("broker-running"):
            print("running bootstrap=127.0.0.1:19092 pid=1 data_dir=x")
            sys.exit(0)
        print("stopped")
        sys.exit(3)
    if args[:2] == ["broker", "start"]:
        print("fetching Kafka jars from Maven Central (first run only)", flush=True)
        if flag("broker-fails"):
            print("error: java not found", file=sys.stderr)
            sys.exit(1)
        print("starting Kafka broker on 127.0.0.1:19092", flush=True)
        (state / "broker-running").touch()
        print("bootstrap=127.0.0.1:19092")
        sys.exit(0)
    if args[:2] == ["broker", "stop"]:
        (state / "broker-running").unlink(missing_ok=True)
        log("broker stopped")
        sys.exit(0)

    name = args[0]
    def on_term(signum, frame):
        log(name + " terminated")
        sys.exit(0)
    if name == "replay" and flag("replay-ignores-term"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, on_term)
    if name == "replay":
        print("listening=http://127.0.0.1:5555")
    if name == "run" and flag("producer-crashes-once"):
        (state / "producer-crashes-once").unlink()
        print("configuration error: boom", file=sys.stderr)
        sys.exit(2)
    while True:
        time.sleep(0.05)
    '''
)


class FakeServices:
    def __init__(self, tmp_path: Path) -> None:
        self.state = tmp_path / "state"
        self.state.mkdir()
        self.script = tmp_path / "fake_producer_cli.py"
        self.script.write_text(FAKE_CLI)

    def command_for(self, args):
        return sys.executable, [str(self.script), str(self.state), *args]

    def set(self, flag: str) -> None:
        (self.state / flag).touch()

    @property
    def log(self) -> list[str]:
        path = self.state / "log.txt"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def fake(tmp_path):
    return FakeServices(tmp_path)


@pytest.fixture
def services_factory(qtbot, fake):
    made = []

    def make(**options):
        options.setdefault("stop_grace", 2.0)
        # Replay position and the one-set-per-PC lock of this test alone.
        options.setdefault("state_dir", fake.state.parent / "services-state")
        services = LocalServices(replay_speed=2.0, topic_prefix="plant1.", command_for=fake.command_for, **options)
        made.append(services)
        return services

    yield make
    # Every set, also one that only shares another's services: it watches them (to take over
    # if they go away) and would otherwise start them again during a later test.
    # (A window whose settings changed has stopped and deleted its set already.)
    for services in made:
        if not shiboken6.isValid(services):
            continue
        with qtbot.waitSignal(services.services_stopped, timeout=20_000):
            services.stop()


def test_starts_broker_replay_producer_and_stops_what_it_started(qtbot, fake, services_factory):
    services = services_factory()
    progress = []
    services.progress_reported.connect(progress.append)
    with qtbot.waitSignal(services.services_started, timeout=20_000) as started:
        services.start()
    assert started.args == ["127.0.0.1:19092"]
    assert services.broker_owned
    assert services.agent_url == "http://127.0.0.1:5555"
    qtbot.waitUntil(lambda: services.states["producer"][0] == ServiceState.RUNNING)
    assert services.states["broker"][0] == ServiceState.RUNNING
    assert services.states["replay"] == (ServiceState.RUNNING, "http://127.0.0.1:5555")
    assert any("fetching Kafka jars" in text for text in progress), progress
    assert "called replay --port 0 --speed 2 --start 19:00:00" in fake.log
    qtbot.waitUntil(lambda: "called run --agent http://127.0.0.1:5555 --bootstrap 127.0.0.1:19092 "
                            "--topic-prefix plant1." in fake.log)

    with qtbot.waitSignal(services.services_stopped, timeout=20_000):
        services.stop()
    log = fake.log
    assert "run terminated" in log and "replay terminated" in log
    assert log[-1] == "broker stopped"  # after the producer and replay ended
    assert not services.active
    assert all(state in (ServiceState.STOPPED,) for state, _ in services.states.values())


def test_a_running_broker_is_used_and_left_running(qtbot, fake, services_factory):
    fake.set("broker-running")
    services = services_factory()
    with qtbot.waitSignal(services.services_started, timeout=20_000):
        services.start()
    assert not services.broker_owned
    assert "already running" in services.states["broker"][1]
    assert not any(line.startswith("called broker start") for line in fake.log)
    with qtbot.waitSignal(services.services_stopped, timeout=20_000):
        services.stop()
    assert "broker stopped" not in fake.log
    assert (fake.state / "broker-running").exists()


def test_broker_start_failure_is_reported_with_its_output(qtbot, fake, services_factory):
    fake.set("broker-fails")
    services = services_factory()
    with qtbot.waitSignal(services.services_failed, timeout=20_000) as failed:
        services.start()
    message = failed.args[0]
    assert "broker start exited with code 1" in message and "java not found" in message
    assert services.states["broker"][0] == ServiceState.FAILED
    assert not any(line.startswith("called replay") for line in fake.log)


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(qtbot, fake, services_factory):
    fake.set("replay-ignores-term")
    services = services_factory(stop_grace=0.5)
    with qtbot.waitSignal(services.services_started, timeout=20_000):
        services.start()
    qtbot.waitUntil(lambda: any(line.startswith("called run") for line in fake.log))
    with qtbot.waitSignal(services.services_stopped, timeout=20_000):
        services.stop()
    assert "replay terminated" not in fake.log and "run terminated" in fake.log
    assert not services.active


def test_a_crashed_producer_is_restarted(qtbot, fake, services_factory):
    fake.set("producer-crashes-once")
    services = services_factory(restart_delays=(0.2,))
    states = []
    services.state_changed.connect(lambda name, state, detail: states.append((name, state, detail)))
    with qtbot.waitSignal(services.services_started, timeout=20_000):
        services.start()
    qtbot.waitUntil(lambda: sum(1 for line in fake.log if line.startswith("called run")) == 2, timeout=10_000)
    qtbot.waitUntil(lambda: services.states["producer"][0] == ServiceState.RUNNING)
    failures = [detail for name, state, detail in states if name == "producer" and state == "failed"]
    assert failures and "exited with code 2: configuration error: boom" in failures[0]
    assert "restarting in 0.2 s" in failures[0]


def test_a_program_that_cannot_start_is_a_clear_failure(qtbot, services_factory, tmp_path):
    missing = str(tmp_path / "no-such-python")
    services = LocalServices(command_for=lambda args: (missing, list(args)))
    with qtbot.waitSignal(services.services_failed, timeout=10_000) as failed:
        services.start()
    assert "could not start" in failed.args[0] and "no-such-python" in failed.args[0]


def test_stop_before_start_reports_stopped(qtbot, services_factory):
    services = services_factory()
    with qtbot.waitSignal(services.services_stopped, timeout=5_000):
        services.stop()


def test_a_dead_broker_is_restarted_with_backoff_and_the_producer_follows(qtbot, fake, services_factory):
    services = services_factory(restart_delays=(0.5, 1.0), watch_interval=0.3)
    states = []
    services.state_changed.connect(lambda name, state, detail: states.append((name, state, detail)))
    with qtbot.waitSignal(services.services_started, timeout=20_000):
        services.start()
    qtbot.waitUntil(lambda: services.states["producer"][0] == ServiceState.RUNNING)
    (fake.state / "broker-running").unlink()  # the broker process is gone
    qtbot.waitUntil(lambda: sum(1 for line in fake.log if line.startswith("called broker start")) == 2, timeout=15_000)
    restarting = [detail for name, state, detail in states if name == "broker" and state == "failed"]
    assert restarting and restarting[0] == "Kafka broker died; restarting in 0.5 s (attempt 1)"
    # The producer was stopped while the broker was down and started again after it.
    qtbot.waitUntil(lambda: sum(1 for line in fake.log if line.startswith("called run")) == 2, timeout=15_000)
    qtbot.waitUntil(lambda: services.states["broker"][0] == ServiceState.RUNNING
                    and services.states["producer"][0] == ServiceState.RUNNING, timeout=15_000)
    assert "run terminated" in fake.log
    assert services.restart_counts["broker"] == 1


def test_a_dead_replay_agent_is_restarted_where_it_was_and_the_producer_follows(qtbot, fake, services_factory):
    services = services_factory(restart_delays=(0.3,))
    with qtbot.waitSignal(services.services_started, timeout=20_000):
        services.start()
    qtbot.waitUntil(lambda: services.states["producer"][0] == ServiceState.RUNNING)
    services._children["replay"].process.kill()
    qtbot.waitUntil(lambda: sum(1 for line in fake.log if line.startswith("called replay")) == 2, timeout=15_000)
    second = [line for line in fake.log if line.startswith("called replay")][1]
    assert second.startswith("called replay --port 0 --speed 2 --start 19:00:")  # where the first had got to
    qtbot.waitUntil(lambda: sum(1 for line in fake.log if line.startswith("called run")) == 2, timeout=15_000)
    qtbot.waitUntil(lambda: services.states["producer"][0] == ServiceState.RUNNING)


def test_the_next_run_continues_the_replay_where_the_last_one_stopped(qtbot, fake, services_factory):
    from desktop.core.instance import read_replay_position, seconds_of_day

    services = services_factory()
    with qtbot.waitSignal(services.services_started, timeout=20_000):
        services.start()
    qtbot.wait(1500)
    with qtbot.waitSignal(services.services_stopped, timeout=20_000):
        services.stop()
    qtbot.waitUntil(lambda: read_replay_position(services.state_dir / "replay-position.json") is not None)
    position = read_replay_position(services.state_dir / "replay-position.json")
    assert seconds_of_day(position) >= seconds_of_day("19:00:02")  # 1.5 s at 2x, at least
    again = services_factory()
    with qtbot.waitSignal(again.services_started, timeout=20_000):
        again.start()
    assert f"called replay --port 0 --speed 2 --start {position}" in fake.log
    chosen = services_factory(replay_start="07:30:00")
    with qtbot.waitSignal(again.services_stopped, timeout=20_000):
        again.stop()
    with qtbot.waitSignal(chosen.services_started, timeout=20_000):
        chosen.start()
    assert "called replay --port 0 --speed 2 --start 07:30:00" in fake.log


def test_a_second_set_on_this_pc_uses_the_running_services_and_starts_no_producer(qtbot, fake, services_factory):
    first = services_factory()
    with qtbot.waitSignal(first.services_started, timeout=20_000):
        first.start()
    qtbot.waitUntil(lambda: first.states["producer"][0] == ServiceState.RUNNING)

    def started(program: str) -> int:
        return sum(1 for line in fake.log if line.startswith(f"called {program}"))
    # (A child is "running" once its process started; its own first line comes a moment later.)
    qtbot.waitUntil(lambda: started("run") == 1 and started("replay") == 1, timeout=10_000)
    second = services_factory()
    with qtbot.waitSignal(second.services_started, timeout=20_000) as announced:
        second.start()
    assert announced.args == ["127.0.0.1:19092"]
    assert second.reused and not second.broker_owned
    assert "another Machine Monitor" in second.states["producer"][1]
    assert not second._children, "the second set started a child of its own"
    qtbot.wait(1000)  # what a child of the second set would have written by now
    assert (started("run"), started("replay")) == (1, 1)


def test_a_window_that_leaves_local_mode_no_longer_takes_over_the_other_apps_services(
        qtbot, fake, services_factory, make_window, closed_port):
    from desktop.core.settings import Settings

    first = services_factory()
    with qtbot.waitSignal(first.services_started, timeout=20_000):
        first.start()
    qtbot.waitUntil(lambda: first.states["producer"][0] == ServiceState.RUNNING)
    # A second window on this PC shares the first one's services (and watches them, to take
    # over if they go away)...
    shared = services_factory(watch_interval=0.2, restart_delays=(0.2,))
    window = make_window(Settings(), services=shared)
    window.show()
    with qtbot.waitSignal(shared.services_started, timeout=20_000):
        window.start()
    assert shared.reused
    # ... until its user points it at the plant's cluster instead.
    window.apply_settings(Settings(mode="remote", bootstrap_servers=closed_port))
    qtbot.waitUntil(lambda: window.services is None and window.worker is not None, timeout=20_000)
    assert window.worker.config.bootstrap_servers == closed_port
    with qtbot.waitSignal(first.services_stopped, timeout=20_000):
        first.stop()
    stopped_at = len(fake.log)
    qtbot.wait(1500)  # several watch intervals: a set still watching would start the broker again
    assert [line for line in fake.log[stopped_at:] if line.startswith("called")] == [], \
        "a window in remote mode started local services"
