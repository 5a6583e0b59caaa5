"""Which deploy events a batch is tagged with, named compactly instead of shipped with it.

A batch is tagged with the deploys loaded without Kafka provenance ("static") and with every
deploy from the topic whose record time is at most the batch's bound and whose offset the
deploys reader had passed when the batch was cut (``positions``); see collector/pipelines/events.py.

The consumer process and every worker keep the same :class:`DeployLog`: each change is sent
to every worker ahead of any batch cut after it, on the same ordered pipe.  A batch then
carries a :data:`Selection`, ``(version, k, excluded)``: the first ``k`` topic deploys in
(time, partition, offset) order, minus the indices in ``excluded``, after the static ones.

Before, each batch carried the events themselves, with a signature of their sorted ``repr``
strings: with 10,000 deploys kept that cost about 100 ms of CPU and 5 MB of pipe per batch.
A selection costs a binary search; ``excluded`` is empty unless the positions are behind
what the log holds (a replay of a batch cut earlier, or no deploys reader at all), and then
costs a scan of the selected events, as the rule did before.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence

from attribution.model import DeployEvent

# (record timestamp ms, partition, offset, event) of a deploy read from the topic
TopicDeploy = tuple[int, int, int, DeployEvent]
# (log version, number of topic deploys in time order, indices among them left out)
Selection = tuple[int, int, tuple[int, ...]]


class DeployLog:
    """The deploy events known to the pipeline, in the order batches are tagged with them."""

    def __init__(self) -> None:
        self.version = 0
        self._static: list[DeployEvent] = []
        self._topic: list[TopicDeploy] = []
        self._times: list[int] = []
        self._read_to: dict[int, int] = {}  # partition -> 1 + highest offset held

    def __len__(self) -> int:
        return len(self._static) + len(self._topic)

    @property
    def read_to(self) -> dict[int, int]:
        """Per partition of the deploys topic, one past the highest offset held."""
        return dict(self._read_to)

    @property
    def max_time_ms(self) -> int:
        """The latest record time of a topic deploy, -1 without any."""
        return self._times[-1] if self._times else -1

    def add(self, static: Sequence[DeployEvent] = (), topic: Sequence[TopicDeploy] = ()) -> bool:
        """Add events; True (and a new version) if there were any."""
        if not static and not topic:
            return False
        self._static.extend(static)
        if topic:
            self._topic.extend(topic)
            self._topic.sort(key=lambda x: (x[0], x[1], x[2]))
            self._times = [x[0] for x in self._topic]
            for _, p, o, _ in topic:
                self._read_to[p] = max(self._read_to.get(p, 0), o + 1)
        self.version += 1
        return True

    def select(self, bound_ms: int, positions: Mapping[int, int]) -> Selection:
        """The deploys with record time <= ``bound_ms`` and offset < ``positions[partition]``."""
        k = bisect_right(self._times, bound_ms)
        if all(positions.get(p, 0) >= end for p, end in self._read_to.items()):
            return self.version, k, ()
        excluded = tuple(i for i, (_, p, o, _) in enumerate(self._topic[:k]) if o >= positions.get(p, 0))
        return self.version, k, excluded

    def events(self, selection: Selection) -> list[DeployEvent]:
        """The events of ``selection``: static ones first, then topic ones in time order."""
        version, k, excluded = selection
        if version != self.version:
            raise ValueError(
                f"deploy selection of version {version}, but this deploy log is at version "
                f"{self.version}: a worker missed a deploy update"
            )
        if not excluded:
            return self._static + [x[3] for x in self._topic[:k]]
        skip = set(excluded)
        return self._static + [x[3] for i, x in enumerate(self._topic[:k]) if i not in skip]
