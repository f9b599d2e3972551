"""Plant-scale producer: one producer process following N agents, for N = 50, 200, 1,000.

What runs (all on this machine, sharing its cores):

* `python -m producer simulate --agents N`: one process serving N MTConnect agents over real
  HTTP, each on its own port, each the recorded values of a NIST machine at 20 observations
  per second, every observation stamped with the moment it was generated.
* A local single-node KRaft broker (`LocalBroker`) in a temporary directory, one for all runs;
  each run has its own topic prefix.
* The producer service as its own process, `python -m producer run --config FILE` with the N
  agents in the file (no group: one process), starting from each agent's `current`.
* This process reads the observations topic with a `read_committed` consumer as the
  producer commits it, and for every observation takes the time from its generation (its
  `timestamp`) to its arrival here: the latency until a desktop could show it.

Per N: after every agent is followed (its first streamed observation committed; `start_s`
from the producer's spawn), a window of BENCH_FLEET_SECONDS (30) is measured: offered
observations/s (what the agents generated in the window, from their own sequence numbers),
committed observations/s (observations generated in the window that arrived within
BENCH_FLEET_DRAIN (10) s after it), p50/p99/max latency, the producer's peak threads and peak
RSS (VmHWM), its CPU, the broker's and the simulator's, and the load average. Observations of
an agent that arrive out of sequence order twice are counted as duplicates (there must be
none). BENCH_FLEET_AGENTS (default `50,200,1000`) chooses the runs. Ends with one line
`BENCH fleet agents=<n> offered_obs_per_s=<n> committed_obs_per_s=<n> latency_p99_ms=<x>
rss_mb=<n> threads=<n> start_s=<x>` for the largest N.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import confluent_kafka  # noqa: E402
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # noqa: E402

from producer import wire  # noqa: E402
from producer.broker import LocalBroker, kafka_version  # noqa: E402
from producer.topics import ensure_topics  # noqa: E402

AGENT_COUNTS = [int(n) for n in os.environ.get("BENCH_FLEET_AGENTS", "50,200,1000").split(",") if n.strip()]
WINDOW_S = float(os.environ.get("BENCH_FLEET_SECONDS", "30"))
DRAIN_S = float(os.environ.get("BENCH_FLEET_DRAIN", "10"))
RATE = float(os.environ.get("BENCH_FLEET_RATE", "20"))
START_TIMEOUT_S = float(os.environ.get("BENCH_FLEET_START_TIMEOUT", "180"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
quiet = logging.getLogger("bench.fleet.kafka")
quiet.addHandler(logging.NullHandler())
quiet.propagate = False


def log(line: str = "") -> None:
    print(line, flush=True)


def cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def status_field(pid: int, name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def loadavg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def epoch_of(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def simulator_state(process: subprocess.Popen, path: Path) -> list[dict]:
    before = path.stat().st_mtime_ns if path.exists() else 0
    process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_mtime_ns != before:
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass
        time.sleep(0.02)
    raise RuntimeError("the simulator did not report its state")


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def stop(process: subprocess.Popen, timeout: float = 60) -> int | None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            return None
    return process.returncode


def run(broker: LocalBroker, agents: int, work: Path) -> dict:
    bootstrap = broker.bootstrap
    broker_pid = int((broker.status() or {}).get("pid") or 0)
    prefix = f"fleet{agents}-{uuid.uuid4().hex[:6]}."
    ensure_topics({"bootstrap.servers": bootstrap, "logger": quiet}, prefix)
    urls_file, state_file = work / f"urls-{agents}.json", work / f"state-{agents}.json"
    simulator = subprocess.Popen(
        [sys.executable, "-m", "producer", "simulate", "--agents", str(agents), "--rate", str(RATE),
         "--urls-file", str(urls_file), "--state-file", str(state_file)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=open(work / f"simulator-{agents}.log", "wb"),
        stderr=subprocess.STDOUT)
    producer = None
    consumer = None
    try:
        deadline = time.monotonic() + 120
        while not urls_file.exists():
            if simulator.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the simulator did not start: {(work / f'simulator-{agents}.log').read_text()}")
            time.sleep(0.1)
        urls = json.loads(urls_file.read_text())
        config = work / f"producer-{agents}.json"
        config.write_text(json.dumps({"agents": urls}))
        topic = wire.topic_name(wire.OBSERVATIONS, prefix)
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                             "isolation.level": "read_committed", "enable.auto.commit": False,
                             "fetch.wait.max.ms": 20, "logger": quiet})
        metadata = consumer.list_topics(topic, timeout=30)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.topics[topic].partitions])
        producer_log = work / f"producer-{agents}.log"
        spawned = time.time()
        producer = subprocess.Popen(
            [sys.executable, "-m", "producer", "run", "--config", str(config), "--bootstrap", bootstrap,
             "--topic-prefix", prefix],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=open(producer_log, "wb"), stderr=subprocess.STDOUT)

        followed: set[str] = set()
        last_sequence: dict[str, int] = {}
        duplicates = 0
        window_start = window_end = None
        latencies: list[float] = []
        committed = 0
        threads = 0
        start_s = None
        marks: dict[str, tuple] = {}
        decode = wire.decode
        while True:
            now = time.time()
            if producer.poll() is not None:
                raise RuntimeError(f"the producer exited with {producer.returncode}: "
                                   f"{producer_log.read_text()[-3000:]}")
            threads = max(threads, status_field(producer.pid, "Threads"))
            if start_s is None and window_start is None and now - spawned > START_TIMEOUT_S:
                # Measured all the same, and reported as not every agent followed.
                log(f"   only {len(followed)} of {agents} agents followed after {START_TIMEOUT_S:.0f} s; "
                    f"measuring the window anyway")
                window_start = now + 1.0
                window_end = window_start + WINDOW_S
            if window_end is not None and now > window_end + DRAIN_S:
                break
            for message in consumer.consume(num_messages=10000, timeout=0.2):
                if message.error() is not None:
                    continue
                arrived = time.time()
                observation = decode(message.value())
                agent = observation["agent"]
                sequence = observation["sequence"]
                if sequence <= last_sequence.get(agent, 0):
                    duplicates += 1
                last_sequence[agent] = sequence
                generated = epoch_of(observation["timestamp"])
                if window_start is None:
                    if generated >= spawned:
                        followed.add(agent)
                        if len(followed) == agents:
                            start_s = arrived - spawned
                            window_start = arrived + 1.0
                            window_end = window_start + WINDOW_S
                    continue
                if generated >= spawned:
                    followed.add(agent)
                if window_start <= generated < window_end:
                    committed += 1
                    latencies.append(arrived - generated)
            now = time.time()
            if window_start is not None and "start" not in marks and now >= window_start:
                marks["start"] = (now, cpu_seconds(producer.pid), cpu_seconds(broker_pid),
                                  cpu_seconds(simulator.pid), simulator_state(simulator, state_file), os.getloadavg())
            if window_end is not None and "end" not in marks and now >= window_end:
                marks["end"] = (now, cpu_seconds(producer.pid), cpu_seconds(broker_pid),
                                cpu_seconds(simulator.pid), simulator_state(simulator, state_file), os.getloadavg())
        rss_mb = status_field(producer.pid, "VmHWM") / 1024
        (t0, p0, b0, s0, state0, load0), (t1, p1, b1, s1, state1, load1) = marks["start"], marks["end"]
        offered = sum(b["next_sequence"] for b in state1) - sum(a["next_sequence"] for a in state0)
        elapsed = t1 - t0
        log_lines = producer_log.read_text(errors="replace").splitlines()
        lines = [line for line in log_lines if "event=catch_up" in line]
        # The streams' interval the producer settled on (it widens them while its loop runs late).
        widened = [line for line in log_lines if "event=stream_intervals" in line]
        interval_ms = (int(widened[-1].split("interval_ms=")[1].split()[0]) if widened
                       else max(100, -(-1000 * agents // 2000)))
        code = stop(producer)
        producer = None
        return {
            "agents": agents,
            "offered": offered / elapsed,
            "committed": committed / WINDOW_S,
            "p50_ms": percentile(latencies, 0.50) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "max_ms": max(latencies) * 1000 if latencies else float("nan"),
            "threads": threads,
            "rss_mb": rss_mb,
            "start_s": start_s if start_s is not None else float("nan"),
            "followed": len(followed),
            "producer_cores": (p1 - p0) / elapsed,
            # CPU per unit of work: comparable between runs on a loaded and an idle machine.
            "producer_us_per_obs": (p1 - p0) / elapsed / max(committed / WINDOW_S, 1) * 1e6,
            "simulator_us_per_obs": (s1 - s0) / elapsed / max(offered / elapsed, 1) * 1e6,
            "interval_ms": interval_ms,
            "broker_cores": (b1 - b0) / elapsed,
            "simulator_cores": (s1 - s0) / elapsed,
            "load": f"{load0[0]:.2f} -> {load1[0]:.2f}",
            "duplicates": duplicates,
            "catch_ups": len(lines),
            "exit_code": code,
        }
    finally:
        if consumer is not None:
            consumer.close()
        if producer is not None:
            stop(producer)
        stop(simulator)


def main() -> int:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    log(f"machine: {model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, confluent-kafka {confluent_kafka.__version__} / librdkafka "
        f"{confluent_kafka.libversion()[0]}, Apache Kafka {kafka_version()}")
    log(f"load average at start (1/5/15 min): {loadavg()}")
    results = []
    keep = os.environ.get("BENCH_FLEET_KEEP")  # a folder to keep the logs in
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as folder:
        work = Path(keep) if keep else Path(folder)
        work.mkdir(parents=True, exist_ok=True)
        broker = LocalBroker(data_dir=work / "kafka", progress=lambda line: None)
        broker.start(timeout=180)
        try:
            for agents in AGENT_COUNTS:
                log(f"-- {agents} agents at {RATE:g} observations/s each (load {loadavg()})")
                result = run(broker, agents, work)
                results.append(result)
                log("   " + ", ".join(f"{key}={value:.1f}" if isinstance(value, float) else f"{key}={value}"
                                      for key, value in result.items()))
        finally:
            broker.stop()
    log("")
    log("| agents | offered obs/s | committed obs/s | p50 ms | p99 ms | max ms | threads | peak RSS MB | start s "
        "| followed | producer cores | producer CPU µs/obs | broker cores | simulator cores | simulator CPU µs/obs "
        "| stream interval ms | load (1 min) |")
    log("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        log(f"| {r['agents']} | {r['offered']:,.0f} | {r['committed']:,.0f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
            f"{r['max_ms']:.0f} | {r['threads']} | {r['rss_mb']:.0f} | {r['start_s']:.1f} | {r['followed']} | "
            f"{r['producer_cores']:.2f} | {r['producer_us_per_obs']:.0f} | {r['broker_cores']:.2f} | "
            f"{r['simulator_cores']:.2f} | {r['simulator_us_per_obs']:.0f} | {r['interval_ms']} | {r['load']} |")
    log(f"load average at end (1/5/15 min): {loadavg()}")
    largest = max(results, key=lambda r: r["agents"])
    ok = (largest["committed"] >= 0.98 * largest["offered"] and largest["p99_ms"] <= 1000
          and largest["rss_mb"] <= 1024 and largest["threads"] <= 64 and largest["start_s"] <= 30
          and largest["followed"] == largest["agents"])
    log(f"targets at {largest['agents']} agents (committed = offered, p99 <= 1 s, RSS <= 1 GB, threads <= 64, "
        f"followed within 30 s): {'met' if ok else 'NOT met'}; duplicates {sum(r['duplicates'] for r in results)}")
    log(f"BENCH fleet agents={largest['agents']} offered_obs_per_s={largest['offered']:.0f} "
        f"committed_obs_per_s={largest['committed']:.0f} latency_p99_ms={largest['p99_ms']:.0f} "
        f"rss_mb={largest['rss_mb']:.0f} threads={largest['threads']} start_s={largest['start_s']:.1f} "
        f"producer_us_per_obs={largest['producer_us_per_obs']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
