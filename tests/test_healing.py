"""The reconciler and the claim protocol as pure logic: a deterministic choice over the view,
claims that settle conflicts, and a simulated network that delays and duplicates claims."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe.errors import ConfigError
from cellframe.healing.capacity import ScaleSettings
from cellframe.healing.majority import holds_majority
from cellframe.healing.reconciler import Claim, LiveMember, Reconciler, assign, short_slots, shortfall

INTENT = {"proxy": 1, "web": 3, "logsump": 1}


def view(*members: tuple[str, str | None] | tuple[str, str | None, float]) -> list[LiveMember]:
    return [LiveMember(m[0], m[1], m[2] if len(m) > 2 else 0.0) for m in members]  # type: ignore[misc]


HEALTHY_BUT_ONE_WEB = view(("proxy-01", "proxy"), ("web-02", "web"), ("web-03", "web"),
                           ("logsump-01", "logsump"), ("spare-01", None), ("spare-02", None))


def test_the_lowest_named_spare_takes_the_one_short_slot() -> None:
    assert assign(INTENT, HEALTHY_BUT_ONE_WEB, "spare-01").take == "web"
    assert assign(INTENT, HEALTHY_BUT_ONE_WEB, "spare-02").take is None
    assert assign(INTENT, HEALTHY_BUT_ONE_WEB, "web-02").take is None


def test_every_node_computes_the_same_assignment_from_the_same_view() -> None:
    live = view(("web-02", "web"), ("spare-03", None), ("spare-01", None), ("spare-02", None))
    takes = {m.name: assign(INTENT, live, m.name).take for m in live if m.role is None}
    assert takes == {"spare-01": "logsump", "spare-02": "proxy", "spare-03": "web"}
    shuffled = list(reversed(live))
    assert {n: assign(INTENT, shuffled, n).take for n in takes} == takes


def test_the_most_depleted_role_is_filled_first() -> None:
    live = view(("web-01", "web"), ("web-02", "web"), ("logsump-01", "logsump"), ("spare-01", None))
    assert short_slots(INTENT, live) == ["proxy", "web"]  # proxy 0/1 before web 2/3
    assert assign(INTENT, live, "spare-01").take == "proxy"


def test_an_over_filled_role_steps_down_its_newest_holder() -> None:
    live = view(("web-01", "web", 50.0), ("web-02", "web", 10.0), ("web-03", "web", 20.0),
                ("spare-01", "web", 30.0))
    assert assign(INTENT, live, "web-01").step_down  # joined last (the returning node)
    assert not any(assign(INTENT, live, n).step_down for n in ("web-02", "web-03", "spare-01"))


def test_equal_role_since_is_broken_by_name() -> None:
    live = view(("web-01", "web", 5.0), ("web-02", "web", 5.0), ("web-03", "web", 5.0),
                ("web-04", "web", 5.0))
    assert [n for n in ("web-01", "web-02", "web-03", "web-04")
            if assign(INTENT, live, n).step_down] == ["web-04"]


def test_roles_the_intent_does_not_count_are_left_alone() -> None:
    live = view(("cache-01", "cache"), ("spare-01", None))
    assert not assign(INTENT, live, "cache-01").step_down
    assert shortfall(INTENT, live) == {"proxy": 1, "web": 3, "logsump": 1}


def test_a_slot_already_claimed_by_another_node_is_not_offered_again() -> None:
    live = HEALTHY_BUT_ONE_WEB
    assert assign(INTENT, live, "spare-01", {"spare-02": "web"}).take is None


def reconciler(name: str) -> Reconciler:
    return Reconciler(name, claim_window=0.1, claim_ttl=1.0)


def test_a_claim_is_confirmed_after_the_window_and_then_differentiates() -> None:
    r = reconciler("spare-01")
    first = r.tick(0.0, INTENT, HEALTHY_BUT_ONE_WEB)
    assert first.send_claim == "web" and first.differentiate is None
    assert r.tick(0.05, INTENT, HEALTHY_BUT_ONE_WEB).differentiate is None
    assert r.tick(0.1, INTENT, HEALTHY_BUT_ONE_WEB).differentiate == "web"


def test_concurrent_claims_for_one_slot_are_won_by_the_lowest_name() -> None:
    one, two = reconciler("spare-01"), reconciler("spare-02")
    # spare-02 has not heard spare-01 yet: each believes it is the first spare.
    blind = [m for m in HEALTHY_BUT_ONE_WEB if m.name != "spare-01"]
    assert one.tick(0.0, INTENT, HEALTHY_BUT_ONE_WEB).send_claim == "web"
    assert two.tick(0.0, INTENT, blind).send_claim == "web"
    one.hear_claim(Claim("spare-02", "web", 1, 0.01))
    two.hear_claim(Claim("spare-01", "web", 1, 0.01))
    lost = two.tick(0.05, INTENT, blind)
    assert lost.withdraw == "web" and "spare-01" in lost.reason
    assert one.tick(0.1, INTENT, HEALTHY_BUT_ONE_WEB).differentiate == "web"
    assert two.tick(0.1, INTENT, blind).differentiate is None


def test_two_claims_for_a_role_short_by_two_both_proceed() -> None:
    live = view(("web-01", "web"), ("spare-01", None), ("spare-02", None))
    intent = {"web": 3}
    one, two = reconciler("spare-01"), reconciler("spare-02")
    assert one.tick(0.0, intent, live).send_claim == "web"
    assert two.tick(0.0, intent, live).send_claim == "web"
    one.hear_claim(Claim("spare-02", "web", 1, 0.0))
    two.hear_claim(Claim("spare-01", "web", 1, 0.0))
    assert one.tick(0.1, intent, live).differentiate == "web"
    assert two.tick(0.1, intent, live).differentiate == "web"


def test_a_claim_withdraws_when_the_role_is_no_longer_short() -> None:
    r = reconciler("spare-01")
    r.tick(0.0, INTENT, HEALTHY_BUT_ONE_WEB)
    filled = [*HEALTHY_BUT_ONE_WEB, LiveMember("web-01", "web", 99.0)]
    assert r.tick(0.05, INTENT, filled).withdraw == "web"


def test_a_heard_claim_expires_when_its_claimant_falls_silent() -> None:
    r = reconciler("spare-01")
    r.hear_claim(Claim("spare-02", "web", 1, 0.0))
    assert r.tick(0.5, INTENT, HEALTHY_BUT_ONE_WEB).send_claim is None
    assert r.tick(1.5, INTENT, HEALTHY_BUT_ONE_WEB).send_claim == "web"


def test_hearing_the_same_claim_again_changes_nothing() -> None:
    r = reconciler("spare-02")
    for _ in range(3):
        r.hear_claim(Claim("spare-01", "web", 1, 0.0))
    assert len(r.active_claims(0.0)) == 1
    r.forget("spare-01", "proxy")  # a withdrawal of another role: not this claim
    assert len(r.active_claims(0.0)) == 1
    r.forget("spare-01")
    assert r.active_claims(0.0) == []


# -- a simulated network of spares ------------------------------------------------------------


@dataclass
class Spare:
    name: str
    reconciler: Reconciler
    role: str | None = None
    role_since: float = 0.0
    became: list[float] = field(default_factory=list)


def simulate(seed: int, spares: int, short: int, max_delay: float, duplicate: float,
             window: float = 0.1, tick: float = 0.05, horizon: float = 2.0) -> list[Spare]:
    """Spares reconcile every ``tick`` (random phases) over views built from messages that
    arrive after a random delay up to ``max_delay``, some of them two or three times."""
    rng = random.Random(seed)
    holders = [LiveMember(f"web-{i:02d}", "web", 0.0) for i in range(3 - short)]
    nodes = [Spare(f"spare-{i:02d}", Reconciler(f"spare-{i:02d}", window, 5 * window + 1.0))
             for i in range(spares)]
    # What each node has heard of each other node's role, and when news arrives.
    heard: dict[tuple[str, str], tuple[str | None, float]] = {}
    inbox: list[tuple[float, str, str, str, object]] = []  # (due, to, kind, from, payload)

    def broadcast(now: float, sender: Spare, kind: str, payload: object) -> None:
        for other in nodes:
            if other is not sender:
                copies = 1 + (rng.random() < duplicate) * 2
                for _ in range(copies):
                    due = now + rng.uniform(0, max_delay)
                    inbox.append((due, other.name, kind, sender.name, payload))

    phases = {n.name: rng.uniform(0, tick) for n in nodes}
    for n in nodes:  # initial heartbeats: everyone a spare, known after a delay
        broadcast(0.0, n, "heartbeat", (None, 0.0))
    now = 0.0
    while now < horizon:
        now += 0.005
        for item in sorted(i for i in inbox if i[0] <= now):
            inbox.remove(item)
            _, to, kind, sender, payload = item
            target = next(n for n in nodes if n.name == to)
            if kind == "heartbeat":
                heard[(to, sender)] = payload  # type: ignore[assignment]
                if payload[0] is not None:  # type: ignore[index]
                    target.reconciler.forget(sender)
            elif kind == "claim":
                target.reconciler.hear_claim(Claim(sender, payload, 1, now))  # type: ignore[arg-type]
            elif kind == "withdraw":
                target.reconciler.forget(sender, payload)  # type: ignore[arg-type]
        for n in nodes:
            if int((now - phases[n.name]) / tick) == int((now - 0.005 - phases[n.name]) / tick):
                continue
            live = [*holders, LiveMember(n.name, n.role, n.role_since)]
            live += [LiveMember(o.name, *heard[(n.name, o.name)]) for o in nodes
                     if o is not n and (n.name, o.name) in heard]
            decision = n.reconciler.tick(now, {"web": 3}, live)
            if decision.send_claim:
                broadcast(now, n, "claim", decision.send_claim)
            if decision.withdraw:
                broadcast(now, n, "withdraw", decision.withdraw)
            if decision.differentiate:
                n.role, n.role_since = decision.differentiate, now
                n.became.append(now)
            elif decision.step_down:
                n.role, n.role_since = None, now
            if decision.differentiate or decision.step_down or int(now / tick) % 2 == 0:
                broadcast(now, n, "heartbeat", (n.role, n.role_since))
    return nodes


@settings(deadline=None, max_examples=60)
@given(seed=st.integers(0, 10**6), spares=st.integers(2, 4), short=st.integers(1, 2),
       duplicate=st.floats(0.0, 1.0))
def test_spares_never_both_take_one_slot_when_messages_arrive_within_half_the_window(
    seed, spares, short, duplicate
) -> None:
    nodes = simulate(seed, spares, short, max_delay=0.045, duplicate=duplicate)
    takers = [n for n in nodes if n.became]
    assert len(takers) == short  # every short slot filled, by exactly one spare each
    assert all(len(n.became) == 1 for n in takers)  # and nobody took one and gave it back


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 10**6), spares=st.integers(2, 3))
def test_a_slot_doubled_by_very_late_messages_is_undone_by_the_newest_stepping_down(
    seed, spares
) -> None:
    nodes = simulate(seed, spares, short=1, max_delay=0.4, duplicate=0.5, horizon=4.0)
    assert sum(1 for n in nodes if n.role == "web") == 1


def test_with_delays_past_the_window_both_may_take_the_slot_but_the_newer_gives_it_back() -> None:
    nodes = simulate(0, 2, short=1, max_delay=0.4, duplicate=0.5, horizon=4.0)
    assert all(n.became for n in nodes)  # this seed's delays let both spares take the slot
    assert [n.name for n in nodes if n.role == "web"] == ["spare-01"]  # the older kept it


def test_only_the_larger_side_of_a_split_holds_the_majority() -> None:
    nodes = [f"n{i}" for i in range(7)]
    big, small = nodes[:4], nodes[4:]
    assert all(holds_majority(me, [n for n in big if n != me], small) for me in big)
    assert not any(holds_majority(me, [n for n in small if n != me], big) for me in small)


def test_an_even_split_goes_to_the_side_holding_the_lowest_name_and_to_one_side_only() -> None:
    left, right = ["a", "d"], ["b", "c"]
    assert holds_majority("a", ["d"], right) and holds_majority("d", ["a"], right)
    assert not holds_majority("b", ["c"], left) and not holds_majority("c", ["b"], left)
    assert holds_majority("solo", [], [])  # alone, nothing unreachable: the whole cluster


@given(st.sets(st.integers(0, 40), min_size=1, max_size=12), st.integers(0, 2**16))
@settings(max_examples=200, deadline=None)
def test_of_any_two_sides_at_most_one_holds_the_majority(ids: set[int], seed: int) -> None:
    names = sorted(f"node-{i:02d}" for i in ids)
    rng = random.Random(seed)
    side = {n for n in names if rng.random() < 0.5}
    other = [n for n in names if n not in side]
    winners = {n for n in names
               if holds_majority(n, [m for m in (side if n in side else other) if m != n],
                                 other if n in side else sorted(side))}
    assert winners and winners in (side, set(other))  # one side, whole, and only one


def test_an_intent_of_a_billion_cells_costs_what_the_spares_can_take() -> None:
    """DNS allows counts up to 999,999,999: every node's reconciler built one slot per missing
    cell on every tick, and ``cellframe status`` did too. The spares take the same slots."""
    live = view(("web-01", "web"), ("spare-01", None), ("spare-02", None))
    huge = {"web": 999_999_999, "proxy": 2}
    assert len(short_slots(huge, live, at_most=len(live) + 1)) == 4 + 2
    assert {assign(huge, live, name).take for name in ("spare-01", "spare-02")} == {"proxy"}
    assert short_slots({"web": 3}, live) == ["web", "web"]  # no cap asked: every missing cell


@pytest.mark.parametrize("bad", ["nan", "inf", "-1", "1e400"])
def test_a_scale_setting_that_is_not_a_finite_load_is_refused(bad: str) -> None:
    """nan passed "in-load < out-load" (every comparison with nan is false), and the cluster
    then never scaled, without a word."""
    for key in ("scale-out-load", "scale-in-load", "scale-out-hold-ms"):
        with pytest.raises(ConfigError, match=key):
            ScaleSettings.from_settings({key: bad})

