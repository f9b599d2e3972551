"""The live plot: one SAMPLE data item over time, with a machine and data item picker.

The curve is created once and fed with `setData` from the ring buffer on the window's redraw
timer, only when the buffer changed; peak downsampling and clip-to-view keep long histories
cheap, and the x axis shows wall-clock time. Until the user picks something, the plot follows
the model's default (the first machine by name with spindle-speed data). Samples are drawn
as steps, because an MTConnect sample holds its value until the next one arrives.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from desktop.core.batch import SeriesKey
from desktop.core.model import MonitorModel
from desktop.ui.theme import PLOT_BACKGROUND, PLOT_FOREGROUND, PLOT_PEN


def item_label(item: Mapping[str, Any]) -> str:
    name = item.get("name") or item.get("id")
    kind = str(item.get("type") or "").replace("_", " ").lower()
    units = item.get("units")
    return f"{name} — {kind}" + (f" ({units.lower()})" if units else "")


def format_value(value: float | None, units: str | None) -> str:
    if value is None:
        return "—"
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.3g}"
    return f"{text} {units.lower()}" if units else text


class LivePlot(QWidget):
    series_changed = Signal(object)  # SeriesKey | None

    def __init__(self, model: MonitorModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.series_key: SeriesKey | None = None
        # True once the user chose a series; the default no longer moves the plot then.
        self.user_selected = False
        self._drawn_version: tuple[SeriesKey | None, int] | None = None
        self._items_version = -1
        self._fleet_version = -1
        self._updating_pickers = False

        self.device_combo = QComboBox(objectName="plotDevice")
        self.device_combo.setMinimumWidth(160)
        self.item_combo = QComboBox(objectName="plotItem")
        self.item_combo.setMinimumWidth(260)
        self.item_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.value_label = QLabel("—", objectName="plotValue")
        self.value_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        picker = QHBoxLayout()
        picker.addWidget(QLabel("Machine", objectName="pickerCaption"))
        picker.addWidget(self.device_combo)
        picker.addSpacing(12)
        picker.addWidget(QLabel("Data item", objectName="pickerCaption"))
        picker.addWidget(self.item_combo)
        picker.addStretch(1)
        picker.addWidget(self.value_label)

        self.plot_widget = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem(orientation="bottom")})
        self.plot_widget.setBackground(PLOT_BACKGROUND)
        self.plot_item = self.plot_widget.getPlotItem()
        self.plot_item.showGrid(x=True, y=True, alpha=0.15)
        for axis in ("left", "bottom"):
            self.plot_item.getAxis(axis).setPen(pg.mkPen(PLOT_FOREGROUND))
            self.plot_item.getAxis(axis).setTextPen(pg.mkPen(PLOT_FOREGROUND))
        # Machine units are not SI-prefixable ("x0.001 revolution/minute" helps nobody).
        self.plot_item.getAxis("left").enableAutoSIPrefix(False)
        self.curve = self.plot_item.plot(pen=pg.mkPen(PLOT_PEN, width=2), stepMode="left")
        self.curve.setDownsampling(auto=True, method="peak")
        self.curve.setClipToView(True)
        self.message = pg.TextItem("", color=PLOT_FOREGROUND, anchor=(0.5, 0.5))
        self.message.setParentItem(self.plot_item.getViewBox())
        self.plot_item.getViewBox().sigResized.connect(self._place_message)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(picker)
        layout.addWidget(self.plot_widget, 1)

        self.device_combo.currentIndexChanged.connect(self._on_device_picked)
        self.item_combo.currentIndexChanged.connect(self._on_item_picked)
        self._show_message("Waiting for data…")

    # -- picker -------------------------------------------------------------------------

    def _refresh_pickers(self) -> None:
        """Rebuild the combos when devices or data items changed, keeping the selection."""
        if self.model.items_version == self._items_version and self.model.fleet.version == self._fleet_version:
            return
        self._items_version = self.model.items_version
        self._fleet_version = self.model.fleet.version
        devices = [(view.name, view.device_uuid) for view in self.model.fleet.views() if self.model.sample_items(view.device_uuid)]
        current = [(self.device_combo.itemText(i), self.device_combo.itemData(i)) for i in range(self.device_combo.count())]
        self._updating_pickers = True
        try:
            if devices != current:
                self.device_combo.clear()
                for name, uuid in devices:
                    self.device_combo.addItem(name, uuid)
            self._select_in_pickers(self.series_key)
        finally:
            self._updating_pickers = False

    def _fill_items(self, device_uuid: str | None) -> None:
        items = self.model.sample_items(device_uuid) if device_uuid else []
        wanted = [(item_label(item), str(item["id"])) for item in items]
        current = [(self.item_combo.itemText(i), self.item_combo.itemData(i)) for i in range(self.item_combo.count())]
        if wanted != current:
            self.item_combo.clear()
            for label, item_id in wanted:
                self.item_combo.addItem(label, item_id)

    def _select_in_pickers(self, series_key: SeriesKey | None) -> None:
        device_uuid = series_key[0] if series_key else self.device_combo.currentData()
        index = self.device_combo.findData(device_uuid) if device_uuid else -1
        if index >= 0:
            self.device_combo.setCurrentIndex(index)
        self._fill_items(self.device_combo.currentData())
        if series_key:
            item_index = self.item_combo.findData(series_key[1])
            if item_index >= 0:
                self.item_combo.setCurrentIndex(item_index)

    def _on_device_picked(self, index: int) -> None:
        if self._updating_pickers:
            return
        self._updating_pickers = True
        try:
            device_uuid = self.device_combo.itemData(index)
            self._fill_items(device_uuid)
            # Prefer the same kind of item on the new machine (spindle speed stays spindle speed).
            kind = None
            if self.series_key:
                previous = self.model.data_item(*self.series_key)
                kind = previous.get("type") if previous else None
            for i in range(self.item_combo.count()):
                item = self.model.data_item(device_uuid, self.item_combo.itemData(i))
                if kind and item and item.get("type") == kind:
                    self.item_combo.setCurrentIndex(i)
                    break
        finally:
            self._updating_pickers = False
        self._on_item_picked(self.item_combo.currentIndex())

    def _on_item_picked(self, index: int) -> None:
        if self._updating_pickers or index < 0:
            return
        device_uuid = self.device_combo.currentData()
        item_id = self.item_combo.itemData(index)
        if device_uuid and item_id:
            self.user_selected = True
            self.select((device_uuid, item_id))

    def select(self, series_key: SeriesKey | None) -> None:
        """Plot this series (also used by tests and by clicking a machine tile)."""
        if series_key == self.series_key:
            return
        self.series_key = series_key
        self._drawn_version = None
        self._updating_pickers = True
        try:
            self._select_in_pickers(series_key)
        finally:
            self._updating_pickers = False
        item = self.model.data_item(*series_key) if series_key else None
        units = (item or {}).get("units")
        name = (item or {}).get("name") or ""
        self.plot_item.setLabel("left", name + (f" [{units.lower()}]" if units else ""))
        self.plot_item.enableAutoRange()
        self.series_changed.emit(series_key)

    def select_device(self, device_uuid: str) -> None:
        """Show the same kind of data item on another machine (a tile was clicked)."""
        index = self.device_combo.findData(device_uuid)
        if index >= 0:
            self.device_combo.setCurrentIndex(index)

    # -- drawing ------------------------------------------------------------------------

    def _show_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))
        self._place_message()

    def _place_message(self) -> None:
        rect = self.plot_item.getViewBox().boundingRect()
        self.message.setPos(rect.center())

    def redraw(self) -> None:
        """Called by the window's timer: update pickers and the curve if anything changed."""
        self._refresh_pickers()
        if not self.user_selected:
            default = self.model.default_series()
            if default is not None and default != self.series_key:
                self.select(default)
        key = self.series_key
        buffer = self.model.series.get(key) if key else None
        version = (key, buffer.version if buffer is not None else -1)
        if version == self._drawn_version:
            return
        self._drawn_version = version
        if buffer is None or not len(buffer):
            self.curve.setData(np.empty(0), np.empty(0))
            self._show_message("Waiting for data…" if key is None else "No numeric data for this item yet")
            self.value_label.setText("—")
            return
        times, values = buffer.snapshot(self.model.window_seconds)
        self.curve.setData(times, values)
        self._show_message("")
        item = self.model.data_item(*key)
        self.value_label.setText(format_value(buffer.last_value, (item or {}).get("units")))

    @property
    def point_count(self) -> int:
        """How many points the curve currently holds (before downsampling for display)."""
        x, _ = self.curve.getOriginalDataset()
        return 0 if x is None else len(x)
