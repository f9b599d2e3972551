"""Producer throughput: replay agent → producer service → local Kafka broker, end to end.

The replay agent releases the recorded NIST days at full speed into its buffer; the
producer service (a separate process, transactional, acks=all) is pointed at it with a
checkpoint at sequence 1, so it reads the whole buffer through the multipart stream and
commits it to Kafka. The ceiling is the parse-only rate of the recorded NIST sample pages
in the same run on the same machine. Ends with one `BENCH producer ...` line.
"""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from producer import wire  # noqa: E402
from producer.broker import LocalBroker  # noqa: E402
from producer.mtconnect.documents import parse_streams  # noqa: E402
from producer.replay import ReplayAgent  # noqa: E402

OBSERVATIONS = int(os.environ.get("BENCH_OBSERVATIONS", "200000"))
PAGES = ROOT.parent / "shared" / "data" / "mtconnect" / "nist-smstestbed" / "sample-pages"


def parse_ceiling() -> float:
    pages = [gzip.decompress(p.read_bytes()) for p in sorted(PAGES.glob("qdr_input*.xml.gz"))]
    started = time.perf_counter()
    count = 0
    for _ in range(2):
        for page in pages:
            count += len(parse_streams(page, "http://bench").observations)
    return count / (time.perf_counter() - started)


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> int:
    ceiling = parse_ceiling()
    print(f"parse-only ceiling: {ceiling:,.0f} observations/s over the 10 NIST sample pages", flush=True)
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker(data_dir=Path(tmp) / "kafka", progress=lambda line: None)
        bootstrap = broker.start()
        try:
            agent = ReplayAgent(speed="max", limit=OBSERVATIONS, buffer_size=OBSERVATIONS * 2).start()
            try:
                while agent.playing:
                    time.sleep(0.1)
                target = agent.next_sequence
                print(f"replay agent buffered {target - 1:,} observations", flush=True)
                seed = Producer({"bootstrap.servers": bootstrap})
                seed.produce(prefix + wire.CHECKPOINTS, key=wire.agent_key(agent.url),
                             value=wire.encode(wire.checkpoint_value(agent.url, agent.instance_id, 1)))
                assert seed.flush(30) == 0
                del seed
                consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                                     "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
                consumer.subscribe([prefix + wire.CHECKPOINTS])
                started = time.perf_counter()
                service = subprocess.Popen(
                    [sys.executable, "-m", "producer", "run", "--agent", agent.url, "--bootstrap", bootstrap,
                     "--topic-prefix", prefix], cwd=ROOT, stderr=subprocess.PIPE, text=True)
                rss = 0.0
                reached = 1
                try:
                    deadline = time.monotonic() + 600
                    while reached < target and time.monotonic() < deadline:
                        rss = max(rss, peak_rss_mb(service.pid))
                        for message in consumer.consume(num_messages=1000, timeout=0.2):
                            if message.error() is None:
                                reached = max(reached, wire.decode(message.value())["next_sequence"])
                        if service.poll() is not None:
                            raise SystemExit(f"producer exited early: {service.stderr.read()[-2000:]}")
                    elapsed = time.perf_counter() - started
                    rss = max(rss, peak_rss_mb(service.pid))
                finally:
                    service.terminate()
                    service.communicate(timeout=60)
                    consumer.close()
            finally:
                agent.stop()
        finally:
            broker.stop()
    moved = reached - 1
    rate = moved / elapsed
    print(f"end to end: {moved:,} observations in {elapsed:.1f} s = {rate:,.0f} observations/s "
          f"(process start, topic check and producer init included); producer peak RSS {rss:.0f} MB", flush=True)
    print(f"BENCH producer obs_per_s={rate:.0f} ceiling_obs_per_s={ceiling:.0f} ratio={rate / ceiling:.2f} rss_mb={rss:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
