"""The deploy selections batches carry to the workers (collector/processing/deploy_sets.py): the same
events the pipeline's tagging rule picks, whatever the order the events arrived in."""

from __future__ import annotations

import random

import pytest

from attribution.model import DeployEvent
from collector.processing.deploy_sets import DeployLog, TopicDeploy


def _event(i: int) -> DeployEvent:
    return DeployEvent(f"d{i}", f"svc{i % 3}", "prod", f"{i:040x}", 1_700_000_000_000_000_000 + i)


def _reference(
    static: list[DeployEvent], topic: list[TopicDeploy], bound_ms: int, positions: dict[int, int]
) -> list[DeployEvent]:
    """The tagging rule as written before selections: static deploys, then the topic's in
    (time, partition, offset) order with time <= bound and offset < the reader's position."""
    ordered = sorted(topic, key=lambda x: (x[0], x[1], x[2]))
    return static + [ev for ts, p, o, ev in ordered if ts <= bound_ms and o < positions.get(p, 0)]


def test_selections_pick_exactly_what_the_tagging_rule_picks() -> None:
    rng = random.Random(7)
    for _ in range(200):
        log = DeployLog()
        static = [_event(1000 + i) for i in range(rng.randrange(0, 3))]
        topic: list[TopicDeploy] = []
        next_offset = {0: 0, 1: 0, 2: 0}
        arrivals = rng.randrange(1, 6)
        log.add(static, [])
        for _ in range(arrivals):  # events arrive in chunks, times not in order (late ones too)
            chunk = []
            for _ in range(rng.randrange(0, 8)):
                p = rng.randrange(3)
                chunk.append((rng.randrange(0, 100), p, next_offset[p], _event(len(topic) + len(chunk))))
                next_offset[p] += 1
            topic += chunk
            log.add([], chunk)
        for _ in range(20):
            bound = rng.randrange(-5, 110)
            if rng.random() < 0.5:  # a live batch: the reader has read everything held
                positions = dict(next_offset)
            else:  # a replay: positions recorded by an earlier run
                positions = {p: rng.randrange(0, n + 2) for p, n in next_offset.items() if rng.random() < 0.8}
            sel = log.select(bound, positions)
            assert log.events(sel) == _reference(static, topic, bound, positions)
            if positions == next_offset:
                assert sel[2] == ()  # the common case carries no list


def test_a_mirror_fed_the_same_updates_resolves_the_same_selection() -> None:
    here, there = DeployLog(), DeployLog()
    updates = [
        ([_event(99)], []),
        ([], [(5, 0, 0, _event(0)), (3, 1, 0, _event(1))]),
        ([], [(4, 0, 1, _event(2))]),
    ]
    for static, topic in updates:
        here.add(static, topic)
        there.add(static, topic)
    sel = here.select(4, {0: 2, 1: 1})
    assert there.events(sel) == here.events(sel) == [_event(99), _event(1), _event(2)]
    assert here.max_time_ms == 5 and len(here) == 4


def test_a_selection_from_another_version_is_refused() -> None:
    log = DeployLog()
    log.add([], [(1, 0, 0, _event(0))])
    sel = log.select(10, {0: 1})
    assert not log.add([], [])  # nothing new: same version
    assert log.events(sel) == [_event(0)]
    log.add([], [(2, 0, 1, _event(1))])
    with pytest.raises(
        ValueError, match="deploy selection of version 1, but this deploy log is at version 2"
    ):
        log.events(sel)
