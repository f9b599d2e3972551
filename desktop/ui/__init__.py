"""The Qt half of the desktop app (see desktop/core for the Qt-free logic)."""
from desktop.ui import qt_compat as _qt_compat

# Before anything emits a signal: see qt_compat for the PySide6 6.12.0 refcount bug.
_qt_compat.apply()
