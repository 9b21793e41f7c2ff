"""The Switch claims driver (benchmarks/switch_claims.py) end to end on the fixture corpus, and its arithmetic."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from benchmarks import claims_report, switch_claims

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_first_reach_interpolates_between_evaluations():
    # Loss 5.0 at step 10, 3.0 at step 20: 4.0 is reached half way, at step 15.
    assert claims_report.first_reach([10, 20, 30], [5.0, 3.0, 2.0], 4.0) == pytest.approx(15.0)
    assert claims_report.first_reach([10, 20], [3.5, 3.0], 4.0) == 10.0  # already below at the first evaluation
    assert claims_report.first_reach([10, 20], [5.0, 4.5], 4.0) is None


def test_configurations_keep_flops_per_token_and_add_the_parameter_twin():
    plan = switch_claims.PLANS["cpu"]
    configs = switch_claims.configurations(plan)
    assert list(configs) == ["dense", "switch-2", "switch-4", "switch-8", "switch-16", "switch-32", "switch-64",
                             "dense-params"]
    assert configs["switch-64"] == {"NUM_EXPERTS": "64"}  # no MLP_DIM: each expert as wide as the dense MLP
    assert "dense-params" not in switch_claims.configurations(switch_claims.dataclasses.replace(plan, experts=(0, 4)))


def test_a_result_on_fewer_seeds_than_the_plan_says_so(tmp_path):
    study = switch_claims.Study(switch_claims.PLANS["cpu"], str(tmp_path / "work"), str(tmp_path / "records"))
    assert claims_report.partial(study, {0: {}}) == ("Partial: seed 0 of the plan's 0, 1, 2; one seed, so no spread, "
                                                     "and small differences are not findings. ")
    assert claims_report.partial(study, {0: {}, 2: {}}) == "Partial: seeds 0, 2 of the plan's 0, 1, 2. "
    assert claims_report.partial(study, {0: {}, 1: {}, 2: {}}) == ""
    assert study.finished_seeds() == ()  # nothing trained under tmp_path


def test_scaling_table_pairs_each_model_with_the_dense_run_of_its_seed(tmp_path):
    plan = switch_claims.dataclasses.replace(switch_claims.PLANS["cpu"], steps=4, eval_every=2, seeds=(0, 1, 2),
                                             experts=(0, 2, 4))
    study = switch_claims.Study(plan, str(tmp_path / "work"), str(tmp_path / "records"))
    # Dense ends at 4.00, 4.10, 4.02 (a spread of 0.10 from seed to seed). switch-2 ends 0.05 below dense in
    # every seed; switch-4 ends 0.02 below in seed 0 only, reaching 4.00 half way from step 2 (4.04) to
    # step 4 (3.98): at step 2 + 2 * 0.04 / 0.06 = 3.33, a speed-up of 4 / 3.33 = 1.20x.
    finals = {"dense": (4.00, 4.10, 4.02), "switch-2": (3.95, 4.05, 3.97), "switch-4": (3.98, 4.13, 4.05)}
    for name, per_seed in finals.items():
        for seed, final in enumerate(per_seed):
            start = 4.04 if (name, seed) == ("switch-4", 0) else final + 0.5
            _fake_run(study.record_dir("scaling", name, seed), {2: start, 4: final})
    scaling = claims_report.scaling_result(study, None)
    assert claims_report.paired_text(scaling["switch-2"]) == "-0.050 (-0.050..-0.050), lower in 3 of 3"
    assert claims_report.paired_text(scaling["switch-4"]) == "+0.030 (-0.020..+0.030), lower in 1 of 3"
    speed = [e["speedup_steps"] for e in scaling["switch-4"].values() if e["speedup_steps"]]
    assert speed == [pytest.approx(1.2)]
    assert claims_report.reach_text(speed, 3) == "1.20x (1 of 3 seeds reach)"
    assert claims_report.reach_text([], 3) == "not reached (3 of 3 seeds)"
    assert claims_report.ordering_sentence(scaling) == (
        "More experts, better at the same step (the paper's ordering): not seen here: switch-4 is no better than "
        "switch-2 (median final validation loss minus dense, paired by seed: switch-2 -0.050, switch-4 +0.030).")
    assert claims_report.noise_sentence(scaling) == (
        "Paired by seed, the final validation loss is below the dense model's in every seed: switch-2; in some "
        "seeds: switch-4; the dense model's own final loss moves by 0.100 from seed to seed.")


def test_bad_flags_are_one_line(capsys):
    with pytest.raises(SystemExit):
        switch_claims.main(["--steps", "5", "--eval_every", "2", "--stages", "report"])
    assert "must be multiples of --eval_every" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        switch_claims.main(["--experts", "4,8", "--stages", "report"])
    assert "needs 0 (the dense baseline)" in capsys.readouterr().err


def _metrics_evals(model_dir):
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {row["step"]: row["cross_ent_loss"] for row in rows if row["kind"] == "eval"}


@pytest.mark.slow
def test_driver_trains_resumes_and_reports_from_the_runs_files(tmp_path):
    work, results, plot = tmp_path / "work", tmp_path / "results", tmp_path / "claims.png"
    command = [sys.executable, "-m", "benchmarks.switch_claims", "--gin_file", "tests/fixtures/train/tiny.gin",
               "--work_dir", str(work), "--results_dir", str(results), "--plot", str(plot),
               "--steps", "4", "--eval_every", "2", "--upcycle_steps", "2", "--seeds", "0", "--experts", "0,4",
               "--gin_bindings", "DATA_PARALLELISM=1"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run(command + ["--stages", "scaling,capacity,report"], cwd=REPO, capture_output=True, text=True,
                          env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    dense, sparse = (work / "scaling" / f"{name}-s0" for name in ("dense", "switch-4"))
    dense_evals, sparse_evals = _metrics_evals(dense), _metrics_evals(sparse)
    assert sorted(dense_evals) == sorted(sparse_evals) == [2, 4]

    result = json.loads((results / "switch_claims_scaling.json").read_text())
    rows = {row[0]: row for row in result["table"]["rows"]}
    assert set(rows) == {"dense", "switch-4"}
    assert rows["dense"][3] == f"{dense_evals[4]:.3f}"  # final validation loss, from metrics.jsonl
    assert rows["switch-4"][3] == f"{sparse_evals[4]:.3f}"
    steps, losses = [2, 4], [sparse_evals[2], sparse_evals[4]]
    reach = claims_report.first_reach(steps, losses, dense_evals[4])
    assert result["results"]["scaling"]["switch-4"]["0"]["reaches_dense_final_at"] == reach
    gap = sparse_evals[4] - dense_evals[4]  # against dense, paired by seed
    assert rows["switch-4"][4] == f"{gap:+.3f}, lower in {int(gap < 0)} of 1"
    assert rows["switch-4"][5] == (f"{4 / reach:.2f}x" if reach else "not reached")
    assert result["seeds"] == [0] and result["git"]["commit"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The capacity stage: the largest expert count again with one routing group per batch, beside its scaling run.
    one_group = work / "capacity" / "switch-4-group2048-s0"
    capacity = json.loads((results / "switch_claims_capacity.json").read_text())
    rows = {row[0]: row for row in capacity["table"]["rows"]}
    assert list(rows) == ["dense", "switch-4", "switch-4-group2048"]
    assert rows["switch-4-group2048"][1] == "2048" and rows["dense"][1] == "–"
    assert rows["switch-4-group2048"][2] == f"{_metrics_evals(one_group)[4]:.3f}"
    assert rows["switch-4"][2] == f"{sparse_evals[4]:.3f}"
    assert rows["switch-4"][3].endswith("%") and rows["dense"][3] == "–"  # tokens dropped: MoE runs only

    again = subprocess.run(command + ["--stages", "scaling"], cwd=REPO, capture_output=True, text=True, env=env)
    assert again.returncode == 0 and again.stdout.count(": done") == 2  # finished runs are not trained again
    assert _metrics_evals(dense) == dense_evals

    # Each finished run left its record in the results; on a machine without the runs the study goes on
    # from the records: nothing is trained again and the report is the same.
    records = results / "switch_claims" / "cpu"
    assert _metrics_evals(records / "scaling" / "dense-s0") == dense_evals
    conditions = claims_report.run_conditions(records / "scaling" / "dense-s0")  # one invocation, with its load
    assert len(conditions) == 1 and len(conditions[0]["loadavg_before"]) == 3 and conditions[0]["seconds"] > 0
    assert result["results"]["scaling"]["dense"]["0"]["conditions"] == conditions
    assert (records / "capacity" / "switch-4-group2048-s0" / "config.gin").exists()
    shutil.rmtree(work)
    before = (results / "switch_claims_scaling.json").read_text()
    elsewhere = subprocess.run(command + ["--stages", "scaling,capacity,report"], cwd=REPO, capture_output=True,
                               text=True, env=env)
    assert elsewhere.returncode == 0, elsewhere.stdout[-2000:] + elsewhere.stderr[-2000:]
    assert elsewhere.stdout.count(": done (recorded)") == 3 and not work.joinpath("scaling").exists()
    after = json.loads((results / "switch_claims_scaling.json").read_text())
    assert after["table"] == json.loads(before)["table"]


def _fake_run(model_dir, losses):
    """A finished run's metrics.jsonl: validation cross-entropy {step: loss}."""
    os.makedirs(model_dir)
    with open(os.path.join(model_dir, "metrics.jsonl"), "w") as f:
        for step, loss in losses.items():
            f.write(json.dumps({"kind": "eval", "step": step, "cross_ent_loss": loss}) + "\n")


def test_distillation_share_is_read_against_the_no_teacher_control(tmp_path):
    plan = switch_claims.dataclasses.replace(switch_claims.PLANS["cpu"], steps=4, eval_every=2, seeds=(0, 1),
                                             experts=(0, 4))
    study = switch_claims.Study(plan, str(tmp_path / "work"), str(tmp_path / "records"))
    # Seed 0 only: dense ends at 4.0, the teacher at 3.0; the student at 3.6 keeps (4.0 - 3.6) / 1.0 = 40% of
    # the gain, the control at 3.9 keeps 10%: the teacher's probabilities add 30 points.
    for stage, name, final in (("scaling", "dense", 4.0), ("scaling", "switch-4", 3.0), ("distill", "student", 3.6),
                               ("distill", "no-teacher", 3.9)):
        _fake_run(study.record_dir(stage, name, 0), {2: 5.0, 4: final})
    claims_report.distill_result(study, plan_name="cpu", argv=[], results_dir=str(tmp_path / "results"))
    result = json.loads((tmp_path / "results" / "switch_claims_distill.json").read_text())
    assert result["seeds"] == [0]
    assert result["table"]["rows"][0] == ["validation loss", "4.000", "3.000", "3.600", "3.900", "40%", "10%"]
    assert result["headline"].startswith("Partial: seed 0 of the plan's 0, 1; one seed")
    assert result["headline"].endswith(
        "The teacher ends 1.000 below the dense model in validation loss; the distilled student keeps 40% of that "
        "gain (the paper: about 30%), and ends -0.300 from the no-teacher control: the teacher's probabilities help.")


def test_a_recorded_run_is_trained_again_only_when_a_later_stage_needs_its_checkpoint(tmp_path, monkeypatch):
    plan = switch_claims.dataclasses.replace(switch_claims.PLANS["cpu"], steps=4, eval_every=2, upcycle_steps=2,
                                             seeds=(0,), experts=(0, 4))
    study = switch_claims.Study(plan, str(tmp_path / "work"), str(tmp_path / "records"))
    trained = []

    def fake_train(model_dir, plan, *, steps, seed, bindings, python, cache_dir):
        trained.append((os.path.relpath(model_dir, study.work_dir), bindings.get("INITIAL_CHECKPOINT_PATH")))
        _fake_run(model_dir, {steps: 3.0})
        with open(os.path.join(model_dir, "config.gin"), "w") as f:
            f.write("GROUP_SIZE = 2048\n")

    monkeypatch.setattr(switch_claims, "train", fake_train)
    _fake_run(study.record_dir("scaling", "dense", 0), {2: 5.0, 4: 4.0})  # recorded on another machine
    study.ensure("scaling", "dense", 0)
    assert trained == []
    study.upcycle()  # starts from the dense checkpoint, which is not here: the dense run is trained first
    dense_dir = study.run_dir("scaling", "dense", 0)
    assert trained == [(os.path.join("scaling", "dense-s0"), None), (os.path.join("upcycle", "dense-s0"), repr(dense_dir)),
                       (os.path.join("upcycle", "switch-8-s0"), repr(dense_dir))]
    assert claims_report.curve(study.record_dir("scaling", "dense", 0)) == ([4], [3.0])  # the rerun's record
    study.upcycle()
    assert len(trained) == 3  # all recorded now


def test_commit_record_commits_the_record_alone(tmp_path):
    git = lambda *args: subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True,  # noqa: E731
                                       check=True).stdout
    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    (tmp_path / "other.txt").write_text("work in progress\n")
    git("add", "other.txt")  # staged, and not part of the record's commit
    _fake_run(tmp_path / "records" / "scaling" / "dense-s0", {2: 5.0})
    switch_claims.commit_record(str(tmp_path / "records" / "scaling" / "dense-s0"), "record of dense-s0")
    assert git("log", "--format=%s") == "record of dense-s0\n"
    assert git("show", "--name-only", "--format=").split() == ["records/scaling/dense-s0/metrics.jsonl"]
    assert "A  other.txt" in git("status", "--short")
