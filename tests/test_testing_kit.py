"""The testing kit: the one wait_for, the fake clock, and cellframe's pytest plugin as a user's
project meets it (pytester builds each project and runs pytest on it)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

import pika.exceptions
import pytest

from cellframe.errors import ClusterError
from cellframe.testing import FakeClock, wait_for
from cellframe.testing.amqp import raw_channel
from cellframe.testing.services import require_named

UNREACHABLE_BROKER = "amqp://guest:guest@127.0.0.1:1/%2F"

# -- wait_for ---------------------------------------------------------------------------------


def test_wait_for_returns_the_first_true_value_of_its_condition() -> None:
    values = iter([None, [], ["first"], ["second"]])
    assert wait_for(lambda: next(values), 5) == ["first"]


def test_wait_for_says_what_it_waited_for_and_what_it_saw_last() -> None:
    replies = ["(pong 1)", "(pong 2)"]
    with pytest.raises(ClusterError) as failure:
        wait_for(lambda: len(replies) >= 3, 0.05, what="3 replies", show=lambda: replies)
    assert str(failure.value) == "not true within 0.05 s: 3 replies; last seen: ['(pong 1)', '(pong 2)']"


def test_without_what_or_show_wait_for_names_the_condition_and_its_last_value() -> None:
    def nobody_answered() -> list[str]:
        return []

    with pytest.raises(ClusterError, match=r"^not true within 0.02 s: nobody_answered; last seen: \[\]$"):
        wait_for(nobody_answered, 0.02)
    with pytest.raises(ClusterError, match=r"lambda: len\(\[1\]\) > 1.*; last seen: False$"):
        wait_for(lambda: len([1]) > 1, 0.02)


def test_wait_for_shortens_a_long_last_value() -> None:
    with pytest.raises(ClusterError) as failure:
        wait_for(lambda: None, 0.01, show=lambda: "x" * 10_000)
    assert len(str(failure.value)) < 2_200 and str(failure.value).endswith("(10002 characters)")


# -- the fake clock ---------------------------------------------------------------------------


def test_the_fake_clock_moves_only_when_told_and_never_back() -> None:
    clock = FakeClock(start=10.0)
    assert clock() == clock.now == 10.0
    assert clock.advance(2.5) == 12.5
    clock.sleep(0.5)
    assert (clock(), clock.slept) == (13.0, 0.5)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1)
    assert list(clock.ticks(0.5, 3)) == [13.0, 13.5, 14.0]
    assert clock() == 14.0


# -- the plugin, as a user's project meets it -------------------------------------------------


def test_the_plugin_is_registered_through_the_pytest11_entry_point() -> None:
    found = {e.name: e.value for e in importlib.metadata.entry_points(group="pytest11")}
    assert found.get("cellframe") == "cellframe.testing.plugin"


def test_importing_the_plugin_loads_nothing_but_the_plugin() -> None:
    # pytest imports the plugin in every run of every project that has cellframe installed:
    # pika, dnspython, Hy, lark and the rest of cellframe wait until a fixture needs them.
    code = textwrap.dedent("""
        import sys
        import pytest
        before = set(sys.modules)
        import cellframe.testing.plugin
        new = set(sys.modules) - before
        print(" ".join(sorted(m for m in new if m.split(".")[0] not in sys.stdlib_module_names)))
    """)
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert loaded == ["cellframe", "cellframe.testing", "cellframe.testing.plugin", "lazy_loader"]


LAMP = '''
from cellframe import Cell, Symbol, transition


class Lamp(Cell):
    role = "lamp"
    states = ("off", "on")
    initial = "off"

    @transition("switch-on", source="off", target="on")
    def switch_on(self, brightness: int = 5) -> None:
        self.cell_reply([Symbol("lit"), self.cell_name, brightness])
'''

LAMPS_ZONE = """$ORIGIN lamps.test.
$TTL 5
@         IN SOA ns.lamps.test. hostmaster.lamps.test. ( 1 60 30 600 5 )
          IN NS  ns
ns        IN A   127.0.0.1
_cluster  IN TXT "lamp=1" "heartbeat-ms=100" "failure-timeout-ms=500"
_nodes    IN TXT "lamp-01 spare-01"
lamp-01   IN TXT "role=lamp"
spare-01  IN TXT "rack=r1"
"""


def test_a_project_tests_its_cell_in_process_with_the_outbox_and_a_local_cluster(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(lamp=LAMP)
    (pytester.path / "lamps.zone").write_text(LAMPS_ZONE)
    pytester.makepyfile(test_lamp='''
        from cellframe import Message, RoleRegistry, Symbol, read
        from lamp import Lamp


        def test_alone(recording_outbox):
            lamp = Lamp.start("lamp-01", outbox=recording_outbox)
            try:
                lamp.ask(Message(read("(switch-on 7)"), reply_to="reply.t"), timeout=5)
            finally:
                lamp.stop()
            assert [s.expr for s in recording_outbox.sent] == [[Symbol("lit"), "lamp-01", 7]]


        def test_healed(local_cluster, tmp_path):
            cluster = local_cluster("lamps.zone", registry=RoleRegistry({"lamp": [Lamp]}))
            assert cluster.workdir.parent == tmp_path
            cluster.kill("lamp-01")
            cluster.wait_for(lambda: cluster.holders("lamp") == ["spare-01"], 10)
    ''')
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)


def test_the_local_cluster_fixture_stops_every_node_even_when_the_test_fails(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(lamp=LAMP)
    (pytester.path / "lamps.zone").write_text(LAMPS_ZONE)
    pytester.makepyfile(test_lamp='''
        import pytest
        from cellframe import RoleRegistry
        from lamp import Lamp

        CLUSTERS = []


        def test_fails_half_way(local_cluster):
            CLUSTERS.append(local_cluster("lamps.zone", registry=RoleRegistry({"lamp": [Lamp]})))
            assert False, "the test fails with the cluster running"


        def test_every_node_was_stopped():
            (cluster,) = CLUSTERS
            assert cluster.nodes == {}
    ''')
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)


def test_a_project_drives_a_detector_and_a_watcher_with_the_fake_clock(
        pytester: pytest.Pytester) -> None:
    (pytester.path / "lamps.zone").write_text(LAMPS_ZONE)
    pytester.makepyfile(test_clock='''
        from cellframe import ZoneFileResolver
        from cellframe.config.watchers import ConfigWatcher
        from cellframe.healing.detector import PhiAccrual


        def test_detector(fake_clock):
            detector = PhiAccrual(0.1, 0.05)
            for now in fake_clock.ticks(0.1, 20):
                detector.heartbeat(now)
            assert detector.phi(fake_clock.advance(0.1)) < 1
            assert detector.phi(fake_clock.advance(0.5)) > 8


        def test_watcher_rereads_when_the_ttl_runs_out(fake_clock):
            seen = []
            watcher = ConfigWatcher(ZoneFileResolver("lamps.zone"), "lamp-01",
                                    lambda old, new: seen.append(new.role), clock=fake_clock)
            assert watcher.poll() and seen == ["lamp"]
            fake_clock.advance(4.9)
            assert watcher.seconds_until_due() > 0
            fake_clock.advance(0.1)
            assert watcher.seconds_until_due() == 0


        def test_each_test_has_a_clock_of_its_own(fake_clock):
            assert fake_clock.slept == 0.0 and fake_clock() == 1000.0
    ''')
    pytester.runpytest().assert_outcomes(passed=3)


@pytest.mark.amqp
def test_a_broker_test_gets_an_exchange_and_queues_of_its_own_all_gone_afterwards(
        pytester: pytest.Pytester, amqp_url: str) -> None:
    pytester.makepyfile(lamp=LAMP)
    record = pytester.path / "names.txt"
    pytester.makepyfile(test_broker=f'''
        import pytest
        from cellframe import Client, Node, RoleRegistry, Symbol
        from cellframe.testing import wait_for
        from lamp import Lamp


        @pytest.mark.parametrize("run", [1, 2])
        def test_lamp_on_rabbitmq(amqp_names, run):
            node = Node("lamp-01", transport=amqp_names.connect(), role="lamp",
                        registry=RoleRegistry({{"lamp": [Lamp]}}),
                        queue_prefix=amqp_names.queue_prefix).start()
            client = Client(amqp_names.connect(), queue_prefix=amqp_names.queue_prefix)
            client.send("role.lamp", "(switch-on 3)")
            replies = wait_for(lambda: client.replies, 10)
            assert replies[0].expr == [Symbol("lit"), "lamp-01", 3]
            with open({str(record)!r}, "a") as out:
                out.write(f"{{amqp_names.exchange}} {{amqp_names.queue_prefix}}role.lamp\\n")
            node.stop()
    ''')
    pytester.runpytest("--amqp-uri", amqp_url).assert_outcomes(passed=2)
    runs = [line.split() for line in record.read_text().splitlines()]
    assert len(runs) == 2 and runs[0][0] != runs[1][0], "two tests shared an exchange"
    for exchange, role_queue in runs:
        assert exchange.startswith("cf-test.") and role_queue.startswith("cf-test.")
        assert not _exists(amqp_url, "exchange", exchange), f"{exchange} was left behind"
        assert not _exists(amqp_url, "queue", role_queue), f"{role_queue} was left behind"


def _exists(url: str, kind: str, name: str) -> bool:
    with raw_channel(url) as channel:
        declare = channel.exchange_declare if kind == "exchange" else channel.queue_declare
        try:
            declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as refused:
            assert refused.reply_code == 404, refused
            return False
    return True


BROKER_TEST = '''
def test_needs_the_broker(amqp_names):
    amqp_names.connect()
'''


def test_a_missing_broker_skips_the_test_outside_ci(pytester: pytest.Pytester,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(test_broker=BROKER_TEST)
    result = pytester.runpytest("--amqp-uri", UNREACHABLE_BROKER, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*RabbitMQ at 127.0.0.1:1 is not available*"])


def test_under_ci_a_missing_broker_fails_the_test(pytester: pytest.Pytester,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(test_broker=BROKER_TEST)
    result = pytester.runpytest("--amqp-uri", UNREACHABLE_BROKER)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*RabbitMQ at 127.0.0.1:1 is not available, and CI=true requires it*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.bind
def test_a_project_serves_its_own_zone_from_the_bind_server_fixture(
        pytester: pytest.Pytester) -> None:
    require_named()
    (pytester.path / "lamps.zone").write_text(LAMPS_ZONE)
    pytester.makepyfile(test_dns='''
        from pathlib import Path

        import pytest


        @pytest.fixture(scope="module")
        def bind_zone():
            return Path("lamps.zone").read_text()


        def test_served(bind_server):
            assert bind_server.port != 5353 and bind_server.zone == "lamps.test."
            with bind_server.resolver() as resolver:
                assert resolver.node_config("lamp-01").role == "lamp"
                assert resolver.node_names() == ["lamp-01", "spare-01"]
    ''')
    pytester.runpytest().assert_outcomes(passed=1)


def test_a_project_of_its_own_fixtures_runs_as_if_the_plugin_were_not_there(
        pytester: pytest.Pytester) -> None:
    # Same names as the plugin's: a project's own fixtures win, wherever they are defined.
    pytester.makeconftest('''
        import pytest


        @pytest.fixture
        def fake_clock():
            return "the project's own clock"
    ''')
    pytester.makepyfile(test_mine='''
        import pytest


        @pytest.fixture
        def amqp_url():
            return "not a broker at all"


        def test_own_fixtures(fake_clock, amqp_url):
            assert (fake_clock, amqp_url) == ("the project's own clock", "not a broker at all")
    ''')
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.runpytest("-p", "no:cellframe").assert_outcomes(passed=1)
