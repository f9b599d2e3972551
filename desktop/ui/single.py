"""One app per user and settings folder: a second start brings the first window forward.

The first instance listens on a local socket named after the user and the settings folder
(`QLocalServer`); a second `python -m desktop` connects, sends `show`, and exits - so it never
starts a second replay agent or producer into the same topics. (Non-interactive runs - the
screenshot command - do not ask; the local services' own lock keeps them from starting a
second producer, see `desktop.core.instance`.)
"""
from __future__ import annotations

import getpass
import hashlib
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

CONNECT_TIMEOUT_MS = 1500


def server_name(config_dir: Path) -> str:
    digest = hashlib.blake2b(str(Path(config_dir).resolve()).encode("utf-8"), digest_size=6).hexdigest()
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name: the digest alone still separates folders
        user = "user"
    return f"machine-monitor-{user}-{digest}"


def ask_running_instance(config_dir: Path) -> bool:
    """True when another instance answered and was asked to show its window."""
    socket = QLocalSocket()
    socket.connectToServer(server_name(config_dir))
    if not socket.waitForConnected(CONNECT_TIMEOUT_MS):
        return False
    socket.write(b"show\n")
    socket.flush()
    socket.waitForBytesWritten(CONNECT_TIMEOUT_MS)
    socket.disconnectFromServer()
    return True


class InstanceServer(QObject):
    show_requested = Signal()

    def __init__(self, config_dir: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.server = QLocalServer(self)
        name = server_name(config_dir)
        if not self.server.listen(name):
            # A stale socket file left by a killed instance (nobody answered): take it over.
            QLocalServer.removeServer(name)
            self.server.listen(name)
        self.server.newConnection.connect(self._on_new_connection)

    def _on_new_connection(self) -> None:
        while self.server.hasPendingConnections():
            connection = self.server.nextPendingConnection()
            connection.readyRead.connect(lambda c=connection: self._on_ready_read(c))
            connection.disconnected.connect(connection.deleteLater)

    def _on_ready_read(self, connection: QLocalSocket) -> None:
        if b"show" in bytes(connection.readAll().data()):
            self.show_requested.emit()
