"""`cellframe bench` runs its comparisons and reports ratios, not errors (it catches a broken
benchmark so the others still print: this is where such a break shows)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def bench(*keys: str, timeout: float = 300) -> dict:
    only = [arg for key in keys for arg in ("--only", key)]
    done = subprocess.run([sys.executable, "-m", "cellframe", "bench", "--quick", "--json", *only],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_bench_prints_the_language_and_cell_ratios_as_json() -> None:
    results = bench("read_eval_vs_lark_parse", "cell_dispatch_vs_pykka_tell")
    assert set(results) == {"read_eval_vs_lark_parse", "cell_dispatch_vs_pykka_tell"}
    for figures in results.values():
        assert "error" not in figures
        assert figures["ratio"] > 0
    language = results["read_eval_vs_lark_parse"]
    assert language["read_eval_per_s"] > 0 and language["lark_parse_per_s"] > 0
    assert language["read_eval_lark_only_per_s"] > 0  # the same work with lark parsing all


def test_bench_measures_durable_cells_against_the_store_and_their_recovery() -> None:
    results = bench("durable_cell_vs_store_pipelined", "durable_cell_recovery",
                    "durable_cell_on_shards_vs_shard_inserts")
    durable = results["durable_cell_vs_store_pipelined"]
    assert "error" not in durable and durable["durable_cell_per_s"] > 0
    assert results["durable_cell_recovery"]["recovery_s"] > 0
    on_shards = results["durable_cell_on_shards_vs_shard_inserts"]
    assert "error" not in on_shards, on_shards
    assert on_shards["durable_cell_per_s"] > 0 and on_shards["recovery_s"] > 0


def test_a_noisy_comparison_reports_its_median_run_and_every_ratio() -> None:
    from cellframe.benchmarks.comparisons import _median_of

    runs = iter([{"ratio": 0.6, "run": 1}, {"ratio": 0.4, "run": 2}, {"ratio": 0.5, "run": 3}])
    figures = _median_of(3, lambda: next(runs))
    assert figures == {"ratio": 0.5, "run": 3, "ratio_runs": [0.6, 0.4, 0.5]}


@pytest.mark.amqp
def test_bench_measures_the_control_pipeline_against_raw_pika_on_rabbitmq(amqp_url: str) -> None:
    figures = bench("control_pipeline_vs_raw_pika")["control_pipeline_vs_raw_pika"]
    assert "error" not in figures, figures
    assert figures["pipeline_per_s"] > 0 and figures["raw_end_to_end_per_s"] > 0
    assert figures["via"] == "cell"  # transient, like the baseline's messages
    assert figures["ratio"] == pytest.approx(figures["pipeline_per_s"] / figures["raw_end_to_end_per_s"],
                                             abs=0.01)
    assert figures["ratio_runs"] == [figures["ratio"]]  # --quick: one run


def test_bench_times_import_cellframe_against_import_pykka_in_new_interpreters() -> None:
    figures = bench("import_vs_pykka")["import_vs_pykka"]
    assert "error" not in figures
    assert figures["pykka_ms"] > 0 and figures["cellframe_ms"] > 0 and figures["cell_and_node_ms"] > 0
    assert figures["ratio"] == round(figures["cellframe_ms"] / figures["pykka_ms"], 2)


@pytest.mark.postgres
def test_bench_measures_inserts_through_pgbouncer_against_one_master_or_says_why_not() -> None:
    from cellframe.benchmarks.postgres import missing_programs

    figures = bench("pgbouncer_inserts_vs_direct")["pgbouncer_inserts_vs_direct"]
    assert "error" not in figures, figures
    if missing_programs() is not None:
        assert figures["skipped"] == missing_programs()
        return
    assert figures["pgbouncer_per_s"] > 0 and figures["direct_one_master_per_s"] > 0
    assert figures["ratio"] == pytest.approx(
        figures["pgbouncer_per_s"] / figures["direct_one_master_per_s"], abs=0.01)


@pytest.mark.amqp
def test_bench_measures_the_traced_pipeline_with_every_span_exported(amqp_url: str) -> None:
    pytest.importorskip("opentelemetry.sdk")
    figures = bench("traced_pipeline_vs_raw_pika")["traced_pipeline_vs_raw_pika"]
    assert "error" not in figures, figures
    assert figures["traced"] is True and figures["sample"] == 1.0
    assert figures["spans"] >= 3 * 5_000  # send, deliver and apply of every message
    assert figures["pipeline_per_s"] > 0 and figures["ratio"] > 0


def test_bench_measures_http_through_haproxy_to_web_cells_against_plain_waitress() -> None:
    from cellframe.testing.services import in_ci

    figures = bench("http_through_haproxy_vs_plain")["http_through_haproxy_vs_plain"]
    assert "error" not in figures, figures
    if "skipped" in figures:
        assert not in_ci(), figures  # .ci/run installs haproxy and wrk, and dev installs waitress
        return
    assert figures["cellframe_rps"] > 0 and figures["plain_rps"] > 0
    assert figures["load_generator"] == "wrk -t1" and figures["goal"] == ">= 0.8"


def test_a_bench_run_that_fails_against_a_node_process_says_what_the_node_said_last(
        amqp_url: str) -> None:
    from cellframe.benchmarks.pipeline import _counting_node
    from cellframe.errors import CellframeError

    with pytest.raises(CellframeError) as failed:
        with _counting_node(amqp_url, in_process=False) as node:
            assert node.pid is not None
            raise TimeoutError("no call-back")  # the node is stopped, and says goodbye
    said = str(failed.value)
    assert said.startswith("TimeoutError: no call-back; the node's last output"), said
    assert "stopping" in said.lower() or "stopped" in said.lower(), said
