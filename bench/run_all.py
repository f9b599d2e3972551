"""Runs every benchmark in bench/ (each prints a `BENCH <name> key=value ...` line)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Modules in bench/ that are not benchmarks themselves (page_agent.py is the agent bench/producer.py uses).
HELPERS = {"run_all.py", "page_agent.py"}


def main() -> int:
    failed = 0
    for script in sorted(HERE.glob("*.py")):
        if script.name in HELPERS or script.name.startswith("_"):
            continue
        print(f"== {script.name}", flush=True)
        failed += subprocess.call([sys.executable, str(script)], cwd=HERE.parent) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
