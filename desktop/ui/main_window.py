"""The main window: machine overview, live plot, alarm table, banner and status bar, and the
wiring between the feed, the local services and the model.

Data path: `FeedWorker.batch_received` -> `_on_batch_received` (apply to the model, pop up
notifications, release the feed for the next batch) - that slot never draws. One `QTimer`
(15 Hz) redraws: tiles, plot, alarm table and status bar, each skipping what did not change.
In local mode the window starts `LocalServices` and starts the feed once the broker's
bootstrap address is known; in remote mode (or when constructed with `services=None`, as the
tests do) it starts the feed straight from the settings. Closing the window first stops the
feed and the services it started, asynchronously, then closes for real.
"""
from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QFrame,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from desktop.core.batch import Batch
from desktop.core.feed import CONNECTED, CONNECTING, DEFAULT_HISTORY_SECONDS, STOPPED, UNREACHABLE, WAITING, FeedConfig
from desktop.core.machines import MachineStatus
from desktop.core.model import MonitorModel
from desktop.core.services import SERVICE_LABELS, SERVICE_NAMES, ServiceState
from desktop.core.settings import Settings, save_settings
from desktop.ui.alarm_table import AlarmTable
from desktop.ui.notifier import AlarmBanner, AlarmNotifier
from desktop.ui.plot import LivePlot
from desktop.ui.services import LocalServices
from desktop.ui.theme import app_icon
from desktop.ui.tiles import MachineOverview
from desktop.ui.workers import FeedWorker

REFRESH_HZ = 15
FEED_RETRY_DELAYS = (2.0, 5.0, 10.0, 30.0, 60.0)


def _section(title: str, body: QWidget) -> QFrame:
    frame = QFrame(objectName="section")
    layout = QVBoxLayout(frame)
    layout.setContentsMargins(12, 8, 12, 10)
    layout.setSpacing(6)
    layout.addWidget(QLabel(title, objectName="sectionTitle"))
    layout.addWidget(body, 1)
    return frame


def _age(seconds: float) -> str:
    if seconds < 1.5:
        return "just now"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    return f"{seconds / 60:.0f} min ago"


class MainWindow(QMainWindow):
    first_observations_received = Signal()
    shutdown_finished = Signal()

    def __init__(
        self,
        settings: Settings,
        services: LocalServices | None = None,
        config_dir: Path | None = None,
        model: MonitorModel | None = None,
        history_seconds: float = DEFAULT_HISTORY_SECONDS,
        use_tray: bool | None = None,
        feed_start_time: float | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.services = services
        self.config_dir = config_dir
        self.model = model or MonitorModel(window_seconds=history_seconds)
        self.history_seconds = history_seconds
        self.feed_start_time = feed_start_time
        self.worker: FeedWorker | None = None
        self.bootstrap: str | None = None
        self.feed_state = ""
        self.feed_detail = ""
        self._seen_observations = False
        self._fleet_version = -1
        self._feed_retries = 0
        self._shutting_down = False
        self._shut_down = False
        self._close_when_done = False

        self.setWindowTitle("Machine Monitor")
        self.setWindowIcon(app_icon())
        self.resize(1440, 920)

        # -- widgets --
        self.banner = AlarmBanner()
        self.overview = MachineOverview()
        overview_scroll = QScrollArea(objectName="overviewScroll")
        overview_scroll.setWidgetResizable(True)
        overview_scroll.setFrameShape(QFrame.Shape.NoFrame)
        overview_scroll.setWidget(self.overview)
        self.plot = LivePlot(self.model)
        self.alarm_table = AlarmTable(self.model.journal)
        self.notifier = AlarmNotifier(self.banner, self, use_tray=use_tray)
        self.notifier.show_window_requested.connect(self._on_show_window_requested)
        self.notifier.quit_requested.connect(self.close)
        self.overview.machine_selected.connect(self.plot.select_device)

        splitter = QSplitter(Qt.Orientation.Vertical, objectName="mainSplitter")
        splitter.addWidget(_section("Machines", overview_scroll))
        splitter.addWidget(_section("Live plot", self.plot))
        splitter.addWidget(_section("Alarms", self.alarm_table))
        splitter.setSizes([390, 340, 190])
        splitter.setChildrenCollapsible(False)

        central = QWidget(objectName="central")
        layout = QVBoxLayout(central)
        layout.setContentsMargins(10, 8, 10, 6)
        layout.setSpacing(8)
        layout.addWidget(self.banner)
        layout.addWidget(splitter, 1)
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
        self.rate_label = QLabel("0 msg/s", objectName="statusRate")
        self.last_data_label = QLabel("last data: —", objectName="statusLastData")
        # Records that do not match the schema are never shown; how many were left out is.
        self.skipped_label = QLabel(objectName="statusSkipped")
        self.skipped_label.setVisible(False)
        self._skipped_shown = 0
        status = self.statusBar()
        status.addWidget(self.progress_bar)
        status.addWidget(self.progress_label, 1)
        for label in (self.skipped_label, self.broker_label, self.services_label, self.rate_label, self.last_data_label):
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
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)

        self.refresh_timer = QTimer(self)
        self.refresh_timer.setInterval(int(1000 / REFRESH_HZ))
        self.refresh_timer.timeout.connect(self.refresh)
        self.refresh_timer.start()
        self._feed_retry_timer = QTimer(self)
        self._feed_retry_timer.setSingleShot(True)
        self._feed_retry_timer.timeout.connect(self._restart_feed)

        if services is not None:
            self._connect_services(services)

    # -- start ----------------------------------------------------------------------------

    def _connect_services(self, services: LocalServices) -> None:
        services.progress_reported.connect(self._on_progress_reported)
        services.state_changed.connect(self._on_service_state_changed)
        services.services_started.connect(self._on_services_started)
        services.services_failed.connect(self._on_services_failed)

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
        worker = self.worker = FeedWorker(config, self)
        worker.batch_received.connect(self._on_batch_received)
        worker.status_changed.connect(self._on_status_changed)
        worker.feed_failed.connect(self._on_feed_failed)
        self.overview.set_waiting_text(f"Waiting for machines from Kafka at {bootstrap}…")
        if not self._seen_observations:
            self._set_progress(f"Connecting to Kafka at {bootstrap} and reading the last "
                               f"{self.history_seconds / 60:.0f} minutes…", busy=True)
        worker.start()

    def _stop_feed(self) -> None:
        worker, self.worker = self.worker, None
        if worker is None:
            return
        for signal in (worker.batch_received, worker.status_changed, worker.feed_failed):
            signal.disconnect()
        worker.stop()
        worker.deleteLater()

    # -- feed and services signals --------------------------------------------------------

    def _on_batch_received(self, batch: Batch) -> None:
        worker = self.sender()
        try:
            self.ingest(batch)
        finally:
            if isinstance(worker, FeedWorker):
                worker.batch_consumed()

    def ingest(self, batch: Batch) -> None:
        """Apply one batch to the model and notify; drawing is left to the timer."""
        update = self.model.apply(batch)
        if update.notifications:
            self.notifier.notify(list(update.notifications))
        if update.observation_count:
            self._feed_retries = 0
            if not self._seen_observations:
                self._seen_observations = True
                self._set_progress("", busy=False)
                self.first_observations_received.emit()

    def _on_status_changed(self, state: str, detail: str) -> None:
        self.feed_state, self.feed_detail = state, detail
        where = self.bootstrap or "?"
        text = {
            CONNECTING: f"Kafka: connecting to {where}…",
            CONNECTED: f"Kafka: connected to {where}",
            WAITING: f"Kafka: connected to {where}, {detail}",
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

    def _on_feed_failed(self, message: str) -> None:
        delay = FEED_RETRY_DELAYS[min(self._feed_retries, len(FEED_RETRY_DELAYS) - 1)]
        self._feed_retries += 1
        self.broker_label.setText(_shorten(f"Kafka feed stopped: {message}", 90))
        self.broker_label.setToolTip(message)
        self._set_progress(f"Retrying in {delay:g} s — Kafka feed stopped: {message}", busy=False)
        if not self._shutting_down:
            self._feed_retry_timer.start(int(delay * 1000))

    def _restart_feed(self) -> None:
        if self._shutting_down or self.bootstrap is None:
            return
        self._stop_feed()
        # History is read again from the start: rebuild the state from it.
        self.model.reset()
        self.start_feed(self.bootstrap)

    def _on_progress_reported(self, text: str) -> None:
        self._set_progress(text, busy=True)
        if not self.model.fleet.views():
            self.overview.set_waiting_text(text)

    def _on_service_state_changed(self, name: str, state: str, detail: str) -> None:
        if self.services is None:
            return
        parts, tips = [], []
        for service in SERVICE_NAMES:
            service_state, service_detail = self.services.states[service]
            parts.append(f"{service} {service_state.value}")
            tips.append(f"{SERVICE_LABELS[service]}: {service_state.value}" + (f" — {service_detail}" if service_detail else ""))
        self.services_label.setText("Local: " + ", ".join(parts))
        self.services_label.setToolTip("\n".join(tips))
        if state == ServiceState.FAILED.value:
            self._set_progress(f"{SERVICE_LABELS.get(name, name)}: {detail}", busy=False)

    def _on_services_started(self, bootstrap: str) -> None:
        self._set_progress(f"Local services running; connecting to Kafka at {bootstrap}…", busy=True)
        if self.worker is None:
            self.start_feed(bootstrap)

    def _on_services_failed(self, message: str) -> None:
        self._set_progress(f"Local services failed: {message}", busy=False)
        self.broker_label.setText("Kafka: not started")
        if not self.model.fleet.views():
            self.overview.set_waiting_text(f"Local services failed to start:\n{message}")

    def _on_show_window_requested(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    def _set_progress(self, text: str, busy: bool) -> None:
        self.progress_label.setText(_shorten(text, 140))
        self.progress_label.setToolTip(text)
        self.progress_bar.setVisible(busy)

    # -- drawing --------------------------------------------------------------------------

    def refresh(self) -> None:
        """The timer's redraw: tiles, plot, alarms and status, each only if it changed."""
        if self.model.fleet.version != self._fleet_version:
            self._fleet_version = self.model.fleet.version
            views = self.model.fleet.views()
            self.overview.update_views(views)
            faults = sum(1 for view in views if view.status == MachineStatus.ALARM)
            self.notifier.set_active_faults(self.model.journal.active_count("FAULT"))
            title = "Machine Monitor" + (f" — {faults} machine(s) in alarm" if faults else "")
            if self.windowTitle() != title:
                self.setWindowTitle(title)
        self.plot.redraw()
        self.alarm_table.refresh()
        now = time.time()
        rate = f"{self.model.rate.rate(now):,.0f} msg/s"
        if self.rate_label.text() != rate:
            self.rate_label.setText(rate)
        if self.model.last_data_at is not None:
            text = f"last data: {_age(now - self.model.last_data_at)}"
            if self.last_data_label.text() != text:
                self.last_data_label.setText(text)
                stamp = self.model.last_observation_timestamp or ""
                received = datetime.fromtimestamp(self.model.last_data_at).strftime("%H:%M:%S")
                self.last_data_label.setToolTip(f"received {received}; newest observation time {stamp}")
        if self.model.errors:
            self.rate_label.setToolTip(f"{self.model.error_count} problem(s); latest: {self.model.errors[-1]}")
        if self.model.skipped_count != self._skipped_shown:
            self._skipped_shown = count = self.model.skipped_count
            self.skipped_label.setVisible(count > 0)
            self.skipped_label.setText(f"{count:,} invalid record{'' if count == 1 else 's'} skipped")
            self.skipped_label.setToolTip(
                "Records that do not match the message schema (docs/messages.md) are not shown.\nLatest:\n"
                + "\n".join(self.model.skipped)
            )

    # -- settings -------------------------------------------------------------------------

    def open_settings(self) -> None:
        from desktop.ui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self)
        if dialog.exec() != SettingsDialog.DialogCode.Accepted or dialog.result_settings is None:
            return
        new_settings = dialog.result_settings
        if self.config_dir is not None:
            try:
                save_settings(new_settings, self.config_dir)
            except OSError as exc:
                QMessageBox.warning(self, "Settings not saved", f"Could not write the settings to {self.config_dir}: {exc}")
        if new_settings != self.settings:
            self.apply_settings(new_settings)

    def apply_settings(self, settings: Settings) -> None:
        """Reconnect with new settings: stop feed and services, then start as configured."""
        self.settings = settings

        def restart() -> None:
            self._shutting_down = self._shut_down = False
            if settings.is_local:
                self.services = LocalServices(settings.replay_speed, settings.topic_prefix, parent=self)
                self._connect_services(self.services)
            else:
                self.services = None
                self.services_label.setVisible(False)
            self.model.reset()
            self._seen_observations = False
            self.start()

        self.shutdown(restart)

    # -- shutdown -------------------------------------------------------------------------

    def shutdown(self, then: Callable[[], None] | None = None) -> None:
        """Stop the feed and the local services this window started, without blocking the
        GUI for the services; `shutdown_finished` (and `then`) follow when all is stopped."""
        self._shutting_down = True
        self._feed_retry_timer.stop()
        self._stop_feed()
        services = self.services

        def finished() -> None:
            self._shut_down = True
            self._set_progress("", busy=False)
            if then is not None:
                then()
            self.shutdown_finished.emit()

        if services is not None and services.active:
            self._set_progress("Stopping local services…", busy=True)
            services.services_stopped.connect(finished, Qt.ConnectionType.SingleShotConnection)
            services.stop()
        else:
            finished()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
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
            self.shutdown_finished.connect(lambda: QTimer.singleShot(0, self.close))

    def save_screenshot(self, path: str | Path) -> bool:
        """Redraw now and save the window as an image."""
        self.refresh()
        return self.grab().save(str(path))


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

