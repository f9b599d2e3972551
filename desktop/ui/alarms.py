"""The alarm pages of the main window: "Alarms" (the active-alarm table), "Journal" and "KPIs".

`AlarmPages` puts the views of `desktop.ui.alarm_views` into the window as tabs and feeds
them without any I/O on the GUI thread:

- the active-alarm table holds the alarms the core thread reported: the engine's alarms as
  the window was built (restored from the journal before the core thread started), then the
  alarm snapshot of every `AlarmEvent` of every `ViewUpdate` - the batch signal the window
  gets anyway. Nothing reads the engine, the journal or Kafka from here.
- operator actions (acknowledge with note, shelve with duration and reason, unshelve) go to
  the core thread through the window's command path (`MainWindow.submit`); the engine makes
  the shared record, applies it, the record is stored in the station's outbox (`publish`, on
  the core thread as well) and the new state comes back as events of the next update.
- journal searches, CSV exports and KPI reports run on one worker thread; their results come
  back by signal (`journal_found`, `kpis_computed`, `export_finished`).

It also registers the three pages as screenshot views (`--view alarms|journal|kpis`).
"""
from __future__ import annotations

import getpass
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Iterable

from PySide6.QtCore import QObject, Signal, SignalInstance
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QWidget

from desktop.core.alarms import Alarm, AlarmEvent, AlarmJournal, AlarmState
from desktop.core.alarms.kpis import journal_kpis
from desktop.ui.alarm_views import ActiveAlarmsView, JournalView, KpiView
from desktop.ui.views import register_view

if TYPE_CHECKING:
    from desktop.core.monitor import MonitorCore
    from desktop.ui.main_window import MainWindow

log = logging.getLogger(__name__)

ALARMS, JOURNAL, KPIS = "alarms", "journal", "kpis"
# The journal and KPI pages open on the last day.
DEFAULT_RANGE_SECONDS = 24 * 3600.0


def operator_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name known to the system
        return "operator"


# How often the active-alarm table is rebuilt while another page is shown.
HIDDEN_INTERVAL = 2.0


class AlarmPages(QObject):
    journal_found = Signal(object)  # list[JournalEntry], from the worker thread
    kpis_computed = Signal(object)  # KpiReport, from the worker thread
    export_finished = Signal(str, int, str)  # path, rows written, error ("" when it worked)
    alarms_changed = Signal()  # the table's alarms changed (drawn at the next refresh)

    def __init__(self, window: "MainWindow", journal: AlarmJournal, alarms: Iterable[Alarm],
                 publish: Callable[["MonitorCore", dict[str, Any]], None], settings: Any = None) -> None:
        super().__init__(window)
        self.window = window
        self.journal = journal
        self.engine_settings = settings
        self.publish = publish  # runs on the core thread: the record into the station's outbox
        self.operator = operator_name()
        self.alarms: dict[str, Alarm] = {}
        self._dirty = True
        self._rebuild_after = 0.0  # monotonic time before which a changed table waits
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alarm-journal")
        self._closed = threading.Event()
        self.screenshot_filled: set[str] = set()  # the pages a screenshot view filled (journal, kpis)
        self.active_view = ActiveAlarmsView()
        self.active_view.setObjectName("activeAlarms")
        self.journal_view = JournalView()
        self.journal_view.setObjectName("alarmJournal")
        self.kpi_view = KpiView()
        self.kpi_view.setObjectName("alarmKpis")
        self.take(alarms)
        window.add_view(ALARMS, "Alarms", self.active_view, closable=False)
        window.add_view(JOURNAL, "Journal", self.journal_view, closable=False)
        window.add_view(KPIS, "KPIs", self.kpi_view, closable=False)

        self.active_view.acknowledge_requested.connect(self._on_acknowledge_requested)
        self.active_view.shelve_requested.connect(self._on_shelve_requested)
        self.active_view.unshelve_requested.connect(self._on_unshelve_requested)
        self.journal_view.search_requested.connect(self._on_search_requested)
        self.journal_view.export_requested.connect(self._on_export_requested)
        self.journal_found.connect(self.journal_view.show_entries)
        self.kpis_computed.connect(self.kpi_view.show_report)
        window.tabs.currentChanged.connect(self._on_current_tab_changed)

    # -- menu -------------------------------------------------------------------------------

    def add_actions(self, menu) -> None:
        """View menu entries with shortcuts: Ctrl+2 alarms, Ctrl+3 journal, Ctrl+4 KPIs."""
        for keys, name, title in (("Ctrl+2", ALARMS, "&Alarms"), ("Ctrl+3", JOURNAL, "&Journal"), ("Ctrl+4", KPIS, "Alarm &KPIs")):
            action = QAction(title, self.window)
            action.setShortcut(QKeySequence(keys))
            action.triggered.connect(lambda _checked=False, name=name: self.show_page(name))
            menu.addAction(action)

    def show_page(self, name: str) -> QWidget | None:
        widget = self.window.show_view(name)
        if name == ALARMS:
            self.active_view.table.setFocus()
        return widget

    # -- from the core thread's updates ---------------------------------------------------

    def take(self, alarms: Iterable[Alarm]) -> None:
        for alarm in alarms:
            if alarm.alarm_state is AlarmState.NORMAL:
                self.alarms.pop(alarm.alarm_id, None)
            else:
                self.alarms[alarm.alarm_id] = alarm
        self._dirty = True

    def replace(self, alarms: Iterable[Alarm]) -> None:
        """Start over from the engine's alarms (new rules): the table holds exactly these."""
        self.alarms = {}
        self.take(alarms)
        self.alarms_changed.emit()

    def apply_events(self, events: Iterable[AlarmEvent]) -> None:
        """Each event carries its alarm as it is after the transition; events come in order."""
        events = list(events)
        if events:
            self.take(event.alarm for event in events)
            self.alarms_changed.emit()

    def refresh(self, force: bool = False) -> None:
        """The window's timer: redraw the table when its alarms changed.

        Sorting a plant's thousands of alarms takes milliseconds to tens of them, so the table
        is rebuilt at most once per nine times its last rebuild took (a tenth of the GUI
        thread at most), and while it is not the page shown, at most every HIDDEN_INTERVAL."""
        now = time.monotonic()
        if not self._dirty or (now < self._rebuild_after and not force):
            return
        self._dirty = False
        self.active_view.set_alarms(list(self.alarms.values()))
        took = time.monotonic() - now
        shown = self.window.tabs.currentWidget() is self.active_view
        self._rebuild_after = now + max(9 * took, 0.0 if shown else HIDDEN_INTERVAL)

    def alarm(self, alarm_id: str) -> Alarm | None:
        return self.alarms.get(alarm_id)

    # -- operator actions, done on the core thread ----------------------------------------

    def _act(self, action: Callable[["MonitorCore", str], dict[str, Any]], alarm_ids: list[str]) -> None:
        publish = self.publish

        def command(core: "MonitorCore") -> None:
            for alarm_id in alarm_ids:
                publish(core, action(core, alarm_id))

        future = self.window.submit(command)
        future.add_done_callback(self._report_failure)

    def _report_failure(self, future) -> None:
        error = future.exception()
        if error is not None:
            log.error("alarm action failed: %s: %s", type(error).__name__, error)

    def _on_acknowledge_requested(self, alarm_ids: list[str], note: str) -> None:
        by = self.operator
        self._act(lambda core, alarm_id: core.acknowledge(alarm_id, by, note or None), list(alarm_ids))

    def _on_shelve_requested(self, alarm_ids: list[str], seconds: float, reason: str) -> None:
        by = self.operator
        self._act(lambda core, alarm_id: core.shelve(alarm_id, by, seconds, reason), list(alarm_ids))

    def _on_unshelve_requested(self, alarm_ids: list[str]) -> None:
        by = self.operator
        self._act(lambda core, alarm_id: core.unshelve(alarm_id, by), list(alarm_ids))

    # -- journal and KPIs, on the worker thread -------------------------------------------

    def _on_current_tab_changed(self, index: int) -> None:
        widget = self.window.tabs.widget(index)
        if widget is self.active_view:
            self.refresh(force=True)
        elif widget is self.journal_view:
            self.search(self.journal_view.filters())
        elif widget is self.kpi_view:
            self.compute_kpis()

    def _run(self, job: Callable[[], None]) -> None:
        if self._closed.is_set():
            return

        def guarded() -> None:
            try:
                job()
            except Exception:  # noqa: BLE001 - a failed search must not end the worker silently
                log.exception("alarm journal work failed")

        self._worker.submit(guarded)

    def search(self, filters: dict) -> None:
        journal, found = self.journal, self.journal_found
        self._run(lambda: found.emit(journal.search(**filters)))

    def _on_search_requested(self, filters: dict) -> None:
        self.search(filters)

    def _on_export_requested(self, filters: dict) -> None:
        path, _ = QFileDialog.getSaveFileName(self.window, "Export alarm journal", "alarm-journal.csv", "CSV files (*.csv)")
        if path:
            self.export(path, filters)

    def export(self, path: str, filters: dict) -> None:
        journal, finished = self.journal, self.export_finished

        def job() -> None:
            try:
                finished.emit(path, journal.export_csv(path, **filters), "")
            except OSError as exc:
                finished.emit(path, 0, f"could not write {path}: {exc}")

        self._run(job)

    def compute_kpis(self, start: float | None = None, end: float | None = None) -> None:
        """The KPI report for the journal view's range (default: the last day), computed off the GUI."""
        if start is None or end is None:
            filters = self.journal_view.filters()
            start, end = filters["start"], filters["end"]
        journal, computed, settings = self.journal, self.kpis_computed, self.engine_settings
        self._run(lambda: computed.emit(journal_kpis(journal, float(start), float(end), settings)))

    def set_range(self, start: float, end: float) -> None:
        self.journal_view.set_range(start, end)

    def close(self) -> None:
        self._closed.set()
        self._worker.shutdown(wait=False, cancel_futures=True)


# -- screenshot views ----------------------------------------------------------------------


def _pages(window: "MainWindow") -> AlarmPages:
    return window.alarm_pages


def _show_alarms(window: "MainWindow") -> QWidget | None:
    _pages(window).show_page(ALARMS)
    return window


def _events_range(window: "MainWindow") -> tuple[float, float]:
    """The journal range a screenshot shows: around what the replayed data raised (recorded
    NIST days are years old), else the last day."""
    from desktop.core.alarms.timeutil import parse_timestamp

    times = [parse_timestamp(a.activated_at) for a in _pages(window).alarms.values()]
    times = [t for t in times if t is not None]
    if times:
        return min(times) - 600.0, max(times) + 600.0
    now = time.time()
    return now - DEFAULT_RANGE_SECONDS, now + 3600.0


def _show_filled_page(window: "MainWindow", name: str, filled: SignalInstance,
                      fill: Callable[[AlarmPages, float, float], None]) -> QWidget | None:
    """The journal or KPI page over the range of the alarms shown, filled on the worker; the
    page counts as ready for the screenshot once the worker's result (`filled`) is back."""
    pages = _pages(window)
    start, end = _events_range(window)
    pages.set_range(start, end)
    pages.screenshot_filled.discard(name)
    filled.connect(lambda _result: pages.screenshot_filled.add(name))
    pages.show_page(name)
    fill(pages, start, end)
    return window


def _show_journal(window: "MainWindow") -> QWidget | None:
    return _show_filled_page(window, JOURNAL, _pages(window).journal_found,
                             lambda pages, _start, _end: pages.search(pages.journal_view.filters()))


def _show_kpis(window: "MainWindow") -> QWidget | None:
    return _show_filled_page(window, KPIS, _pages(window).kpis_computed,
                             lambda pages, start, end: pages.compute_kpis(start, end))


def _filled(name: str) -> Callable[["MainWindow", QWidget], bool]:
    return lambda window, _widget: name in _pages(window).screenshot_filled


register_view(ALARMS, _show_alarms, description="the active-alarm table")
register_view(JOURNAL, _show_journal, _filled(JOURNAL), description="the alarm journal around the alarms shown")
register_view(KPIS, _show_kpis, _filled(KPIS), description="the alarm KPIs over the journal range")
