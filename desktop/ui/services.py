"""Local mode: start the broker, the replay agent and the producer as child processes, and
stop what was started when the app quits.

Everything here is asynchronous QProcess work driven by signals, so the GUI thread never
waits for a child: `start` checks `broker status` (a broker already running is used, and left
running on quit), otherwise runs `broker start` and reads `bootstrap=` from its output, then
starts `replay` and reads `listening=`, then starts the producer against both and emits
`services_started(bootstrap)`. Progress lines (the broker's first start downloads jars) are
reported as they arrive. `stop` terminates producer and replay (SIGTERM, then kill after a
grace period) and runs `broker stop` only if this app started the broker. A producer that dies
is restarted with backoff; a failure to start is reported with the child's last output lines.
Every child gets this process's pid in its environment: the launcher it runs through
(`desktop.launcher`) ties it to the app, so nothing started here outlives a killed app.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from desktop.core import services as contract
from desktop.core.services import BROKER, PRODUCER, REPLAY, LineReader, ServiceState

CommandBuilder = Callable[[Sequence[str]], tuple[str, list[str]]]

BROKER_START_TIMEOUT = 240.0  # a first start downloads the broker's jars
BROKER_STOP_TIMEOUT = 60.0
REPLAY_START_TIMEOUT = 60.0
STOP_GRACE = 5.0
PRODUCER_RESTART_DELAYS = (2.0, 5.0, 10.0, 30.0, 60.0)


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
        restart_delays: Sequence[float] = PRODUCER_RESTART_DELAYS,
    ) -> None:
        super().__init__(parent)
        self.replay_speed = replay_speed
        self.topic_prefix = topic_prefix
        self.broker_data_dir = broker_data_dir
        self._command_for = command_for
        self._broker_start_timeout = broker_start_timeout
        self._replay_start_timeout = replay_start_timeout
        self._stop_grace = stop_grace
        self._restart_delays = tuple(restart_delays)

        self.bootstrap: str | None = None
        self.agent_url: str | None = None
        # True once this app ran `broker start`: only then does quitting stop the broker.
        self.broker_owned = False
        self.states: dict[str, tuple[ServiceState, str]] = {
            name: (ServiceState.STOPPED, "") for name in contract.SERVICE_NAMES
        }
        self._children: dict[str, _Child] = {}
        self._broker_tool: _Child | None = None  # broker status / start / stop, one at a time
        self._stopping = False
        self._started = False
        self._restarts = 0
        # Set once start-up has failed: later exits of the children are consequences, not news.
        self.failed = False
        self._deadline = QTimer(self)
        self._deadline.setSingleShot(True)
        self._deadline.timeout.connect(self._on_deadline_passed)
        self._deadline_reason = ""
        self._deadline_service = BROKER
        self._restart_timer = QTimer(self)
        self._restart_timer.setSingleShot(True)
        self._restart_timer.timeout.connect(self._start_producer)

    # -- helpers ------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Anything running, starting, or a broker of ours that still needs stopping."""
        return bool(self._running_children()) or self.broker_owned or self._broker_tool is not None

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
        self._set_state(name, ServiceState.FAILED, message)
        self.services_failed.emit(message)

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
            self._start_replay()
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
            self.bootstrap = bootstrap
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
        if exit_code == 0 and self.bootstrap:
            self._set_state(BROKER, ServiceState.RUNNING, self.bootstrap)
            self._start_replay()
        elif exit_code == 0:
            self._fail(BROKER, "broker start printed no bootstrap= line" + (f": {tail}" if tail else ""))
        else:
            self._fail(BROKER, contract.exit_message("broker start", exit_code, tail))

    def _start_replay(self) -> None:
        self._set_state(REPLAY, ServiceState.STARTING, f"speed {self.replay_speed:g}x")
        self.progress_reported.emit("Starting MTConnect replay agent…")
        child = self._children[REPLAY] = self._spawn(REPLAY, contract.replay_args(self.replay_speed))
        child.line_read.connect(self._on_replay_line_read)
        child.ended.connect(self._on_replay_ended)
        self._arm_deadline(REPLAY, self._replay_start_timeout, f"replay agent printed no listening= line within {self._replay_start_timeout:g} s")
        child.start()

    def _on_replay_line_read(self, line: str) -> None:
        url = contract.value_of(line, "listening")
        if url and self.agent_url is None:
            self.agent_url = url
            self._deadline.stop()
            self._set_state(REPLAY, ServiceState.RUNNING, url)
            self._start_producer()

    def _on_replay_ended(self, exit_code: int | None, tail: str) -> None:
        if self._stopping:
            self._set_state(REPLAY, ServiceState.STOPPED)
            return self._continue_stop()
        if self.failed and self.agent_url is None:
            return
        self._fail(REPLAY, contract.exit_message(REPLAY, exit_code, tail))

    def _start_producer(self) -> None:
        if self._stopping or self.agent_url is None or self.bootstrap is None:
            return
        self._set_state(PRODUCER, ServiceState.STARTING, "")
        self.progress_reported.emit("Starting producer…")
        child = self._children[PRODUCER] = self._spawn(
            PRODUCER, contract.producer_args(self.agent_url, self.bootstrap, self.topic_prefix)
        )
        child.process.started.connect(self._on_producer_started)
        child.ended.connect(self._on_producer_ended)
        child.start()

    def _on_producer_started(self) -> None:
        self._set_state(PRODUCER, ServiceState.RUNNING, f"{self.agent_url} → {self.bootstrap}")
        if self._restarts == 0:
            self.services_started.emit(self.bootstrap or "")

    def _on_producer_ended(self, exit_code: int | None, tail: str) -> None:
        if self._stopping:
            self._set_state(PRODUCER, ServiceState.STOPPED)
            return self._continue_stop()
        message = contract.exit_message(PRODUCER, exit_code, tail)
        if self._restarts >= len(self._restart_delays):
            self._fail(PRODUCER, message + " (gave up restarting)")
            return
        delay = self._restart_delays[self._restarts]
        self._restarts += 1
        self._set_state(PRODUCER, ServiceState.FAILED, f"{message}; restarting in {delay:g} s")
        self._restart_timer.start(int(delay * 1000))

    def _on_deadline_passed(self) -> None:
        reason = self._deadline_reason
        for child in self._running_children():
            child.terminate(self._stop_grace)
        self._fail(self._deadline_service, reason)

    # -- stop ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop what this app started; `services_stopped` follows (also when nothing ran)."""
        self._stopping = True
        self._deadline.stop()
        self._restart_timer.stop()
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
        self._restart_timer.stop()
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
        self._started = False


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
