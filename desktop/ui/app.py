"""Application wiring: settings, style, main window and local services, plus the two
non-interactive modes of `python -m desktop`.

`run` starts the GUI. With `--screenshot PNG --after S --view NAME` it waits for the first
observations (giving up after two minutes with exit code 1), lets S seconds of live data
arrive, brings up the named view (`desktop.ui.views`: overview, detail, settings, or one a
later module registered), waits until that view says it is ready (the detail view: history
loaded), saves it, and quits cleanly, stopping the child services. An interactive start
first asks a running instance for the same settings folder to show its window and exits if
one answered (`desktop.ui.single`), so one PC never runs two sets of local services. `run_self_test` needs no display: it
checks the bundled resources, starts the local broker, replay agent and producer, waits for
observations to arrive through Kafka, stops everything and prints one PASS/FAIL line per
check. Either way, SIGINT/SIGTERM close the app the normal way, so children are stopped.

A settings file that cannot be used never lets the app carry on with the defaults (that would
show replayed demo data instead of the plant). The GUI says which file and what is wrong, and
offers to enter settings again - saving them keeps the old file as `settings.json.bad` - or to
quit; `--screenshot` and `--self-test` print the message and exit non-zero, leaving the file
as it is.
"""
from __future__ import annotations

import argparse
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QCoreApplication, QObject, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from desktop.core import paths
from desktop.core.batch import Batch
from desktop.core.alarms.model import PRIORITY_RANK
from desktop.core.alarms import AlarmJournal, AlarmState, RulesError, default_journal_path, default_rules_path, load_rules
from desktop.core.alarms.common import USER_RULES_FILE
from desktop.core.feed import DEFAULT_HISTORY_SECONDS, FeedConfig
from desktop.core.model import MonitorModel
from desktop.core.services import SERVICE_LABELS, SERVICE_NAMES
from desktop.core.settings import Settings, SettingsError, load_settings, save_settings, set_aside
from desktop.ui import first_run
from desktop.ui.main_window import MainWindow
from desktop.ui.services import LocalServices
from desktop.ui.theme import apply_style
from desktop.ui.views import get_view, view_names
from desktop.ui.workers import FeedWorker

VIEW_READY_TIMEOUT = 90.0

FIRST_BATCH_TIMEOUT = 120.0
SELF_TEST_TIMEOUT = 420.0  # broker start (jar download) + first data + stop


def _install_signal_handlers(on_signal: Callable[[], None]) -> QTimer:
    """Let Ctrl+C / SIGTERM end the app through its normal shutdown. Python only runs signal
    handlers between bytecodes, so a timer wakes the interpreter while Qt's loop idles."""

    def handler(signum: int, frame: object) -> None:
        QTimer.singleShot(0, on_signal)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    wakeup = QTimer()
    wakeup.timeout.connect(lambda: None)
    wakeup.start(300)
    return wakeup


def load_effective_settings(options: argparse.Namespace) -> tuple[Settings, Path]:
    """Defaults < settings file < command line. A settings file that cannot be used raises
    `SettingsError` with its `path` set; nothing falls back to the defaults silently."""
    config_dir = paths.config_dir(options.config_dir)
    settings = load_settings(config_dir)
    return apply_command_line(settings, options), config_dir


def apply_command_line(settings: Settings, options: argparse.Namespace) -> Settings:
    if getattr(options, "bootstrap", None):
        settings = settings.replace(mode="remote", bootstrap_servers=options.bootstrap)
    if getattr(options, "topic_prefix", None) is not None:
        settings = settings.replace(topic_prefix=options.topic_prefix)
    settings.validate("command line")
    return settings


BROKEN_SETTINGS_TITLE = "Settings cannot be used"


def broken_settings_text(error: SettingsError) -> str:
    return (
        f"Machine Monitor cannot use its settings file\n{error.path}\n\n{error.problem}\n\n"
        "Nothing has been changed. Open Settings to enter the settings again (the file is then "
        f"kept as {error.path.name}.bad), or quit and correct the file."
    )


def ask_about_broken_settings(error: SettingsError, config_dir: Path) -> Settings | None:
    """Say which settings file is unusable and why; the settings the user enters instead
    (saved, the old file kept aside), or None to quit."""
    from desktop.ui.settings_dialog import SettingsDialog

    box = QMessageBox(QMessageBox.Icon.Critical, BROKEN_SETTINGS_TITLE, broken_settings_text(error))
    box.setObjectName("brokenSettingsBox")
    open_button = box.addButton("Open Settings…", QMessageBox.ButtonRole.AcceptRole)
    box.addButton("Quit", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(open_button)
    while True:
        box.exec()
        if box.clickedButton() is not open_button:
            return None
        dialog = SettingsDialog(Settings())
        if dialog.exec() != SettingsDialog.DialogCode.Accepted or dialog.result_settings is None:
            continue  # back to the choice: nothing was saved
        try:
            set_aside(config_dir)
            save_settings(dialog.result_settings, config_dir)
        except OSError as exc:
            QMessageBox.critical(None, "Settings not saved", f"Could not save the settings in {config_dir}: {exc}")
            return None
        return dialog.result_settings


class ScreenshotJob(QObject):
    """Waits for live data, saves the window after `after` seconds of it, then closes it."""

    def __init__(self, window: MainWindow, path: Path, after: float, first_batch_timeout: float = FIRST_BATCH_TIMEOUT,
                 view: str = "overview", acknowledge: int = 0, shelve: int = 0) -> None:
        super().__init__(window)
        self.acknowledge = acknowledge
        self.shelve = shelve
        self.window = window
        self.path = path
        self.after = after
        self.view = view
        self._target = None
        self._ready_deadline = 0.0
        self._poll = QTimer(self)
        self._poll.setInterval(200)
        self._poll.timeout.connect(self._on_poll)
        self.exit_code: int | None = None
        self._timeout = QTimer(self)
        self._timeout.setSingleShot(True)
        self._timeout.timeout.connect(self._on_timeout)
        self._timeout.start(int(first_batch_timeout * 1000))
        self._first_batch_timeout = first_batch_timeout
        window.first_observations_received.connect(self._on_first_observations_received)
        if window.services is not None:
            # No broker, no data: say so now rather than after the two-minute wait.
            window.services.services_failed.connect(self._on_services_failed)

    def _on_first_observations_received(self) -> None:
        self._timeout.stop()
        print(f"first observations received; taking the screenshot in {self.after:g} s", flush=True)
        QTimer.singleShot(int(self.after * 1000), self._take)

    def _act_on_alarms(self) -> None:
        """--acknowledge N / --shelve N: what an operator would have done by now, through the
        alarm page's own requests (so the screenshot shows alarms in several ISA states)."""
        pages = self.window.alarm_pages
        waiting = sorted((a for a in pages.alarms.values() if a.alarm_state in
                          (AlarmState.UNACKNOWLEDGED_ACTIVE, AlarmState.UNACKNOWLEDGED_RETURNED)),
                         key=lambda a: (PRIORITY_RANK.get(a.priority, 9), a.activated_at, a.alarm_id))
        active = [a.alarm_id for a in waiting if a.alarm_state is AlarmState.UNACKNOWLEDGED_ACTIVE]
        returned = [a.alarm_id for a in waiting if a.alarm_state is AlarmState.UNACKNOWLEDGED_RETURNED]
        # Active ones first: Acknowledged-Active is the state an acknowledgement shows best.
        chosen = (active + returned)[: self.acknowledge]
        if chosen:
            pages.active_view.acknowledge_requested.emit(chosen, "checked at the machine")
        rest = [i for i in active + returned if i not in chosen][: self.shelve]
        if rest:
            pages.active_view.shelve_requested.emit(rest, 3600.0, "maintenance on this axis")
        print(f"acknowledged {len(chosen)} and shelved {len(rest)} alarm(s) before the screenshot", flush=True)

    def _take(self) -> None:
        if self.acknowledge or self.shelve:
            self._act_on_alarms()
            self.acknowledge = self.shelve = 0
            QTimer.singleShot(1500, self._take)  # the new states come back with the next updates
            return
        view = get_view(self.view)
        if view is None:
            print(f"error: no view {self.view!r}; known: {', '.join(view_names())}", file=sys.stderr, flush=True)
            self.exit_code = 2
            self.window.close()
            return
        self._target = view.show(self.window)
        if self._target is None:
            print(f"error: view {self.view!r} has nothing to show yet", file=sys.stderr, flush=True)
            self.exit_code = 1
            self.window.close()
            return
        self._ready = view.ready
        self._ready_deadline = time.monotonic() + VIEW_READY_TIMEOUT
        self._poll.start()

    def _on_poll(self) -> None:
        ready = self._ready is None or self._ready(self.window, self._target)
        if not ready and time.monotonic() < self._ready_deadline:
            return
        self._poll.stop()
        if not ready:
            print(f"warning: view {self.view!r} not ready after {VIEW_READY_TIMEOUT:g} s; saving it as it is",
                  file=sys.stderr, flush=True)
        # Let the timer draw the view once more before it is captured.
        QTimer.singleShot(500, self._save)

    def _save(self) -> None:
        target = self._target if self._target is not self.window else None
        if self.window.save_screenshot(self.path, target):
            print(f"screenshot saved to {self.path}", flush=True)
            self.exit_code = 0
        else:
            print(f"error: could not save the screenshot to {self.path}", file=sys.stderr, flush=True)
            self.exit_code = 1
        self.window.close()

    def _on_services_failed(self, message: str) -> None:
        if self.exit_code is not None or not self._timeout.isActive():
            return  # the screenshot is under way or done; a later failure does not undo it
        self._timeout.stop()
        print(f"error: local services failed, no screenshot taken: {message}", file=sys.stderr, flush=True)
        self.exit_code = 1
        self.window.close()

    def _on_timeout(self) -> None:
        status = self.window.progress_label.toolTip() or self.window.broker_label.text()
        print(
            f"error: no observations from Kafka within {self._first_batch_timeout:g} s ({status}); no screenshot taken",
            file=sys.stderr,
            flush=True,
        )
        self.exit_code = 1
        self.window.close()


def alarm_model(settings: Settings, config_dir: Path) -> MonitorModel:
    """The model with the alarm rules (the user's `alarm-rules.yaml` in the settings folder,
    else the default rules), the journal in the per-user data folder and this computer's name
    as the station. A rules file with an error raises `RulesError` naming file, line and field."""
    user_rules = config_dir / USER_RULES_FILE
    rules = load_rules(user_rules if user_rules.is_file() else default_rules_path())
    return MonitorModel(window_seconds=DEFAULT_HISTORY_SECONDS, offline_after=settings.offline_after, rules=rules,
                        journal=AlarmJournal(default_journal_path()), station=socket.gethostname())


def run(options: argparse.Namespace) -> int:
    app = QApplication.instance() or QApplication([sys.argv[0], *getattr(options, "qt_args", [])])
    app.setApplicationName("Machine Monitor")
    app.setDesktopFileName("machine-monitor")
    apply_style(app)
    try:
        settings, config_dir = load_effective_settings(options)
    except SettingsError as exc:
        if exc.path is None or options.screenshot:
            # Nobody to ask: the message, and no data shown from settings the user did not choose.
            print(f"error: {exc}", file=sys.stderr)
            return 2
        config_dir = paths.config_dir(options.config_dir)
        entered = ask_about_broken_settings(exc, config_dir)
        if entered is None:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            settings = apply_command_line(entered, options)
        except SettingsError as command_line_error:
            print(f"error: {command_line_error}", file=sys.stderr)
            return 2

    instance = None
    if not options.screenshot:
        from desktop.ui.single import InstanceServer, ask_running_instance

        if ask_running_instance(config_dir):
            print("Machine Monitor is already running for these settings; its window was brought forward.", flush=True)
            return 0
        instance = InstanceServer(config_dir, app)
    settings = first_run.ask_on_first_start(settings, config_dir, options)  # no settings file yet: the first-run wizard
    if options.screenshot and get_view(options.view) is None:
        print(f"error: --view {options.view!r} is not known; choose one of {', '.join(view_names())}", file=sys.stderr)
        return 2
    services = LocalServices.from_settings(settings, config_dir, parent=app) if settings.is_local else None
    try:
        model = alarm_model(settings, config_dir)
    except (RulesError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if not options.screenshot:
            QMessageBox.critical(None, "Alarm rules cannot be used", str(exc))
        return 2
    window = MainWindow(settings, services, config_dir, model=model, data_dir=default_journal_path().parent)
    if instance is not None:
        instance.show_requested.connect(window._on_show_window_requested)
    job = None
    if options.screenshot:
        window.resize(1440, 900)
        job = ScreenshotJob(window, Path(options.screenshot), options.after, view=options.view,
                            acknowledge=getattr(options, "acknowledge", 0), shelve=getattr(options, "shelve", 0))
    wakeup = _install_signal_handlers(window.close)
    # Last line of defence (e.g. the loop was quit directly): stop children synchronously -
    # those of the window's current set (a change of settings replaces it).
    app.aboutToQuit.connect(lambda: window.services.stop_now()
                            if window.services is not None and window.services.active else None)
    minimised = getattr(options, "minimised", False) or (settings.start_minimised and not options.screenshot)
    if minimised and window.notifier.uses_tray:
        pass  # monitoring in the tray; the tray icon shows the window
    elif minimised:
        window.showMinimized()
    else:
        window.show()
    window.start()
    code = app.exec()
    wakeup.stop()
    if job is not None:
        return job.exit_code if job.exit_code is not None else 1
    return code


class SelfTest(QObject):
    """Resources, broker, replay agent, producer and the Kafka feed, checked in order."""

    def __init__(self, settings: Settings, first_batch_timeout: float = FIRST_BATCH_TIMEOUT) -> None:
        super().__init__()
        self.settings = settings
        self.first_batch_timeout = first_batch_timeout
        self.results: list[tuple[str, bool, str]] = []
        self.services = LocalServices(max(settings.replay_speed, 1.0), settings.topic_prefix, parent=self)
        self.worker: FeedWorker | None = None
        self.started_at = time.time()
        self._finishing = False
        self._data_timer = QTimer(self)
        self._data_timer.setSingleShot(True)
        self._data_timer.timeout.connect(self._on_data_timeout)
        self._overall = QTimer(self)
        self._overall.setSingleShot(True)
        self._overall.timeout.connect(lambda: self._finish("overall", False, f"no result within {SELF_TEST_TIMEOUT:g} s"))
        self.services.progress_reported.connect(lambda text: print(f"  … {text}", flush=True))
        self.services.services_started.connect(self._on_services_started)
        self.services.services_failed.connect(self._on_services_failed)

    def record(self, name: str, ok: bool, detail: str) -> None:
        self.results.append((name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(ok for _, ok, _ in self.results)

    def start(self) -> None:
        missing = paths.missing_resources()
        self.record(
            "resources",
            not missing,
            f"all {len(paths.REQUIRED_RESOURCES)} present in {paths.resources_dir()}" if not missing else "missing: " + ", ".join(missing),
        )
        self._overall.start(int(SELF_TEST_TIMEOUT * 1000))
        self.services.start()

    def _on_services_started(self, bootstrap: str) -> None:
        for name in SERVICE_NAMES:
            state, detail = self.services.states[name]
            self.record(SERVICE_LABELS[name], True, f"{state.value} ({detail})" if detail else state.value)
        # Only observations produced from now on count: older topics must not pass the test.
        config = FeedConfig(
            bootstrap_servers=bootstrap,
            topic_prefix=self.settings.topic_prefix,
            kafka_properties=self.settings.kafka_config(bootstrap),
            start_time=self.started_at - 5.0,
        )
        self.worker = FeedWorker(config, self)
        self.worker.batch_received.connect(self._on_batch_received)
        self.worker.feed_failed.connect(lambda message: self._finish("kafka feed", False, message))
        self._data_timer.start(int(self.first_batch_timeout * 1000))
        self.worker.start()

    def _on_services_failed(self, message: str) -> None:
        self._finish("local services", False, message)

    def _on_batch_received(self, batch: Batch) -> None:
        if self.worker is not None:
            self.worker.batch_consumed()
        if batch.observations and not self._finishing:
            devices = sorted({str(o.get("device_name")) for o in batch.observations})
            self._finish(
                "observations",
                True,
                f"{len(batch.observations)} observations from {', '.join(devices)} after {time.time() - self.started_at:.1f} s",
            )

    def _on_data_timeout(self) -> None:
        self._finish("observations", False, f"none arrived within {self.first_batch_timeout:g} s")

    def _finish(self, name: str, ok: bool, detail: str) -> None:
        if self._finishing:
            return
        self._finishing = True
        self._data_timer.stop()
        self.record(name, ok, detail)
        if self.worker is not None:
            self.worker.stop()
        self.services.services_stopped.connect(self._on_services_stopped)
        self.services.stop()

    def _on_services_stopped(self) -> None:
        failed = [f"{SERVICE_LABELS[n]}: {d}" for n in SERVICE_NAMES for s, d in [self.services.states[n]] if s.value == "failed"]
        self.record("stop", not failed, "all local services stopped" if not failed else "; ".join(failed))
        self._overall.stop()
        QCoreApplication.quit()


def run_self_test(options: argparse.Namespace) -> int:
    app = QCoreApplication.instance() or QCoreApplication([sys.argv[0]])
    try:
        settings, _ = load_effective_settings(options)
    except SettingsError as exc:
        print(f"FAIL settings: {exc}")
        return 1
    test = SelfTest(settings)
    wakeup = _install_signal_handlers(lambda: test._finish("interrupted", False, "stopped by a signal"))
    app.aboutToQuit.connect(lambda: test.services.stop_now() if test.services.active else None)
    QTimer.singleShot(0, test.start)
    app.exec()
    wakeup.stop()
    print("self-test: " + ("PASS" if test.passed else "FAIL"), flush=True)
    return 0 if test.passed else 1
