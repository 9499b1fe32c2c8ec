"""The phi-accrual detector and the flap damper, driven by a fake clock."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellframe.healing.detector import FlapDamper, PhiAccrual, phi_for


def steady(detector: PhiAccrual, start: float, count: int, interval: float) -> float:
    """Feed ``count`` heartbeats ``interval`` apart from ``start``; return the last time."""
    now = start
    for _ in range(count):
        detector.heartbeat(now)
        now += interval
    return now - interval


def test_phi_is_zero_before_the_first_heartbeat() -> None:
    assert PhiAccrual(0.1, 0.05).phi(123.0) == 0.0


def test_phi_grows_with_silence_and_never_goes_back_down() -> None:
    detector = PhiAccrual(0.1, 0.05)
    last = steady(detector, 0.0, 20, 0.1)
    readings = [detector.phi(last + i * 0.01) for i in range(200)]
    assert readings == sorted(readings)
    assert readings[0] < 0.5 < 8 < readings[-1]


def test_a_heartbeat_on_time_keeps_phi_low() -> None:
    detector = PhiAccrual(0.1, 0.05)
    last = steady(detector, 0.0, 50, 0.1)
    assert detector.phi(last + 0.1) < 0.5


def test_suspicion_and_down_thresholds_are_reached_when_the_bound_says() -> None:
    detector = PhiAccrual(0.1, 0.05, acceptable_pause=0.5)
    last = steady(detector, 0.0, 50, 0.1)
    suspect_after = detector.silence_for(3.0, pause=False)
    down_after = detector.silence_for(8.0)
    # Regular 100 ms heartbeats, std floored at 50 ms: suspicion after about 0.25 s of
    # silence, down (granting the 0.5 s pause) after about 0.86 s.
    assert 0.2 < suspect_after < 0.3
    assert 0.8 < down_after < 0.9
    assert detector.phi(last + suspect_after + 0.001, pause=False) >= 3.0
    assert detector.phi(last + down_after - 0.01) < 8.0 <= detector.phi(last + down_after + 0.001)


def test_the_acceptable_pause_delays_down_by_exactly_the_pause() -> None:
    plain = PhiAccrual(0.1, 0.05)
    patient = PhiAccrual(0.1, 0.05, acceptable_pause=1.0)
    steady(plain, 0.0, 30, 0.1)
    steady(patient, 0.0, 30, 0.1)
    assert patient.silence_for(8.0) == pytest.approx(plain.silence_for(8.0) + 1.0, abs=1e-6)


def test_irregular_heartbeats_widen_the_margin_on_their_own() -> None:
    regular, irregular = PhiAccrual(0.1, 0.01), PhiAccrual(0.1, 0.01)
    steady(regular, 0.0, 100, 0.1)
    rng = random.Random(7)
    now = 0.0
    for _ in range(100):
        irregular.heartbeat(now)
        now += rng.uniform(0.02, 0.4)
    assert irregular.std > regular.std
    assert irregular.silence_for(8.0) > 2 * regular.silence_for(8.0)


def test_the_floor_on_the_standard_deviation_keeps_lateness_of_a_few_ms_harmless() -> None:
    detector = PhiAccrual(0.1, min_std=0.05)
    last = steady(detector, 0.0, 100, 0.1)  # perfectly regular: observed std is 0
    assert detector.std == 0.05
    assert detector.phi(last + 0.13, pause=False) < 1.0


def test_reordered_or_repeated_heartbeat_times_do_not_corrupt_the_history() -> None:
    detector = PhiAccrual(0.1, 0.05)
    last = steady(detector, 0.0, 10, 0.1)
    mean = detector.mean
    detector.heartbeat(0.5)  # older than the last: ignored as an interval
    detector.heartbeat(last)  # the same as the last
    assert detector.mean == pytest.approx(mean)
    assert detector.last == last


def test_the_window_forgets_old_intervals() -> None:
    detector = PhiAccrual(1.0, 0.01, window=10)
    steady(detector, 0.0, 20, 1.0)
    steady(detector, 20.0, 12, 0.1)
    assert detector.mean == pytest.approx(0.1, rel=0.01)


@settings(deadline=None, max_examples=200)
@given(st.floats(-1e6, 1e6), st.floats(-1e3, 1e3), st.floats(1e-6, 1e3))
def test_phi_for_is_finite_or_infinite_but_never_nan_or_negative(elapsed, mean, std) -> None:
    phi = phi_for(elapsed, mean, std)
    assert not math.isnan(phi)
    assert phi >= 0.0 or phi == 0.0


@settings(deadline=None, max_examples=100)
@given(st.lists(st.floats(0.001, 2.0), min_size=2, max_size=60))
def test_phi_is_monotonic_in_silence_for_any_history(intervals) -> None:
    detector = PhiAccrual(0.1, 0.01)
    now = 0.0
    for interval in intervals:
        now += interval
        detector.heartbeat(now)
    readings = [detector.phi(now + k * 0.05) for k in range(100)]
    assert all(a <= b for a, b in zip(readings, readings[1:], strict=False))


def test_the_first_down_costs_no_hold_out() -> None:
    damper = FlapDamper(base=1.0, cap=30.0, memory=60.0)
    assert damper.record_down("web-01", 0.0) == 0.0
    assert not damper.held("web-01", 0.0)


def test_repeated_downs_hold_a_member_out_for_a_doubling_interval_up_to_the_cap() -> None:
    damper = FlapDamper(base=1.0, cap=5.0, memory=600.0)
    holds = [damper.record_down("web-01", float(t)) for t in range(0, 60, 10)]
    assert holds == [0.0, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert damper.held("web-01", 50.5)
    assert not damper.held("web-01", 55.0)


def test_a_member_that_stays_up_long_enough_is_forgiven() -> None:
    damper = FlapDamper(base=1.0, cap=30.0, memory=60.0)
    damper.record_down("web-01", 0.0)
    damper.record_down("web-01", 10.0)
    assert damper.downs("web-01", 10.0) == 2
    assert damper.record_down("web-01", 200.0) == 0.0  # the earlier downs are forgotten
    assert damper.downs("web-01", 200.0) == 1


def test_damping_is_per_member() -> None:
    damper = FlapDamper(base=1.0)
    damper.record_down("web-01", 0.0)
    damper.record_down("web-01", 0.1)
    assert damper.held("web-01", 0.2)
    assert not damper.held("web-02", 0.2)
