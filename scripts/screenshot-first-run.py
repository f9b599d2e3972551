"""Pictures of the first-run wizard for the documentation, with real Test results:

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshot-first-run.py docs/

writes `first-run-machines.png` (the agent page, its Test run against the replay agent
started here on a free port) and `first-run-kafka.png` (the Kafka page, its Test run against
an address where nothing listens, as a user who mistyped the port would see it).
"""
from __future__ import annotations

import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def wait_for_result(row, timeout_s: float = 20.0) -> None:
    loop = QEventLoop()
    row.background.finished.connect(lambda ok, text: loop.quit())
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs")
    from desktop.ui.first_run import FirstRunWizard
    from desktop.ui.theme import apply_style
    from producer.replay import ReplayAgent

    app = QApplication(sys.argv[:1])
    apply_style(app)
    agent = ReplayAgent(speed=1).start()
    try:
        wizard = FirstRunWizard()
        wizard.resize(760, 480)
        wizard.show()
        page = wizard.source_page
        page.agent_radio.setChecked(True)
        page.url_edit.setText(agent.url)
        page.test_row.button.click()
        wait_for_result(page.test_row)
        app.processEvents()
        wizard.grab().save(str(out / "first-run-machines.png"))

        page.replay_radio.setChecked(True)
        wizard.next()
        kafka = wizard.kafka_page
        kafka.remote_radio.setChecked(True)
        kafka.bootstrap_edit.setText(f"127.0.0.1:{free_port()}")
        kafka.test_row.button.click()
        wait_for_result(kafka.test_row)
        app.processEvents()
        wizard.grab().save(str(out / "first-run-kafka.png"))
        print(f"saved {out / 'first-run-machines.png'} and {out / 'first-run-kafka.png'}")
    finally:
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
