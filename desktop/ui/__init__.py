"""The Qt half of the desktop app (see desktop/core for the Qt-free logic)."""
