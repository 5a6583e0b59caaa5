"""The CPU-bound half of the streaming pipeline, in worker processes.

One Python process runs on one core at a time (the GIL), and decoding, deduplicating,
attributing and aggregating spans is most of the pipeline's work.  So the consumer process
keeps what must stay in one place (the Kafka consumer, the write-ahead intents, the
ClickHouse writes and the offset commits) and hands each batch's *records* to a worker
process, which sends back the batch's *aggregates*: a few rows per module and window instead
of hundreds of spans per record.

**Partition affinity.**  Partition ``p`` always goes to worker ``p % n``, which owns the
partition's dedup window.  The jobs of one worker travel through one pipe, in order, so the
window sees a partition's history and batches in offset order, exactly as in one process:
the results are the same (and so are the insert-deduplication tokens on a replay).

**Failures.**  A worker that dies takes the service down with a clear error (the intents make
the restart exactly-once).  A worker whose consumer process dies sees the end of its job pipe
and exits: no orphans after a ``kill -9``.

:class:`InlineWorkers` runs the same processing
(:class:`collector.processing.partitions.PartitionProcessor` over the one
:class:`collector.processing.batch.BatchProcessor`) in the calling process (``stream.workers: 0``),
with the same interface.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from attribution.model import DeployEvent
from attribution.repository import Repository
from collector.errors import WorkerDied
from collector.processing.batch import BatchOutcome, ProcessorConfig, RawRecord
from collector.processing.deploy_sets import TopicDeploy
from collector.processing.partitions import Job, PartitionProcessor
from collector.processing.runtime import tune_gc


class InlineWorkers:
    """The batch work in this process: each job is done when submitted."""

    def __init__(self, cfg: ProcessorConfig, repositories: Sequence[Repository]) -> None:
        self.processor = PartitionProcessor(cfg, repositories)
        self._done: list[tuple[int, BatchOutcome]] = []
        self._ticket = 0

    def reset(self, partition: int) -> None:
        self.processor.reset(partition)

    def drop(self, partition: int) -> None:
        self.processor.drop(partition)

    def history(self, topic: str, partition: int, records: Sequence[RawRecord]) -> None:
        self.processor.history(topic, partition, records)

    def add_deploys(self, static: Sequence[DeployEvent], topic: Sequence[TopicDeploy]) -> None:
        self.processor.add_deploys(static, topic)

    def submit(self, topic: str, partition: int, records: Sequence[RawRecord], job: Job) -> int:
        self._ticket += 1
        self._done.append((self._ticket, self.processor.process(topic, partition, records, job)))
        return self._ticket

    def results(self) -> list[tuple[int, BatchOutcome]]:
        done, self._done = self._done, []
        return done

    def wait(self, timeout_s: float) -> None:
        pass

    def close(self) -> None:
        pass


def _worker_main(jobs: Connection, results: Connection) -> None:
    # the consumer process handles signals and tells us to stop by closing the pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        kind, cfg, repositories = jobs.recv()
    except (EOFError, OSError):
        return
    assert kind == "init", kind
    processor = PartitionProcessor(cfg, repositories)
    tune_gc()
    while True:
        try:
            job = jobs.recv()
        except (EOFError, OSError):
            return  # the consumer process is gone
        kind = job[0]
        try:
            if kind == "batch":
                _, ticket, topic, partition, spec, heads = job
                records = [(o, ts, jobs.recv_bytes()) for o, ts in heads]
                outcome = processor.process(topic, partition, records, spec)
                del records
                results.send((ticket, outcome))
            elif kind == "history":
                _, topic, partition, heads = job
                processor.history(topic, partition, [(o, ts, jobs.recv_bytes()) for o, ts in heads])
            elif kind == "deploys":
                processor.add_deploys(job[1], job[2])
            elif kind == "reset":
                processor.reset(job[1])
            elif kind == "drop":
                processor.drop(job[1])
            elif kind == "stop":
                return
        except (BrokenPipeError, EOFError):
            return
        except BaseException as exc:  # a bug: report it (with where it happened), then die
            try:
                tb = "".join(traceback.format_exception(exc)[-6:]).rstrip()
                results.send((-1, f"{type(exc).__name__}: {exc}\n{tb}"))
            finally:
                os._exit(70)


def _widen(fd: int) -> None:
    """Grow a pipe from 64 KiB to the largest size allowed (1 MiB by default): a batch is
    megabytes, and at 64 KiB a time its transfer costs a context switch per chunk, which took
    a third of a worker's CPU time."""
    try:
        limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, min(limit, 16 * 1024 * 1024))
    except (OSError, ValueError, AttributeError):
        pass  # not Linux, or not allowed: the default size works, only slower


class _Worker:
    def __init__(self, index: int, cfg: ProcessorConfig, repositories: list[Repository]) -> None:
        # A plain ``python -m collector.processing.workers`` child, not multiprocessing: fork does not
        # survive the consumer process's threads and embedded ClickHouse engine, and spawn
        # re-imports the caller's main module (which breaks scripts without a main guard).
        jobs_r, jobs_w = os.pipe()
        results_r, results_w = os.pipe()
        for fd in (jobs_r, results_r):
            _widen(fd)
        env = dict(os.environ)
        here = str(Path(__file__).resolve().parents[2])  # where ``collector`` is importable from
        env["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [env.get("PYTHONPATH")])])
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "collector.processing.workers", str(jobs_r), str(results_w)],
                pass_fds=(jobs_r, results_w),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(jobs_r)
            os.close(results_w)
        self.jobs = Connection(jobs_w, readable=False)
        self.results = Connection(results_r, writable=False)
        # sends can block while the worker is busy: a thread does them, so the loop never waits
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._sender = threading.Thread(
            target=self._send_loop, name=f"prodloop-worker-{index}-send", daemon=True
        )
        self._sender.start()
        self.index = index
        self.send(("init", cfg, repositories))

    def _send_loop(self) -> None:
        while True:
            job = self._outbox.get()
            if job is None:
                return
            try:
                self._send(job)
            except (BrokenPipeError, OSError):
                return  # the worker died; the loop sees its exit code
            job = None  # not kept alive (a batch is megabytes) while waiting for the next one

    def _send(self, job: tuple[Any, ...]) -> None:
        if job[0] in ("batch", "history"):
            # the records go as they are, one message each: pickling them into one buffer
            # would copy the batch again, and hold that copy until it is sent
            *head, records = job
            self.jobs.send((*head, [(o, ts) for o, ts, _ in records]))
            for _, _, value in records:
                self.jobs.send_bytes(value)
        else:
            self.jobs.send(job)

    def send(self, job: tuple[Any, ...]) -> None:
        self._outbox.put(job)

    def check(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise WorkerDied(
                f"worker process {self.index} (pid {self.process.pid}) died with exit code {code}"
            )

    def close(self, timeout_s: float) -> None:
        self._outbox.put(("stop",))
        self._outbox.put(None)
        self._sender.join(timeout_s)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.jobs.close()
        self.results.close()


class ProcessWorkers:
    """``n`` worker processes; partition ``p`` goes to worker ``p % n``."""

    def __init__(self, n: int, cfg: ProcessorConfig, repositories: Sequence[Repository]) -> None:
        if n < 1:
            raise ValueError("ProcessWorkers needs at least one worker")
        self._workers: list[_Worker] = []
        try:
            for i in range(n):
                self._workers.append(_Worker(i, cfg, list(repositories)))
        except BaseException:
            self.close()
            raise
        self._ticket = 0

    def _of(self, partition: int) -> _Worker:
        return self._workers[partition % len(self._workers)]

    def reset(self, partition: int) -> None:
        self._of(partition).send(("reset", partition))

    def drop(self, partition: int) -> None:
        self._of(partition).send(("drop", partition))

    def history(self, topic: str, partition: int, records: Sequence[RawRecord]) -> None:
        self._of(partition).send(("history", topic, partition, list(records)))

    def add_deploys(self, static: Sequence[DeployEvent], topic: Sequence[TopicDeploy]) -> None:
        for w in self._workers:  # every worker, ahead of the batches that select from them
            w.send(("deploys", list(static), list(topic)))

    def submit(self, topic: str, partition: int, records: Sequence[RawRecord], job: Job) -> int:
        self._ticket += 1
        self._of(partition).send(("batch", self._ticket, topic, partition, job, list(records)))
        return self._ticket

    def results(self) -> list[tuple[int, BatchOutcome]]:
        out: list[tuple[int, BatchOutcome]] = []
        for w in self._workers:
            while w.results.poll():
                try:
                    ticket, outcome = w.results.recv()
                except (EOFError, OSError):
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        w.process.wait(5)
                    w.check()
                    raise WorkerDied(f"worker process {w.index} closed its pipe") from None
                if ticket < 0:
                    raise WorkerDied(f"worker process {w.index} failed: {outcome}")
                out.append((ticket, outcome))
            w.check()
        return out

    def wait(self, timeout_s: float) -> None:
        """Block until a result is ready, a worker exits, or ``timeout_s`` passes."""
        wait([w.results for w in self._workers], timeout_s)  # a worker's exit closes its pipe: readable

    def close(self, timeout_s: float = 5.0) -> None:
        for w in self._workers:
            w.close(timeout_s)


def resolve_workers(setting: int | str, cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """``stream.workers``: a count, or ``auto``: one per core this process may use (its CPU
    affinity, and its container's CPU limit, rounded up), at most 8, when that is two or
    more (on one core, handing batches to another process only adds copies)."""
    if setting != "auto":
        return int(setting)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit to honour
    cores = min(cores, 8)
    return cores if cores >= 2 else 0


if __name__ == "__main__":  # a worker: python -m collector.processing.workers JOBS_FD RESULTS_FD
    # run the imported module's loop, so that what it pickles is collector.processing.workers.*, not __main__.*
    from collector.processing import workers as _module

    _module._worker_main(
        Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False)
    )
