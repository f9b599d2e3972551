"""Producer throughput end to end: recorded NIST pages → producer service → local Kafka broker.

What runs (all on this machine, sharing its cores):

* `bench/page_agent.py`, a real HTTP MTConnect agent in this process that serves the
  recorded NIST `/sample` pages (`qdr_input001..010`, cppagent 1.3, GFAgie01) as fast as
  the socket takes them. The ten pages are repeated (BENCH_OBSERVATIONS, default ≥ 400,000
  observations: 5 loops, 463,740) with their sequences renumbered so they keep chaining;
  every page is pre-rendered before anything is timed.
* The parse-only ceiling: `parse_streams` over the same pre-rendered pages (all loops),
  with the NIST device model from `parse_devices(Devices.xml)`, as the producer parses them;
  the best of BENCH_CEILING_PASSES (3) passes. It runs before the broker starts, so none of
  the benchmark's own processes compete with it.
* A local single-node KRaft broker (`LocalBroker`) in a temporary directory. The product's
  topics are created with the producer's own `ensure_topics`, the broker's transaction
  coordinator is warmed with one empty transaction (a fresh broker creates its transaction
  state topic on first use: a one-time broker cost, not the producer's), and the checkpoint
  topic is seeded with `{agent, instance_id: 1475083573, next_sequence: 1}`, so the producer
  resumes at sequence 1 and reads every page through the multipart `sample` stream.
* The producer service as its own process, `python -m producer run --agent URL --bootstrap B
  --topic-prefix P` (transactional, idempotent, `acks=all` by design: each streamed part is
  one transaction together with its checkpoint).
* This process follows the checkpoint topic with a `read_committed` consumer until the
  committed `next_sequence` reaches the end, noting when each checkpoint became visible,
  and samples the producer's peak RSS (VmHWM) and CPU time (utime+stime in /proc/<pid>/stat).

Reported: the steady-state rate (observations committed between the first and the last
committed checkpoint / the time between them; `obs_per_s` in the BENCH line), the same
without the first five pages as a cross-check, the rate from process spawn (process start,
topic check, checkpoint read, `init_transactions`, probe), producer CPU utilisation and
observations per producer CPU-second, how busy the whole machine was in the steady state
(producer, broker, this process, everything else: other work on the machine shows there),
the producer's own log timeline, the parse-only ceiling, the ratio and the peak RSS.
Afterwards the observations topic is read back (read_committed) to check that every
sequence arrived exactly once (BENCH_VERIFY=0 skips this). Ends with one line
`BENCH producer obs_per_s=<n> ceiling_obs_per_s=<n> ratio=<x> rss_mb=<n>`.
"""
from __future__ import annotations

import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
# The repository root must come first: this file is itself called producer.py.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))
sys.path.append(str(HERE))

import confluent_kafka  # noqa: E402
import lxml.etree  # noqa: E402
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition  # noqa: E402

from page_agent import PageAgent  # noqa: E402
from producer import wire  # noqa: E402
from producer.broker import LocalBroker, kafka_version  # noqa: E402
from producer.mtconnect.documents import parse_devices, parse_streams  # noqa: E402
from producer.service import ensure_topics, read_to_end  # noqa: E402

MIN_OBSERVATIONS = int(os.environ.get("BENCH_OBSERVATIONS", "400000"))
TIMEOUT_S = float(os.environ.get("BENCH_TIMEOUT", "600"))
VERIFY = os.environ.get("BENCH_VERIFY", "1") != "0"
CEILING_PASSES = max(1, int(os.environ.get("BENCH_CEILING_PASSES", "3")))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def log(line: str = "") -> None:
    print(line, flush=True)


# ----------------------------------------------------------------------------- machine


def machine_lines() -> list[str]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"machine: {model}, {os.cpu_count()} cores ({usable} usable), {memory} RAM, "
        f"{platform.system()} {platform.release()}",
        f"software: Python {platform.python_version()}, lxml {'.'.join(map(str, lxml.etree.LXML_VERSION))}, "
        f"confluent-kafka {confluent_kafka.__version__} / librdkafka {confluent_kafka.libversion()[0]}, "
        f"Apache Kafka {kafka_version()}",
        f"load average at start (1/5/15 min): {load}",
    ]


# ----------------------------------------------------------------------------- /proc sampling


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine spent busy so far (the `cpu` line of /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


# ----------------------------------------------------------------------------- ceiling


def parse_ceiling(agent: PageAgent, data_items, passes: int) -> tuple[float, int, list[tuple[float, float]]]:
    """Parse-only rate over every pre-rendered page, as the producer parses a streamed part.

    `passes` passes over all pages; the ceiling is the fastest pass (another process taking
    the core for a moment only makes a pass slower, so the best pass is the honest ceiling).
    Returns (ceiling, observations per pass, [(wall s, CPU s) per pass]).
    """
    source = f"{agent.url}/sample"
    parse_streams(agent.pages[0].document, agent.url, data_items, source=source)  # warm-up, not timed
    runs = []
    count = 0
    for _ in range(passes):
        count = 0
        cpu = time.process_time()
        started = time.perf_counter()
        for page in agent.pages:
            count += len(parse_streams(page.document, agent.url, data_items, source=source).observations)
        runs.append((time.perf_counter() - started, time.process_time() - cpu))
    return count / min(wall for wall, _ in runs), count, runs


# ----------------------------------------------------------------------------- the run


@dataclass
class Mark:
    """One committed checkpoint as this process saw it."""
    wall: float            # perf_counter when the consumer received it
    next_sequence: int
    producer_cpu: float | None
    broker_cpu: float | None
    own_cpu: float
    machine_busy: float


def seed_and_consumer(bootstrap: str, prefix: str, agent: PageAgent) -> Consumer:
    """Create the topics, seed the checkpoint at 1 and return a consumer that has read the seed."""
    ensure_topics({"bootstrap.servers": bootstrap}, prefix)
    topic = wire.topic_name(wire.CHECKPOINTS, prefix)
    # A fresh broker creates its transaction state topic on the first init_transactions
    # (~2 s here): a one-time broker cost, not the producer's start, so it is paid here.
    quiet = logging.getLogger("bench.kafka")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False  # "Coordinator load in progress: retrying" is expected here
    warm = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"bench-warm-{uuid.uuid4().hex}",
                     "logger": quiet})
    warm.init_transactions(60)
    warm.begin_transaction()
    warm.commit_transaction(60)
    del warm
    seed = Producer({"bootstrap.servers": bootstrap})
    seed.produce(topic, key=wire.agent_key(agent.url),
                 value=wire.encode(wire.checkpoint_value(agent.url, agent.instance_id, 1)))
    if seed.flush(30) != 0:
        raise RuntimeError("could not seed the checkpoint topic")
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"bench-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "fetch.wait.max.ms": 10,  # checkpoints are seen within ~10 ms of their commit
    })
    metadata = consumer.list_topics(topic, timeout=30)
    consumer.assign([TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the consumer is fetching before the producer starts
        message = consumer.poll(0.1)
        if message is not None and message.error() is None and wire.decode(message.value())["next_sequence"] == 1:
            return consumer
    raise RuntimeError("the seeded checkpoint did not come back")


def verify_observations(bootstrap: str, prefix: str, expected: int) -> str:
    """Read the observations topic back (read_committed): every sequence exactly once?"""
    sequences = bytearray(expected + 1)
    total = duplicates = outside = 0
    for message in read_to_end({"bootstrap.servers": bootstrap}, wire.topic_name(wire.OBSERVATIONS, prefix), 300):
        sequence = wire.decode(message.value())["sequence"]
        total += 1
        if 1 <= sequence <= expected:
            duplicates += sequences[sequence]
            sequences[sequence] = 1
        else:
            outside += 1
    missing = expected - sum(sequences)
    ok = total == expected and missing == 0 and duplicates == 0 and outside == 0
    return (f"{'OK' if ok else 'MISMATCH'}: {total:,} committed observation messages, "
            f"{missing:,} sequences missing, {duplicates:,} duplicates, {outside:,} outside 1..{expected:,}")


def producer_timeline(stderr_path: Path, spawned_epoch: float, limit: int = 12) -> list[str]:
    """The producer's own log lines (read before the temporary directory goes), timed from spawn."""
    lines = []
    try:
        text = stderr_path.read_text(errors="replace")
    except OSError:
        return lines
    for line in text.splitlines():
        try:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        message = line[24:]
        if "event=progress" in message:
            continue
        lines.append(f"  producer log +{stamp - spawned_epoch:6.2f} s  {message[:160]}")
        if len(lines) >= limit:
            break
    return (["producer log (time after spawn, log clock has ms resolution):"] + lines) if lines else []


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _terminate(signum, frame) -> None:
    raise SystemExit(f"stopped by {signal.Signals(signum).name}")  # runs the clean-up in main()


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    for line in machine_lines():
        log(line)

    started_load = time.perf_counter()
    agent = PageAgent(min_observations=MIN_OBSERVATIONS)
    log(f"page agent: {len(agent.pages)} recorded NIST pages ({agent.loops} loops of qdr_input001..010), "
        f"{agent.observations:,} observations, {sum(len(p.document) for p in agent.pages) / 1e6:.0f} MB of XML, "
        f"pre-rendered in {time.perf_counter() - started_load:.1f} s")
    agent.start()
    broker: LocalBroker | None = None
    process: subprocess.Popen | None = None
    consumer: Consumer | None = None
    tmp = Path(tempfile.mkdtemp(prefix="bench-producer-"))
    broker_lines: list[str] = []
    try:
        devices = parse_devices(agent.probe_document, agent.url)
        ceiling, parsed, runs = parse_ceiling(agent, devices.data_items, CEILING_PASSES)
        if parsed != agent.observations:
            raise RuntimeError(f"parse-only pass found {parsed} observations, expected {agent.observations}")
        best_wall, best_cpu = min(runs)
        log(f"parse-only ceiling: {parsed:,} observations in {best_wall:.2f} s = {ceiling:,.0f} observations/s, "
            f"the best of {len(runs)} passes over all pages (parse_streams with the NIST device model, one thread; "
            f"passes: {', '.join(f'{parsed / wall:,.0f}/s' for wall, _ in runs)}; the best pass had the core "
            f"{best_cpu / best_wall:.0%} of its wall time)")

        broker = LocalBroker(data_dir=tmp / "kafka", progress=broker_lines.append)
        broker_started = time.perf_counter()
        bootstrap = broker.start()
        broker_pid = int((broker.status() or {}).get("pid") or 0) or None
        log(f"broker: {bootstrap} (pid {broker_pid}), ready in {time.perf_counter() - broker_started:.1f} s")

        prefix = f"bench{uuid.uuid4().hex[:6]}."
        seeding = time.perf_counter()
        consumer = seed_and_consumer(bootstrap, prefix, agent)
        log(f"topics created with prefix {prefix!r}, transaction coordinator warmed, checkpoint seeded at "
            f"next_sequence=1 (instance {agent.instance_id}) in {time.perf_counter() - seeding:.1f} s; "
            f"target next_sequence={agent.end:,}")

        env = {k: v for k, v in os.environ.items() if not k.startswith("MACHINE_MONITOR_")}
        stderr_path = tmp / "producer.stderr"
        with open(stderr_path, "wb") as stderr_file:
            spawned = time.perf_counter()
            spawned_epoch = time.time()
            process = subprocess.Popen(
                [sys.executable, "-m", "producer", "run", "--agent", agent.url, "--bootstrap", bootstrap,
                 "--topic-prefix", prefix],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr_file)
        marks: list[Mark] = []
        reached = 1
        rss = 0.0
        next_sample = 0.0
        deadline = time.monotonic() + TIMEOUT_S
        while reached < agent.end:
            now = time.monotonic()
            if now >= next_sample:
                rss = max(rss, peak_rss_mb(process.pid) or 0.0)
                next_sample = now + 0.2
                if process.poll() is not None:
                    raise RuntimeError(f"the producer exited early (code {process.returncode}):\n"
                                       + stderr_path.read_text(errors="replace")[-3000:])
                if now > deadline:
                    raise RuntimeError(f"timed out after {TIMEOUT_S:.0f} s at next_sequence {reached:,} "
                                       f"of {agent.end:,}")
            message = consumer.poll(0.05)
            if message is None:
                continue
            received = time.perf_counter()
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"checkpoint consumer: {message.error().str()}")
            value = wire.decode(message.value())
            if value is None or value.get("agent") != agent.url or value["next_sequence"] <= reached:
                continue
            reached = value["next_sequence"]
            marks.append(Mark(received, reached, cpu_seconds(process.pid),
                              cpu_seconds(broker_pid) if broker_pid else None, own_cpu_seconds(),
                              machine_busy_seconds()))
        rss = max(rss, peak_rss_mb(process.pid) or 0.0)
        stop_process(process)
        timeline = producer_timeline(stderr_path, spawned_epoch)
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        verification = verify_observations(bootstrap, prefix, agent.end - 1) if VERIFY else "skipped"
    except BaseException:
        if broker_lines:
            log("broker progress: " + " | ".join(broker_lines[-10:]))
        raise
    finally:
        if process is not None:
            stop_process(process)
        if consumer is not None:
            consumer.close()
        agent.stop()
        if broker is not None:
            broker.stop()
        if os.environ.get("BENCH_KEEP"):
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if len(marks) < 2:
        raise RuntimeError(f"only {len(marks)} committed checkpoint(s): no steady state to measure")
    first, last = marks[0], marks[-1]
    steady_obs = last.next_sequence - first.next_sequence
    steady_s = last.wall - first.wall
    rate = steady_obs / steady_s if steady_s > 0 else float("nan")
    total_obs = last.next_sequence - 1
    total_s = last.wall - spawned
    log(f"producer: {len(marks)} committed checkpoints (one per streamed page); first after "
        f"{first.wall - spawned:.2f} s (process start, topic check, checkpoint read, init_transactions, "
        f"probe, first page of {first.next_sequence - 1:,} observations)")
    log(f"steady state: {steady_obs:,} observations between the first and the last committed checkpoint "
        f"in {steady_s:.2f} s = {rate:,.0f} observations/s")
    skip = min(5, len(marks) - 2)
    if skip > 0:
        later = marks[skip]
        log(f"cross-check, without the first {skip} committed pages (the producer may read ahead before its "
            f"first commit): {(last.next_sequence - later.next_sequence) / (last.wall - later.wall):,.0f} "
            f"observations/s")
    log(f"including start: {total_obs:,} observations in {total_s:.2f} s from process spawn = "
        f"{total_obs / total_s:,.0f} observations/s")
    if first.producer_cpu is not None and last.producer_cpu is not None:
        cpu = last.producer_cpu - first.producer_cpu
        log(f"producer CPU (steady state): {cpu:.2f} CPU s in {steady_s:.2f} s = {cpu / steady_s:.2f} cores busy; "
            f"{steady_obs / cpu:,.0f} observations per producer CPU second "
            f"({cpu / steady_obs * 1e6:.1f} µs CPU per observation)")
        log(f"producer CPU (from spawn): {last.producer_cpu:.2f} CPU s in {total_s:.2f} s")
    if first.broker_cpu is not None and last.broker_cpu is not None and first.producer_cpu is not None:
        broker_cpu = last.broker_cpu - first.broker_cpu
        own_cpu = last.own_cpu - first.own_cpu
        busy = last.machine_busy - first.machine_busy
        others = busy - cpu - broker_cpu - own_cpu
        log(f"machine CPU in the steady state: {busy:.2f} CPU s busy of {steady_s * (os.cpu_count() or 1):.2f} "
            f"available; producer {cpu:.2f}, broker {broker_cpu:.2f}, this process (page agent, checkpoint "
            f"consumer) {own_cpu:.2f}, other processes {max(0.0, others):.2f}"
            + ("  <- other work on this machine competed with the run" if others > 0.1 * steady_s else ""))
    for line in timeline:
        log(line)
    log(f"page agent: {agent.streams_opened} stream(s) opened, {agent.pages_sent} pages sent")
    log(f"producer peak RSS (VmHWM): {rss:.0f} MB")
    log(f"read back: {verification}")
    log(f"load average at end (1/5/15 min): {load}")
    ratio = rate / ceiling
    per_cpu = steady_obs / cpu if first.producer_cpu is not None and last.producer_cpu is not None and cpu else 0
    log(f"targets: end to end ≥ 0.5 × ceiling ({'met' if ratio >= 0.5 else 'NOT met'}: {ratio:.2f}); "
        f"≥ 50,000 observations/s ({'met' if rate >= 50_000 else 'NOT met'}: {rate:,.0f}/s wall, "
        f"{per_cpu:,.0f} per producer CPU second); RSS < 300 MB ({'met' if rss < 300 else 'NOT met'})")
    log(f"BENCH producer obs_per_s={rate:.0f} ceiling_obs_per_s={ceiling:.0f} ratio={ratio:.2f} rss_mb={rss:.0f}")
    return 0 if verification.startswith(("OK", "skipped")) else 1


if __name__ == "__main__":
    sys.exit(main())
