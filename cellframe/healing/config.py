"""How a cluster heals: the timing of heartbeats, detection and healing (``HealingConfig``),
from code or from the cluster's DNS settings (``healing.*``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["HealingConfig"]


@dataclass(frozen=True)
class HealingConfig:
    """Timing of heartbeats, detection and healing. ``None`` fields derive from the interval.

    DNS may set them: ``heartbeat-ms`` and ``failure-timeout-ms`` (the acceptable pause) at
    ``_cluster``, the rest as ``healing.<name>`` (e.g. ``healing.down-phi=10``); a node's own
    TXT records override ``_cluster``; arguments given in code override both.
    """

    heartbeat_interval: float = 0.1
    acceptable_pause: float = 0.5
    suspect_phi: float = 3.0
    down_phi: float = 8.0
    min_std: float | None = None  # default: half the heartbeat interval
    window: int = 100
    claim_window: float | None = None  # default: two heartbeat intervals
    reconcile_period: float | None = None  # warm-up before acting; default max(1 s, 3 intervals)
    hold_base: float = 1.0
    hold_cap: float = 30.0
    flap_memory: float = 60.0
    reconcile: bool = True
    pause_gap: float | None = None  # own tick late by more: doubt; default 3 intervals
    rejoin_grace: float = 10.0  # a doubted member unheard for this long is judged again
    watchers: int = 0  # k > 0: each node is watched by k others (the watch ring); 0: by all
    broker_confirm: float | None = None  # queue gone this long before it counts; 3 intervals
    #: In the watch ring, each announce and down this node broadcasts is sent again on its
    #: next ``ceil(repeat_factor * log10(n))`` ticks (SWIM's lambda log n): a node that lost
    #: every copy (loss**(repeats + 1)) is the only one that never learns. 0: sent once.
    repeat_factor: float = 1.0
    #: Keep-majority: a node whose view holds no more than half of the members it knew (the
    #: live ones and those found down by silence alone in the last ``majority_memory``
    #: seconds; a tie goes to the side with the lowest name) claims nothing and steps nobody
    #: down (``cellframe.healing.majority``).
    majority_memory: float = 30.0

    @property
    def broker_confirm_s(self) -> float:
        """How long a member's queue must stay gone before a returned probe declares it down:
        a node whose broker node died fails over and re-declares its queue meanwhile (0.2 s
        measured on the 3-node cluster), and is no more dead than before."""
        if self.broker_confirm is not None:
            return self.broker_confirm
        return 3 * self.heartbeat_interval

    @property
    def pause_gap_s(self) -> float:
        return self.pause_gap if self.pause_gap is not None else 3 * self.heartbeat_interval

    @property
    def fence_gap_s(self) -> float:
        """A pause past which peers may have declared this node down: it fences its role
        cells and refutes. Below the acceptable pause no peer's phi can reach ``down_phi``
        (the silence they see is the pause plus at most an interval)."""
        return max(self.acceptable_pause, self.pause_gap_s)

    @property
    def min_std_s(self) -> float:
        return self.min_std if self.min_std is not None else self.heartbeat_interval / 2

    @property
    def claim_window_s(self) -> float:
        return self.claim_window if self.claim_window is not None else 2 * self.heartbeat_interval

    @property
    def reconcile_period_s(self) -> float:
        if self.reconcile_period is not None:
            return self.reconcile_period
        # Long enough to have heard every running node (3 heartbeats), and at least a second
        # so that nodes of a cold start, launched one after another, are all seen first.
        return max(1.0, 3 * self.heartbeat_interval)

    @classmethod
    def from_settings(cls, *layers: Mapping[str, str], **overrides: Any) -> HealingConfig:
        """Read DNS settings (later layers win), then apply ``overrides``; ConfigError if bad."""
        values: dict[str, Any] = {}
        for settings in layers:
            for key, name, scale in _SETTING_KEYS:
                if key in settings:
                    values[name] = _number(key, settings[key]) * scale
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "watchers" in values:
            values["watchers"] = int(values["watchers"])
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        if not MIN_HEARTBEAT_S <= self.heartbeat_interval <= MAX_HEARTBEAT_S:
            raise ConfigError(f"the heartbeat interval must be from {MIN_HEARTBEAT_S * 1000:g} to "
                              f"{MAX_HEARTBEAT_S * 1000:g} ms, got {self.heartbeat_interval * 1000:g}")
        if not 0 <= self.acceptable_pause <= MAX_PAUSE_S:
            raise ConfigError(f"the acceptable pause must be from 0 to {MAX_PAUSE_S:g} s, got "
                              f"{self.acceptable_pause:g}")
        if not 0 < self.suspect_phi <= self.down_phi:
            raise ConfigError(f"need 0 < suspect-phi <= down-phi, got {self.suspect_phi}"
                              f" and {self.down_phi}")


#: Heartbeat intervals accepted: a node heartbeating every microsecond (heartbeat-ms=0.001 in
#: DNS) spent half a core on it and flooded its own membership cell; one every 1e300 ms never
#: heartbeats at all.
MIN_HEARTBEAT_S, MAX_HEARTBEAT_S = 0.01, 60.0
#: The longest acceptable pause: past an hour a hung node is, for healing, never found.
MAX_PAUSE_S = 3600.0

_SETTING_KEYS = (
    ("heartbeat-ms", "heartbeat_interval", 0.001),
    ("failure-timeout-ms", "acceptable_pause", 0.001),
    ("healing.heartbeat-ms", "heartbeat_interval", 0.001),
    ("healing.failure-timeout-ms", "acceptable_pause", 0.001),
    ("healing.suspect-phi", "suspect_phi", 1.0),
    ("healing.down-phi", "down_phi", 1.0),
    ("healing.claim-window-ms", "claim_window", 0.001),
    ("healing.reconcile-ms", "reconcile_period", 0.001),
    ("healing.hold-ms", "hold_base", 0.001),
    ("healing.pause-gap-ms", "pause_gap", 0.001),
    ("healing.rejoin-grace-ms", "rejoin_grace", 0.001),
    ("healing.watchers", "watchers", 1.0),
    ("healing.broker-confirm-ms", "broker_confirm", 0.001),
    ("healing.repeat-factor", "repeat_factor", 1.0),
    ("healing.majority-memory-ms", "majority_memory", 0.001),
)


def _number(key: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ConfigError(f"setting {key!r}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"setting {key!r}: {text!r} must be a finite number >= 0")
    return value
