"""The views `--screenshot PNG --view NAME` can capture, and how a later module adds its own.

A view is registered by name with a function that brings it up in a running window and
returns the widget to capture, and optionally a readiness test polled until it is true (the
detail view waits for its history). The built-in ones are `overview`, `detail` (the first
machine with a spindle, by name, history loaded) and `settings` (the dialog, not modal).
A later module registers its own at import time:

    from desktop.ui.views import register_view
    register_view("alarms", lambda window: window.show_view("alarms"))

`MainWindow.add_view(name, title, widget)` gives the widget its tab; `show_view(name)` brings
it up. Modules listed in `VIEW_MODULES` are imported (when present) before a screenshot, so
their registrations are known without the command line naming them.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from PySide6.QtWidgets import QWidget

if TYPE_CHECKING:
    from desktop.ui.main_window import MainWindow

# Modules that add views of their own, imported when they exist.
VIEW_MODULES = ("desktop.ui.alarms",)


@dataclass(frozen=True)
class ScreenshotView:
    name: str
    show: Callable[["MainWindow"], QWidget | None]
    ready: Callable[["MainWindow", QWidget], bool] | None = None
    description: str = ""


_VIEWS: dict[str, ScreenshotView] = {}


def register_view(name: str, show: Callable[["MainWindow"], QWidget | None],
                  ready: Callable[["MainWindow", QWidget], bool] | None = None, description: str = "") -> None:
    _VIEWS[name] = ScreenshotView(name, show, ready, description)


def load_view_modules() -> None:
    for module in VIEW_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def view_names() -> list[str]:
    load_view_modules()
    return sorted(_VIEWS)


def get_view(name: str) -> ScreenshotView | None:
    load_view_modules()
    return _VIEWS.get(name)


def _show_overview(window: "MainWindow") -> QWidget:
    window.show_view("overview")
    return window


def first_spindle_machine(window: "MainWindow") -> str | None:
    """The first machine by name whose spindle reports a speed; else the first with a
    spindle at all (its speed unavailable); else the first machine."""
    views = window.state.views()
    for wanted in (lambda v: v.spindle_speed is not None, lambda v: v.has_spindle):
        for view in views:
            if wanted(view) and window.state.sample_items(view.device_uuid):
                return view.device_uuid
    return views[0].device_uuid if views else None


def _show_detail(window: "MainWindow") -> QWidget | None:
    uuid = first_spindle_machine(window)
    if uuid is None:
        return None
    detail = window.open_detail(uuid)
    # A screenshot follows a short run: the shortest look-back shows its data best.
    detail.look_back_combo.setCurrentIndex(0)
    return window


def _detail_ready(window: "MainWindow", widget: QWidget) -> bool:
    from desktop.ui.detail import DetailView

    current = window.tabs.currentWidget()
    return isinstance(current, DetailView) and not current.history_loading and (
        current.history is not None or bool(current.history_error))


def _show_settings(window: "MainWindow") -> QWidget:
    from desktop.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(window.settings, window, config_dir=window.config_dir)
    dialog.resize(700, 640)
    dialog.show()
    window._screenshot_dialog = dialog  # kept alive until the window closes
    return dialog


register_view("overview", _show_overview, description="the fleet summary and every machine's tile")
register_view("detail", _show_detail, _detail_ready,
              description="the first machine with a spindle, the last 5 minutes loaded from Kafka")
register_view("settings", _show_settings, description="the settings dialog")
