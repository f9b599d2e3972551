"""The machine overview: a fleet summary, then one tile per device, coloured by derived state.

Tiles are painted by one widget (`TileGrid`), not built from labels: 200 machines would be
thousands of widgets, and a label per value is what made every redraw touch every tile. Each
tile's text is computed once when its `MachineView` changes (`tile_texts`), cached, and only
that tile's rectangle is repainted; ages and time in state are re-rendered once a second, and
a tile is repainted only when the text it shows changed. The grid reflows with the window
(columns from its width, nothing clipped: texts are elided to the tile), has a dense layout
that shows 200 machines on a 1920x1080 screen (chosen automatically when the comfortable one
would need scrolling), a large-text option, sort (name, state, time in state), a text filter,
a state filter set by clicking the summary, keyboard navigation (arrows, Home/End, Enter
opens the detail) and a highlighted selection.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

from PySide6.QtCore import QEvent, QRect, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QKeyEvent, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from desktop.core.alarms import AlarmState
from desktop.core.alarms.table import UNACKNOWLEDGED
from desktop.core.machines import SEVERITY, SEVERITY_RANK, MachineStatus, MachineView, rough_duration
from desktop.core.monitor import MARKING_STATES
from desktop.ui.theme import (PRIORITY_COLORS, STATUS_COLORS, STATUS_TEXT_COLORS, TILE_BACKGROUND, TILE_SELECTED, TILE_TEXT,
                              TILE_TEXT_DIM)

SORTS = (("name", "Name"), ("state", "State"), ("time", "Time in state"))
DENSITIES = (("auto", "Auto"), ("comfortable", "Comfortable"), ("dense", "Dense"))
_GAP = 8
_DENSE_GAP = 4


def readable(value: str | None) -> str:
    """MTConnect words for people: FEED_HOLD -> Feed hold; nothing reported -> an em dash."""
    if not value:
        return "—"
    if value == "UNAVAILABLE":
        return "Unavailable"
    return value.replace("_", " ").capitalize()


def duration_text(seconds: float | None) -> str:
    return "" if seconds is None else rough_duration(seconds)


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "no data"
    if seconds < 2:
        return "now"
    return f"{duration_text(seconds)} ago"


def _number(value: float | None, units: str | None = None) -> str:
    if value is None:
        return "—"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}".rstrip("0").rstrip(".")
    return f"{text} {units}" if units else text


ALARM_BADGES = {
    AlarmState.UNACKNOWLEDGED_ACTIVE.value: "UNACK ALARM",
    AlarmState.ACKNOWLEDGED_ACTIVE.value: "ALARM ACK'D",
    AlarmState.UNACKNOWLEDGED_RETURNED.value: "UNACK RETURNED",
    AlarmState.SHELVED.value: "SHELVED",
    AlarmState.OUT_OF_SERVICE.value: "OUT OF SERVICE",
}


# A tile's alarm state is a state's value (see `MonitorCore`'s per-machine summary).
_UNACKNOWLEDGED_STATES = frozenset(state.value for state in UNACKNOWLEDGED)


def alarm_mark_colour(view: MachineView) -> str | None:
    """The colour of the tile's alarm frame and alarm text: the priority's colour, as in the
    alarm table (red when the priority is not known); None when nothing marks the tile (a
    shelved or out-of-service alarm is named on it, dimmed, without a frame)."""
    if view.alarm_state not in MARKING_STATES:
        return None
    return PRIORITY_COLORS.get(view.alarm_priority, (STATUS_COLORS[MachineStatus.ALARM],))[0]


def tile_texts(view: MachineView, now: float) -> dict[str, str]:
    """Everything one tile shows, as text (also what tests read)."""
    since = now - view.state_since if view.state_since is not None else None
    age = now - view.last_seen if view.last_seen is not None else None
    spindle = ""
    if view.spindle_speed is not None:
        units = "rpm" if (view.spindle_units or "").upper().startswith("REVOLUTION") else (view.spindle_units or "").lower()
        spindle = _number(view.spindle_speed, units)
    elif view.has_spindle:
        spindle = "—"
    load = _number(view.spindle_load, "%") if view.spindle_load is not None else ""
    badge = ALARM_BADGES.get(view.alarm_state, "")
    if badge and view.alarm_state in _UNACKNOWLEDGED_STATES:
        if view.unacknowledged > 1:
            badge += f" ×{view.unacknowledged}"
    elif badge and view.unacknowledged:
        # The worst state is an acknowledged one, but others still wait for someone.
        badge += f" · {view.unacknowledged} UNACK"
    if badge and view.alarm_priority:
        badge = f"{view.alarm_priority.upper()} · {badge}"
    reason = view.reason
    return {
        "name": view.name,
        "model": " · ".join(part for part in (view.manufacturer, view.model) if part),
        "state": view.status.value.upper(),
        "since": duration_text(since),
        "age": age_text(age),
        "program": view.program or "",
        "mode": readable(view.controller_mode) if view.controller_mode else "",
        "execution": readable(view.execution) if view.execution else "",
        "parts": view.part_count or "",
        "spindle": spindle,
        "load": load,
        "reason": reason,
        "warning": f"⚠ {view.warning_count} warning{'s' if view.warning_count > 1 else ''}" if view.warning_count else "",
        "alarm": badge,
    }


def tile_tooltip(texts: dict[str, str]) -> str:
    """A tile's texts in full, one per line: what hovering shows where the tile had to cut one."""
    lines = [texts["name"] + (f" ({texts['model']})" if texts.get("model") else "")]
    state = texts["state"] + (f" for {texts['since']}" if texts.get("since") else "")
    lines.append(state + (f": {texts['reason']}" if texts.get("reason") else ""))
    for label, key in (("Alarms", "alarm"), ("Warnings", "warning"), ("Program", "program"), ("Mode", "mode"),
                       ("Execution", "execution"), ("Parts", "parts"), ("Spindle", "spindle"), ("Load", "load"),
                       ("Data", "age")):
        if texts.get(key):
            lines.append(f"{label}: {texts[key]}")
    return "\n".join(lines)


@dataclass
class _Layout:
    dense: bool
    width: int
    height: int
    gap: int
    columns: int


class TileGrid(QWidget):
    """The painted grid of tiles."""

    machine_selected = Signal(str)
    machine_opened = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("tileGrid")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.views: dict[str, MachineView] = {}
        self.texts: dict[str, dict[str, str]] = {}
        self.order: list[str] = []
        self.selected: str | None = None
        self.sort_key = "name"
        self.filter_text = ""
        self.state_filter: MachineStatus | None = None
        self.density = "auto"
        self.large_text = False
        self.viewport_height = 600
        self.waiting_text = "Waiting for machines…"
        self.repainted: set[str] = set()  # tiles repainted since last asked (tests, benchmark)
        self._layout = _Layout(False, 250, 132, _GAP, 1)
        self._fonts()

    # -- fonts and layout ------------------------------------------------------------------

    def _fonts(self) -> None:
        scale = 1.35 if self.large_text else 1.0
        base = QFont(self.font())
        self.font_name = QFont(base)
        self.font_name.setPointSizeF(13 * scale)
        self.font_name.setBold(True)
        self.font_state = QFont(base)
        self.font_state.setPointSizeF(11 * scale)
        self.font_state.setBold(True)
        self.font_text = QFont(base)
        self.font_text.setPointSizeF(9.5 * scale)
        self.font_dense_name = QFont(base)
        self.font_dense_name.setPointSizeF(9.5 * scale)
        self.font_dense_name.setBold(True)
        self.font_dense = QFont(base)
        self.font_dense.setPointSizeF(8 * scale)

    def _tile_size(self, dense: bool) -> tuple[int, int]:
        scale = 1.35 if self.large_text else 1.0
        if dense:
            return int(118 * scale), int(50 * scale)
        line = QFontMetrics(self.font_text).height()
        return int(250 * scale), int(QFontMetrics(self.font_name).height() + QFontMetrics(self.font_state).height()
                                     + 4 * line + 26)

    def compute_layout(self, width: int | None = None) -> _Layout:
        width = max(1, width if width is not None else self.width())
        count = len(self.order)

        def make(dense: bool) -> _Layout:
            tile_w, tile_h = self._tile_size(dense)
            gap = _DENSE_GAP if dense else _GAP
            columns = max(1, (width + gap) // (tile_w + gap))
            # Stretch tiles to use the whole width (no ragged right edge).
            tile_w = max(tile_w, (width - (columns - 1) * gap) // columns)
            return _Layout(dense, tile_w, tile_h, gap, columns)

        if self.density == "dense":
            return make(True)
        comfortable = make(False)
        if self.density == "comfortable" or not count:
            return comfortable
        rows = -(-count // comfortable.columns)
        if rows * (comfortable.height + comfortable.gap) <= self.viewport_height:
            return comfortable
        return make(True)

    def relayout(self) -> None:
        self._layout = self.compute_layout()
        rows = -(-len(self.order) // self._layout.columns) if self.order else 1
        height = rows * (self._layout.height + self._layout.gap)
        self.setMinimumHeight(max(height, 60))
        self.update()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        layout = self.compute_layout()
        if layout != self._layout:
            self.relayout()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        return QSize(800, self.minimumHeight())

    def tile_rect(self, uuid: str) -> QRect:
        try:
            index = self.order.index(uuid)
        except ValueError:
            return QRect()
        layout = self._layout
        row, column = divmod(index, layout.columns)
        return QRect(column * (layout.width + layout.gap), row * (layout.height + layout.gap), layout.width, layout.height)

    def tile_at(self, x: int, y: int) -> str | None:
        layout = self._layout
        column = x // (layout.width + layout.gap)
        row = y // (layout.height + layout.gap)
        if column >= layout.columns or x % (layout.width + layout.gap) > layout.width:
            return None
        index = row * layout.columns + column
        return self.order[index] if 0 <= index < len(self.order) else None

    @property
    def dense(self) -> bool:
        return self._layout.dense

    @property
    def columns(self) -> int:
        return self._layout.columns

    # -- content -----------------------------------------------------------------------------

    def _sort_key(self, now: float):
        if self.sort_key == "state":
            return lambda uuid: (SEVERITY_RANK[self.views[uuid].status], self.views[uuid].name.lower(), uuid)
        if self.sort_key == "time":
            def since(uuid: str):
                start = self.views[uuid].state_since
                return (start if start is not None else now, self.views[uuid].name.lower(), uuid)
            return since
        return lambda uuid: (self.views[uuid].name.lower(), uuid)

    def _matches(self, view: MachineView) -> bool:
        if self.state_filter is not None and view.status != self.state_filter:
            return False
        if self.filter_text:
            needle = self.filter_text.lower()
            haystack = " ".join((view.name, view.model, view.manufacturer, view.device_uuid, view.program or "")).lower()
            return needle in haystack
        return True

    def set_views(self, views: dict[str, MachineView], changed: Iterable[str], now: float | None = None) -> None:
        """The fleet changed: recompute the texts of changed tiles, repaint only those (or
        re-lay out when the order changed).

        The grid keeps its own copy of `views`: the caller's dict changes in place when the
        fleet is reset or a machine leaves, and the once-a-second clock and painting must keep
        reading the fleet that `order` was made from until the next redraw hands over the new one."""
        now = time.time() if now is None else now
        self.views = dict(views)
        changed = set(changed)
        for uuid in changed:
            view = views.get(uuid)
            if view is None:
                self.texts.pop(uuid, None)
            else:
                self.texts[uuid] = tile_texts(view, now)
        self._reorder(now, changed)

    def _reorder(self, now: float, changed: set[str] | None = None) -> None:
        order = sorted((uuid for uuid, view in self.views.items() if self._matches(view)), key=self._sort_key(now))
        if order != self.order:
            self.order = order
            if self.selected is not None and self.selected not in self.views:
                self.selected = None
            self.relayout()
            return
        for uuid in changed or ():
            if uuid in self.views:
                self.update(self.tile_rect(uuid))

    def refresh_times(self, now: float | None = None) -> None:
        """Once a second: ages and times in state; repaint a tile only if its text changed."""
        now = time.time() if now is None else now
        for uuid in self.order:
            view = self.views[uuid]
            texts = self.texts.get(uuid)
            new = tile_texts(view, now)
            if texts != new:
                self.texts[uuid] = new
                self.update(self.tile_rect(uuid))
        if self.sort_key == "time":
            self._reorder(now)

    def refilter(self) -> None:
        self._reorder(time.time())
        self.update()

    # -- selection and keys ------------------------------------------------------------------

    def select(self, uuid: str | None) -> None:
        if uuid == self.selected:
            return
        previous, self.selected = self.selected, uuid
        for tile in (previous, uuid):
            if tile is not None:
                self.update(self.tile_rect(tile))
        if uuid is not None:
            self.machine_selected.emit(uuid)

    def event(self, event: QEvent) -> bool:
        # Hovering a tile shows its texts in full (the tile elides what does not fit); built
        # on hover only, so a redraw never touches tooltips.
        if event.type() == QEvent.Type.ToolTip:
            uuid = self.tile_at(event.pos().x(), event.pos().y())
            view = self.views.get(uuid) if uuid is not None else None
            if view is None:
                QToolTip.hideText()
                event.ignore()
                return True
            QToolTip.showText(event.globalPos(), tile_tooltip(tile_texts(view, time.time())), self,
                              self.tile_rect(uuid))
            return True
        return super().event(event)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        uuid = self.tile_at(int(event.position().x()), int(event.position().y()))
        if uuid is not None:
            self.select(uuid)
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        super().mousePressEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        uuid = self.tile_at(int(event.position().x()), int(event.position().y()))
        if uuid is not None:
            self.select(uuid)
            self.machine_opened.emit(uuid)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        if not self.order:
            return super().keyPressEvent(event)
        key = event.key()
        index = self.order.index(self.selected) if self.selected in self.order else -1
        columns = self._layout.columns
        moves = {Qt.Key.Key_Right: 1, Qt.Key.Key_Left: -1, Qt.Key.Key_Down: columns, Qt.Key.Key_Up: -columns}
        if key in moves:
            target = 0 if index < 0 else min(max(index + moves[key], 0), len(self.order) - 1)
            self.select(self.order[target])
            self._ensure_visible(self.order[target])
        elif key == Qt.Key.Key_Home:
            self.select(self.order[0])
            self._ensure_visible(self.order[0])
        elif key == Qt.Key.Key_End:
            self.select(self.order[-1])
            self._ensure_visible(self.order[-1])
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.selected is not None:
            self.machine_opened.emit(self.selected)
        else:
            super().keyPressEvent(event)

    def _ensure_visible(self, uuid: str) -> None:
        parent = self.parentWidget()
        scroll = parent.parentWidget() if parent is not None else None
        if isinstance(scroll, QScrollArea):
            rect = self.tile_rect(uuid)
            scroll.ensureVisible(rect.center().x(), rect.center().y(), rect.width() // 2 + 8, rect.height() // 2 + 8)

    # -- painting ------------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        if not self.order:
            painter.setPen(QColor(TILE_TEXT_DIM))
            painter.setFont(self.font_text)
            text = self.waiting_text if not self.views else "No machine matches the filter"
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, text)
            return
        region = event.rect()
        layout = self._layout
        first_row = max(0, region.top() // (layout.height + layout.gap))
        last_row = region.bottom() // (layout.height + layout.gap)
        for row in range(first_row, last_row + 1):
            for column in range(layout.columns):
                index = row * layout.columns + column
                if index >= len(self.order):
                    break
                uuid = self.order[index]
                rect = self.tile_rect(uuid)
                if rect.intersects(region):
                    self._paint_tile(painter, uuid, rect)
                    self.repainted.add(uuid)

    def _paint_tile(self, painter: QPainter, uuid: str, rect: QRect) -> None:
        view = self.views[uuid]
        texts = self.texts.get(uuid) or tile_texts(view, time.time())
        colour = QColor(STATUS_COLORS[view.status])
        selected = uuid == self.selected
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(TILE_BACKGROUND))
        painter.drawRoundedRect(QRectF(rect), 6, 6)
        painter.setBrush(colour)
        bar = 6 if self._layout.dense else 9
        painter.drawRoundedRect(QRectF(rect.left(), rect.top(), bar, rect.height()), 3, 3)
        mark = alarm_mark_colour(view)
        if mark is not None:
            pen = QPen(QColor(mark), 3)
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRoundedRect(QRectF(rect).adjusted(1.5, 1.5, -1.5, -1.5), 6, 6)
        if selected:
            pen = QPen(QColor(TILE_SELECTED), 3)
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRoundedRect(QRectF(rect).adjusted(1.5, 1.5, -1.5, -1.5), 6, 6)
        if self._layout.dense:
            self._paint_dense(painter, view, texts, rect.adjusted(bar + 5, 3, -4, -3), colour)
        else:
            self._paint_comfortable(painter, view, texts, rect.adjusted(bar + 9, 7, -9, -6), colour)

    @staticmethod
    def _draw(painter: QPainter, font: QFont, colour: str | QColor, rect: QRect, text: str,
              align=Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter) -> None:
        painter.setFont(font)
        painter.setPen(QColor(colour))
        elided = QFontMetrics(font).elidedText(text, Qt.TextElideMode.ElideRight, rect.width())
        painter.drawText(rect, int(align), elided)

    def _badge(self, painter: QPainter, font: QFont, text: str, colour: QColor, text_colour: str, right: int, top: int,
               height: int) -> int:
        metrics = QFontMetrics(font)
        width = metrics.horizontalAdvance(text) + 14
        box = QRect(right - width, top, width, height)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(colour)
        painter.drawRoundedRect(QRectF(box), 4, 4)
        painter.setFont(font)
        painter.setPen(QColor(text_colour))
        painter.drawText(box, int(Qt.AlignmentFlag.AlignCenter), text)
        return box.left()

    def _paint_comfortable(self, painter: QPainter, view: MachineView, texts: dict[str, str], rect: QRect,
                           colour: QColor) -> None:
        name_h = QFontMetrics(self.font_name).height()
        state_h = QFontMetrics(self.font_state).height() + 4
        line = QFontMetrics(self.font_text).height()
        top = rect.top()
        badge_left = self._badge(painter, self.font_state, texts["state"], colour,
                                 STATUS_TEXT_COLORS.get(view.status, "#ffffff"), rect.right(), top, state_h)
        self._draw(painter, self.font_name, TILE_TEXT, QRect(rect.left(), top, badge_left - rect.left() - 6, name_h),
                   texts["name"])
        top += max(name_h, state_h) + 2
        since = f"{texts['since']} in state" if texts["since"] else ""
        self._draw(painter, self.font_text, TILE_TEXT, QRect(rect.left(), top, rect.width() // 2, line), since)
        self._draw(painter, self.font_text, TILE_TEXT_DIM, QRect(rect.left() + rect.width() // 2, top, rect.width() // 2, line),
                   f"data {texts['age']}", Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        top += line
        mode = " · ".join(part for part in (texts["execution"], texts["mode"]) if part)
        self._draw(painter, self.font_text, TILE_TEXT, QRect(rect.left(), top, rect.width(), line),
                   mode or texts["model"] or "—")
        top += line
        program = f"Program {texts['program']}" if texts["program"] else ""
        parts = f"Parts {texts['parts']}" if texts["parts"] else ""
        self._draw(painter, self.font_text, TILE_TEXT, QRect(rect.left(), top, rect.width(), line),
                   "   ".join(part for part in (program, parts) if part) or " ")
        top += line
        spindle = ""
        if texts["spindle"]:
            spindle = f"Spindle {texts['spindle']}" + (f" · load {texts['load']}" if texts["load"] else "")
        bottom = texts["alarm"] or texts["reason"] or spindle
        if texts["alarm"]:
            colour_text = alarm_mark_colour(view) or TILE_TEXT_DIM
            bottom = texts["alarm"] + (f" — {texts['reason']}" if texts["reason"] else "")
        elif texts["reason"]:
            colour_text = TILE_TEXT_DIM
            bottom = texts["reason"] if not spindle else f"{spindle} · {texts['reason']}"
        else:
            colour_text = TILE_TEXT
        warning = texts["warning"]
        width = rect.width()
        if warning:
            metrics = QFontMetrics(self.font_text)
            warn_w = metrics.horizontalAdvance(warning) + 4
            self._draw(painter, self.font_text, STATUS_COLORS[MachineStatus.INTERRUPTED],
                       QRect(rect.right() - warn_w, top, warn_w, line), warning)
            width -= warn_w + 6
        self._draw(painter, self.font_text, colour_text, QRect(rect.left(), top, width, line), bottom)

    def _paint_dense(self, painter: QPainter, view: MachineView, texts: dict[str, str], rect: QRect, colour: QColor) -> None:
        name_h = QFontMetrics(self.font_dense_name).height()
        line = QFontMetrics(self.font_dense).height()
        top = rect.top()
        self._draw(painter, self.font_dense_name, TILE_TEXT, QRect(rect.left(), top, rect.width(), name_h), texts["name"])
        top += name_h
        state = texts["state"] + (f" {texts['since']}" if texts["since"] else "")
        self._draw(painter, self.font_dense_name, colour.lighter(125), QRect(rect.left(), top, rect.width(), line), state)
        top += line
        extra = texts["alarm"] or texts["warning"] or (f"{texts['spindle']}" if texts["spindle"] else "") or texts["age"]
        colour_text = (alarm_mark_colour(view) or TILE_TEXT_DIM) if texts["alarm"] else (
            STATUS_COLORS[MachineStatus.INTERRUPTED] if texts["warning"] else TILE_TEXT_DIM)
        self._draw(painter, self.font_dense, colour_text, QRect(rect.left(), top, rect.width(), line), extra)

    def set_large_text(self, on: bool) -> None:
        self.large_text = on
        self._fonts()
        self.relayout()


class FleetSummary(QFrame):
    """How many machines are in each state; clicking a count filters the grid to them."""

    filter_chosen = Signal(object)  # MachineStatus | None

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("fleetSummary")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        self.group = QButtonGroup(self)
        self.group.setExclusive(False)
        self.buttons: dict[MachineStatus | None, QPushButton] = {}
        self.all_button = self._button(None, "All")
        layout.addWidget(self.all_button)
        for status in SEVERITY:
            layout.addWidget(self._button(status, status.value.capitalize()))
        layout.addStretch(1)
        self.counts: dict[MachineStatus, int] = {}
        self.active: MachineStatus | None = None
        self.set_counts({status: 0 for status in MachineStatus})

    def _button(self, status: MachineStatus | None, label: str) -> QPushButton:
        button = QPushButton(objectName="summaryButton")
        button.setCheckable(True)
        button.setCursor(Qt.CursorShape.PointingHandCursor)
        button.setProperty("label", label)
        if status is not None:
            colour = STATUS_COLORS[status]
            button.setStyleSheet(f"QPushButton#summaryButton {{ border-left: 6px solid {colour}; }}")
        button.clicked.connect(lambda checked=False, s=status: self._on_clicked(s))
        self.buttons[status] = button
        return button

    def set_counts(self, counts: dict[MachineStatus, int]) -> None:
        self.counts = dict(counts)
        total = sum(counts.values())
        for status, button in self.buttons.items():
            number = total if status is None else counts.get(status, 0)
            text = f"{button.property('label')}  {number}"
            if button.text() != text:
                button.setText(text)
            if status is not None:
                button.setVisible(number > 0 or button.isChecked())

    def set_active(self, status: MachineStatus | None) -> None:
        for key, button in self.buttons.items():
            button.setChecked(key == status and status is not None)

    def _on_clicked(self, status: MachineStatus | None) -> None:
        # A second click on the active state (or a click on All) shows every machine again.
        chosen = None if status is None or status == self.active else status
        self.active = chosen
        self.set_active(chosen)
        self.filter_chosen.emit(chosen)


class MachineOverview(QWidget):
    """Summary, tools (sort, filter, density, large text) and the tile grid in a scroll area."""

    machine_selected = Signal(str)
    machine_opened = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("machineOverview")
        self.summary = FleetSummary()
        self.grid = TileGrid()
        self.sort_combo = QComboBox(objectName="overviewSort")
        for key, label in SORTS:
            self.sort_combo.addItem(label, key)
        self.sort_combo.setToolTip("Sort machines by")
        self.filter_edit = QLineEdit(objectName="overviewFilter")
        self.filter_edit.setPlaceholderText("Filter machines…")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setMaximumWidth(170)
        self.density_combo = QComboBox(objectName="overviewDensity")
        for key, label in DENSITIES:
            self.density_combo.addItem(label, key)
        self.density_combo.setToolTip("Tile layout: Auto turns dense when the machines would not fit")
        self.large_check = QCheckBox("Large", objectName="overviewLarge")
        self.large_check.setToolTip("Large text, readable from across the room")

        tools = QHBoxLayout()
        tools.setSpacing(8)
        tools.addWidget(self.summary, 1)
        tools.addWidget(self.filter_edit)
        tools.addWidget(self.sort_combo)
        tools.addWidget(self.density_combo)
        tools.addWidget(self.large_check)

        self.scroll = QScrollArea(objectName="overviewScroll")
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(self.grid)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        layout.addLayout(tools)
        layout.addWidget(self.scroll, 1)

        self.summary.filter_chosen.connect(self._on_filter_chosen)
        self.filter_edit.textChanged.connect(self._on_filter_text_changed)
        self.sort_combo.currentIndexChanged.connect(self._on_sort_changed)
        self.density_combo.currentIndexChanged.connect(self._on_density_changed)
        self.large_check.toggled.connect(self.grid.set_large_text)
        self.grid.machine_selected.connect(self.machine_selected)
        self.grid.machine_opened.connect(self.machine_opened)
        self._clock = QTimer(self)
        self._clock.setInterval(1000)
        self._clock.timeout.connect(lambda: self.grid.refresh_times())
        self._clock.start()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self.grid.viewport_height = self.scroll.viewport().height()
        self.grid.relayout()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        self.grid.viewport_height = self.scroll.viewport().height()
        self.grid.relayout()

    @property
    def tiles(self) -> dict[str, MachineView]:
        return self.grid.views

    def set_waiting_text(self, text: str) -> None:
        if self.grid.waiting_text != text:
            self.grid.waiting_text = text
            if not self.grid.views:
                self.grid.update()

    def update_views(self, views: dict[str, MachineView], changed: Iterable[str], counts: dict[MachineStatus, int]) -> None:
        self.grid.set_views(views, changed)
        self.summary.set_counts(counts)

    def _on_filter_chosen(self, status: MachineStatus | None) -> None:
        self.grid.state_filter = status
        self.grid.refilter()

    def _on_filter_text_changed(self, text: str) -> None:
        self.grid.filter_text = text.strip()
        self.grid.refilter()

    def _on_sort_changed(self, index: int) -> None:
        self.grid.sort_key = self.sort_combo.itemData(index)
        self.grid.refilter()

    def _on_density_changed(self, index: int) -> None:
        self.grid.density = self.density_combo.itemData(index)
        self.grid.relayout()
