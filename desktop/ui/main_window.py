"""The main window: tabs (overview, one per opened machine, and views added later), banner,
status bar, tray, and the wiring between feed, core thread, local services and views.

Threads and data path (nothing per observation, and no disk I/O, on the GUI thread):

    feed process (`desktop.core.feed_process`): Kafka consume, decode, validate  --pipe-->
    FeedWorker thread: reads the process's batches  --offer_batch-->
    CoreWorker thread: MonitorCore.apply (fleet, machine state, ring buffers, alarm engine,
                       SQLite journal written before anything is shown)  --update_ready-->
    GUI thread: `_on_update_ready` applies the immutable `ViewUpdate` to `ViewState` (dict
                updates, a few numpy appends), notifies, releases the core for the next one.

While the GUI thread draws or applies an update, the core thread (and a feed running on a
thread of its own, `FeedWorker(separate_process=False)`) steps aside between chunks of its
work (`desktop.core.gui_priority`): they share one interpreter, and without that the GUI
thread waited for it after every Qt call of a frame. The status bar
shows how far behind the stream the app reads once that is 5 s or more.

One `QTimer` (15 Hz) draws: only the tiles whose content changed, the visible detail tab,
the alarm pages and the status bar. The alarm pages ("Alarms", "Journal", "KPIs",
`desktop.ui.alarms`) take the alarm events of each update; user actions on alarms go to the
core thread through `submit(fn)` (`CoreWorker.submit`): `fn(core)` runs between batches, its
events come back with the next update. Shared acknowledgement (`AckSharing`: the station's
outbox and the reader of `monitor.alarm-acks`) starts with the feed, on the core thread, and
applies what other stations shared there too. Later views join with `add_view(name, title, widget)`: a tab, and a
name the screenshot command (`--view NAME`, see `desktop.ui.views`) can show.

Kafka state in the status bar is what the feed reports: connected (green), stalled (amber:
no answer for a few seconds), unreachable (red), within 10 s of a broker that stops
answering. In local mode the window starts `LocalServices` and starts the feed once the
broker's address is known; a service that dies is restarted with backoff and the bar says so.
Closing the window hides it to the tray when there is one (the first time with a hint); Quit
(menu or tray) stops the feed and the services this window started, then closes for real.
"""
from __future__ import annotations

import logging
import socket
import time
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from desktop.core.alarms import load_rules
from desktop.core.alarms.common import USER_RULES_FILE
from desktop.core.alarms.sharing import AckSharing
from desktop.core.batch import Batch
from desktop.core.gui_priority import GuiPriority, favour_short_turns
from desktop.core.feed import CONNECTED, CONNECTING, DEFAULT_HISTORY_SECONDS, STALLED, STOPPED, UNREACHABLE, WAITING, FeedConfig
from desktop.core.machines import MachineStatus, rough_duration, worst
from desktop.core.model import MonitorModel
from desktop.core.monitor import ALARM_STATE_ORDER, MonitorCore, ViewUpdate
from desktop.core.services import BROKER, SERVICE_LABELS, SERVICE_NAMES, ServiceState
from desktop.core.settings import Settings
from desktop.core.viewstate import ViewState
from desktop.ui.alarms import AlarmPages
from desktop.ui.detail import DetailView
from desktop.ui.notifier import AlarmBanner, AlarmNotifier
from desktop.ui.services import LocalServices
from desktop.ui.theme import app_icon
from desktop.ui.tiles import MachineOverview
from desktop.ui.workers import CoreWorker, FeedWorker

REFRESH_HZ = 15
# The status bar says the app is behind the stream once its newest record is this old.
BEHIND_AFTER = 5.0
FEED_RETRY_DELAYS = (2.0, 5.0, 10.0, 30.0, 60.0)
OVERVIEW = "overview"
log = logging.getLogger(__name__)

# Unacknowledged alarms of these priorities turn the tray icon red whatever the machine does.
URGENT_PRIORITIES = frozenset({"critical", "high"})
_UNACKNOWLEDGED = frozenset(ALARM_STATE_ORDER[:1] + ALARM_STATE_ORDER[2:3])

# Fields whose change needs a new connection (the rest applies in place).
_CONNECTION_FIELDS = ("mode", "bootstrap_servers", "topic_prefix", "security_protocol", "sasl_mechanism", "sasl_username",
                      "sasl_password", "ssl_ca_location", "kafka_properties", "replay_speed", "agents", "replay_start")


def _age(seconds: float) -> str:
    if seconds < 1.5:
        return "just now"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    return f"{seconds / 60:.0f} min ago"


class MainWindow(QMainWindow):
    first_observations_received = Signal()
    shutdown_finished = Signal()
    update_applied = Signal()  # after each ViewUpdate (tests, benchmark)
    detail_opened = Signal(str)  # device uuid
    rules_applied = Signal(object)  # the Future of the core's use_rules (from the core thread)

    def __init__(
        self,
        settings: Settings,
        services: LocalServices | None = None,
        config_dir: Path | None = None,
        model: MonitorModel | None = None,
        history_seconds: float = DEFAULT_HISTORY_SECONDS,
        use_tray: bool | None = None,
        feed_start_time: float | None = None,
        data_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.services = services
        self.config_dir = config_dir
        self.history_seconds = history_seconds
        self.feed_start_time = feed_start_time
        self.core = MonitorCore(model or MonitorModel(window_seconds=history_seconds,
                                                      offline_after=settings.offline_after,
                                                      station=socket.gethostname()))
        self.state = ViewState()
        # The feed and core threads give way while the GUI draws or applies an update: the
        # GUI thread would otherwise wait for the interpreter after every Qt call of a frame.
        # Busy from the start of that work until a zero-time timer fires, i.e. once the
        # events it caused (the paint events of the frame) have been handled.
        self.gui_priority = GuiPriority()
        favour_short_turns()
        self.core.model.pause = self.gui_priority.step_aside
        self._gui_work_done = QTimer(self)
        self._gui_work_done.setSingleShot(True)
        self._gui_work_done.setInterval(0)
        self._gui_work_done.timeout.connect(self.gui_priority.gui_idle)
        self.core_worker = CoreWorker(self.core, self)
        self.core_worker.update_ready.connect(self._on_update_ready)
        # The alarms the engine restored from the journal, read before the core thread runs.
        restored_alarms = self.core.model.alarm_engine.alarms()
        # The station's ack outbox lives here (None: in memory only, e.g. tests).
        self.data_dir = data_dir
        self.sharing: AckSharing | None = None  # created, used and stopped on the core thread
        self._unshared: list[dict] = []
        self.core_worker.start()
        self.worker: FeedWorker | None = None
        self.bootstrap: str | None = None
        self.feed_state = ""
        self.feed_detail = ""
        self._seen_observations = False
        self._service_progress = False
        self._feed_retries = 0
        self._shutting_down = False
        self._shut_down = False
        self._close_when_done = False
        self._quitting = False
        self._tray_hint_shown = False
        self.views: dict[str, QWidget] = {}
        self.details: dict[str, DetailView] = {}
        # Called on the feed thread with every batch before the core gets it (tests, tools).
        self.batch_observers: list[Callable[[Batch], None]] = []
        self.updates_applied = 0

        self.setWindowTitle("Machine Monitor")
        self.setWindowIcon(app_icon())
        self.resize(1440, 920)

        # -- widgets --
        self.banner = AlarmBanner()
        self.overview = MachineOverview()
        self.notifier = AlarmNotifier(self.banner, self, use_tray=use_tray)
        self.notifier.set_preferences(settings)
        self.notifier.show_window_requested.connect(self._on_show_window_requested)
        self.notifier.quit_requested.connect(self.quit)
        self.notifier.machine_requested.connect(self.open_detail)
        self.banner.clicked.connect(self.open_detail)
        self.overview.machine_opened.connect(self.open_detail)

        overview_page = self.overview
        self.tabs = QTabWidget(objectName="mainTabs")
        self.tabs.setTabsClosable(True)
        self.tabs.setDocumentMode(True)
        self.tabs.tabCloseRequested.connect(self._on_tab_close_requested)
        self.add_view(OVERVIEW, "Overview", overview_page, closable=False)
        self.alarm_pages = AlarmPages(self, self.model.journal, restored_alarms, self._publish_ack,
                                      self.model.alarm_engine.settings)

        central = QWidget(objectName="central")
        layout = QVBoxLayout(central)
        layout.setContentsMargins(8, 6, 8, 4)
        layout.setSpacing(6)
        layout.addWidget(self.banner)
        layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

        # -- status bar --
        self.progress_label = QLabel(objectName="statusProgress")
        self.progress_bar = QProgressBar(objectName="statusBusy")
        self.progress_bar.setRange(0, 0)  # busy indicator: durations are not known in advance
        self.progress_bar.setMaximumWidth(110)
        self.progress_bar.setMaximumHeight(14)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setVisible(False)
        self.broker_label = QLabel("Kafka: not connected", objectName="statusBroker")
        self.services_label = QLabel(objectName="statusServices")
        self.rate_label = QLabel("0 obs/s", objectName="statusRate")
        self.rate_label.setToolTip("Observations received per second (last 5 s)")
        self.last_data_label = QLabel("last data: —", objectName="statusLastData")
        # Reading slower than the plant writes (or still reading history) is shown, not hidden.
        self.behind_label = QLabel(objectName="statusBehind")
        self.behind_label.setVisible(False)
        # Records that do not match the schema are never shown; how many were left out is.
        self.skipped_label = QLabel(objectName="statusSkipped")
        self.skipped_label.setVisible(False)
        self.horn_label = QLabel("Horn: unacknowledged critical/high alarms (Ctrl+M in Alarms mutes)", objectName="statusHorn")
        self.horn_label.setVisible(False)
        self._skipped_shown = 0
        status = self.statusBar()
        status.addWidget(self.progress_bar)
        status.addWidget(self.progress_label, 1)
        for label in (self.horn_label, self.skipped_label, self.broker_label, self.services_label, self.rate_label,
                      self.behind_label, self.last_data_label):
            status.addPermanentWidget(label)
        self.services_label.setVisible(services is not None)

        # -- menu --
        file_menu = self.menuBar().addMenu("&File")
        settings_action = QAction("&Settings…", self)
        settings_action.setShortcut(QKeySequence("Ctrl+,"))
        settings_action.triggered.connect(self.open_settings)
        file_menu.addAction(settings_action)
        file_menu.addSeparator()
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.quit)
        file_menu.addAction(quit_action)
        view_menu = self.menuBar().addMenu("&View")
        overview_action = QAction("&Overview", self)
        overview_action.setShortcut(QKeySequence("Ctrl+1"))
        overview_action.triggered.connect(lambda: self.show_view(OVERVIEW))
        view_menu.addAction(overview_action)
        self.alarm_pages.add_actions(view_menu)
        self.alarm_pages.active_view.mute_requested.connect(self._on_mute_requested)
        self.notifier.attention_window = self
        self.notifier.horn_changed.connect(self._on_horn_changed)
        self._horn_checked = 0.0
        self.rules_status = ""  # what became of the last change of the alarm rules
        self.rules_applied.connect(self._on_rules_applied)
        close_tab = QAction("&Close machine tab", self)
        close_tab.setShortcut(QKeySequence("Ctrl+W"))
        close_tab.triggered.connect(lambda: self._on_tab_close_requested(self.tabs.currentIndex()))
        view_menu.addAction(close_tab)

        self.refresh_timer = QTimer(self)
        self.refresh_timer.setInterval(int(1000 / REFRESH_HZ))
        self.refresh_timer.timeout.connect(self.refresh)
        self.refresh_timer.start()
        self._feed_retry_timer = QTimer(self)
        self._feed_retry_timer.setSingleShot(True)
        self._feed_retry_timer.timeout.connect(self._restart_feed)

        if services is not None:
            self._connect_services(services)

    # -- the core ---------------------------------------------------------------------------

    @property
    def model(self) -> MonitorModel:
        """The core's model. It lives on the core thread: views read `state`, not this."""
        return self.core.model

    def submit(self, command: Callable[[MonitorCore], Any]) -> Future:
        """Run `command(core)` on the core thread (alarm actions...); events come with the next update."""
        return self.core_worker.submit(command)

    def ingest(self, batch: Batch) -> None:
        """Hand a batch to the core thread, as the feed does (tests and tools feed batches this way)."""
        self._offer_batch(batch)

    def _offer_batch(self, batch: Batch, release: Callable[[], None] | None = None) -> None:
        for observer in self.batch_observers:
            observer(batch)
        self.core_worker.offer_batch(batch, release)

    def _gui_work_started(self) -> None:
        self.gui_priority.gui_busy()
        self._gui_work_done.start()

    def _on_update_ready(self, update: ViewUpdate) -> None:
        self._gui_work_started()
        try:
            self.apply_update(update)
        finally:
            self.core_worker.update_consumed()

    def apply_update(self, update: ViewUpdate) -> None:
        """Take one reduced update: state, notifications; drawing is left to the timer."""
        self.state.apply(update)
        self.updates_applied += 1
        if update.alarm_events:
            self.alarm_pages.apply_events(update.alarm_events)
        if update.notices:
            # Noise control (repeats, chattering, flood summary) is the engine's; styled by priority.
            self.notifier.show_notices(update.notices)
        if update.has_observations:
            self._feed_retries = 0
            if not self._seen_observations:
                self._seen_observations = True
                self._set_progress("", busy=False)
                self.first_observations_received.emit()
        self.update_applied.emit()

    # -- views ------------------------------------------------------------------------------

    def add_view(self, name: str, title: str, widget: QWidget, closable: bool = True) -> int:
        """A page of the window (a tab), known by `name` to `show_view` and `--view NAME`."""
        self.views[name] = widget
        index = self.tabs.addTab(widget, title)
        if not closable:
            bar = self.tabs.tabBar()
            for side in (bar.ButtonPosition.RightSide, bar.ButtonPosition.LeftSide):
                button = bar.tabButton(index, side)
                if button is not None:
                    button.resize(0, 0)
                    button.setVisible(False)
        return index

    def show_view(self, name: str) -> QWidget | None:
        widget = self.views.get(name)
        if widget is not None:
            self.tabs.setCurrentWidget(widget)
        return widget

    def feed_config(self) -> FeedConfig | None:
        if self.bootstrap is None:
            return None
        return FeedConfig(bootstrap_servers=self.bootstrap, topic_prefix=self.settings.topic_prefix,
                          kafka_properties=self.settings.kafka_config(self.bootstrap))

    def open_detail(self, device_uuid: str) -> DetailView:
        """The machine's detail tab (opened once, then brought to front)."""
        view = self.details.get(device_uuid)
        if view is None:
            view = DetailView(device_uuid, self.state, self.submit, self.feed_config, self.settings.shifts,
                              self.settings.offline_after, self)
            self.details[device_uuid] = view
            machine = self.state.machines.get(device_uuid)
            self.add_view(f"machine:{device_uuid}", machine.name if machine else device_uuid, view)
        self._on_show_window_requested()
        self.tabs.setCurrentWidget(view)
        self.overview.grid.select(device_uuid)
        self.detail_opened.emit(device_uuid)
        return view

    def _on_tab_close_requested(self, index: int) -> None:
        widget = self.tabs.widget(index)
        if widget is None or widget is self.views.get(OVERVIEW):
            return
        self.tabs.removeTab(index)
        for name, view in list(self.views.items()):
            if view is widget:
                del self.views[name]
        if isinstance(widget, DetailView):
            self.details.pop(widget.device_uuid, None)
            widget.close_view()
        widget.deleteLater()

    # -- start ----------------------------------------------------------------------------

    def _connect_services(self, services: LocalServices) -> None:
        services.progress_reported.connect(self._on_progress_reported)
        services.state_changed.connect(self._on_service_state_changed)
        services.services_started.connect(self._on_services_started)
        services.services_failed.connect(self._on_services_failed)
        services.bootstrap_changed.connect(self._on_bootstrap_changed)

    def start(self) -> None:
        """Start the data flow: local services first in local mode, else the feed directly."""
        if self.services is not None:
            self.services_label.setVisible(True)
            self._set_progress("Starting local services…", busy=True)
            self.broker_label.setText("Kafka: starting…")
            self.overview.set_waiting_text("Starting local Kafka broker, replay agent and producer…")
            self.services.start()
        else:
            self.start_feed(self.settings.bootstrap_servers)

    def start_feed(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        config = FeedConfig(
            bootstrap_servers=bootstrap,
            topic_prefix=self.settings.topic_prefix,
            kafka_properties=self.settings.kafka_config(bootstrap),
            history_seconds=self.history_seconds,
            start_time=self.feed_start_time,
        )
        self.submit(lambda core: self._start_sharing(config))
        worker = self.worker = FeedWorker(config, self, sink=self._offer_batch, pause=self.gui_priority.step_aside)
        worker.status_changed.connect(self._on_status_changed)
        worker.feed_failed.connect(self._on_feed_failed)
        self.overview.set_waiting_text(f"Waiting for machines from Kafka at {bootstrap}…")
        if not self._seen_observations:
            self._set_progress(f"Connecting to Kafka at {bootstrap} and reading the last "
                               f"{self.history_seconds / 60:.0f} minutes…", busy=True)
        worker.start()

    # -- shared acknowledgement (on the core thread) ---------------------------------------

    def _start_sharing(self, config: FeedConfig) -> None:
        """The outbox and the ack reader for this broker; records made before are sent now."""
        if self.sharing is not None:
            if self.sharing.reader.bootstrap_servers == config.bootstrap_servers:
                return
            self._stop_sharing()
        if self.data_dir is not None:
            outbox_path: Path | str = self.data_dir / "ack-outbox.sqlite3"
        elif self.model.journal.path is not None:
            outbox_path = self.model.journal.path.with_name("ack-outbox.sqlite3")
        else:
            outbox_path = ":memory:"
        submit = self.submit

        def on_records(records) -> None:  # on the reader's thread: applied on the core thread
            submit(lambda core: core.record_events(core.model.alarm_engine.apply_ack_records(records)))

        self.sharing = AckSharing(outbox_path, config.bootstrap_servers, config.topic_prefix, config.kafka_properties,
                                  on_records=on_records)
        self.sharing.start()
        for record in self._unshared:
            self.sharing.publish(record)
        self._unshared.clear()

    def _publish_ack(self, core: MonitorCore, record: dict) -> None:
        """An operator's record, on the core thread: into the outbox (kept until there is one)."""
        if self.sharing is None:
            self._unshared.append(record)
        else:
            self.sharing.publish(record)

    def _stop_sharing(self) -> None:
        sharing, self.sharing = self.sharing, None
        if sharing is not None:
            sharing.stop()

    def _stop_feed(self) -> None:
        worker, self.worker = self.worker, None
        if worker is None:
            return
        for signal in (worker.status_changed, worker.feed_failed):
            signal.disconnect()
        worker.stop()
        worker.deleteLater()

    # -- feed and services signals --------------------------------------------------------

    def _on_status_changed(self, state: str, detail: str) -> None:
        self.feed_state, self.feed_detail = state, detail
        where = self.bootstrap or "?"
        text = {
            CONNECTING: f"Kafka: connecting to {where}…",
            CONNECTED: f"Kafka: connected to {where}",
            WAITING: f"Kafka: connected to {where}, {detail}",
            STALLED: f"Kafka: {where} not answering ({detail})",
            UNREACHABLE: f"Kafka: unreachable: {detail}",
            STOPPED: "Kafka: disconnected",
        }.get(state)
        if text is None:  # a non-fatal client error: show it without changing the state
            self.broker_label.setToolTip(detail)
            return
        self.broker_label.setText(_shorten(text, 90))
        self.broker_label.setToolTip(text)
        self.broker_label.setProperty("state", state)
        self.broker_label.style().unpolish(self.broker_label)
        self.broker_label.style().polish(self.broker_label)
        if state == UNREACHABLE and not self._seen_observations:
            self.overview.set_waiting_text(f"Kafka at {where} is unreachable: {detail}\nRetrying…")
        self._update_services_label()

    def _on_feed_failed(self, message: str) -> None:
        delay = FEED_RETRY_DELAYS[min(self._feed_retries, len(FEED_RETRY_DELAYS) - 1)]
        self._feed_retries += 1
        self.broker_label.setText(_shorten(f"Kafka feed stopped: {message}", 90))
        self.broker_label.setToolTip(message)
        self.broker_label.setProperty("state", UNREACHABLE)
        self.broker_label.style().unpolish(self.broker_label)
        self.broker_label.style().polish(self.broker_label)
        self._set_progress(f"Retrying in {delay:g} s — Kafka feed stopped: {message}", busy=False)
        if not self._shutting_down:
            self._feed_retry_timer.start(int(delay * 1000))

    def _restart_feed(self) -> None:
        if self._shutting_down or self.bootstrap is None:
            return
        self._stop_feed()
        # History is read again from the start: rebuild the state from it.
        self.submit(lambda core: core.reset())
        self.start_feed(self.bootstrap)

    def _on_bootstrap_changed(self, bootstrap: str) -> None:
        """The local broker was restarted on other ports: follow it."""
        if bootstrap and bootstrap != self.bootstrap and self.worker is not None:
            self._stop_feed()
            self.submit(lambda core: core.reset())
            self.start_feed(bootstrap)

    def _on_progress_reported(self, text: str) -> None:
        # Cleared again once every local service runs (see _on_service_state_changed).
        self._service_progress = True
        self._set_progress(text, busy=True)
        if not self.state.machines:
            self.overview.set_waiting_text(text)

    def _update_services_label(self) -> None:
        """"Local: broker running, replay running, producer running", from the services'
        states and the feed's: a broker process that runs but does not answer (hung, or
        frozen) is "not answering", not "running"."""
        if self.services is None:
            return
        parts, tips = [], []
        silent = False
        for service in SERVICE_NAMES:
            service_state, service_detail = self.services.states[service]
            word = service_state.value
            tip = f"{SERVICE_LABELS[service]}: {service_state.value}" + (f" — {service_detail}" if service_detail else "")
            if service_state == ServiceState.FAILED and "restarting" in service_detail:
                word = "restarting"
            elif service == BROKER and service_state == ServiceState.RUNNING and self.feed_state in (STALLED, UNREACHABLE):
                word, silent = "not answering", True
                tip += f" — its process runs, but Kafka does not answer ({self.feed_detail})"
            parts.append(f"{service} {word}")
            tips.append(tip)
        self.services_label.setText("Local: " + ", ".join(parts))
        self.services_label.setToolTip("\n".join(tips))
        bad = silent or any(self.services.states[s][0] in (ServiceState.FAILED, ServiceState.STOPPED)
                            for s in SERVICE_NAMES if self.services.expected(s))
        if self.services_label.property("state") != ("failed" if bad else "ok"):
            self.services_label.setProperty("state", "failed" if bad else "ok")
            self.services_label.style().unpolish(self.services_label)
            self.services_label.style().polish(self.services_label)

    def _on_service_state_changed(self, name: str, state: str, detail: str) -> None:
        if self.services is None:
            return
        self._update_services_label()
        if state == ServiceState.FAILED.value:
            self._set_progress(f"{SERVICE_LABELS.get(name, name)}: {detail}", busy=False)
        elif self._service_progress and self._seen_observations and all(
                self.services.states[s][0] == ServiceState.RUNNING for s in SERVICE_NAMES if self.services.expected(s)):
            # A restart is over: "Starting producer…" and its busy bar would otherwise stay
            # (the first start's progress is cleared by the first observations instead).
            self._service_progress = False
            self._set_progress("", busy=False)

    def _on_services_started(self, bootstrap: str) -> None:
        self._set_progress(f"Local services running; connecting to Kafka at {bootstrap}…", busy=True)
        if self.worker is None:
            self.start_feed(bootstrap)

    def _on_services_failed(self, message: str) -> None:
        self._set_progress(f"Local services failed: {message}", busy=False)
        self.broker_label.setText("Kafka: not started")
        if not self.state.machines:
            self.overview.set_waiting_text(f"Local services failed to start:\n{message}")

    def _on_show_window_requested(self) -> None:
        if self.isHidden() or self.isMinimized():
            self.showNormal()
        self.raise_()
        self.activateWindow()

    def _set_progress(self, text: str, busy: bool) -> None:
        self.progress_label.setText(_shorten(text, 140))
        self.progress_label.setToolTip(text)
        self.progress_bar.setVisible(busy)

    # -- drawing --------------------------------------------------------------------------

    def worst_status(self) -> MachineStatus | None:
        """The worst current state of any machine (the tray icon's colour). An unacknowledged
        alarm of high or critical priority counts as alarm; a lower one does not (a machine
        whose adapter reports nothing would otherwise keep the tray red from the first minute,
        and a red that is always there is soon ignored)."""
        statuses = [view.status for view in self.state.machines.values()]
        if any(view.alarm_state in _UNACKNOWLEDGED and view.alarm_priority in URGENT_PRIORITIES
               for view in self.state.machines.values()):
            statuses.append(MachineStatus.ALARM)
        return worst(statuses)

    def refresh(self) -> None:
        """The timer's redraw: changed tiles, the visible detail, alarms and status bar."""
        self._gui_work_started()
        now = time.time()
        dirty = self.state.take_dirty()
        if dirty:
            counts = self.state.counts()
            self.overview.update_views(self.state.machines, dirty, counts)
            in_alarm = counts[MachineStatus.ALARM]
            title = "Machine Monitor" + (f" — {in_alarm} machine(s) in alarm" if in_alarm else "")
            if self.windowTitle() != title:
                self.setWindowTitle(title)
            # From the machines' views: the journal belongs to the core thread, which changes it
            # while this runs.
            unacknowledged = sum(view.unacknowledged for view in self.state.machines.values())
            self.notifier.set_status(self.worst_status(), counts, unacknowledged)
            for uuid in dirty:
                view = self.details.get(uuid)
                machine = self.state.machines.get(uuid)
                if view is not None and machine is not None:
                    index = self.tabs.indexOf(view)
                    if index >= 0 and self.tabs.tabText(index) != machine.name:
                        self.tabs.setTabText(index, machine.name)
        current = self.tabs.currentWidget()
        if isinstance(current, DetailView):
            current.refresh(now)
        self.alarm_pages.refresh()
        if now - self._horn_checked >= 0.5:  # a mute expires on the wall clock
            self._horn_checked = now
            self.notifier.update_horn(self.alarm_pages.alarms.values(), now)
        rate = f"{self.state.observation_rate:,.0f} obs/s"
        if self.rate_label.text() != rate:
            self.rate_label.setText(rate)
        if self.state.last_data_at is not None:
            text = f"last data: {_age(now - self.state.last_data_at)}"
            if self.last_data_label.text() != text:
                self.last_data_label.setText(text)
                stamp = self.state.last_observation_timestamp or ""
                received = datetime.fromtimestamp(self.state.last_data_at).strftime("%H:%M:%S")
                self.last_data_label.setToolTip(f"received {received}; newest observation time {stamp}")
        behind = self.state.behind_seconds
        if (behind >= BEHIND_AFTER) != self.behind_label.isVisibleTo(self):
            self.behind_label.setVisible(behind >= BEHIND_AFTER)
        if behind >= BEHIND_AFTER:
            text = f"{rough_duration(behind)} behind"
            if self.behind_label.text() != text:
                self.behind_label.setText(text)
                self.behind_label.setToolTip(
                    f"The newest record read was published {rough_duration(behind)} ago: the app reads more slowly than "
                    "the machines write (or is still reading history), and catches up as it can. Alarms and "
                    "states are those of that moment.")
        if self.state.errors:
            self.rate_label.setToolTip(f"Observations received per second (last 5 s)\n{self.state.error_count} problem(s); "
                                       f"latest: {self.state.errors[-1]}")
        if self.state.skipped_count != self._skipped_shown:
            self._skipped_shown = count = self.state.skipped_count
            self.skipped_label.setVisible(count > 0)
            self.skipped_label.setText(f"{count:,} invalid record{'' if count == 1 else 's'} skipped")
            self.skipped_label.setToolTip(
                "Records that do not match the message schema (docs/messages.md) are not shown.\nLatest:\n"
                + "\n".join(self.state.skipped)
            )

    def _on_mute_requested(self, seconds: float) -> None:
        self.notifier.mute_horn(self.alarm_pages.alarms.values(), seconds)

    def _on_horn_changed(self, sounding: bool) -> None:
        self.horn_label.setVisible(sounding)

    # -- settings -------------------------------------------------------------------------

    def open_settings(self) -> None:
        from desktop.ui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self, config_dir=self.config_dir)
        if dialog.exec() != SettingsDialog.DialogCode.Accepted or dialog.result_settings is None:
            return
        new_settings = dialog.result_settings
        if self.config_dir is not None:
            from desktop.core.alarms import RulesError

            try:
                dialog.save(self.config_dir)
            except (OSError, RulesError) as exc:
                QMessageBox.warning(self, "Settings not saved", f"Could not write the settings to {self.config_dir}: {exc}")
            else:
                if dialog.result_rules is not None:
                    self.apply_rules(self.config_dir / USER_RULES_FILE)
        if new_settings != self.settings:
            self.apply_settings(new_settings)

    def apply_rules(self, path: Path) -> None:
        """The alarm rules file changed: the core loads it and starts its engine over with it,
        and the feed reads history again, as at start. Open alarms stay; those of a rule
        switched off are out of service; a file that does not load leaves the old rules."""
        self.rules_status = f"Applying the alarm rules from {path}…"
        self._set_progress(self.rules_status, busy=True)
        future = self.submit(lambda core: core.use_rules(load_rules(path)))
        future.add_done_callback(self.rules_applied.emit)

    def _on_rules_applied(self, future: Future) -> None:
        error = future.exception()
        if error is not None:
            self.rules_status = f"Alarm rules not applied, the previous ones stay: {error}"
            self._set_progress(self.rules_status, busy=False)
            log.error("%s", self.rules_status)
            return
        self.alarm_pages.replace(future.result())
        self.rules_status = "Alarm rules applied"
        self._set_progress(self.rules_status, busy=False)
        self._restart_feed()

    def apply_settings(self, settings: Settings) -> None:
        """Apply new settings now: display and notification settings in place; a new
        connection (feed and services stopped, then started as configured) only when a
        connection setting changed."""
        old, self.settings = self.settings, settings
        self.notifier.set_preferences(settings)
        if settings.start_at_login != old.start_at_login:
            from desktop.core.autostart import AutostartError, set_autostart

            try:
                set_autostart(settings.start_at_login)
            except (OSError, AutostartError) as exc:
                QMessageBox.warning(self, "Start at login", f"Could not change start at login: {exc}")
        for view in self.details.values():
            view.shifts = settings.shifts
            view.offline_after = settings.offline_after
        if settings.offline_after != old.offline_after:
            offline_after = settings.offline_after

            def set_offline_after(core: MonitorCore) -> None:
                core.model.offline_after = offline_after
                core.model.fleet.offline_after = offline_after
            self.submit(set_offline_after)
        if all(getattr(old, name) == getattr(settings, name) for name in _CONNECTION_FIELDS):
            return

        def restart() -> None:
            self._shutting_down = self._shut_down = False
            if self.services is not None:
                self.services.deleteLater()  # stopped: the new settings get a set of their own
            if settings.is_local:
                self.services = LocalServices.from_settings(settings, self.config_dir, parent=self)
                self._connect_services(self.services)
            else:
                self.services = None
                self.services_label.setVisible(False)
            self.submit(lambda core: core.reset())
            self._seen_observations = False
            self.start()

        self.shutdown(restart, stop_core=False)

    # -- shutdown -------------------------------------------------------------------------

    def shutdown(self, then: Callable[[], None] | None = None, stop_core: bool = True) -> None:
        """Stop the feed and the local services this window started, without blocking the
        GUI for the services; `shutdown_finished` (and `then`) follow when all is stopped."""
        self._shutting_down = True
        self._feed_retry_timer.stop()
        self._stop_feed()
        self.submit(lambda core: self._stop_sharing())
        if stop_core:
            self.alarm_pages.close()
        for view in self.details.values():
            view.loader.cancel()
        services = self.services

        def finished() -> None:
            if stop_core:
                self.core_worker.stop()
                self.gui_priority.gui_idle()
            self._shut_down = True
            self._set_progress("", busy=False)
            if then is not None:
                then()
            self.shutdown_finished.emit()

        if services is not None:
            # Also when nothing of ours runs: a set that shares another app's services watches
            # them, to take over if they go away, and must stop watching too.
            if services.active:
                self._set_progress("Stopping local services…", busy=True)
            services.services_stopped.connect(finished, Qt.ConnectionType.SingleShotConnection)
            services.stop()
        else:
            finished()

    def quit(self) -> None:
        """Quit for real (menu, tray): not just hide to the tray."""
        self._quitting = True
        self.close()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if self.notifier.uses_tray and not self._quitting and not self._shutting_down and self.settings.close_to_tray:
            # Monitoring goes on in the tray; the first time, say where it went.
            event.ignore()
            self.hide()
            if not self._tray_hint_shown:
                self._tray_hint_shown = True
                self.notifier.show_hint("Machine Monitor is still running",
                                        "It keeps watching the machines here in the tray. Quit from the tray menu.")
            return
        if not self._shutting_down:
            self.shutdown()
        if self._shut_down:
            self.notifier.hide()
            event.accept()
            return
        # Services are still stopping: close again (from the event loop, not from inside
        # this handler) once they are down.
        event.ignore()
        self.setEnabled(False)
        if not self._close_when_done:
            self._close_when_done = True
            self._quitting = True
            self.shutdown_finished.connect(lambda: QTimer.singleShot(0, self.close))

    def save_screenshot(self, path: str | Path, widget: QWidget | None = None) -> bool:
        """Redraw now and save the window (or one widget, e.g. a dialog) as an image."""
        self.refresh()
        target = widget if widget is not None else self
        return target.grab().save(str(path))



def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
