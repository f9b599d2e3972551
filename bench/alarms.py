"""Alarm engine throughput: the recorded NIST days through the engine with 50 rules, one core.

The observations are the three recorded SHDR days (Mazak03, Mazak01, GFAgie01) plus the
initial UNAVAILABLE of the Hurco machines, turned into observation dicts exactly as the
producer writes them (`tests/recorded_nist.py`); they are built before anything is timed.
The rules are the default rules file (8 rules) and 42 more of every kind: thresholds on
every load and temperature, events on controller mode and availability, per-machine
condition rules with native-code filters, so most observations are watched by a rule
that does not fire, as on a real plant. Each pass feeds a fresh engine in batches of 1,000
(a feed's consume size) with a fixed wall clock; the best of BENCH_PASSES (5) passes counts.
Ends with `BENCH alarms engine_obs_per_s=<n>`.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import recorded_nist  # noqa: E402
from desktop.core.alarms import AlarmEngine, default_rules_path, parse_rules  # noqa: E402

BATCH = 1000
DAYS = {"Mazak03": "Mazak03-20161116-20161117.txt", "Mazak01": "Mazak01-20171030-20171031.txt",
        "GFAgie01": "GFAgie01-20160513-20160514.txt"}


def observations() -> list[dict]:
    devices = recorded_nist.load_devices()
    found = []
    for device in devices:
        if device["device_name"].startswith("Hurco"):
            found += recorded_nist.unavailable_observations(device, "2016-05-13T05:00:00Z")
    for name, day in DAYS.items():
        device = recorded_nist.device_named(devices, name)
        found += [o for _, o in recorded_nist.shdr_observations(recorded_nist.nist_shdr(day), device)]
    return found


def fifty_rules() -> str:
    text = default_rules_path().read_text(encoding="utf-8")
    extra = []
    names = ["Xload", "Yload", "Zload", "Bload", "Cload", "Sload", "S1load", "S2load", "Stemp", "S2temp"]
    for index, name in enumerate(names):
        for limit, delay in ((50, "0 s"), (80, "2 s"), (120, "10 s")):
            extra.append(f"  - {{id: bench-{name}-{limit}, kind: threshold, name: {name}, above: {limit}, "
                         f"deadband: 5, for: {delay}, off_delay: 1 s, priority: medium}}")
    extra.append("  - {id: bench-mode, kind: event, type: CONTROLLER_MODE, values: [MANUAL, MANUAL_DATA_INPUT], priority: low}")
    extra.append("  - {id: bench-avail, kind: event, type: AVAILABILITY, values: [UNAVAILABLE], priority: low}")
    extra.append("  - {id: bench-unavailable-load, kind: unavailable, type: LOAD, for: 5 s, priority: low}")
    extra.append("  - {id: bench-unavailable-exec, kind: unavailable, type: EXECUTION, priority: low}")
    for machine in ("Mazak03", "Mazak01", "GFAgie01"):
        extra.append(f"  - {{id: bench-{machine}-faults, kind: condition, devices: [{machine}], levels: {{FAULT: high}}, "
                     f"exclude_native_codes: ['0']}}")
        extra.append(f"  - {{id: bench-{machine}-codes, kind: condition, devices: [{machine}], native_codes: ['10', '719', '36'], "
                     f"levels: {{FAULT: critical, WARNING: high}}}}")
    extra.append("  - {id: bench-axes, kind: condition, type: [POSITION, ANGLE], levels: {WARNING: low}}")
    extra.append("  - {id: bench-path-position, kind: threshold, type: PATH_POSITION, above: 1000, priority: low}")
    return text.rstrip() + "\n" + "\n".join(extra) + "\n"


def main() -> int:
    passes = int(os.environ.get("BENCH_PASSES", "5"))
    built = time.perf_counter()
    data = observations()
    rules = parse_rules(fifty_rules(), "bench rules")
    batches = [data[i:i + BATCH] for i in range(0, len(data), BATCH)]
    print(f"observations: {len(data):,} (built in {time.perf_counter() - built:.1f} s), rules: {len(rules.rules)}, "
          f"batches of {BATCH}")
    rates, events = [], 0
    for number in range(passes):
        engine = AlarmEngine(rules, clock=lambda: 1e9)
        started = time.perf_counter()
        events = 0
        for batch in batches:
            events += len(engine.process(batch, now=1e9))
        elapsed = time.perf_counter() - started
        rates.append(len(data) / elapsed)
        counts = engine.counts()
        print(f"pass {number + 1}: {elapsed * 1000:.0f} ms, {len(data) / elapsed:,.0f} observations/s, "
              f"{events} transitions, {counts['standing']} standing at the end ({counts['chattering']} of them chattering)")
    best = max(rates)
    print(f"best {best:,.0f} obs/s, median {statistics.median(rates):,.0f} obs/s over {passes} passes "
          f"({os.cpu_count()} cores on the machine, one used)")
    print(f"BENCH alarms engine_obs_per_s={best:.0f} transitions={events} rules={len(rules.rules)} observations={len(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
