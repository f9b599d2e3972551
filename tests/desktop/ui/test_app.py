"""The command line: the hidden producer passthrough, the screenshot job, the local-mode
window wiring (with a stand-in for the producer CLI) and the self-test's resource check."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from desktop.__main__ import build_parser, run_module
import recorded_nist as testing
from desktop.core.settings import Settings
from desktop.ui.app import ScreenshotJob
from desktop.ui.services import LocalServices


def test_run_module_passthrough_runs_the_producer_cli():
    result = subprocess.run([sys.executable, "-m", "desktop", "--run-module", "producer", "replay", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--speed" in result.stdout


def test_run_module_refuses_other_modules(capsys):
    assert run_module(["os"]) == 2
    assert "takes one of: producer" in capsys.readouterr().err


def test_parser_defaults():
    options = build_parser().parse_args(["--screenshot", "shot.png", "--after", "3", "--config-dir", "/tmp/x"])
    assert (options.screenshot, options.after, options.config_dir, options.self_test) == ("shot.png", 3.0, "/tmp/x", False)


def test_screenshot_job_waits_for_data_then_saves_and_closes(make_window, qtbot, tmp_path):
    window = make_window()
    window.show()
    path = tmp_path / "shot.png"
    job = ScreenshotJob(window, path, after=0.2)
    devices = testing.load_devices()
    mazak03 = testing.device_named(devices, "Mazak03")
    observations = [o for _, o in testing.shdr_observations(testing.nist_shdr("Mazak03-20161116-20161117.txt"), mazak03, last_line=2000)]
    assert not path.exists()
    window.ingest(testing.batch_of(devices, observations))
    qtbot.waitUntil(lambda: job.exit_code is not None, timeout=10_000)
    assert job.exit_code == 0 and path.stat().st_size > 10_000
    qtbot.waitUntil(lambda: not window.isVisible())


def test_screenshot_job_gives_up_without_data(make_window, qtbot, tmp_path, capsys):
    window = make_window()
    window.show()
    job = ScreenshotJob(window, tmp_path / "never.png", after=0.1, first_batch_timeout=0.3)
    qtbot.waitUntil(lambda: job.exit_code is not None, timeout=10_000)
    assert job.exit_code == 1 and not (tmp_path / "never.png").exists()
    assert "no observations from Kafka within 0.3 s" in capsys.readouterr().err


STAND_IN_CLI = textwrap.dedent(
    r'''
    import os, signal, sys, time
    args = sys.argv[1:]
    if args[:2] == ["broker", "status"]:
        print("stopped"); sys.exit(3)
    if args[:2] == ["broker", "start"]:
        print("fetching Kafka jars (first run only)", flush=True)
        time.sleep(0.3)
        print("bootstrap=" + os.environ["STAND_IN_BOOTSTRAP"]); sys.exit(0)   # nothing listens there
    if args[:2] == ["broker", "stop"]:
        sys.exit(0)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    if args[0] == "replay":
        print("listening=http://127.0.0.1:5555", flush=True)
    while True:
        time.sleep(0.05)
    '''
)


def test_local_mode_window_starts_services_then_the_feed_and_stops_them_on_close(make_window, qtbot, tmp_path,
                                                                                closed_port, monkeypatch):
    monkeypatch.setenv("STAND_IN_BOOTSTRAP", closed_port)
    script = tmp_path / "stand_in_cli.py"
    script.write_text(STAND_IN_CLI)
    services = LocalServices(command_for=lambda args: (sys.executable, [str(script), *args]), stop_grace=2.0)
    window = make_window(Settings(), services=services)
    window.show()
    progress = []
    services.progress_reported.connect(progress.append)
    with qtbot.waitSignal(services.services_started, timeout=20_000):
        window.start()
    assert any("downloading" in text or "fetching Kafka jars" in text for text in progress)
    assert window.worker is not None and window.worker.config.bootstrap_servers == closed_port
    qtbot.waitUntil(lambda: "Local: broker running, replay running, producer running" == window.services_label.text())
    # Nothing speaks Kafka there: the status bar says so instead of hanging silently.
    qtbot.waitUntil(lambda: window.broker_label.text().startswith("Kafka: unreachable"), timeout=20_000)
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=20_000)
    assert not services.active
    assert window.worker is None


def test_self_test_resource_check_passes():
    from desktop.core import paths

    assert paths.missing_resources() == []


def test_screenshot_job_fails_fast_when_local_services_fail(make_window, qtbot, tmp_path, capsys):
    script = tmp_path / "no_broker_cli.py"
    script.write_text("import sys\nprint('error: java not found', file=sys.stderr)\nsys.exit(1)\n")
    services = LocalServices(command_for=lambda args: (sys.executable, [str(script), *args]))
    window = make_window(Settings(), services=services)
    window.show()
    job = ScreenshotJob(window, tmp_path / "never.png", after=0.1)
    window.start()
    qtbot.waitUntil(lambda: job.exit_code is not None, timeout=15_000)
    assert job.exit_code == 1
    err = capsys.readouterr().err
    assert "local services failed" in err and "java not found" in err
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=15_000)
