"""Cutting connections on the real RabbitMQ, as a broker restart or a network cut would.

Connections are closed broker-side by their client-provided name (``rabbitmqctl eval``), which
touches only this test's connections, not other engineers'. The per-test topology itself
(unique names, cleanup) comes from the plugin's ``amqp_names`` fixture.
"""

from __future__ import annotations

import subprocess

__all__ = ["close_connections"]

# One rabbitmqctl call for several names: each call starts an Erlang VM (0.6 s idle, seconds
# on a busy machine), so listing the connections and then closing each one took 2 to 6 s
# here. Another client's connection may be half open (its client properties are still
# `none`) or gone by the time it is asked about: either way it is not ours (this once failed
# the run while other clients churned).
_CLOSE_NAMED = """
Names = [{names}],
Named = fun(P) ->
    try case lists:keyfind(<<"connection_name">>, 1, proplists:get_value(client_properties,
                 rabbit_networking:connection_info(P, [client_properties]), [])) of
            {{_, longstr, N}} -> lists:member(N, Names); _ -> false end
    catch _:_ -> false end end,
Mine = [P || P <- rabbit_networking:connections(), Named(P)],
[rabbit_networking:close_connection(P, "test") || P <- Mine],
length(Mine).
"""


def close_connections(*names: str, expect: int | None = None) -> None:
    """Close, broker-side, the connections carrying these names: ``expect`` of them (default:
    one per name)."""
    erlang = ", ".join(f'<<"{name}">>' for name in names)
    out = subprocess.run(["rabbitmqctl", "eval", _CLOSE_NAMED.format(names=erlang)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    wanted = len(names) if expect is None else expect
    assert out.strip() == str(wanted), f"closed {out.strip()} connections of {names}, " \
                                       f"expected {wanted}"
