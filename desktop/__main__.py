"""`python -m desktop`: parse the command line, then hand over to `desktop.ui.app`.

Besides the GUI options, a hidden `--run-module producer ...` runs the producer's command
line instead of the app. This is how the app starts its broker, replay agent and producer as
child processes (a PyInstaller build has no `python -m`, and `sys.executable` is the app
itself), with a lifeline to the app so that none outlives it (see `desktop.launcher`); the
hidden `--broker-watchdog` is the process that stops an app-started broker when the app dies,
and the hidden `--feed-process` is the window's Kafka feed (`desktop.core.feed_process`).
All are handled before anything imports Qt, as is `producer ...` (the producer's command line
without the lifeline), which lets the installed app run its services headless.
"""
from __future__ import annotations

import argparse
import sys

RUN_MODULE_FLAG = "--run-module"
SERVICE_COMMAND = "producer"
WATCHDOG_FLAG = "--broker-watchdog"
FEED_PROCESS_FLAG = "--feed-process"  # as desktop.core.feed_process, without importing it first
# Modules the passthrough may run: the app's own services, nothing else.
RUNNABLE_MODULES = ("producer",)


def run_module(argv: list[str]) -> int:
    if not argv or argv[0] not in RUNNABLE_MODULES:
        print(f"error: {RUN_MODULE_FLAG} takes one of: {', '.join(RUNNABLE_MODULES)}", file=sys.stderr)
        return 2
    module, arguments = argv[0], argv[1:]
    sys.argv = [module, *arguments]
    if module == "producer":
        from desktop.launcher import run_producer_cli

        return run_producer_cli(arguments)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m desktop",
        description="Machine Monitor: live state, plots and alarms of MTConnect machines, from Kafka.",
    )
    parser.add_argument("--config-dir", metavar="DIR", help="settings folder (default: $MACHINE_MONITOR_CONFIG_DIR or the per-user config folder)")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="use this Kafka cluster (remote mode) instead of the saved settings")
    parser.add_argument("--topic-prefix", metavar="PREFIX", help="topic name prefix (overrides the saved settings)")
    parser.add_argument("--screenshot", metavar="PNG", help="save the main window to PNG after --after seconds of live data, then exit")
    parser.add_argument("--after", metavar="S", type=float, default=10.0, help="seconds of live data before the screenshot (default 10)")
    parser.add_argument("--view", metavar="NAME", default="overview",
                        help="what --screenshot captures: overview, detail, settings, alarms, journal, kpis (default overview)")
    parser.add_argument("--acknowledge", metavar="N", type=int, default=0,
                        help="with --screenshot: acknowledge N unacknowledged alarms first (active ones, then by priority and age)")
    parser.add_argument("--shelve", metavar="N", type=int, default=0,
                        help="with --screenshot: shelve N further unacknowledged alarms for 1 h first")
    parser.add_argument("--minimised", action="store_true", help="start minimised (in the tray when there is one)")
    parser.add_argument("--self-test", action="store_true", help="check resources, start broker, replay agent and producer, wait for data, stop; exit 0/1")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [RUN_MODULE_FLAG]:
        return run_module(argv[1:])
    if argv[:1] == [SERVICE_COMMAND]:
        # The installed app as a headless service: `MachineMonitor producer run ...`.
        return run_module(argv)
    if argv[:1] == [FEED_PROCESS_FLAG]:
        # The window's Kafka feed, in a process of its own (see desktop.core.feed_process).
        from desktop.core.feed_process import child_main

        return child_main()
    if argv[:1] == [WATCHDOG_FLAG]:
        from desktop.launcher import run_broker_watchdog

        return run_broker_watchdog(argv[1:])
    parser = build_parser()
    options = parser.parse_args(argv)
    if options.after < 0:
        parser.error("--after must not be negative")

    from desktop.ui import crash_log

    crash_log.install()  # from here on an unexpected error leaves a crash log and says where
    from desktop.ui import app

    if options.self_test:
        return app.run_self_test(options)
    return app.run(options)


if __name__ == "__main__":
    sys.exit(main())
