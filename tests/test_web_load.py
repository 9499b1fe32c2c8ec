"""A web cell's load and weight: measured where requests pass, decided with hysteresis."""

from __future__ import annotations

import pytest

from cellframe.errors import ConfigError, HaproxyUnreachableError
from cellframe.testing import FakeClock
from cellframe.web import HaproxyPool, HaproxyRuntime, LoadMeter, LoadSample, WeightPolicy, load_app


def sample(p95: float, requests: int = 100) -> LoadSample:
    return LoadSample(in_flight=1, requests=requests, rate=requests, p50_ms=p95 / 2, p95_ms=p95,
                      p99_ms=p95, cpu=0.1)


def test_the_weight_falls_in_proportion_above_slow_ms_and_stays_inside_the_band() -> None:
    policy = WeightPolicy(base=10, slow_ms=100, fast_ms=50)
    assert policy.decide(sample(200)) == 5
    assert policy.decide(sample(80)) == 5  # inside the band: no change, no flapping
    assert policy.decide(sample(99)) == 5
    assert policy.decide(sample(49)) == 10  # back under fast-ms: the base weight


def test_the_weight_never_rises_while_still_slow_and_is_at_least_one() -> None:
    policy = WeightPolicy(base=10, slow_ms=100, fast_ms=50)
    assert policy.decide(sample(400)) == 2
    assert policy.decide(sample(150)) == 2
    assert policy.decide(sample(100_000)) == 1


def test_an_idle_cell_asks_for_its_base_weight() -> None:
    policy = WeightPolicy(base=10, slow_ms=100, fast_ms=50, weight=3)
    assert policy.decide(LoadSample(0, 0, 0.0, 0.0, 0.0, 0.0, 0.0)) == 10


def test_fast_ms_above_slow_ms_is_refused() -> None:
    with pytest.raises(ValueError, match="fast-ms"):
        WeightPolicy(base=10, slow_ms=10, fast_ms=20)


def test_the_meter_counts_in_flight_and_latency_over_its_window() -> None:
    clock = FakeClock()
    seen: list[int] = []

    def app(environ, start_response):
        seen.append(meter.in_flight)
        clock.advance(environ["took"])
        start_response("200 OK", [])
        return [b"ok"]

    meter = LoadMeter(app, window=1.0, clock=clock)
    for took in (0.01, 0.02, 0.3):
        assert meter({"took": took}, lambda *a: None) == [b"ok"]
    assert seen == [1, 1, 1] and meter.in_flight == 0 and meter.total == 3
    load = meter.sample()
    assert load.requests == 3 and load.p50_ms == pytest.approx(20) and load.p99_ms == pytest.approx(300)
    clock.advance(1.5)
    assert meter.sample().requests == 0


def test_an_app_that_cannot_be_imported_is_a_config_error_that_says_why() -> None:
    with pytest.raises(ConfigError, match="cannot import no_such_package_anywhere"):
        load_app("no_such_package_anywhere.app:app")
    with pytest.raises(ConfigError, match="package.module:attribute"):
        load_app("tests.web_apps")
    with pytest.raises(ConfigError, match="no callable 'nothing'"):
        load_app("tests.web_apps:nothing")
    assert callable(load_app("tests.web_apps:app"))


def test_an_unreachable_haproxy_backs_off_exponentially_and_keeps_what_is_wanted(tmp_path) -> None:
    pool = HaproxyPool(HaproxyRuntime(str(tmp_path / "no.sock")), backoff_base=0.1, backoff_max=0.5)
    pool.put("web-01", "127.0.0.1", 8081, 10)
    retries = []
    now = 0.0
    for _ in range(5):
        assert not pool.sync(now)
        retries.append(round(pool.retry_at - now, 3))
        assert not pool.sync(now)  # not due yet: not even tried
        now = pool.retry_at
    assert retries == [0.1, 0.2, 0.4, 0.5, 0.5]
    status = pool.status(now)
    assert status["failures"] == 5 and not status["reachable"] and status["servers"] == 1
    pool.set_weight("web-01", 3)
    assert pool.wanted["web-01"].weight == 3


def test_the_runtime_translates_socket_errors(tmp_path) -> None:
    with pytest.raises(HaproxyUnreachableError, match="did not answer 'show info'"):
        HaproxyRuntime(str(tmp_path / "no.sock")).pid()


def test_a_slot_a_spare_cannot_play_goes_to_the_next_spare_by_name() -> None:
    from cellframe.healing.reconciler import LiveMember, assign

    live = [LiveMember("spare-01", None), LiveMember("spare-02", None), LiveMember("p", "proxy")]
    intent = {"web": 1, "proxy": 1}
    assert assign(intent, live, "spare-01").take == "web"
    assert assign(intent, live, "spare-02").take is None
    unable = {"spare-01": {"web"}}
    assert assign(intent, live, "spare-01", unable=unable).take is None
    assert assign(intent, live, "spare-02", unable=unable).take == "web"


def member(name: str, role: str | None, load: float | None = None):
    from cellframe.healing.reconciler import LiveMember

    return LiveMember(name, role, 0.0, load)


def test_sustained_load_above_the_threshold_adds_one_cell_and_idleness_gives_it_back() -> None:
    from cellframe.healing.capacity import CapacityPlanner, ScaleSettings

    planner = CapacityPlanner(ScaleSettings(out_load=0.8, in_load=0.3, out_hold=2, in_hold=5))
    busy = [member("w1", "web", 1.2), member("w2", "web", 1.0), member("s1", None)]
    assert planner.plan(0, {"web": 2}, {"web": (2, 4)}, busy) == ({"web": 2}, [])
    assert planner.plan(1.9, {"web": 2}, {"web": (2, 4)}, busy) == ({"web": 2}, [])
    wanted, moves = planner.plan(2.0, {"web": 2}, {"web": (2, 4)}, busy)
    assert wanted == {"web": 3} and [(m.before, m.after) for m in moves] == [(2, 3)]
    assert "above 0.8 for 2.0 s" in moves[0].reason
    # Still filling (two holders for three): no further move, however long the load lasts.
    assert planner.plan(10, {"web": 2}, {"web": (2, 4)}, busy)[0] == {"web": 3}
    idle = [member("w1", "web", 0.1), member("w2", "web", 0.0), member("s1", "web", 0.1)]
    assert planner.plan(11, {"web": 2}, {"web": (2, 4)}, idle) == ({"web": 3}, [])
    wanted, moves = planner.plan(16, {"web": 2}, {"web": (2, 4)}, idle)
    assert wanted == {"web": 2} and moves[0].after == 2
    assert planner.plan(100, {"web": 2}, {"web": (2, 4)}, idle[:2])[0] == {"web": 2}  # the minimum


def test_a_load_between_the_thresholds_moves_nothing_and_a_short_burst_neither() -> None:
    from cellframe.healing.capacity import CapacityPlanner, ScaleSettings

    planner = CapacityPlanner(ScaleSettings(out_load=0.8, in_load=0.3, out_hold=2, in_hold=5))
    ranges = {"web": (1, 3)}
    spare = member("s1", None)
    for t in range(0, 30):
        assert planner.plan(t, {"web": 1}, ranges, [member("w1", "web", 0.5), spare])[1] == []
    planner.plan(30, {"web": 1}, ranges, [member("w1", "web", 2.0), spare])
    planner.plan(31, {"web": 1}, ranges, [member("w1", "web", 0.5), spare])  # the burst ends
    assert planner.plan(33, {"web": 1}, ranges, [member("w1", "web", 2.0), spare])[1] == []


def test_a_count_no_spare_can_fill_falls_back_to_the_holders() -> None:
    from cellframe.healing.capacity import CapacityPlanner

    planner = CapacityPlanner(want={"web": 4})
    assert planner.plan(0, {"web": 2}, {"web": (2, 6)}, [member("w1", "web", 0.5),
                                                         member("w2", "web", 0.5),
                                                         member("w3", "web", 0.5)])[0] == {"web": 3}


def test_a_range_in_the_intent_gives_its_minimum_as_the_count() -> None:
    from cellframe.config.txtconfig import ClusterIntent

    intent = ClusterIntent.from_settings({"web": "3..6", "proxy": "1", "bad": "5..2",
                                          "scale-out-load": "0.9"})
    assert intent.roles == {"web": 3, "proxy": 1} and intent.ranges == {"web": (3, 6)}
    assert intent.settings == {"scale-out-load": "0.9"}
    assert any("'bad'" in w for w in intent.warnings)
