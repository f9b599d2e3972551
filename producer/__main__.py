"""Command line of the producer package: `run`, `agents`, `broker`, `replay`, `simulate`, `probe`.

Each subcommand is a thin shell over its module; argument parsing lives here so the
desktop app (and a frozen build) can call `main(argv)` directly.
"""
from __future__ import annotations

import argparse
import faulthandler
import logging
import sys
from pathlib import Path


def _program_name() -> str:
    """How the user started this: `python -m producer`, or the installed app's own program
    (`MachineMonitor producer`), so that usage and error lines show a command that works."""
    if getattr(sys, "frozen", False):
        return f"{Path(sys.executable).name} producer"
    return "python -m producer"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=_program_name(), description="Machine Monitor producer service and tools")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="follow MTConnect agents and publish every observation to Kafka")
    from producer.config import add_run_arguments

    add_run_arguments(run)

    agents = sub.add_parser("agents", help="the plant's agent list that producer groups follow (add, remove, list)")
    from producer.config import add_agents_arguments

    add_agents_arguments(agents)

    broker = sub.add_parser("broker", help="the local Kafka broker")
    broker.add_argument("action", choices=["start", "stop", "status", "fetch"])
    broker.add_argument("--data-dir", type=Path, help="broker data dir (default: per-user data folder)")
    broker.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    broker.add_argument("--nodes", type=int, default=None,
                        help="start: a local cluster of this many nodes (3 or more; default: one broker)")

    replay = sub.add_parser("replay", help="MTConnect agent replaying the recorded NIST data")
    from producer.replay import add_replay_arguments

    add_replay_arguments(replay)

    simulate = sub.add_parser("simulate", help="many simulated MTConnect agents in one process, for load tests")
    from producer.fleet.simulator import add_simulate_arguments

    add_simulate_arguments(simulate)

    probe = sub.add_parser("probe", help="print an agent's devices and data items")
    probe.add_argument("url", help="agent base URL, e.g. https://smstestbed.nist.gov/vds")
    probe.add_argument("--ca-bundle", help="CA bundle for HTTPS agents")
    probe.add_argument("--timeout", type=float, default=10.0)
    return parser


def _file_descriptor(stream) -> int | None:
    try:
        return stream.fileno() if stream is not None else None
    except (OSError, ValueError):  # io.UnsupportedOperation: a stream in memory
        return None


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    # A crash in native code (librdkafka, lxml, a malloc abort) prints every thread's Python
    # stack to the log before the process dies: the log then says where it happened. Where
    # stderr is no file (run embedded, or a windowed build without a console) there is no log
    # to write it to, and the process runs as before.
    stderr_fd = _file_descriptor(sys.stderr)
    if stderr_fd is not None:
        faulthandler.enable(stderr_fd, all_threads=True)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "broker":
        from producer.broker import main_cli

        return main_cli(args.action, args.data_dir, args.timeout, args.nodes)
    if args.command == "replay":
        from producer.replay import run_replay_cli

        return run_replay_cli(args)
    if args.command == "agents":
        from producer.fleet.agents import agents_cli

        return agents_cli(args)
    if args.command == "simulate":
        from producer.fleet.simulator import run_simulate_cli

        return run_simulate_cli(args)
    if args.command == "probe":
        from producer.probe import probe_cli

        return probe_cli(args)
    if args.command == "run":
        from producer.service import run_cli

        return run_cli(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
