"""Local mode: start the broker, the replay agent and the producer as child processes, and
stop what was started when the app quits.

Everything here is asynchronous QProcess work driven by signals, so the GUI thread never
waits for a child: `start` checks `broker status` (a broker already running is used, and left
running on quit), otherwise runs `broker start` and reads `bootstrap=` from its output, then
starts `replay` and reads `listening=`, then starts the producer against both and emits
`services_started(bootstrap)`. Progress lines (the broker's first start downloads jars) are
reported as they arrive. `stop` terminates producer and replay (SIGTERM, then kill after a
grace period) and runs `broker stop` only if this app started the broker. A failure to start
is reported with the child's last output lines.

Keeping them alive: a producer or replay agent that dies is restarted with backoff, and so is
the broker - its port is probed every few seconds (a non-blocking connect), and when nothing
answers `broker status` confirms it died; each restart is a visible state ("restarting in
5 s"). One set per PC: the replay agent and producer are started under a lock per broker
folder and topic prefix (`desktop.core.instance.ServiceLock`); a second app on the same
account that finds the lock held uses the running broker and starts neither. The producer
follows every agent in the settings (`replay` is the recorded NIST replay started here); the
replay starts where the last run stopped (its position is saved every 30 s and on stop) or
at the time the settings name.
Every child gets this process's pid in its environment: the launcher it runs through
(`desktop.launcher`) ties it to the app, so nothing started here outlives a killed app.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal
from PySide6.QtNetwork import QAbstractSocket, QTcpSocket

from desktop.core import services as contract
from desktop.core.instance import ServiceLock, read_replay_position, replay_position, write_replay_position
from desktop.core.services import BROKER, PRODUCER, REPLAY, LineReader, ServiceState
from desktop.core.settings import REPLAY_AGENT

_log = logging.getLogger(__name__)

CommandBuilder = Callable[[Sequence[str]], tuple[str, list[str]]]

BROKER_START_TIMEOUT = 240.0  # a first start downloads the broker's jars
BROKER_STOP_TIMEOUT = 60.0
REPLAY_START_TIMEOUT = 60.0
STOP_GRACE = 5.0
PRODUCER_RESTART_DELAYS = (2.0, 5.0, 10.0, 30.0, 60.0)
RESTART_DELAYS = PRODUCER_RESTART_DELAYS
WATCH_INTERVAL = 3.0
POSITION_SAVE_INTERVAL = 30.0
REPLAY_POSITION_FILE = "replay-position.json"


def _default_state_dir() -> Path:
    from producer.paths import user_data_dir

    return user_data_dir() / "desktop"


class _Child(QObject):
    """One child process: its output as lines, and a single `ended` however it ends."""

    line_read = Signal(str)
    ended = Signal(object, str)  # exit code (None: crashed or failed to start), output tail

    def __init__(self, name: str, program: str, arguments: list[str], parent: QObject) -> None:
        super().__init__(parent)
        self.name = name
        self.process = QProcess(self)
        self.process.setProgram(program)
        self.process.setArguments(arguments)
        environment = QProcessEnvironment.systemEnvironment()
        # Children's stdout is a pipe: without this, `listening=` would sit in a buffer.
        environment.insert("PYTHONUNBUFFERED", "1")
        # The child's lifeline: it ends when this process does, even when it is killed.
        environment.insert(contract.APP_PID_ENV, str(os.getpid()))
        self.process.setProcessEnvironment(environment)
        self._stdout = LineReader()
        self._stderr = LineReader()
        self._ended = False
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self.process.kill)
        self.process.readyReadStandardOutput.connect(self._on_stdout_ready)
        self.process.readyReadStandardError.connect(self._on_stderr_ready)
        self.process.finished.connect(self._on_finished)
        self.process.errorOccurred.connect(self._on_error_occurred)

    @property
    def command_line(self) -> str:
        return " ".join([self.process.program(), *self.process.arguments()])

    @property
    def running(self) -> bool:
        return self.process.state() != QProcess.ProcessState.NotRunning

    def start(self) -> None:
        self.process.start()

    def terminate(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM now, SIGKILL if still running after `grace` seconds."""
        if not self.running:
            return
        self.process.terminate()
        self._kill_timer.start(int(grace * 1000))

    def tail(self) -> str:
        return self._stderr.tail() or self._stdout.tail()

    def _emit_lines(self, lines: list[str]) -> None:
        for line in lines:
            self.line_read.emit(line)

    def _on_stdout_ready(self) -> None:
        self._emit_lines(self._stdout.feed(bytes(self.process.readAllStandardOutput().data())))

    def _on_stderr_ready(self) -> None:
        self._emit_lines(self._stderr.feed(bytes(self.process.readAllStandardError().data())))

    def _finish(self, exit_code: int | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._kill_timer.stop()
        self._emit_lines(self._stdout.flush() + self._stderr.flush())
        self.ended.emit(exit_code, self.tail())

    def _on_finished(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        self._on_stdout_ready()
        self._on_stderr_ready()
        self._finish(exit_code if exit_status == QProcess.ExitStatus.NormalExit else None)

    def _on_error_occurred(self, error: QProcess.ProcessError) -> None:
        # A child that never started gets no `finished`; other errors are followed by one.
        if error == QProcess.ProcessError.FailedToStart:
            self._stderr.feed(f"could not start {self.command_line}: {self.process.errorString()}\n")
            self._finish(None)


class LocalServices(QObject):
    state_changed = Signal(str, str, str)  # service name, ServiceState value, detail
    progress_reported = Signal(str)  # what is happening now, for the status bar
    services_started = Signal(str)  # bootstrap servers of the broker
    services_failed = Signal(str)  # why local mode could not start
    services_stopped = Signal()
    bootstrap_changed = Signal(str)  # the broker came back on another address

    def __init__(
        self,
        replay_speed: float = 1.0,
        topic_prefix: str = "",
        broker_data_dir: str | None = None,
        command_for: CommandBuilder = contract.module_command,
        parent: QObject | None = None,
        broker_start_timeout: float = BROKER_START_TIMEOUT,
        replay_start_timeout: float = REPLAY_START_TIMEOUT,
        stop_grace: float = STOP_GRACE,
        restart_delays: Sequence[float] = RESTART_DELAYS,
        agents: Sequence[str] = (REPLAY_AGENT,),
        replay_start: str | None = None,
        state_dir: str | Path | None = None,
        watch_interval: float = WATCH_INTERVAL,
    ) -> None:
        super().__init__(parent)
        self.replay_speed = replay_speed
        self.topic_prefix = topic_prefix
        self.broker_data_dir = broker_data_dir
        self.agents = tuple(agents)
        self.replay_start = replay_start or None
        if state_dir is None:
            state_dir = Path(broker_data_dir).parent if broker_data_dir else _default_state_dir()
        self.state_dir = Path(state_dir)
        self._command_for = command_for
        self._broker_start_timeout = broker_start_timeout
        self._replay_start_timeout = replay_start_timeout
        self._stop_grace = stop_grace
        self._restart_delays = tuple(restart_delays)
        self._watch_interval = watch_interval

        self.bootstrap: str | None = None
        self.agent_url: str | None = None
        # True once this app ran `broker start`: only then does quitting stop the broker.
        self.broker_owned = False
        # True when another app on this PC runs the replay agent and producer for these topics.
        self.reused = False
        self.lock = ServiceLock(self.state_dir / f"services-{self.topic_prefix or 'default'}.lock")
        self.states: dict[str, tuple[ServiceState, str]] = {
            name: (ServiceState.STOPPED, "") for name in contract.SERVICE_NAMES
        }
        self.restart_counts: dict[str, int] = {name: 0 for name in contract.SERVICE_NAMES}
        self._children: dict[str, _Child] = {}
        self._broker_tool: _Child | None = None  # broker status / start / stop, one at a time
        self._stopping = False
        self._started = False
        self._announced = False
        self._restarts = {name: 0 for name in contract.SERVICE_NAMES}
        self.replay_position: str | None = None
        self._replay_began: tuple[str, float] | None = None
        # Set once start-up has failed: later exits of the children are consequences, not news.
        self.failed = False
        self._deadline = QTimer(self)
        self._deadline.setSingleShot(True)
        self._deadline.timeout.connect(self._on_deadline_passed)
        self._deadline_reason = ""
        self._deadline_service = BROKER
        self._restart_timers: dict[str, QTimer] = {}
        for name, action in ((PRODUCER, self._start_producer), (REPLAY, self._start_replay), (BROKER, self._restart_broker)):
            timer = self._restart_timers[name] = QTimer(self)
            timer.setSingleShot(True)
            timer.timeout.connect(action)
        self._watch_timer = QTimer(self)
        self._watch_timer.setInterval(int(watch_interval * 1000))
        self._watch_timer.timeout.connect(self._probe_broker)
        self._probe: QTcpSocket | None = None
        self._position_timer = QTimer(self)
        self._position_timer.setInterval(int(POSITION_SAVE_INTERVAL * 1000))
        self._position_timer.timeout.connect(self._save_replay_position)

    @classmethod
    def from_settings(cls, settings, config_dir: Path | None = None, parent: QObject | None = None, **options) -> "LocalServices":
        return cls(settings.replay_speed, settings.topic_prefix, parent=parent, agents=settings.agents,
                   replay_start=settings.replay_start or None, **options)

    # -- helpers ------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Anything running, starting, or a broker of ours that still needs stopping."""
        return bool(self._running_children()) or self.broker_owned or self._broker_tool is not None

    def expected(self, name: str) -> bool:
        """Whether this configuration runs that service here."""
        if name == BROKER:
            return True
        if self.reused:
            return False
        if name == REPLAY:
            return REPLAY_AGENT in self.agents
        return True

    def _running_children(self) -> list[_Child]:
        children = list(self._children.values())
        if self._broker_tool is not None:
            children.append(self._broker_tool)
        return [child for child in children if child.running]

    def _set_state(self, name: str, state: ServiceState, detail: str = "") -> None:
        self.states[name] = (state, detail)
        self.state_changed.emit(name, state.value, detail)

    def _spawn(self, name: str, args: Sequence[str]) -> _Child:
        program, arguments = self._command_for(list(args))
        child = _Child(name, program, arguments, self)
        return child

    def _arm_deadline(self, name: str, seconds: float, reason: str) -> None:
        self._deadline_service = name
        self._deadline_reason = reason
        self._deadline.start(int(seconds * 1000))

    def _fail(self, name: str, message: str) -> None:
        self._deadline.stop()
        self.failed = True
        if not self._running_children():
            self.lock.release()
        self._set_state(name, ServiceState.FAILED, message)
        self.services_failed.emit(message)

    def _schedule_restart(self, name: str, message: str) -> bool:
        """Restart `name` after the next backoff delay; False when out of attempts."""
        attempt = self._restarts[name]
        if attempt >= len(self._restart_delays):
            return False
        delay = self._restart_delays[attempt]
        self._restarts[name] = attempt + 1
        self.restart_counts[name] += 1
        self._set_state(name, ServiceState.FAILED, f"{message}; restarting in {delay:g} s (attempt {attempt + 1})")
        self.progress_reported.emit(f"{contract.SERVICE_LABELS[name]} stopped; restarting in {delay:g} s")
        self._restart_timers[name].start(int(delay * 1000))
        return True

    # -- start --------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._stopping = False
        self._set_state(BROKER, ServiceState.STARTING, "checking for a running broker")
        self.progress_reported.emit("Looking for a running local Kafka broker…")
        tool = self._broker_tool = self._spawn(BROKER, contract.broker_status_args(self.broker_data_dir))
        found: list[str] = []
        tool.line_read.connect(lambda line: found.append(contract.value_of(line, "bootstrap") or ""))
        tool.ended.connect(lambda code, tail: self._on_broker_status_ended(code, tail, [f for f in found if f]))
        tool.start()

    def _on_broker_status_ended(self, exit_code: int | None, tail: str, bootstraps: list[str]) -> None:
        self._broker_tool = None
        if self._stopping:
            return self._continue_stop()
        if exit_code == 0 and bootstraps:
            self.bootstrap = bootstraps[-1]
            self._set_state(BROKER, ServiceState.RUNNING, f"already running at {self.bootstrap}")
            self._broker_ready()
        elif exit_code == contract.BROKER_STATUS_STOPPED_EXIT:
            self._start_broker()
        else:
            self._fail(BROKER, "could not check the local broker: " + contract.exit_message("broker status", exit_code, tail))

    def _start_broker(self) -> None:
        self._set_state(BROKER, ServiceState.STARTING, "starting")
        self.progress_reported.emit("Starting local Kafka broker…")
        self.broker_owned = True
        tool = self._broker_tool = self._spawn(BROKER, contract.broker_start_args(self.broker_data_dir))
        tool.line_read.connect(self._on_broker_start_line_read)
        tool.ended.connect(self._on_broker_start_ended)
        self._arm_deadline(BROKER, self._broker_start_timeout, f"Kafka broker not ready after {self._broker_start_timeout:g} s")
        tool.start()

    def _on_broker_start_line_read(self, line: str) -> None:
        bootstrap = contract.value_of(line, "bootstrap")
        if bootstrap:
            self._new_bootstrap = bootstrap
            return
        text = contract.progress_text(line)
        self._set_state(BROKER, ServiceState.STARTING, text)
        self.progress_reported.emit(f"Starting local Kafka broker… ({_shorten(text)})")

    def _on_broker_start_ended(self, exit_code: int | None, tail: str) -> None:
        self._broker_tool = None
        self._deadline.stop()
        if self._stopping:
            return self._continue_stop()
        if self.failed:
            return
        bootstrap = getattr(self, "_new_bootstrap", None)
        if exit_code == 0 and bootstrap:
            previous, self.bootstrap = self.bootstrap, bootstrap
            self._set_state(BROKER, ServiceState.RUNNING, self.bootstrap)
            if previous is not None and previous != bootstrap:
                self.bootstrap_changed.emit(bootstrap)
            self._broker_ready()
        elif self._announced and self._schedule_restart(BROKER, contract.exit_message("broker start", exit_code, tail)):
            return
        elif exit_code == 0:
            self._fail(BROKER, "broker start printed no bootstrap= line" + (f": {tail}" if tail else ""))
        else:
            self._fail(BROKER, contract.exit_message("broker start", exit_code, tail))

    def _broker_ready(self) -> None:
        """Broker up (first start or after a restart): start what is not running yet."""
        self._watch_timer.start()
        self._restarts[BROKER] = 0
        if not self.lock.acquire():
            holder = self.lock.holder() or {}
            self.reused = True
            detail = f"run by another Machine Monitor on this PC (pid {holder.get('pid', '?')})"
            self._set_state(REPLAY, ServiceState.RUNNING, detail)
            self._set_state(PRODUCER, ServiceState.RUNNING, detail)
            self._announce()
            return
        replay = self._children.get(REPLAY)
        if REPLAY_AGENT in self.agents and (replay is None or not replay.running):
            self._start_replay()
        else:
            producer = self._children.get(PRODUCER)
            if producer is None or not producer.running:
                self._start_producer()

    def _announce(self) -> None:
        if not self._announced:
            self._announced = True
            self.services_started.emit(self.bootstrap or "")

    def _replay_start_time(self) -> str:
        if self.replay_start:
            return self.replay_start
        return read_replay_position(self.state_dir / REPLAY_POSITION_FILE) or contract.REPLAY_START

    def _start_replay(self) -> None:
        if self._stopping:
            return
        start = self._replay_start_time() if self._replay_began is None else self._current_position()
        self._set_state(REPLAY, ServiceState.STARTING, f"speed {self.replay_speed:g}x from {start}")
        self.progress_reported.emit("Starting MTConnect replay agent…")
        self.agent_url = None
        child = self._children[REPLAY] = self._spawn(REPLAY, contract.replay_args(self.replay_speed, start=start))
        child.line_read.connect(self._on_replay_line_read)
        child.ended.connect(self._on_replay_ended)
        self._replay_began = (start, time.time())
        self.replay_position = start
        self._arm_deadline(REPLAY, self._replay_start_timeout, f"replay agent printed no listening= line within {self._replay_start_timeout:g} s")
        child.start()

    def _current_position(self) -> str:
        if self._replay_began is None:
            return self._replay_start_time()
        start, began = self._replay_began
        return replay_position(start, began, self.replay_speed, time.time())

    def _save_replay_position(self) -> None:
        """Remember where the replay is, on a short thread (no disk I/O on the GUI thread)."""
        if self._replay_began is None or self.reused:
            return
        position = self.replay_position = self._current_position()
        path = self.state_dir / REPLAY_POSITION_FILE
        threading.Thread(target=_write_quietly, args=(path, position), name="replay-position", daemon=True).start()

    def _on_replay_line_read(self, line: str) -> None:
        url = contract.value_of(line, "listening")
        if url and self.agent_url is None:
            self.agent_url = url
            self._deadline.stop()
            self._set_state(REPLAY, ServiceState.RUNNING, url)
            self._position_timer.start()
            producer = self._children.get(PRODUCER)
            if producer is not None and producer.running:
                # A restarted replay has a new address: the producer follows it.
                self._producer_follows = True
                producer.terminate(self._stop_grace)
            else:
                self._start_producer()

    def _on_replay_ended(self, exit_code: int | None, tail: str) -> None:
        self._position_timer.stop()
        if self._stopping:
            self._set_state(REPLAY, ServiceState.STOPPED)
            return self._continue_stop()
        if self.failed and self.agent_url is None:
            return
        message = contract.exit_message(REPLAY, exit_code, tail)
        if not self._announced or not self._schedule_restart(REPLAY, message):
            self._fail(REPLAY, message + (" (gave up restarting)" if self._announced else ""))

    def producer_arguments(self) -> list[str]:
        agents = [self.agent_url] if REPLAY_AGENT in self.agents and self.agent_url else []
        agents += [agent for agent in self.agents if agent != REPLAY_AGENT]
        args = ["run"]
        for agent in agents:
            args += ["--agent", agent]
        args += ["--bootstrap", self.bootstrap or ""]
        if self.topic_prefix:
            args += ["--topic-prefix", self.topic_prefix]
        return args

    def _start_producer(self) -> None:
        if self._stopping or self.bootstrap is None or self.reused:
            return
        if REPLAY_AGENT in self.agents and self.agent_url is None:
            return  # started once the replay agent is listening
        if self.states[BROKER][0] != ServiceState.RUNNING:
            return  # started once the broker is back
        self._set_state(PRODUCER, ServiceState.STARTING, "")
        self.progress_reported.emit("Starting producer…")
        child = self._children[PRODUCER] = self._spawn(PRODUCER, self.producer_arguments())
        child.process.started.connect(self._on_producer_started)
        child.ended.connect(self._on_producer_ended)
        child.start()

    def _on_producer_started(self) -> None:
        agents = ", ".join(a for a in self.producer_arguments()[1::2] if a.startswith("http"))
        self._set_state(PRODUCER, ServiceState.RUNNING, f"{agents} → {self.bootstrap}")
        self._announce()

    def _on_producer_ended(self, exit_code: int | None, tail: str) -> None:
        if self._stopping:
            self._set_state(PRODUCER, ServiceState.STOPPED)
            return self._continue_stop()
        if getattr(self, "_producer_follows", False) or self.states[BROKER][0] != ServiceState.RUNNING \
                or self.states[REPLAY][0] == ServiceState.STARTING:
            self._producer_follows = False
            # Stopped on purpose while the broker or the replay agent is restarted.
            self._set_state(PRODUCER, ServiceState.STOPPED, "waiting for the broker and agent")
            self._start_producer()
            return
        message = contract.exit_message(PRODUCER, exit_code, tail)
        if not self._schedule_restart(PRODUCER, message):
            self._fail(PRODUCER, message + " (gave up restarting)")

    # -- broker watch ---------------------------------------------------------------------

    def _probe_broker(self) -> None:
        """A non-blocking connect to the broker's port; nothing answering is checked further."""
        if self._stopping or self.bootstrap is None or self._broker_tool is not None or self._probe is not None:
            return
        if self.states[BROKER][0] != ServiceState.RUNNING:
            return
        host, _, port = self.bootstrap.rpartition(":")
        probe = self._probe = QTcpSocket(self)
        probe.connected.connect(self._on_probe_connected)
        probe.errorOccurred.connect(self._on_probe_failed)
        probe.connectToHost(host.strip("[]"), int(port))

    def _end_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.abort()
            probe.deleteLater()

    def _on_probe_connected(self) -> None:
        self._end_probe()
        self._restarts[BROKER] = 0

    def _on_probe_failed(self, error: QAbstractSocket.SocketError) -> None:
        self._end_probe()
        if self._stopping or self._broker_tool is not None:
            return
        tool = self._broker_tool = self._spawn(BROKER, contract.broker_status_args(self.broker_data_dir))
        tool.ended.connect(self._on_watch_status_ended)
        tool.start()

    def _on_watch_status_ended(self, exit_code: int | None, tail: str) -> None:
        self._broker_tool = None
        if self._stopping:
            return self._continue_stop()
        if exit_code != contract.BROKER_STATUS_STOPPED_EXIT:
            return  # running (a slow connect), or the check itself failed: look again next time
        self._watch_timer.stop()
        producer = self._children.get(PRODUCER)
        if producer is not None and producer.running:
            self._set_state(PRODUCER, ServiceState.STOPPING, "the broker is restarting")
            producer.terminate(self._stop_grace)
        if not self._schedule_restart(BROKER, "Kafka broker died"):
            self._fail(BROKER, "Kafka broker died (gave up restarting)")

    def _restart_broker(self) -> None:
        if self._stopping:
            return
        self._start_broker()

    def _on_deadline_passed(self) -> None:
        reason = self._deadline_reason
        for child in self._running_children():
            child.terminate(self._stop_grace)
        self._fail(self._deadline_service, reason)

    # -- stop ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop what this app started; `services_stopped` follows (also when nothing ran)."""
        if self._replay_began is not None and not self._stopping:
            self._save_replay_position()
        self._stopping = True
        self._deadline.stop()
        self._watch_timer.stop()
        self._position_timer.stop()
        self._end_probe()
        for timer in self._restart_timers.values():
            timer.stop()
        for name in (PRODUCER, REPLAY):
            child = self._children.get(name)
            if child is not None and child.running:
                self._set_state(name, ServiceState.STOPPING)
                child.terminate(self._stop_grace)
        if self._broker_tool is not None and self._broker_tool.running:
            # An unfinished status/start: end it; a half-started broker is stopped below.
            self._broker_tool.terminate(self._stop_grace)
        self._continue_stop()

    def _continue_stop(self) -> None:
        if self._running_children():
            return  # called again as each child ends
        if self.broker_owned:
            self.broker_owned = False
            self._set_state(BROKER, ServiceState.STOPPING)
            self.progress_reported.emit("Stopping local Kafka broker…")
            tool = self._broker_tool = self._spawn(BROKER, contract.broker_stop_args(self.broker_data_dir))
            tool.ended.connect(self._on_broker_stop_ended)
            tool._kill_timer.start(int(BROKER_STOP_TIMEOUT * 1000))
            tool.start()
            return
        self._finish_stop()

    def _on_broker_stop_ended(self, exit_code: int | None, tail: str) -> None:
        self._broker_tool = None
        if exit_code == 0:
            self._set_state(BROKER, ServiceState.STOPPED)
        else:
            self._set_state(BROKER, ServiceState.FAILED, contract.exit_message("broker stop", exit_code, tail))
        self._finish_stop()

    def _finish_stop(self) -> None:
        self.lock.release()
        if not self._started:
            # Deferred so callers can connect to services_stopped after calling stop().
            QTimer.singleShot(0, self.services_stopped.emit)
            return
        self._started = False
        for name in (PRODUCER, REPLAY):
            if self.states[name][0] != ServiceState.FAILED:
                self._set_state(name, ServiceState.STOPPED)
        QTimer.singleShot(0, self.services_stopped.emit)

    def stop_now(self, grace: float = STOP_GRACE) -> None:
        """Blocking stop for the last moment of the app (nothing else will run after it)."""
        self._stopping = True
        self._deadline.stop()
        self._watch_timer.stop()
        for timer in self._restart_timers.values():
            timer.stop()
        for child in self._running_children():
            child.process.terminate()
        for child in self._running_children():
            if not child.process.waitForFinished(int(grace * 1000)):
                child.process.kill()
                child.process.waitForFinished(1000)
        if self.broker_owned:
            self.broker_owned = False
            program, arguments = self._command_for(contract.broker_stop_args(self.broker_data_dir))
            process = QProcess()
            process.start(program, arguments)
            if not process.waitForFinished(int(BROKER_STOP_TIMEOUT * 1000)):
                process.kill()
                process.waitForFinished(1000)
        self.lock.release()
        self._started = False


def _write_quietly(path: Path, position: str) -> None:
    try:
        write_replay_position(path, position)
    except OSError as error:
        # Only a convenience (the next start falls back to the default time), so it is logged,
        # not shown: the replay itself is unaffected.
        _log.warning("replay position not saved to %s: %s", path, error)


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
