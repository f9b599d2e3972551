"""Trend plots of SAMPLE data items: several pens, held values drawn as steps to now.

An MTConnect sample holds its value until the next one arrives, so each pen is drawn as
steps: every value from its time to the next sample's, and the last one on to "now" (the
machine's newest data, when that is earlier - a recording from years ago is not stretched
to today). A single sample is therefore a visible line, and few samples also get markers.
Long series are reduced to min/max pairs per pixel-sized bucket before drawing, so 24 hours
of a spindle cost what a few thousand points cost. The x axis is wall-clock time (date axis
with readable ticks); pan and zoom are the mouse (drag, wheel); "Follow live" keeps the
window's right edge at now, and any manual pan or zoom turns it off.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal

from desktop.ui.theme import PEN_COLORS, PLOT_BACKGROUND, PLOT_FOREGROUND

MAX_DRAWN_POINTS = 4000
MARKERS_BELOW = 60


def item_label(item: Mapping[str, Any]) -> str:
    name = item.get("name") or item.get("id")
    kind = str(item.get("type") or "").replace("_", " ").lower()
    units = item.get("units")
    return f"{name} — {kind}" + (f" ({units_text(units)})" if units else "")


def units_text(units: str | None) -> str:
    if not units:
        return ""
    text = units.lower()
    return {"revolution/minute": "rpm", "millimeter/second": "mm/s", "millimeter": "mm", "percent": "%",
            "celsius": "°C", "watt": "W", "ampere": "A", "volt": "V"}.get(text, text)


def format_value(value: float | None, units: str | None) -> str:
    if value is None:
        return "—"
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.3g}"
    unit = units_text(units)
    return f"{text} {unit}" if unit else text


def step_arrays(times: np.ndarray, values: np.ndarray, hold_to: float) -> tuple[np.ndarray, np.ndarray]:
    """Edges and levels for pyqtgraph's stepMode="center": value i from times[i] to
    times[i+1], the last one to `hold_to` (at least to its own time)."""
    if times.size == 0:
        return np.empty(0), np.empty(0)
    end = max(float(hold_to), float(times[-1]))
    return np.append(times, end), values


def reduce_points(times: np.ndarray, values: np.ndarray, limit: int = MAX_DRAWN_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most about `limit` points keeping each bucket's minimum and maximum (spikes stay)."""
    count = times.size
    if count <= limit:
        return times, values
    bucket = int(np.ceil(count / (limit / 2)))
    usable = (count // bucket) * bucket
    t = times[:usable].reshape(-1, bucket)
    v = values[:usable].reshape(-1, bucket)
    low = np.argmin(v, axis=1)
    high = np.argmax(v, axis=1)
    rows = np.arange(t.shape[0])
    first = np.minimum(low, high)
    second = np.maximum(low, high)
    out_t = np.column_stack([t[rows, first], t[rows, second]]).ravel()
    out_v = np.column_stack([v[rows, first], v[rows, second]]).ravel()
    if usable < count:
        out_t = np.append(out_t, times[usable:])
        out_v = np.append(out_v, values[usable:])
    return out_t, out_v


class TrendPlot(pg.PlotWidget):
    """A date-axis plot with one step curve per pen."""

    follow_changed = Signal(bool)

    def __init__(self, parent=None) -> None:
        super().__init__(parent, axisItems={"bottom": pg.DateAxisItem(orientation="bottom")})
        self.setObjectName("trendPlot")
        self.setBackground(PLOT_BACKGROUND)
        self.plot_item = self.getPlotItem()
        self.plot_item.showGrid(x=True, y=True, alpha=0.15)
        for axis in ("left", "bottom"):
            self.plot_item.getAxis(axis).setPen(pg.mkPen(PLOT_FOREGROUND))
            self.plot_item.getAxis(axis).setTextPen(pg.mkPen(PLOT_FOREGROUND))
        # Machine units are not SI-prefixable ("x0.001 revolution/minute" helps nobody).
        self.plot_item.getAxis("left").enableAutoSIPrefix(False)
        # Values get grid lines and labels at the major ticks only: the minor levels added some
        # forty translucent lines across the plot, drawn again whenever the time axis moves,
        # which took 60 % of a redraw (38 -> 21 ms for an hour of two pens at 1,800 px).
        self.plot_item.getAxis("left").setStyle(maxTickLevel=0)
        self.legend = self.plot_item.addLegend(offset=(10, 10), labelTextColor=PLOT_FOREGROUND)
        # Pens in other units than the left axis's go on a second value axis at the right
        # (spindle load in % beside spindle speed in rpm would otherwise be a flat line at 0):
        # a view box of its own, sharing the time axis.
        self.right_box = pg.ViewBox(enableMenu=False)
        self.right_box.setMouseEnabled(x=False, y=False)
        self.plot_item.scene().addItem(self.right_box)
        right_axis = self.plot_item.getAxis("right")
        right_axis.linkToView(self.right_box)
        right_axis.setPen(pg.mkPen(PLOT_FOREGROUND))
        right_axis.setTextPen(pg.mkPen(PLOT_FOREGROUND))
        right_axis.enableAutoSIPrefix(False)
        right_axis.setStyle(maxTickLevel=0)
        self.right_box.setXLink(self.plot_item)
        self.plot_item.getViewBox().sigResized.connect(self._place_right_box)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.colours: dict[str, str] = {}
        self.on_right: set[str] = set()
        self.points: dict[str, int] = {}
        self.follow = True
        self.window_seconds = 3600.0
        self._setting_range = False
        self.plot_item.getViewBox().sigRangeChangedManually.connect(self._on_range_changed_manually)
        self.message = pg.TextItem("", color=PLOT_FOREGROUND, anchor=(0.5, 0.5))
        self.message.setParentItem(self.plot_item.getViewBox())
        self.plot_item.getViewBox().sigResized.connect(self._place_message)

    def _place_message(self) -> None:
        self.message.setPos(self.plot_item.getViewBox().boundingRect().center())

    def show_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))
        self._place_message()

    def _place_right_box(self) -> None:
        self.right_box.setGeometry(self.plot_item.getViewBox().sceneBoundingRect())
        self.right_box.linkedViewChanged(self.plot_item.getViewBox(), self.right_box.XAxis)

    def _box(self, key: str) -> pg.ViewBox:
        return self.right_box if key in self.on_right else self.plot_item.getViewBox()

    def set_pen(self, key: str, label: str, index: int, right: bool = False) -> None:
        """Show a curve for `key` against the left value axis, or the right one (`right`). A
        new pen takes the first palette colour no other pen has (pens come and go in any
        order; by position alone a new pen could take a shown pen's colour)."""
        if key in self.curves:
            if right != (key in self.on_right):
                curve = self.curves[key]
                marks = getattr(curve, "_marks", None)
                for item in (curve, marks):
                    if item is not None:
                        self._box(key).removeItem(item)
                (self.on_right.add if right else self.on_right.discard)(key)
                for item in (curve, marks):
                    if item is not None:
                        self._box(key).addItem(item)
                self._update_right_axis()
            return
        used = set(self.colours.values())
        colour = next((c for c in PEN_COLORS if c not in used), PEN_COLORS[index % len(PEN_COLORS)])
        curve = pg.PlotDataItem(name=label, pen=pg.mkPen(colour, width=2), stepMode="center")
        if right:
            self.on_right.add(key)
        self._box(key).addItem(curve)
        self.legend.addItem(curve, label)
        self.curves[key] = curve
        self.colours[key] = colour
        self.points[key] = 0
        self._update_right_axis()

    def remove_pen(self, key: str) -> None:
        curve = self.curves.pop(key, None)
        self.points.pop(key, None)
        self.colours.pop(key, None)
        if curve is not None:
            box = self._box(key)
            box.removeItem(curve)
            marks = getattr(curve, "_marks", None)
            if marks is not None:  # a pen with few samples had markers: they go with it
                box.removeItem(marks)
            self.legend.removeItem(curve)
        self.on_right.discard(key)
        self._update_right_axis()

    def _update_right_axis(self) -> None:
        self.plot_item.showAxis("right", bool(self.on_right))
        self._place_right_box()

    def set_axis_labels(self, left: str, right: str) -> None:
        self.plot_item.setLabel("left", left)
        self.plot_item.setLabel("right", right)
        self._update_right_axis()  # setLabel shows its axis; the right one only with pens on it

    def set_data(self, key: str, times: np.ndarray, values: np.ndarray, hold_to: float) -> None:
        curve = self.curves[key]
        self.points[key] = int(times.size)
        if times.size == 0:
            curve.setData([], [])
            return
        times, values = reduce_points(times, values)
        edges, levels = step_arrays(times, values, hold_to)
        curve.setData(edges, levels, stepMode="center")
        colour = curve.opts["pen"].color() if hasattr(curve.opts["pen"], "color") else PLOT_FOREGROUND
        if times.size <= MARKERS_BELOW:
            # Few samples: mark each one, so a single reading is plainly there.
            marks = getattr(curve, "_marks", None)
            if marks is None:
                marks = curve._marks = pg.ScatterPlotItem(size=7, brush=pg.mkBrush(colour), pen=pg.mkPen(None))
                self._box(key).addItem(marks)
            marks.setData(times, values)
        elif getattr(curve, "_marks", None) is not None:
            curve._marks.setData([], [])

    def follow_now(self, now: float) -> None:
        if not self.follow:
            return
        self._setting_range = True
        try:
            self.plot_item.setXRange(now - self.window_seconds, now, padding=0.0)
            self.plot_item.enableAutoRange(axis="y")
            if self.on_right:
                self.right_box.enableAutoRange(axis=pg.ViewBox.YAxis)
        finally:
            self._setting_range = False

    def set_follow(self, on: bool) -> None:
        if on != self.follow:
            self.follow = on
            self.follow_changed.emit(on)

    def _on_range_changed_manually(self, *args) -> None:
        if not self._setting_range:
            self.set_follow(False)

    def x_range(self) -> tuple[float, float]:
        (low, high), _ = self.plot_item.getViewBox().viewRange()
        return float(low), float(high)
