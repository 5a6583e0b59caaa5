"""Benchmark: how long a `prodloop run` replica killed with SIGKILL takes to resume after its restart.

A replica consumes the demo shop's traffic (4 partitions, small batches so that it is still
consuming), is killed with SIGKILL once it has committed, and is started again at once, as
Kubernetes restarts a crashed container in the same pod.  Printed per run, in seconds from
the restart (the new process's spawn): when its consumer joined the group, when it got its
first partition and when it committed first; and the wait in the group (join to assignment).

Without static membership the group still holds the dead member until its session times out
(kafka.session_timeout_ms, 10 s), and the restarted replica waits for that.  With
``--mode static`` every replica keeps one kafka.group_instance_id across restarts (KIP-345)
and the broker hands it its partitions back at once.

Run: `python bench/resume_after_kill.py --runs 5 --mode dynamic --mode static` (starts its own
Kafka broker from scripts/kafka_broker.py, or uses PRODLOOP_KAFKA_BOOTSTRAP).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from collector.demo.shop import SAMPLE_RATE_ATTRIBUTE, demo_dir, generate  # noqa: E402
from tests.support.resume import Resume, kill_and_restart  # noqa: E402
from tests.support.streaming import RunProcess, create_topics, produce, produce_deploys, start_broker  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="kill-and-restart cycles per mode")
    ap.add_argument(
        "--mode",
        action="append",
        choices=["dynamic", "static"],
        help="dynamic: no group_instance_id; static: one per replica (repeatable; default both)",
    )
    ap.add_argument("--session-timeout-ms", type=int, default=None, help="kafka.session_timeout_ms")
    args = ap.parse_args()
    modes = args.mode or ["dynamic", "static"]

    with tempfile.TemporaryDirectory(prefix="prodloop-resume-") as tmp_name:
        tmp = Path(tmp_name)
        bootstrap, broker = start_broker(tmp)
        try:
            sfx = uuid.uuid4().hex[:8]
            traces, deploys = f"bench-spans-{sfx}", f"bench-deploys-{sfx}"
            topics = {traces: 4, deploys: 1, f"bench-inc-{sfx}": 1, f"bench-dlq-{sfx}": 1}
            create_topics(bootstrap, topics)
            traffic = generate(seed=9, minutes=30)
            produce_deploys(bootstrap, deploys, traffic.deploys)
            produce(bootstrap, traces, traffic.requests, partitions=4, compression="lz4")
            d = demo_dir()
            results: dict[str, list[Resume]] = {}
            for mode in modes:
                for i in range(args.runs):
                    group = f"bench-g-{uuid.uuid4().hex[:8]}"
                    env = {
                        "PRODLOOP_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
                        "PRODLOOP_KAFKA__TRACES_TOPIC": traces,
                        "PRODLOOP_KAFKA__DEPLOYS_TOPIC": deploys,
                        "PRODLOOP_KAFKA__INCIDENTS_TOPIC": f"bench-inc-{sfx}",
                        "PRODLOOP_KAFKA__DEAD_LETTER_TOPIC": f"bench-dlq-{sfx}",
                        "PRODLOOP_KAFKA__GROUP_ID": group,
                        "PRODLOOP_STORE__DSN": f"chdb://{tmp / group}",
                        "PRODLOOP_ATTRIBUTION__CODEOWNERS": str(d / "CODEOWNERS"),
                        "PRODLOOP_ATTRIBUTION__MODULES": str(d / "modules.yaml"),
                        "PRODLOOP_ATTRIBUTION__SAMPLE_RATE_ATTRIBUTE": SAMPLE_RATE_ATTRIBUTE,
                        "PRODLOOP_STREAM__BATCH_RECORDS": "3",
                        "PRODLOOP_STREAM__LINGER_MS": "100",
                    }
                    if mode == "static":
                        env["PRODLOOP_KAFKA__GROUP_INSTANCE_ID"] = "replica-0"
                    if args.session_timeout_ms is not None:
                        env["PRODLOOP_KAFKA__SESSION_TIMEOUT_MS"] = str(args.session_timeout_ms)
                    procs: list[RunProcess] = []

                    def start(
                        name: str, env: dict[str, str] = env, procs: list[RunProcess] = procs
                    ) -> RunProcess:
                        proc = RunProcess(env, REPO, tmp / f"{name}.log")
                        procs.append(proc)
                        return proc

                    try:
                        r = kill_and_restart(start, f"{mode}{i}")
                    finally:
                        for p in procs:
                            p.close()
                    results.setdefault(mode, []).append(r)
                    print(
                        f"{mode:7s} run {i}: joined {r.subscribed_s:5.2f}s  assigned {r.assigned_s:5.2f}s  "
                        f"first commit {r.committed_s:5.2f}s  (waited in the group {r.assignment_wait_s:5.2f}s)",
                        flush=True,
                    )
            for mode, rs in results.items():
                print(
                    f"{mode:7s} median of {len(rs)}: assigned {statistics.median(r.assigned_s for r in rs):.2f}s, "
                    f"first commit {statistics.median(r.committed_s for r in rs):.2f}s, "
                    f"group wait {statistics.median(r.assignment_wait_s for r in rs):.2f}s"
                )
        finally:
            if broker is not None:
                broker.stop()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
