"""Desktop benchmark: the app (offscreen) consuming a plant-sized stream from the local broker.

What runs, all on this machine:

- **A local broker** (`producer.broker.LocalBroker`, single-node KRaft) in a temp folder.
- **A generator process** (this file with `--generate`): clones of the three recorded NIST
  device models (Mazak01, Mazak03, GFAgie01 from `resources/replay/Devices.xml`) as
  `--devices` machines, and observations for them in the product's wire format
  (`producer.wire.encode`, keyed by device uuid, on the 6-partition observations topic) at
  `--rate` per second: 60 % samples (random walks on the device's SAMPLE items), 35 % events
  (execution, mode, program, part count... from the values an MTConnect agent sends), 5 %
  conditions (97 % NORMAL, 2 % WARNING, 1 % FAULT, so the alarm engine and its journal work).
  Rate control is a 10 ms token bucket; the achieved rate is printed. The observations are
  drawn and encoded once (a cycle of 100,000), so a record costs a byte join (its sequence
  number and timestamp) and `produce()`.
- **The app**: `MainWindow` offscreen at 1920x1080, in remote mode against that broker, set
  up as `python -m desktop` sets it up: the default alarm rules, the alarm journal on disk
  (in the temp folder, as `MACHINE_MONITOR_DATA_DIR`), the default 10-minute window of live
  points per series and the default budget of live points over all series. The app's Kafka
  feed runs in its own process, as in the app. The overview is shown and one machine's detail tab opened once data
  flows (the overview is drawn by the same timer in either case; the detail is the visible
  tab, so its plot redraws).
- **The probe**: a 20 ms `QTimer` on the GUI thread; each tick's lateness (actual interval -
  20 ms) is the event-loop latency. p50/p95/max over the measured period (after `--warmup`).
- **Memory**: VmRSS (the window's process and its feed process) every 5 s; peak over the run and growth from the end of the first minute
  of the measured period to its end. Beside it, what the app holds by design: the live points
  of every series (the 10-minute window fills during the run) and the alarms.
- **The machine**: CPU of the whole machine (`/proc/stat`), of the broker's JVM and of the
  generator over the measured period, as shares of all cores - what was left for the app.
- **Backlog**: at the end, the records written to the observations topic (its high
  watermarks) minus those the app has applied: how far behind the stream it is, without
  trusting any clock.
- **History**: before the load starts, 24 h of NIST Mazak01 (the recorded day, re-timed to
  the last 24 h, with Kafka timestamps spread the same way) go to a topic prefix of their
  own, and `load_history` (as the detail view's "Last 24 h" does) reads them; the time is
  `history_load_s`. It is measured on that prefix: a plant's full stream (here 50,000 obs/s)
  in the same partitions would make a 24 h read a read of billions of records.

Ends with `BENCH desktop obs_per_s=<n> loop_p95_ms=<x> loop_max_ms=<x> rss_mb=<n>
rss_growth_pct=<x> history_load_s=<x>`.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PREFIX = "bench."
HISTORY_PREFIX = "benchhistory."
NIST_MODELS = ("Mazak01", "Mazak03", "GFAgie01")


def nist_devices() -> list[dict]:
    from producer.mtconnect.documents import parse_devices
    from producer.paths import resource_path

    return parse_devices(resource_path("replay", "Devices.xml").read_bytes(), "http://bench-agent:5000").devices


def bench_devices(count: int) -> list[dict]:
    models = {d["device_name"]: d for d in nist_devices()}
    devices = []
    for index in range(count):
        base = models[NIST_MODELS[index % len(NIST_MODELS)]]
        name = f"{base['device_name'][:-2]}{index + 1:03d}"
        uuid = f"bench-{index + 1:03d}"
        device = dict(base, device_uuid=uuid, device_name=name, agent=f"http://bench-agent-{index // 20}:5000")
        device["data_items"] = [dict(item, id=f"{uuid}-{item['id']}") for item in base["data_items"]]
        devices.append(device)
    return devices


EVENT_VALUES = {
    "EXECUTION": ["ACTIVE"] * 6 + ["READY", "FEED_HOLD", "STOPPED", "INTERRUPTED"],
    "CONTROLLER_MODE": ["AUTOMATIC"] * 8 + ["MANUAL", "MANUAL_DATA_INPUT"],
    "AVAILABILITY": ["AVAILABLE"],
    "EMERGENCY_STOP": ["ARMED"],
}


# Observations the generator cycles through: drawn once, encoded once, so the generator's
# cost per record is a byte join and produce() - it must offer 50,000 records/s on a shared
# machine, or the benchmark measures the generator instead of the app.
CYCLE = 100_000
_SEQUENCE_MARK = 987654321987
_STAMP_MARK = "1999-12-31T23:59:59.999Z"


def observation_templates(devices: list[dict], count: int) -> list[tuple[int, bytes, bytes, bytes, bytes]]:
    """`count` observations over `devices` (round robin), each as (device slot, key, JSON
    before the sequence, between sequence and timestamp, after the timestamp): 60 % samples
    (random walks), 35 % events, 5 % conditions (97 % NORMAL, 2 % WARNING, 1 % FAULT)."""
    from producer import wire

    encode = wire.fast_encoder()
    rng = random.Random(7)
    by_category = []
    for device in devices:
        items = {c: [i for i in device["data_items"] if i["category"] == c] for c in ("SAMPLE", "EVENT", "CONDITION")}
        base = {"agent": device["agent"], "instance_id": 1, "device_uuid": device["device_uuid"],
                "device_name": device["device_name"]}
        by_category.append((device, items, base))
    walks: dict[str, float] = {}
    counts = [0] * len(devices)
    # Draw the category of each observation from a fixed 100-slot table (60/35/5).
    table = ["SAMPLE"] * 60 + ["EVENT"] * 35 + ["CONDITION"] * 5
    templates = []
    for index in range(count):
        slot = index % len(devices)
        device, items, base = by_category[slot]
        counts[slot] += 1
        category = table[rng.randrange(100)]
        if not items[category]:
            category = "SAMPLE"
        item = items[category][rng.randrange(len(items[category]))]
        observation = dict(base, sequence=_SEQUENCE_MARK, timestamp=_STAMP_MARK, component=item.get("component"),
                           component_id=item.get("component_id"), data_item_id=item["id"], name=item.get("name"),
                           category=category, type=item.get("type"), sub_type=item.get("sub_type"),
                           units=item.get("units"))
        if category == "SAMPLE":
            value = walks.get(item["id"], 100.0) + rng.uniform(-5.0, 5.0)
            walks[item["id"]] = value
            observation["value"] = round(value, 3)
        elif category == "EVENT":
            choices = EVENT_VALUES.get(item.get("type") or "")
            if choices:
                observation["value"] = choices[rng.randrange(len(choices))]
            elif item.get("type") in ("PART_COUNT", "LINE", "BLOCK_COUNT"):
                observation["value"] = str(counts[slot] // 50)
            else:
                observation["value"] = f"O{rng.randrange(1000, 1010)}"
        else:
            roll = rng.random()
            level = "FAULT" if roll < 0.01 else "WARNING" if roll < 0.03 else "NORMAL"
            code = str(rng.randrange(100, 110)) if level != "NORMAL" else None
            observation.update(level=level, native_code=code, native_severity=None, qualifier=None,
                               condition_id=code, value="bench condition" if code else None)
        head, rest = encode(observation).split(str(_SEQUENCE_MARK).encode(), 1)
        middle, tail = rest.split(_STAMP_MARK.encode(), 1)
        templates.append((slot, base["device_uuid"].encode(), head, middle, tail))
    return templates


def generate(bootstrap: str, devices_count: int, rate: float, seconds: float, report: str) -> int:
    """The generator process: device records, then observations at `rate` for `seconds`."""
    from confluent_kafka import Producer

    from producer import wire

    devices = bench_devices(devices_count)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                         "compression.type": "lz4", "queue.buffering.max.messages": 2_000_000,
                         "queue.buffering.max.kbytes": 1_048_576, "acks": 1})
    devices_topic = wire.topic_name(wire.DEVICES, PREFIX)
    observations_topic = wire.topic_name(wire.OBSERVATIONS, PREFIX)
    for device in devices:
        producer.produce(devices_topic, key=wire.device_key(device), value=wire.encode(device))
    producer.flush(30)
    templates = observation_templates(devices, CYCLE)
    sent = 0
    began = time.monotonic()
    deadline = began + seconds
    tick = 0.01
    next_tick = began
    index = 0
    sequences = [0] * len(devices)
    produce = producer.produce
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if now < next_tick:
            time.sleep(next_tick - now)
            continue
        due = int((next_tick - began + tick) * rate) - sent
        next_tick += tick
        stamp = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z").encode()
        for _ in range(max(0, due)):
            slot, key, head, middle, tail = templates[index % CYCLE]
            sequences[slot] += 1
            value = b"".join((head, str(sequences[slot]).encode(), middle, stamp, tail))
            try:
                produce(observations_topic, value, key)
            except BufferError:
                producer.poll(0.05)
                produce(observations_topic, value, key)
            sent += 1
            index += 1
        producer.poll(0)
    producer.flush(60)
    elapsed = time.monotonic() - began
    Path(report).write_text(json.dumps({"sent": sent, "seconds": elapsed, "rate": sent / elapsed,
                                        "cpu_seconds": time.process_time()}))
    return 0


def write_history(bootstrap: str) -> tuple[str, int]:
    """24 h of the recorded Mazak01 day, re-timed to end now, under the history prefix."""
    from confluent_kafka import Producer

    sys.path.insert(0, str(ROOT / "tests"))
    import recorded_nist as testing
    from producer import wire
    from producer.topics import ensure_topics

    from desktop.core.batch import parse_timestamp

    ensure_topics({"bootstrap.servers": bootstrap}, HISTORY_PREFIX)
    devices = testing.load_devices()
    mazak01 = testing.device_named(devices, "Mazak01")
    observations = [o for _, o in testing.shdr_observations(testing.nist_shdr("Mazak01-20171030-20171031.txt"), mazak01)]
    first = parse_timestamp(observations[0]["timestamp"])
    last = parse_timestamp(observations[-1]["timestamp"])
    now = time.time()
    shift = now - 60 - last
    scale = min(1.0, (24 * 3600 - 120) / max(1.0, last - first))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4"})
    topic = wire.topic_name(wire.OBSERVATIONS, HISTORY_PREFIX)
    producer.produce(wire.topic_name(wire.DEVICES, HISTORY_PREFIX), key=wire.device_key(mazak01), value=wire.encode(mazak01))
    for observation in observations:
        moment = last + shift - (last - parse_timestamp(observation["timestamp"])) * scale
        observation = dict(observation, timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
                           + f".{int(moment * 1000) % 1000:03d}Z")
        while True:
            try:
                producer.produce(topic, key=wire.observation_key(observation), value=wire.encode(observation),
                                 timestamp=int(moment * 1000))
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)
    return mazak01["device_uuid"], len(observations)


def series_footprint(model) -> tuple[int, int, int]:
    """(series, live points, bytes of their arrays) in the core's store, read from the GUI
    thread while the core thread may add a series (then read again)."""
    for _ in range(20):
        try:
            return model.series.footprint()
        except RuntimeError:  # the store's dict changed size while it was read
            time.sleep(0.01)
    return 0, 0, 0


def rss_mb(*others: int | None) -> float:
    """VmRSS of this process plus that of `others` (the app's feed process), in MB."""
    total = 0.0
    for pid in ("self", *others):
        if pid is None:
            continue
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
        except OSError:
            continue  # gone meanwhile
    return total


def thread_cpu(feed_pid: int | None = None) -> dict[str, float]:
    """CPU seconds (user + system) of each of this process's threads, by Python thread name
    (threads without one, e.g. librdkafka's, are summed as "native"), and of the app's feed
    process as "feed process"."""
    import threading

    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    cpu: dict[str, float] = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        name = names.get(int(task), "native")
        cpu[name] = cpu.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    if feed_pid is not None:
        cpu["feed process"] = process_cpu(feed_pid)
    return cpu


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (`/proc/stat`)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / tick, sum(fields[:8]) / tick


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of one process so far; 0 when it is gone or unknown."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def written_observations(bootstrap: str) -> int:
    """Records in the benchmark's observations topic: the sum of its high watermarks."""
    from confluent_kafka import Consumer, TopicPartition

    from producer import wire

    topic = wire.topic_name(wire.OBSERVATIONS, PREFIX)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, number), timeout=10)[1]
                   for number in partitions)
    finally:
        consumer.close()


def object_counts() -> dict[str, int]:
    import gc
    from collections import Counter

    return Counter(type(obj).__name__ for obj in gc.get_objects())


def print_growth(before, after, top: int = 12) -> None:
    """The allocation sites whose memory grew most between two tracemalloc snapshots."""
    print("Python memory growth over the measured period, by allocation site:")
    for stat in after.compare_to(before, "traceback")[:top]:
        # Frames run oldest to newest: show the allocating line first.
        frames = " <- ".join(f"{Path(frame.filename).name}:{frame.lineno}" for frame in reversed(stat.traceback))
        print(f"  {stat.size_diff / 2**20:+8.1f} MiB {stat.count_diff:+9,d} blocks  {frames}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50_000)
    parser.add_argument("--seconds", type=float, default=600, help="measured period (default 600 = 10 min)")
    parser.add_argument("--warmup", type=float, default=30)
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.generate:
        return generate(options.bootstrap, options.devices, options.rate, options.seconds, options.report)

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    with tempfile.TemporaryDirectory(prefix="mm-bench-desktop-") as temp:
        temp_path = Path(temp)
        os.environ["MACHINE_MONITOR_DATA_DIR"] = str(temp_path / "data")
        from producer.broker import LocalBroker
        from producer.topics import ensure_topics

        broker = LocalBroker(data_dir=temp_path / "kafka", progress=lambda line: None)
        print("starting the local broker…", flush=True)
        broker.start(timeout=240)
        generator = None
        try:
            process = getattr(broker, "_process", None)
            return run(options, broker.bootstrap, temp_path, ensure_topics,
                       process.pid if process is not None else None)
        finally:
            broker.stop()


def run(options, bootstrap: str, temp_path: Path, ensure_topics, broker_pid: int | None) -> int:
    from desktop.core.feed import FeedConfig
    from desktop.core.history import load_history

    print("writing 24 h of Mazak01 history…", flush=True)
    uuid, written = write_history(bootstrap)
    config = FeedConfig(bootstrap_servers=bootstrap, topic_prefix=HISTORY_PREFIX, kafka_properties={})
    began = time.monotonic()
    result = load_history(config, uuid, time.time() - 24 * 3600, timeout=120)
    history_load_s = time.monotonic() - began
    print(f"history: {result.observations:,} of {written:,} observations of Mazak01 over 24 h loaded in "
          f"{history_load_s:.2f} s ({result.records_read:,} records read, "
          f"{sum(s.times.size for s in result.samples.values()):,} sample points, {len(result.timeline)} state bands)",
          flush=True)

    ensure_topics({"bootstrap.servers": bootstrap}, PREFIX)
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from desktop.core.settings import Settings
    from desktop.ui.main_window import MainWindow
    from desktop.ui.theme import apply_style

    app = QApplication([sys.argv[0]])
    apply_style(app)
    from desktop.core.alarms import default_journal_path
    from desktop.ui.app import alarm_model

    settings = Settings(mode="remote", bootstrap_servers=bootstrap, topic_prefix=PREFIX)
    config_dir = temp_path / "config"
    config_dir.mkdir(exist_ok=True)
    # As the app runs for a user: default rules, the journal on disk, the default window.
    model = alarm_model(settings, config_dir)
    window = MainWindow(settings, config_dir=config_dir, model=model, use_tray=False,
                        data_dir=default_journal_path().parent)
    print(f"app: live window {model.window_seconds / 60:g} min per series, at most "
          f"{model.series.max_points or 0:,} live points in all, {len(model.alarm_engine.rules.rules)} "
          f"alarm rules, journal {default_journal_path()}", flush=True)
    window.resize(1920, 1080)
    # Experiments: BENCH_SWITCH_INTERVAL (seconds) overrides the window's interpreter switch
    # interval, BENCH_NO_GUI_PRIORITY=1 makes the feed and core threads never wait for the GUI.
    if os.environ.get("BENCH_SWITCH_INTERVAL"):
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
    if os.environ.get("BENCH_NO_GUI_PRIORITY"):
        window.gui_priority.max_wait = 0.0
    print(f"interpreter switch interval {sys.getswitchinterval() * 1000:g} ms, feed and core threads "
          f"{'never wait' if not window.gui_priority.max_wait else f'wait up to {window.gui_priority.max_wait * 1000:g} ms'}"
          " for the GUI thread", flush=True)
    window.show()
    window.start()

    # BENCH_TRACEMALLOC=1: where the app's Python memory grew over the measured period (slows
    # the app several times: a diagnosis, not a measurement).
    tracing = bool(os.environ.get("BENCH_TRACEMALLOC"))
    # BENCH_OBJECTS=1: which kinds of Python objects grew in number (cheap: two passes over the heap).
    counting = bool(os.environ.get("BENCH_OBJECTS"))
    if tracing:
        import tracemalloc

        tracemalloc.start(3)
    report = temp_path / "generator.json"
    total = options.warmup + options.seconds
    generator = subprocess.Popen([sys.executable, __file__, "--generate", "--bootstrap", bootstrap,
                                  "--devices", str(options.devices), "--rate", str(options.rate),
                                  "--seconds", str(total), "--report", str(report)])
    latencies: list[float] = []
    rss: list[tuple[float, float]] = []
    loads: list[float] = []
    marks = {"start": time.monotonic(), "measure": None, "end": None, "records_at_measure": 0}
    state = {"last": time.monotonic(), "detail": False}

    def feed_pid() -> int | None:
        worker = getattr(window, "worker", None)
        return getattr(worker.feed, "pid", None) if worker is not None else None

    def on_probe() -> None:
        now = time.monotonic()
        late = (now - state["last"]) * 1000 - 20
        state["last"] = now
        if marks["measure"] is not None:
            latencies.append(max(0.0, late))

    def on_second() -> None:
        now = time.monotonic()
        if not state["detail"] and window.state.machines:
            from desktop.ui.views import first_spindle_machine

            uuid_ = first_spindle_machine(window)
            if uuid_ is not None:
                window.open_detail(uuid_)
                state["detail"] = True
        if marks["measure"] is None and now - marks["start"] >= options.warmup:
            marks["measure"] = now
            marks["records_at_measure"] = window.state.observation_records
            marks["feed_pid"] = feed_pid()
            marks["cpu_at_measure"] = time.process_time() + process_cpu(marks["feed_pid"])
            marks["threads_at_measure"] = thread_cpu(marks["feed_pid"])
            marks["machine_at_measure"] = machine_cpu()
            marks["broker_at_measure"] = process_cpu(broker_pid)
            marks["generator_at_measure"] = process_cpu(generator.pid)
            marks["gave_way_at_measure"] = (window.gui_priority.waits, window.gui_priority.waited)
            if tracing:
                marks["trace_at_measure"] = tracemalloc.take_snapshot()
            if counting:
                marks["objects_at_measure"] = object_counts()
            print(f"measuring for {options.seconds:g} s…", flush=True)
        if marks["measure"] is not None:
            if int(now - marks["measure"]) % 5 == 0:
                rss.append((now - marks["measure"], rss_mb(feed_pid())))
                loads.append(os.getloadavg()[0])
            if int(now - marks["measure"]) in (60, 61) and "points_at_minute" not in marks:
                marks["points_at_minute"] = series_footprint(model)
            if int(now - marks["measure"]) % 60 == 0 and now - marks["measure"] > 1:
                print(f"  {now - marks['measure']:.0f} s: {window.state.observation_rate:,.0f} obs/s shown, "
                      f"RSS {rss_mb(feed_pid()):.0f} MB, load {os.getloadavg()[0]:.2f}, "
                      f"p95 so far {percentile(latencies, 0.95):.1f} ms", flush=True)
            if now - marks["measure"] >= options.seconds:
                marks["end"] = now
                marks["records_at_end"] = window.state.observation_records
                if feed_pid() != marks["feed_pid"]:
                    print("the feed process was restarted during the run: its CPU is not all counted")
                marks["cpu_at_end"] = time.process_time() + process_cpu(marks["feed_pid"])
                marks["threads_at_end"] = thread_cpu(marks["feed_pid"])
                marks["machine_at_end"] = machine_cpu()
                marks["broker_at_end"] = process_cpu(broker_pid)
                marks["generator_at_end"] = process_cpu(generator.pid)
                # On the GUI thread, so no update lands between the two reads that matter.
                marks["written_at_end"] = written_observations(bootstrap)
                marks["applied_at_end"] = window.state.observation_records
                marks["gave_way_at_end"] = (window.gui_priority.waits, window.gui_priority.waited)
                marks["behind_at_end"] = window.state.behind_seconds
                marks["alarms_at_end"] = len(window.alarm_pages.alarms)
                marks["points_at_end"] = series_footprint(model)
                if tracing:
                    print_growth(marks["trace_at_measure"], tracemalloc.take_snapshot())
                if counting:
                    before, after = marks["objects_at_measure"], object_counts()
                    growth = sorted(((after[k] - before.get(k, 0), k) for k in after), reverse=True)[:10]
                    print("Python objects that grew in number over the measured period: "
                          + ", ".join(f"{kind} {count:+,}" for count, kind in growth), flush=True)
                window.shutdown(then=app.quit)

    probe = QTimer()
    probe.setInterval(20)
    probe.timeout.connect(on_probe)
    probe.start()
    clock = QTimer()
    clock.setInterval(1000)
    clock.timeout.connect(on_second)
    clock.start()
    app.exec()
    generator.wait(120)
    generated = json.loads(report.read_text()) if report.exists() else {"rate": 0, "sent": 0}
    measured = marks["end"] - marks["measure"]
    consumed = (marks["records_at_end"] - marks["records_at_measure"]) / measured
    cpu = (marks["cpu_at_end"] - marks["cpu_at_measure"]) / measured * 100
    after_minute = next((value for at, value in rss if at >= 60), rss[0][1] if rss else 0.0)
    peak = max((value for _, value in rss), default=0.0)
    growth = (rss[-1][1] - after_minute) / after_minute * 100 if rss and after_minute else 0.0
    generator_us = generated.get("cpu_seconds", 0.0) / max(1, generated["sent"]) * 1e6
    print(f"generator: {generated['sent']:,} observations at {generated['rate']:,.0f} obs/s over {options.devices} devices, "
          f"{generator_us:.1f} CPU µs per observation")
    # CPU per observation (all the app's threads) is comparable between runs on a loaded machine.
    app_us = cpu / 100 / max(1.0, consumed) * 1e6
    print(f"app: consumed {consumed:,.0f} obs/s over {measured:.0f} s, app CPU {cpu:.0f} % of one core "
          f"= {app_us:.1f} CPU µs per observation, "
          f"load average (1 min) mean {sum(loads) / max(1, len(loads)):.2f} max {max(loads, default=0):.2f}")
    # Which thread spent it: the GUI thread's share is what competes with the probe for the
    # interpreter.
    before, after = marks["threads_at_measure"], marks["threads_at_end"]
    records = max(1, marks["records_at_end"] - marks["records_at_measure"])
    split = sorted(((after[name] - before.get(name, 0.0), name) for name in after), reverse=True)
    print("app CPU by thread (µs per observation): " + ", ".join(
        f"{name} {seconds / records * 1e6:.1f}" for seconds, name in split if seconds > 0))
    (busy_before, total_before), (busy_after, total_after) = marks["machine_at_measure"], marks["machine_at_end"]
    cores = os.cpu_count() or 1
    share = lambda seconds: seconds / max(1e-9, total_after - total_before) * 100  # noqa: E731 - % of all cores
    broker_cpu = marks["broker_at_end"] - marks["broker_at_measure"]
    generator_cpu = marks["generator_at_end"] - marks["generator_at_measure"]
    app_cpu = marks["cpu_at_end"] - marks["cpu_at_measure"]
    busy = busy_after - busy_before
    print(f"machine ({cores} cores): {share(busy):.0f} % busy over the period: broker {share(broker_cpu):.0f} %, "
          f"generator {share(generator_cpu):.0f} %, app {share(app_cpu):.0f} %, "
          f"everything else {share(max(0.0, busy - broker_cpu - generator_cpu - app_cpu)):.0f} %; idle "
          f"{100 - share(busy):.0f} %")
    backlog = marks["written_at_end"] - marks["applied_at_end"]
    print(f"backlog at the end: {backlog:,} records written but not yet applied "
          f"({backlog / max(1.0, consumed):.0f} s at the rate consumed)")
    (waits_before, waited_before), (waits_after, waited_after) = marks["gave_way_at_measure"], marks["gave_way_at_end"]
    print(f"feed and core threads gave way to the GUI thread {waits_after - waits_before:,} times, "
          f"{waited_after - waited_before:.1f} s in all ({(waited_after - waited_before) / measured * 100:.0f} % of the period)")
    print(f"at the end: {marks['behind_at_end']:.0f} s behind the stream (the status bar's figure), "
          f"{marks['alarms_at_end']:,} alarms held (active or waiting for acknowledgement)")
    print(f"event loop: {len(latencies):,} probe ticks, lateness p50 {percentile(latencies, 0.5):.1f} ms, "
          f"p95 {percentile(latencies, 0.95):.1f} ms, max {max(latencies, default=0):.1f} ms")
    print(f"memory: peak RSS {peak:.0f} MB, after the first minute {after_minute:.0f} MB, at the end "
          f"{rss[-1][1] if rss else 0:.0f} MB")
    for label, key in (("after the first minute", "points_at_minute"), ("at the end", "points_at_end")):
        series, points, allocated = marks.get(key, (0, 0, 0))
        print(f"live points {label}: {points:,} in {series:,} series, {allocated / 1e6:.0f} MB of arrays")
    print(f"BENCH desktop obs_per_s={consumed:.0f} loop_p95_ms={percentile(latencies, 0.95):.1f} "
          f"loop_max_ms={max(latencies, default=0):.1f} rss_mb={peak:.0f} rss_growth_pct={growth:.1f} "
          f"history_load_s={history_load_s:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
