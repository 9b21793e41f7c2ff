"""BENCHMARKS.md is rendered from benchmarks/results/*.json (benchmarks/render.py), and says nothing else."""

import json
import os
import shutil

from benchmarks import render

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synthetic_result(**changes) -> dict:
    result = {
        "benchmark": "cold_start",
        "title": "Cold start of the app",
        "about": "From `python -m app` to the first answer.",
        "headline": "The app answers in 5.6 s.",
        "command": "python benchmarks/cold_start.py --reps 5",
        "date": "2025-06-01T10:20:30+00:00",
        "git": {"commit": "abc1234567", "dirty_files": ["app/server.py", "mtmoe/translate.py"]},
        "machine": {"cpu": "AMD EPYC 7B13", "cores": 2},
        "load": {"loadavg_before": [0.15, 0.4, 0.5], "loadavg_after": [1.98, 1.2, 0.7],
                 "other_busy_share_during": 0.021},
        "under_load": False,
        "reps": 5,
        "table": {"columns": ["start", "first answer, s"],
                  "rows": [["first ever", "5.6 (5.4..5.9)"], ["a|b", "4.4 (4.3..4.6)"]]},
        "notes": ["One note.", "Another."],
        "results": {},
    }
    result.update(changes)
    return result


def test_a_section_reads_as_its_result_says():
    text = render.section(synthetic_result(), "cold_start.json")
    assert text.splitlines() == [
        "## Cold start of the app",
        "",
        "From `python -m app` to the first answer.",
        "",
        "| start | first answer, s |",
        "|---|---|",
        "| first ever | 5.6 (5.4..5.9) |",
        "| a\\|b | 4.4 (4.3..4.6) |",
        "",
        "The app answers in 5.6 s.",
        "",
        "- One note.",
        "- Another.",
        "",
        "`python benchmarks/cold_start.py --reps 5`; commit abc1234567 with uncommitted changes to 2 files; "
        "2025-06-01 10:20 UTC; AMD EPYC 7B13, 2 cores; load average 0.15 -> 1.98; "
        "other processes busy 2% of the cores during the run; 5 repetitions; `benchmarks/results/cold_start.json`.",
    ]


def test_a_result_taken_under_load_or_with_few_repetitions_says_so():
    clean = render.provenance(synthetic_result(git={"commit": "abc1234567", "dirty_files": []}), "x.json")
    assert clean.startswith("`python benchmarks/cold_start.py --reps 5`; commit abc1234567; 2025-06-01")
    assert "Taken under load" not in clean
    loaded = render.provenance(synthetic_result(under_load=True), "x.json")
    assert loaded.endswith("`benchmarks/results/x.json`. **Taken under load: a note, not a result.**")
    quick = render.provenance(synthetic_result(reps=1), "x.json")
    assert quick.endswith("; 1 repetition; `benchmarks/results/x.json`. **Fewer than 5 repetitions: a note, not a result.**")
    untimed = render.provenance(synthetic_result(reps=1, timed=False), "x.json")
    assert untimed.endswith("; nothing timed: one pass, figures the load cannot change; `benchmarks/results/x.json`.")


def test_order_headline_first_then_alphabetical_and_results_without_table_left_out(tmp_path):
    for name in ("zeta", "alpha", "cold_start", "mfu"):
        (tmp_path / f"{name}.json").write_text(json.dumps(synthetic_result(title=name)))
    (tmp_path / "release_moe_log.json").write_text(json.dumps({"steps": [1, 2]}))
    assert [name for name, _ in render.results(str(tmp_path))] == [
        "mfu.json", "cold_start.json", "alpha.json", "zeta.json"]
    headings = [line for line in render.render(str(tmp_path)).splitlines() if line.startswith("## ")]
    assert headings == ["## mfu", "## cold_start", "## alpha", "## zeta", "## Not measured under this protocol yet"]
    missing = render.not_yet_measured(str(tmp_path))
    assert "`benchmarks/decode.py`: no result" in missing and "`benchmarks/mfu.py`" not in missing


def test_benchmarks_md_is_what_the_results_render_to(capsys):
    # Fails when BENCHMARKS.md and a result JSON disagree: rerun the benchmark, then `python -m benchmarks.render`.
    status = render.main(["--check"])
    assert status == 0, capsys.readouterr().err


def test_the_check_fails_when_a_result_changes(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(os.path.join(ROOT, "benchmarks", "results"), results)
    (results / "zz_synthetic.json").write_text(json.dumps(synthetic_result(title="Synthetic")))
    document = tmp_path / "BENCHMARKS.md"
    args = ["--results", str(results), "--document", str(document)]
    assert render.main(args) == 0
    assert render.main(["--check", *args]) == 0

    name, result = render.results(str(results))[0]  # a real one when there is one with a table
    result["table"]["rows"][0][-1] += " (changed)"
    (results / name).write_text(json.dumps(result))
    capsys.readouterr()
    assert render.main(["--check", *args]) == 1
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert f'section "{result["title"]}" differs from what benchmarks/results/{name} renders to' in message
