"""The watch ring (``healing.watchers=k``): each node hears the heartbeats of k others only,
so its membership traffic is flat in n, and the cluster still sees every death and heals."""

from __future__ import annotations

import random
import time
from dataclasses import replace

from cellframe.healing.watchring import LiveRing, ring_order, watched_by, watchers_of
from cellframe.testing import wait_for
from tests.healing_support import FAST, SCENARIO_NODES, local_cluster

RING = replace(FAST, watchers=2)


def test_every_node_is_watched_by_exactly_k_others_however_the_hashes_fall() -> None:
    names = [f"node-{i:04d}" for i in range(500)]
    for k in (1, 3, 9):
        watched = {n: watched_by(n, names, k) for n in names}
        counts = {n: 0 for n in names}
        for targets in watched.values():
            assert len(targets) == k and len(set(targets)) == k
            for target in targets:
                counts[target] += 1
        assert set(counts.values()) == {k}
        assert all(sorted(watchers_of(n, names, k)) == sorted(w for w in names if n in watched[w])
                   for n in names[:20])


def test_a_live_ring_kept_through_joins_and_deaths_watches_what_a_pass_over_the_view_does(
) -> None:
    rng = random.Random(3)
    names = [f"node-{i:04d}" for i in range(300)]
    live = set(rng.sample(names, 150))
    ring = LiveRing(live)
    for _ in range(400):
        name = rng.choice(names)
        if name in live and rng.random() < 0.5:
            live.discard(name)
            ring.discard(name)
        else:
            live.add(name)
            ring.add(name)
        assert len(ring) == len(live)
        for me in rng.sample(names, 5) + [name]:
            for k in (1, 3):
                assert ring.watched_by(me, k) == watched_by(me, live, k), (me, k)
    assert LiveRing(["a"]).watched_by("a", 3) == [] and LiveRing().watched_by("a", 3) == []


def test_a_join_changes_the_watch_sets_of_about_2k_nodes_only() -> None:
    names = [f"node-{i:04d}" for i in range(300)]
    before = {n: watched_by(n, names, 3) for n in names}
    after = {n: watched_by(n, [*names, "newcomer"], 3) for n in names}
    changed = [n for n in names if before[n] != after[n]]
    assert len(changed) <= 3
    assert ring_order(names) == ring_order(list(reversed(names)))


def _heartbeats_per_second(cluster, seconds: float) -> dict[str, float]:
    def heard() -> dict[str, int]:
        counts = {}
        for name in cluster.live():
            for cell in cluster.node(name).status()["cells"]:
                if "heard" in cell:
                    counts[name] = cell["heard"]["heartbeat"]
        return counts

    first, started = heard(), time.monotonic()
    time.sleep(seconds)  # a measuring window, not a wait for a condition
    last, elapsed = heard(), time.monotonic() - started
    return {n: (last[n] - first[n]) / elapsed for n in first}


def test_with_a_ring_each_node_hears_k_heartbeats_an_interval_not_n(tmp_path) -> None:
    nodes = [*SCENARIO_NODES, "spare-02", "spare-03"]
    with local_cluster(tmp_path, nodes, healing=RING) as cluster:
        rates = _heartbeats_per_second(cluster, 1.0)
        per_interval = {n: r * RING.heartbeat_interval for n, r in rates.items()}
        # k = 2 of 7 others: about 2 a heartbeat interval (the ring's probes add a few).
        assert all(0.8 <= v <= 3.2 for v in per_interval.values()), per_interval
        for name in nodes:
            snapshot = [c for c in cluster.node(name).status()["cells"] if "watching" in c][0]
            assert len(snapshot["watching"]) == 2


def test_with_a_ring_every_node_sees_a_death_and_the_spare_takes_the_slot(tmp_path) -> None:
    with local_cluster(tmp_path, SCENARIO_NODES, healing=RING) as cluster:
        killed = cluster.kill("web-01")
        wait_for(lambda: cluster.all_see("web-01", "down"), 20, what="every node to see web-01 down",
                 show=lambda: {n: cluster.status_of("web-01", n) for n in cluster.live()})
        detected = time.time() - killed
        wait_for(lambda: cluster.roles().get("spare-01") == "web" and cluster.converged(), 30,
                 what="spare-01 to take the web slot and the views to agree", show=cluster.roles)
        assert detected < 2.0
