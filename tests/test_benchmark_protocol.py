"""benchmarks/protocol.py: the statistics, the orders, the idle check and the result file, on hand-worked values."""

import argparse
import json
import os

import pytest

from benchmarks import protocol


def args(tmp_path, *, reps=5, allow_load=False):
    return argparse.Namespace(reps=reps, allow_load=allow_load, out=str(tmp_path / "result.json"))


@pytest.fixture
def machine(monkeypatch):
    """other_busy_share answers at once (no 3-second sample) with share["value"]; the CPU counters stand
    still, so nobody else was busy during the run."""
    share = {"value": 0.0}
    monkeypatch.setattr(protocol, "IDLE_WAIT_SECONDS", 0.0)
    monkeypatch.setattr(protocol, "other_busy_share", lambda seconds=0.0: share["value"])
    monkeypatch.setattr(protocol, "_cpu_times", lambda: (100.0, 1000.0))
    return share


def test_spread_is_median_min_max_of_the_values():
    s = protocol.spread([3, 1, 2, 10, 4])
    assert (s["median"], s["min"], s["max"], s["n"]) == (3, 1, 10, 5)
    assert s["values"] == [3.0, 1.0, 2.0, 10.0, 4.0]  # in the order measured
    assert protocol.spread([4, 1, 2, 3])["median"] == 2.5
    with pytest.raises(ValueError):
        protocol.spread([])


def test_ratio_spread_pairs_values_of_the_same_repetition():
    # Per-repetition ratios 2/1, 6/2, 4/4 = 2, 3, 1: median 2 (the ratio of the medians would be 4/2 = 2 too,
    # but the spread 1..3 only comes from pairing).
    s = protocol.ratio_spread([2, 6, 4], [1, 2, 4])
    assert s["values"] == [2.0, 3.0, 1.0]
    assert (s["median"], s["min"], s["max"]) == (2.0, 1.0, 3.0)
    with pytest.raises(ValueError):
        protocol.ratio_spread([1, 2], [1])


def test_fmt_spread():
    assert protocol.fmt_spread(protocol.spread([3, 1, 2, 10, 4])) == "3 (1..10)"
    assert protocol.fmt_spread(protocol.spread([0.25, 0.5]), "{:.0f}", scale=1000) == "375 (250..500)"


def test_orders_rotate_first_then_shuffle_deterministically():
    variants = ["a", "b", "c"]
    out = protocol.orders(variants, 8)
    assert len(out) == 8
    assert all(sorted(order) == variants for order in out)  # every repetition times every variant once
    assert out[:3] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]  # each variant first once
    assert out == protocol.orders(variants, 8)  # seeded: the same orders every run
    assert out[:3] == protocol.orders(variants, 3)
    assert protocol.orders(variants, 8, seed=1)[:3] == out[:3]
    shuffles = [protocol.orders(variants, 20, seed=seed)[3:] for seed in (0, 1)]
    assert shuffles[0] != shuffles[1]
    assert len({tuple(order) for order in shuffles[0]}) > 1  # not one fixed order repeated
    assert protocol.orders(["x"], 5) == [["x"]] * 5
    assert variants == ["a", "b", "c"]  # the caller's list is left alone


def test_run_refuses_fewer_than_five_repetitions_without_allow_load(tmp_path, machine):
    with pytest.raises(SystemExit, match="--reps 3"):
        protocol.Run("demo", args(tmp_path, reps=3), argv=[])
    protocol.Run("demo", args(tmp_path, reps=3, allow_load=True), argv=[], print_fn=lambda *a, **k: None)


def test_run_refuses_a_busy_machine(tmp_path, machine):
    machine["value"] = 0.9
    with pytest.raises(protocol.MachineBusy, match="--allow-load"):
        protocol.Run("demo", args(tmp_path), argv=[], print_fn=lambda *a, **k: None)


def test_a_run_under_load_says_so_in_its_result(tmp_path, machine):
    machine["value"] = 0.9
    run = protocol.Run("demo", args(tmp_path, allow_load=True), argv=["--allow-load"], print_fn=lambda *a, **k: None)
    result = run.write(title="t", about="a", table={"columns": ["x"], "rows": [["1"]]}, results={})
    assert result["under_load"] is True
    with open(tmp_path / "result.json") as f:
        written = json.load(f)
    assert written["under_load"] is True
    assert written["load"]["allow_load"] is True
    assert written["load"]["other_busy_share_before"] == 0.9


def test_write_writes_the_result_atomically(tmp_path, machine):
    printed = []
    run = protocol.Run("demo", args(tmp_path), argv=["--reps", "5"], print_fn=lambda *a, **k: printed.append(a))
    table = {"columns": ["variant", "time, ms"], "rows": [["a", "1 (1..2)"]]}
    run.write(title="A title", about="What and why.", table=table, results={"a": protocol.spread([1, 2, 1])},
              notes=["one note"], headline="A is fast.")
    assert os.listdir(tmp_path) == ["result.json"]  # no .tmp file left behind
    with open(tmp_path / "result.json") as f:
        result = json.load(f)
    for key in ("benchmark", "title", "about", "headline", "command", "date", "git", "machine", "versions", "load",
                "under_load", "reps", "table", "notes", "results"):
        assert key in result, key
    assert result["benchmark"] == "demo"
    assert result["title"] == "A title"
    assert result["command"].endswith(" --reps 5")
    assert result["git"]["commit"]
    assert isinstance(result["git"]["dirty_files"], list)
    assert result["machine"]["cpu"] and result["machine"]["cores"] == os.cpu_count()
    assert "numpy" in result["versions"]
    assert len(result["load"]["loadavg_before"]) == 3 and len(result["load"]["loadavg_after"]) == 3
    assert result["load"]["other_busy_share_during"] == 0.0
    assert result["under_load"] is False
    assert result["reps"] == 5
    assert result["table"] == table
    assert result["notes"] == ["one note"]
    assert result["results"]["a"]["median"] == 1.0
    assert "wrote" in printed[-1][0]


def test_an_untimed_benchmark_runs_once_on_a_busy_machine_and_is_not_a_note(tmp_path, machine):
    parser = argparse.ArgumentParser()
    protocol.add_arguments(parser, name="scores", timed=False)
    parsed = parser.parse_args(["--out", str(tmp_path / "result.json")])
    assert (parsed.reps, parsed.timed) == (1, False)
    with pytest.raises(SystemExit):  # nothing to repeat: no --reps, no --allow-load
        parser.parse_args(["--reps", "5"])
    machine["value"] = 0.9  # busy: a timed run would refuse (test_run_refuses_a_busy_machine)
    run = protocol.Run("scores", parsed, argv=[], print_fn=lambda *a, **k: None)
    result = run.write(title="t", about="a", table={"columns": ["x"], "rows": [["1"]]}, results={})
    assert result["timed"] is False and result["under_load"] is False and result["reps"] == 1
    assert result["load"]["other_busy_share_before"] == 0.9  # recorded all the same
