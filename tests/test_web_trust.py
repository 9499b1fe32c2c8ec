"""The web tier with node keys bound to their nodes, in process (MemoryBroker): its own traffic
names its speaker and passes every gate, and a stolen web node's key changes only its own
backend (the same attacks on the real broker: ``tests/test_trust_broker.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cellframe import MemoryBroker, Node, RoleRegistry
from cellframe.roles import ProxyCell, WebCell
from cellframe.testing import wait_for
from cellframe.wire.envelope import Envelope
from cellframe.wire.keys import Key, KeyFiles, dump_keys, new_key
from cellframe.wire.signing import Signer

EXCHANGE = "cellframe.control"


class EagerWeb(WebCell):
    """A web cell that feels loaded past two requests a second, so routing lowers its weight."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = 2


@dataclass
class Tier:
    broker: MemoryBroker
    keys: dict[str, Key]
    nodes: dict[str, Node]

    def proxy(self) -> ProxyCell:
        return self.nodes["p-01"].cells()["p-01"]

    def pool(self) -> dict[str, tuple[int, str]]:  # asked of the cell: its turn, not ours
        rows = self.proxy().actor_ref.proxy().cell_snapshot().get(timeout=10)["pool"]
        return {name: (weight, node) for name, weight, node in rows}

    def publish(self, key: str, routing_key: str, text: str) -> None:
        signed = Signer(self.keys[key], exchange=EXCHANGE).sign(Envelope(text.encode()), routing_key)
        self.broker.connect().publish(routing_key, signed)

    def refused(self) -> dict[str, dict[str, int]]:
        return {name: dict(node.counters.refused) for name, node in self.nodes.items()}


@pytest.fixture
def tier(tmp_path: Any) -> Iterator[Tier]:
    keys = {name: new_key(name, kind="node", node=name) for name in ("p-01", "w-01", "w-02")}
    keys["ops"] = new_key("ops", ["all *"])
    key_file = tmp_path / "cluster.keys"
    key_file.write_text(dump_keys(keys.values()))
    keyring = KeyFiles([key_file])
    broker = MemoryBroker()
    nodes: dict[str, Node] = {}
    try:
        for name, role, cell in (("p-01", "proxy", ProxyCell), ("w-01", "web", EagerWeb),
                                 ("w-02", "web", EagerWeb)):
            signer = Signer(keys[name], keyring=keyring, exchange=EXCHANGE)
            nodes[name] = Node(name, transport=broker.connect(name=name), signer=signer,
                               role=role, registry=RoleRegistry({role: [cell]}),
                               diagnostic=True, watch_config=False).start()
        tier = Tier(broker, keys, nodes)
        wait_for(lambda: tier.pool() == {"w-01": (10, "w-01"), "w-02": (10, "w-02")}, 30,
                 what="both web nodes in the pool", show=tier.pool)
        yield tier
    finally:
        for node in nodes.values():
            node.stop()


def test_web_nodes_with_bound_keys_are_served_routed_and_reweighed_through_every_gate(
        tier) -> None:
    for n in range(30):
        tier.publish("ops", "each.proxy", f'(route "r{n}")')
    proxy = tier.proxy()
    wait_for(lambda: proxy.stats["served"] == 30, 30, what="30 requests served and counted",
             show=lambda: (proxy.stats, tier.refused()))
    # Loaded past its capacity, each web cell asked for a lower weight in its own name.
    wait_for(lambda: any(weight < 10 for weight, _ in tier.pool().values()), 30,
             what="a web cell's own lower weight applied", show=tier.pool)
    assert tier.refused() == {"p-01": {}, "w-01": {}, "w-02": {}}


def test_a_stolen_web_nodes_key_changes_only_its_own_backends_weight(tier) -> None:
    tier.publish("w-01", "cell.p-01", '(set-weight :backend "w-02" :node "w-01" :weight 1)')
    tier.publish("w-01", "cell.p-01", '(set-weight :backend "w-02" :weight 1)')  # no name
    tier.publish("w-01", "cell.p-01", '(set-weight :backend "w-02" :node "w-02" :weight 1)')
    tier.publish("w-01", "cell.p-01", '(do (set-weight :backend "w-02" :weight 1))')
    tier.publish("w-01", "cell.p-01", '(set-weight :backend "w-01" :node "w-01" :weight 3)')
    wait_for(lambda: tier.pool()["w-01"] == (3, "w-01"), 30, what="w-01's own weight applied",
             show=tier.pool)
    assert tier.pool()["w-02"] == (10, "w-02")
    assert tier.refused()["p-01"] == {"not-allowed": 3}  # the gate's; the proxy's own:
    assert tier.proxy().stats["not_held"] == 1
    tier.publish("ops", "cell.p-01", '(set-weight :backend "w-02" :weight 6)')  # an operator
    wait_for(lambda: tier.pool()["w-02"] == (6, "w-02"), 30, what="the operator's weight",
             show=tier.pool)


@pytest.mark.parametrize("sender, target, text", [
    ("w-01", "cell.p-01", '(served :request "r" :backend "w-02" :node "w-02")'),
    ("w-01", "cell.p-01", '(served :request "r" :backend "w-01")'),
    ("p-01", "cell.w-01", '(serve :request "r" :proxy "p-01" :node "w-02")'),
    ("w-02", "each.web", '(pool-hello :proxy "p-01" :node "p-01")'),
    ("p-01", "cell.p-01", '(reroute "r" :failed "w-01")'),  # only the proxy tells itself that
    ("ops", "cell.p-01", '(reroute "r" :failed "w-01")'),
    ("ops", "cell.p-01", '(route (serve :request "r" :proxy "p-01"))'),  # a node verb inside
])
def test_the_web_tiers_node_verbs_are_refused_in_another_nodes_name_or_from_the_wire(
        tier, sender, target, text) -> None:
    node = {"cell.p-01": "p-01", "cell.w-01": "w-01", "each.web": "w-01"}[target]
    tier.publish(sender, target, text)
    wait_for(lambda: tier.refused()[node] == {"not-allowed": 1}, 30,
             what=f"{node} to refuse {text} from {sender}", show=tier.refused)
    proxy = tier.proxy()
    assert proxy.stats["served"] == 0 and proxy.stats["rerouted"] == 0
