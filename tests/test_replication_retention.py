"""Compaction in the replicated cluster: every replica compacts by the one ``shard.retention``
rule, and no healing path (anti-entropy, transfers, read repair, drops) brings back a version
that compaction removed (in one process, on the embedded transport)."""

from __future__ import annotations

import pytest

from cellframe.errors import ConfigError
from cellframe.language.plist import from_plist
from cellframe.language.reader import read
from cellframe.replication import ShardConfig
from cellframe.replication.retention import UNITS, parse_retention
from cellframe.roles.shard import ShardCell
from cellframe.testing import wait_for
from tests.replication_support import (
    ShardClient,
    cells,
    converged,
    fill,
    holders,
    lonely_shard,
    lost,
    record,
    roots_agree,
    settled,
    shard_cluster,
)

NODES = ["shard-01", "shard-02", "shard-03"]


def versions(cell: ShardCell, family: str) -> list[int]:
    return [r.time for r in cell.store.select_history(family)]


def compacted_replies(client, request: str) -> list[dict]:
    """The fields of every ``(compacted ...)`` call-back to ``request`` so far."""
    out = []
    for reply in list(client.replies):
        expr = reply.expr
        if isinstance(expr, list) and expr and str(expr[0]) == "compacted":
            fields = from_plist(expr[1:])
            if fields.get("request") == request:
                out.append(fields)
    return out


def apply_everywhere(cluster, families: list[str], times: list[int]) -> None:
    """Every version of every family, straight into every shard's store (identical copies)."""
    rows = [record(f, t, f'"{f}@{t}"', (1 << 48) + i * 10 + j)
            for i, f in enumerate(families) for j, t in enumerate(times)]
    for cell in cells(cluster).values():
        cell.store.apply_many(rows)


def test_compact_on_every_shard_keeps_the_kept_range_readable_and_the_roots_agree(
    tmp_path,
) -> None:
    families = [f"doc/{i}" for i in range(30)]
    with shard_cluster(tmp_path, retention="newest=2") as cluster:
        client = cluster.client()
        shards = ShardClient(client)
        for t in (1000, 2000, 3000, 4000):
            for request in [shards.insert(f, str(t), time=t) for f in families]:
                assert shards.answer(request)[0] == "inserted"
        wait_for(lambda: all(len(holders(cluster, f)) == 3 for f in families) and
                 roots_agree(cluster), 30)
        request = client.send("each.shard", read("(compact)"))
        done = wait_for(lambda: (r := compacted_replies(client, request)) and len(r) == 3 and r,
                        30)
        assert sum(r["dropped"] for r in done) == 3 * 2 * len(families)
        assert sum(r["kept"] for r in done) == 3 * 2 * len(families)
        for cell in cells(cluster).values():
            assert all(versions(cell, f) == [3000, 4000] for f in families)
        wait_for(lambda: roots_agree(cluster), 20)
        for family in families[:5]:
            verb, fields = shards.call(f'(select "{family}" :as-of 3500)')
            assert (verb, fields["found"], fields["value"]) == ("selected", True, 3000)
            _, newest = shards.call(f'(select "{family}")')
            assert newest["value"] == 4000


def test_compact_without_a_rule_is_refused_with_a_reason(tmp_path) -> None:
    with shard_cluster(tmp_path) as cluster:
        a = cells(cluster)["shard-01"]
        verb, fields = ShardClient(cluster.client(), f"cell.{a.cell_name}").call("(compact)")
        assert verb == "error" and "shard.retention" in fields["reason"]


def test_anti_entropy_with_uncompacted_peers_does_not_bring_back_what_compaction_dropped(
    tmp_path,
) -> None:
    # Four partitions of 75 families: over 32 buckets of each differ once one replica has
    # compacted, so anti-entropy streams whole partitions (a transfer) as well as buckets.
    families = [f"log/{i}" for i in range(300)]
    with shard_cluster(tmp_path, partitions=4, retention="newest=1",
                       anti_entropy_interval=0.1) as cluster:
        apply_everywhere(cluster, families, [100, 200, 300])
        found = cells(cluster)
        a = found["shard-01"]
        verb, fields = ShardClient(cluster.client(), f"cell.{a.cell_name}").call("(compact)")
        assert (verb, fields["dropped"]) == ("compacted", 2 * len(families))
        regrown = []

        def healed() -> bool:
            regrown.extend(f for f in families[::25] if versions(a, f) != [300])
            return roots_agree(cluster)

        # The peers hear from a that they hold what the rule drops, and compact too.
        wait_for(healed, 20)
        assert not regrown and all(versions(a, f) == [300] for f in families)
        assert a.stats.get("retention_skipped", 0) > 0
        assert a.stats.get("compaction_nudges", 0) > 0
        assert all(c.stats.get("partitions_compacted", 0) > 0 for c in found.values())
        assert all(versions(c, f) == [300] for c in found.values() for f in families)


def test_read_repair_from_uncompacted_replicas_does_not_bring_back_dropped_versions(
    tmp_path,
) -> None:
    # Anti-entropy is off (a minute between rounds): only the read repairs.
    with shard_cluster(tmp_path, retention="newest=1", anti_entropy_interval=60) as cluster:
        apply_everywhere(cluster, ["page"], [100, 200, 300])
        a = cells(cluster)["shard-01"]
        client = cluster.client()
        verb, _ = ShardClient(client, f"cell.{a.cell_name}").call("(compact)")
        assert verb == "compacted" and versions(a, "page") == [300]
        verb, fields = ShardClient(client).call('(history "page")')
        assert verb == "history-selected"  # the merged history holds every version
        wait_for(lambda: a.stats.get("retention_skipped", 0) >= 2, 20)  # repaired, skipped
        assert versions(a, "page") == [300]


def test_shards_compact_by_themselves_every_compact_interval(tmp_path) -> None:
    with shard_cluster(tmp_path, retention="newest=1", compact_interval=0.2) as cluster:
        apply_everywhere(cluster, ["tick/1", "tick/2"], [1, 2, 3])
        wait_for(lambda: all(versions(c, f) == [3] for c in cells(cluster).values()
                             for f in ("tick/1", "tick/2")), 20)
        assert roots_agree(cluster)


def test_a_transfer_to_a_new_owner_brings_only_the_versions_the_rule_keeps(tmp_path) -> None:
    families = [f"item/{i}" for i in range(120)]
    with shard_cluster(tmp_path, nodes=NODES, replicas=2, intent=4,
                       retention="newest=1") as cluster:
        shards = ShardClient(cluster.client())
        for t in (1000, 2000, 3000):
            for request in [shards.insert(f, str(t), time=t) for f in families]:
                assert shards.answer(request)[0] == "inserted"
        wait_for(lambda: all(len(holders(cluster, f)) == 2 for f in families), 30)
        old = {name: c for name, c in cells(cluster).items()}
        assert all(versions(c, f) == [1000, 2000, 3000] for c in old.values()
                   for f in families if c.store.select(f) is not None)  # nobody compacted
        cluster.start_node("spare-01", role="shard")
        newcomer = wait_for(lambda: cells(cluster).get("spare-01"), 20)
        wait_for(lambda: converged(cluster, 4), 20)
        held = [f for f in families if newcomer.store.select(f) is not None]
        assert held and all(versions(newcomer, f) == [3000] for f in held)
        assert newcomer.stats.get("retention_skipped", 0) >= 2 * len(held)
        verb, fields = shards.call(f'(select "{held[0]}")')
        assert (verb, fields["value"]) == ("selected", 3000)


def test_an_old_owner_drops_a_version_its_owners_rule_drops(tmp_path) -> None:
    # Anti-entropy is off (a minute between rounds): only the drop's check moves records.
    with shard_cluster(tmp_path, nodes=NODES, replicas=2, intent=4, retention="newest=1",
                       anti_entropy_interval=60, drop_interval=0.1) as cluster:
        shards = fill(cluster)
        before = cells(cluster)["shard-01"].view.ring
        cluster.start_node("spare-01", role="shard")
        newcomer = wait_for(lambda: cells(cluster).get("spare-01"), 20)
        wait_for(lambda: newcomer.view.ring is not None
                 and newcomer.me in newcomer.view.ring.members, 20)
        shard, p = sorted(lost(before, newcomer.view.ring))[0]
        by_shard = {c.me: c for c in cells(cluster).values()}
        old, owners = by_shard[shard], [by_shard[s] for s in newcomer.view.ring.owners(p)]
        family = next(f for f in (f"gone/{i}" for i in range(10_000))
                      if before.partition_of(f) == p)
        # The owners hold a newer version the old owner never got; the old owner holds an
        # older one, which its own rule keeps (it is all it has) and the owners' rule drops:
        # they will never hold it, and the old owner must drop its copy all the same.
        for owner in owners:
            owner.store.apply(record(family, 10, '"newer"', (9 << 48) + 1))
        old.store.apply(record(family, 5, '"older"', (shard << 48) + 7))
        wait_for(lambda: settled(cluster, 4), 30)
        assert old.store.select(family) is None
        assert all(versions(c, family) == [10] for c in owners)
        assert old.stats.get("drop_check_pushed", 0) >= 1
        assert sum(c.stats.get("retention_skipped", 0) for c in owners) >= 1
        verb, fields = shards.call(f'(select "{family}")')
        assert verb == "selected" and fields["value"] == "newer"


@pytest.mark.parametrize("text, says", [
    ("", "empty"),
    ("newest=0", "at least 1"),
    ("newest=-2", "at least 1"),
    ("newest=three", "whole number"),
    ("max-age=30", "s, m, h or d"),
    ("max-age=0d", "positive"),
    ("max-age=1.5h", "s, m, h or d"),
    ("oldest=3", "not newest=N or max-age=AGE"),
    ("newest", "not newest=N or max-age=AGE"),
    ("newest=2,newest=3", "twice"),
])
def test_a_bad_retention_setting_is_refused_saying_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match="shard.retention") as caught:
        ShardConfig.from_settings({"shard.retention": text})
    assert says in str(caught.value)


def test_a_retention_setting_reads_counts_ages_and_their_union() -> None:
    assert ShardConfig.from_settings({}).retention is None
    config = ShardConfig.from_settings({"shard.retention": "newest=3, max-age=2d",
                                        "shard.compact-ms": "60000"})
    assert config.compact_interval == 60.0
    rule = config.retention
    assert (rule.newest, rule.max_age, rule.step) == (3, 2 * UNITS["d"], UNITS["d"])
    now = 10 * UNITS["d"] + 5 * UNITS["h"]
    keep = rule.at(now)
    assert (keep.newest, keep.since) == (3, 8 * UNITS["d"])  # rounded down to a whole day
    assert rule.at(now + UNITS["h"]) == keep  # same day, same cut: replicas agree
    assert parse_retention("k", "max-age=90s").at(1_000_000_000).since == 910_000_000
    with pytest.raises(ConfigError, match="compact-ms"):
        ShardConfig.from_settings({"shard.compact-ms": "0"})


def test_a_shard_cell_with_a_bad_retention_rule_stays_out_and_says_why(tmp_path) -> None:
    with lonely_shard(tmp_path, retention="newest=0") as (cell, shards):
        assert cell.broken is not None and "retention" in cell.broken
        assert cell.store is None
        verb, fields = shards.call('(insert "x" 1)')
        assert verb == "error" and "newest=0" in fields["reason"]
