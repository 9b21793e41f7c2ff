"""Tables and plots of the Switch claims study (benchmarks/switch_claims.py), from the runs' own files.

Reads every run's record (Study.record_dir, benchmarks/switch_claims.py):
metrics.jsonl (validation cross-entropy at each evaluated step:
"cross_ent_loss", without the z-loss and the MoE auxiliary losses), config.gin,
run.json (each invocation's seconds and load average, carried into the scaling
result) and dev_scores/results.json (per-direction dev chrF++); and
the step times of benchmarks/results/switch_claims_step_time.json. Writes
benchmarks/results/switch_claims_{scaling,distill,upcycle,languages}.json,
each with a table that BENCHMARKS.md renders, and one figure.

Speed-ups follow Switch figure 4's reading: for each seed, the step at which a
model's validation curve first reaches the dense model's final loss (linear
interpolation between evaluations), and dense steps / that step; wall-clock
speed-up = that step ratio x dense seconds per step / the model's seconds per
step. Shares kept by distillation: (dense - student) / (dense - teacher), in
final validation loss and in mean dev chrF++.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics

from benchmarks import protocol

STEP_TIME = "switch_claims_step_time"


# -- reading runs ----------------------------------------------------------------------------------


def curve(model_dir: str) -> tuple[list[int], list[float]]:
    """(evaluated steps, validation cross-entropy) of a run, empty before it has started; a step evaluated
    twice (a resumed run) keeps the last."""
    losses: dict[int, float] = {}
    if not os.path.exists(os.path.join(model_dir, "metrics.jsonl")):
        return [], []
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        for row in map(json.loads, filter(str.strip, f)):
            if row.get("kind") == "eval" and "cross_ent_loss" in row:
                losses[int(row["step"])] = float(row["cross_ent_loss"])
    steps = sorted(losses)
    return steps, [losses[s] for s in steps]


def run_conditions(model_dir: str) -> list[dict]:
    """The run's invocations with their seconds and load averages (run.json), [] for a run recorded before
    the driver wrote it."""
    path = os.path.join(model_dir, "run.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)["segments"]


def first_reach(steps: list[int], losses: list[float], target: float) -> float | None:
    """The step at which the curve first reaches `target`, interpolated between evaluations; None if never.

    Before the first evaluation the curve is taken to fall linearly from where it
    is at step 0, unknown: a curve already below the target at its first
    evaluation reaches it there."""
    previous = None
    for step, loss in zip(steps, losses):
        if loss <= target:
            if previous is None:
                return float(step)
            p_step, p_loss = previous
            return p_step + (p_loss - target) / (p_loss - loss) * (step - p_step)
        previous = (step, loss)
    return None


def dev_scores(model_dir: str) -> dict | None:
    """DIR/dev_scores/results.json, or None if the languages stage has not scored it."""
    path = os.path.join(model_dir, "dev_scores", "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def mean_chrf(scores: dict) -> float:
    return statistics.fmean(entry["chrf"] for entry in scores["pairs"].values())


def spread_text(values, fmt: str = "{:.3f}") -> str:
    values = list(values)
    if not values:
        return "–"
    if len(values) == 1:
        return fmt.format(values[0])
    s = protocol.spread(values)
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}..{fmt.format(s['max'])})"


# -- step time -------------------------------------------------------------------------------------


def measure_step_time(study, *, reps: int, allow_load: bool, results_dir: str) -> dict:
    """Seconds per train step of every scaling configuration, alone, under the protocol: a result file."""
    import argparse

    from benchmarks import experts_scaling

    out = os.path.join(results_dir, f"{STEP_TIME}.json")
    args = argparse.Namespace(reps=reps, allow_load=allow_load, out=out)
    run = protocol.Run(STEP_TIME, args, argv=["--stages", "step_time"])
    plan = study.plan
    steps = {}
    for name in study.configs:
        bindings = {**study.config_bindings(name)}
        experts = int(bindings.pop("NUM_EXPERTS"))
        step = experts_scaling.TrainStep(gin_file=plan.gin_file, num_experts=experts,
                                         bindings=[*plan.bindings, *(f"{k}={v}" for k, v in bindings.items())])
        step.run(3)  # compiles and warms up
        steps[name] = step
        print(f"  {name}: {step.num_params:,} parameters, compiled", flush=True)
    seconds = experts_scaling.measure(steps, reps, per_rep=5)
    summary = {name: {"num_params": steps[name].num_params, "step_seconds": protocol.spread(s)}
               for name, s in seconds.items()}
    rows = [[name, f"{s['num_params'] / 1e6:.2f} M", protocol.fmt_spread(s["step_seconds"], "{:.0f}", scale=1000)]
            for name, s in summary.items()]
    return run.write(
        title="Switch claims: seconds per train step of each configuration",
        about=(f"The trainer's jitted step (forward, backward, Adafactor) of each configuration of the claims "
               f"study (`{plan.gin_file}`), on a synthetic batch of the run's shape, one CPU device; 5 steps back "
               "to back per repetition, the configurations interleaved. The study's wall-clock curves are its "
               "runs' steps times these."),
        table={"columns": ["configuration", "parameters", "ms per step"], "rows": rows},
        results={"configs": summary, "seconds": seconds},
    )


def step_seconds(results_dir: str) -> dict[str, float] | None:
    path = os.path.join(results_dir, f"{STEP_TIME}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        configs = json.load(f)["results"]["configs"]
    return {name: entry["step_seconds"]["median"] for name, entry in configs.items()}


# -- report ----------------------------------------------------------------------------------------


def _write(name: str, study, *, plan_name: str, argv, results_dir: str, title: str, about: str, table: dict,
           headline: str, results: dict, notes=(), seeds=None) -> None:
    """A result file the renderer reads: the protocol's fields, with the seeds in place of repetitions.

    seeds: the seeds the result stands on (default: the plan's)."""
    import datetime

    result = {
        "benchmark": name, "title": title, "about": about, "headline": headline,
        "command": "python -m benchmarks.switch_claims " + " ".join(argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": protocol.git_state(), "machine": protocol.cpu_info(), "versions": protocol.versions(),
        "seeds": list(study.plan.seeds if seeds is None else seeds), "plan": plan_name, "table": table, "notes": list(notes), "results": results,
    }
    path = os.path.join(results_dir, f"{name}.json")
    os.makedirs(results_dir, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    print(f"  wrote {os.path.relpath(path, protocol.ROOT)}", flush=True)


def scaling_result(study, seconds: dict[str, float] | None) -> dict:
    """Per configuration and seed: final loss, step reaching the seed's dense final loss, speed-ups."""
    plan, out = study.plan, {}
    for name in study.configs:
        per_seed = {}
        for seed in plan.seeds:
            run = study.record_dir("scaling", name, seed)
            dense = study.record_dir("scaling", "dense", seed)
            if not (os.path.exists(os.path.join(run, "metrics.jsonl")) and
                    os.path.exists(os.path.join(dense, "metrics.jsonl"))):
                continue
            steps, losses = curve(run)
            dense_steps, dense_losses = curve(dense)
            if not steps or not dense_steps or dense_steps[-1] != plan.steps:
                continue
            reach = first_reach(steps, losses, dense_losses[-1])
            final = losses[-1] if steps[-1] == plan.steps else None
            entry = {"steps": steps, "loss": losses, "final_loss": final,
                     "final_minus_dense": None if final is None else final - dense_losses[-1],
                     "reaches_dense_final_at": reach,
                     "speedup_steps": plan.steps / reach if reach else None,
                     "conditions": run_conditions(run)}
            if seconds and reach and name in seconds:
                entry["speedup_time"] = entry["speedup_steps"] * seconds["dense"] / seconds[name]
            per_seed[seed] = entry
        out[name] = per_seed
    return out


def report(study, *, plan_name: str, argv, results_dir: str, plot_path: str) -> None:
    plan = study.plan
    seconds = step_seconds(results_dir)
    scaling = scaling_result(study, seconds)
    params = study.dense_params()["params"] if "dense-params" in study.configs else {}

    rows = []
    for name, per_seed in scaling.items():
        finals = [e["final_loss"] for e in per_seed.values() if e["final_loss"] is not None]
        speed = [e["speedup_steps"] for e in per_seed.values() if e["speedup_steps"]]
        clock = [e["speedup_time"] for e in per_seed.values() if e.get("speedup_time")]
        rows.append([name, f"{params[name] / 1e6:.2f} M" if name in params else "–", f"{len(finals)}",
                     spread_text(finals), "–" if name == "dense" else paired_text(per_seed),
                     "–" if name == "dense" else reach_text(speed, len(finals)),
                     "–" if name == "dense" else reach_text(clock, len(finals)),
                     f"{1000 * seconds[name]:.0f}" if seconds and name in seconds else "–"])
    headline = " ".join(filter(None, (ordering_sentence(scaling), noise_sentence(scaling))))
    runs_done = sum(e["final_loss"] is not None for per_seed in scaling.values() for e in per_seed.values())
    runs_planned = len(scaling) * len(plan.seeds)
    if runs_done < runs_planned:
        most = max(sum(e["final_loss"] is not None for e in per_seed.values()) for per_seed in scaling.values())
        headline = (f"Partial: {runs_done} of the plan's {runs_planned} runs have finished"
                    + (", one seed per configuration, so nothing here has a spread and small differences are not "
                       "findings. " if most <= 1 else ". ") + headline)
    _write("switch_claims_scaling", study, plan_name=plan_name, argv=argv, results_dir=results_dir,
           title="Switch claims: sample efficiency and expert scaling",
           about=(f"Dense and 2..64-expert mSwitch models at equal FLOPs per token (top-1, each expert as wide as the "
                  f"dense MLP), and a dense model with switch-8's parameters, trained {plan.steps} steps each by "
                  f"`python -m mtmoe.train` (`{plan.gin_file}`, plan {plan_name}: {plan.about}), seeds "
                  f"{', '.join(map(str, plan.seeds))} (each seed sets the initialisation and the data order). "
                  f"Validation cross-entropy every {plan.eval_every} steps. Against dense: the model's final loss "
                  "minus the dense model's of the same seed (same data order), and in how many seeds it is lower. "
                  "Speed-up: dense steps / the step at which "
                  "the model first reaches the same seed's dense final loss, over the seeds where it does; "
                  "wall-clock: times the configurations' "
                  "seconds per step measured alone (switch_claims_step_time). Median (min..max) over seeds."),
           table={"columns": ["model", "parameters", "seeds done", "final validation loss", "against dense, paired by seed",
                              "speed-up in steps", "speed-up in time", "ms per step"], "rows": rows},
           headline=headline, results={"plan": dataclasses.asdict(plan), "scaling": scaling, "step_seconds": seconds},
           seeds=sorted({seed for per_seed in scaling.values() for seed, e in per_seed.items()
                         if e["final_loss"] is not None}))

    capacity_result(study, plan_name=plan_name, argv=argv, results_dir=results_dir)
    distill_result(study, plan_name=plan_name, argv=argv, results_dir=results_dir)
    upcycle_result(study, plan_name=plan_name, argv=argv, results_dir=results_dir)
    languages_result(study, plan_name=plan_name, argv=argv, results_dir=results_dir)
    plot(study, scaling, seconds, plot_path)


def dense_gaps(per_seed: dict) -> list[float]:
    """Final loss minus the same seed's dense final loss, over the seeds whose run has finished."""
    return [e["final_minus_dense"] for e in per_seed.values() if e.get("final_minus_dense") is not None]


def paired_text(per_seed: dict) -> str:
    """'-0.017 (-0.022..-0.010), lower in 3 of 3': final loss minus the same seed's dense final loss."""
    gaps = dense_gaps(per_seed)
    if not gaps:
        return "–"
    return f"{spread_text(gaps, '{:+.3f}')}, lower in {sum(g < 0 for g in gaps)} of {len(gaps)}"


def reach_text(values: list[float], seeds: int) -> str:
    """A speed-up's spread over the seeds that reach the dense final loss, saying so when not every seed does."""
    if len(values) == seeds:
        return spread_text(values, "{:.2f}x")
    if not values:
        return f"not reached ({seeds} of {seeds} seeds)" if seeds > 1 else "not reached"
    return f"{spread_text(values, '{:.2f}x')} ({len(values)} of {seeds} seeds reach)"


def ordering_sentence(scaling: dict) -> str:
    """Whether the paper's ordering holds: with every doubling of the experts, a lower final loss at the same
    step, read as the median over seeds of each model's gap to the dense run of its seed."""
    sparse = sorted((n for n in scaling if n.startswith("switch-")), key=lambda n: int(n.split("-")[1]))
    gaps = {n: dense_gaps(scaling[n]) for n in sparse}
    ordered = [n for n in sparse if gaps[n]]
    if len(ordered) < 2:
        return "Too few finished runs to compare expert counts yet."
    medians = [statistics.median(gaps[n]) for n in ordered]
    holds = 1
    while holds < len(ordered) and medians[holds] < medians[holds - 1]:
        holds += 1
    listed = ", ".join(f"{n} {m:+.3f}" for n, m in zip(ordered, medians))
    verdict = (f"holds with every doubling from {ordered[0]} to {ordered[holds - 1]}" if holds > 1 else
               f"not seen here: {ordered[1]} is no better than {ordered[0]}")
    if 1 < holds < len(ordered):
        verdict += ", not beyond"
    return (f"More experts, better at the same step (the paper's ordering): {verdict} (median final validation "
            f"loss minus dense, paired by seed: {listed}).")


def noise_sentence(scaling: dict) -> str:
    """Which models end below dense in every seed, against the seed-to-seed spread of the dense model."""
    dense = [e["final_loss"] for e in scaling.get("dense", {}).values() if e["final_loss"] is not None]
    if len(dense) < 2:
        return ""
    every, some, never = [], [], []
    for name, per_seed in scaling.items():
        gaps = dense_gaps(per_seed)
        if name == "dense" or len(gaps) < 2:
            continue
        lower = sum(g < 0 for g in gaps)
        (every if lower == len(gaps) else never if lower == 0 else some).append(name)
    parts = [f"{label}: {', '.join(names)}" for label, names in
             (("every seed", every), ("some seeds", some), ("no seed", never)) if names]
    return (f"Paired by seed, the final validation loss is below the dense model's in {'; in '.join(parts)}; the "
            f"dense model's own final loss moves by {max(dense) - min(dense):.3f} from seed to seed.")


def _best_sparse_or_none(study) -> str | None:
    """The best sparse configuration over the seeds whose scaling runs have finished (None: no seed has)."""
    seeds = study.finished_seeds()
    return study.best_sparse(seeds) if seeds else None


def partial(study, seeds) -> str:
    """The headline's opening when a result stands on fewer seeds than the plan has; "" otherwise."""
    if len(seeds) >= len(study.plan.seeds):
        return ""
    named = ", ".join(map(str, sorted(seeds)))
    return (f"Partial: seed{'s' if len(seeds) > 1 else ''} {named} of the plan's "
            f"{', '.join(map(str, study.plan.seeds))}" + ("; one seed, so no spread, and small differences are not "
                                                          "findings. " if len(seeds) == 1 else ". "))


def distill_result(study, *, plan_name: str, argv, results_dir: str) -> None:
    teacher = _best_sparse_or_none(study)
    if teacher is None:
        return
    models = {"dense": ("scaling", "dense"), "teacher": ("scaling", teacher), "student": ("distill", "student"),
              "control": ("distill", "no-teacher")}
    per_seed = {}
    for seed in study.plan.seeds:
        finals = {}
        for key, (stage, name) in models.items():
            steps, losses = curve(study.record_dir(stage, name, seed))
            if steps and steps[-1] == study.plan.steps:
                finals[key] = losses[-1]
        if "student" not in finals or finals.get("dense") is None or finals.get("teacher") is None:
            continue
        gain = finals["dense"] - finals["teacher"]
        entry = {**finals, **{f"share_{key}": (finals["dense"] - finals[key]) / gain if gain else None
                              for key in ("student", "control") if key in finals}}
        chrf = {key: dev_scores(study.record_dir(stage, name, seed)) for key, (stage, name) in models.items()}
        chrf = {key: mean_chrf(scores) for key, scores in chrf.items() if scores}
        if {"dense", "teacher"} <= set(chrf) and chrf["teacher"] != chrf["dense"]:
            entry.update({f"chrf_{key}": value for key, value in chrf.items()})
            entry.update({f"share_chrf_{key}": (chrf[key] - chrf["dense"]) / (chrf["teacher"] - chrf["dense"])
                          for key in ("student", "control") if key in chrf})
        per_seed[seed] = entry
    if not per_seed:
        return
    values = lambda key, scale=1.0: [scale * e[key] for e in per_seed.values() if e.get(key) is not None]  # noqa: E731
    percent = lambda key: spread_text(values(key, 100.0), "{:.0f}%")  # noqa: E731
    rows = [["validation loss", *[spread_text(values(k)) for k in ("dense", "teacher", "student", "control")],
             percent("share_student"), percent("share_control")],
            ["mean dev chrF++", *[spread_text(values(f"chrf_{k}"), "{:.1f}") for k in ("dense", "teacher", "student",
                                                                                      "control")],
             percent("share_chrf_student"), percent("share_chrf_control")]]
    kept = values("share_student", 100.0)
    headline = ""
    if kept:
        median = lambda key: statistics.median(values(key))  # noqa: E731
        headline = (f"The teacher ends {median('dense') - median('teacher'):.3f} below the dense model in validation "
                    f"loss; the distilled student keeps {statistics.median(kept):.0f}% of that gain (the paper: about "
                    "30%)")
        if values("control"):
            effect = median("student") - median("control")
            headline += (f", and ends {effect:+.3f} from the no-teacher control: the teacher's probabilities "
                         f"{'help' if effect < 0 else 'hurt'}")
        if statistics.median(kept) > 100:
            headline += ("; a share above 100% says that the head start of the teacher's weights, not what it "
                         "teaches, carries the student")
        headline += "."
    _write("switch_claims_distill", study, plan_name=plan_name, argv=argv, results_dir=results_dir,
           title="Switch claims: distilling the sparse model into its dense twin",
           about=(f"Switch section 4's recipe: the {teacher} teacher of each seed (the sparse configuration with the "
                  f"lowest mean final validation loss) distilled into the dense model for {study.plan.steps} steps, "
                  "the student starting from the teacher's non-expert weights, its loss 0.75 x the ground truth + "
                  "0.25 x the teacher's probabilities. The control starts the same way and trains as many steps on "
                  "the ground truth alone: both have had the teacher's steps before their own, which the dense "
                  "baseline has not. Share kept: (dense - model) / (dense - teacher), per seed; chrF++ is the mean "
                  "over every dev direction (greedy). Median (min..max) over seeds."),
           table={"columns": ["measure", "dense", f"teacher ({teacher})", "distilled student", "no-teacher control",
                              "share kept, student", "share kept, control"], "rows": rows},
           headline=partial(study, per_seed) + headline,
           results={"teacher": teacher, "per_seed": per_seed}, seeds=sorted(per_seed))


def last_expert_metrics(model_dir: str) -> dict[str, float]:
    """The last logged train step's share of tokens that overflowed expert capacity and router confidence,
    averaged over the MoE layers (mtmoe.models.collect_expert_metrics); {} for a dense run."""
    last: dict[str, float] = {}
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        for row in map(json.loads, filter(str.strip, f)):
            if row.get("kind") == "train" and "experts/fraction_tokens_left_behind" in row:
                last = {"dropped": float(row["experts/fraction_tokens_left_behind"]),
                        "router_confidence": float(row["experts/router_confidence"])}
    return last


def group_size(model_dir: str) -> str:
    """The GROUP_SIZE the run trained with, from the config.gin mtmoe.train wrote into its MODEL_DIR."""
    with open(os.path.join(model_dir, "config.gin")) as f:
        for line in f:
            name, _, value = line.partition("=")
            if name.strip() == "GROUP_SIZE":
                return value.split("#")[0].strip()
    return "?"


def capacity_result(study, *, plan_name: str, argv, results_dir: str) -> None:
    """The capacity stage's run beside the scaling runs of the same seed: same experts, smaller groups; dense."""
    plan, seed = study.plan, study.plan.seeds[0]
    name, bindings = study.capacity_run()
    experts = int(bindings["NUM_EXPERTS"])
    runs = {"dense": study.record_dir("scaling", "dense", seed),
            f"switch-{experts}": study.record_dir("scaling", f"switch-{experts}", seed),
            name: study.record_dir("capacity", name, seed)}
    curves = {}
    for label, run in runs.items():
        if not os.path.exists(os.path.join(run, "metrics.jsonl")):
            return
        curves[label] = curve(run)
        if not curves[label][0] or curves[label][0][-1] != plan.steps:
            return
    dense_final = curves["dense"][1][-1]
    rows, per_run = [], {}
    for label, run in runs.items():
        steps, losses = curves[label]
        expert = last_expert_metrics(run)
        reach = first_reach(steps, losses, dense_final) if label != "dense" else None
        per_run[label] = {"steps": steps, "loss": losses, **expert, "reaches_dense_final_at": reach}
        group = "–" if label == "dense" else group_size(run)
        rows.append([label, group, f"{losses[-1]:.3f}",
                     f"{100 * expert['dropped']:.1f}%" if expert else "–",
                     f"{expert['router_confidence']:.3f}" if expert else "–",
                     "–" if label == "dense" else (f"{plan.steps / reach:.2f}x" if reach else "not reached")])
    gain = curves[f"switch-{experts}"][1][-1] - curves[name][1][-1]
    _write("switch_claims_capacity", study, plan_name=plan_name, argv=argv, results_dir=results_dir,
           title="Switch claims: is it the dropped tokens?",
           about=(f"The scaling stage's {experts}-expert run of seed {seed} and the same run with the whole batch as "
                  f"one routing group (GROUP_SIZE {bindings['GROUP_SIZE']}), so that each expert's capacity is "
                  "group / experts x the capacity factor tokens of a larger group and fewer tokens overflow it, "
                  f"beside the dense run of the seed; {plan.steps} steps each. Tokens dropped and router confidence: "
                  "the last logged train step, averaged over the MoE layers. One seed: a check of one explanation, "
                  "not a result with a spread."),
           table={"columns": ["model", "group size", "final validation loss", "tokens dropped",
                              "router confidence", "speed-up in steps"], "rows": rows},
           headline=(f"One routing group per batch changes the {experts}-expert model's final validation loss by "
                     f"{-gain:+.3f} (dense {dense_final:.3f})."),
           results={"seed": seed, "runs": per_run}, seeds=[seed])


def upcycle_result(study, *, plan_name: str, argv, results_dir: str) -> None:
    plan = study.plan
    upcycled = f"switch-{plan.upcycle_experts}"
    per_seed = {}
    for seed in plan.seeds:
        runs = {name: study.record_dir("upcycle", name, seed) for name in ("dense", upcycled)}
        if not all(os.path.exists(os.path.join(d, "metrics.jsonl")) for d in runs.values()):
            continue
        curves = {name: curve(d) for name, d in runs.items()}
        if any(not c[0] or c[0][-1] != plan.upcycle_steps for c in curves.values()):
            continue
        reach = first_reach(*curves[upcycled], curves["dense"][1][-1])
        per_seed[seed] = {"dense": {"steps": curves["dense"][0], "loss": curves["dense"][1]},
                          upcycled: {"steps": curves[upcycled][0], "loss": curves[upcycled][1]},
                          "upcycled_reaches_dense_final_at": reach}
    if not per_seed:
        return
    finals = {name: [e[name]["loss"][-1] for e in per_seed.values()] for name in ("dense", upcycled)}
    reach = [plan.upcycle_steps / e["upcycled_reaches_dense_final_at"] for e in per_seed.values()
             if e["upcycled_reaches_dense_final_at"]]
    _write("switch_claims_upcycle", study, plan_name=plan_name, argv=argv, results_dir=results_dir,
           title="Switch claims: sparse upcycling",
           about=(f"Each seed's dense model after {plan.steps} steps, continued for {plan.upcycle_steps} more steps "
                  f"as dense and upcycled to {plan.upcycle_experts} experts (every expert a copy of its MLP, a fresh "
                  "router); both restart the optimizer and the learning-rate schedule. Median (min..max) over seeds."),
           table={"columns": ["continued as", "final validation loss", "speed-up in steps"],
                  "rows": [["dense", spread_text(finals["dense"]), "–"],
                           [f"upcycled, {plan.upcycle_experts} experts", spread_text(finals[upcycled]),
                            spread_text(reach, "{:.2f}x")]]},
           headline=partial(study, per_seed) + (
               f"Upcycled to {plan.upcycle_experts} experts, the model ends at validation loss "
               f"{spread_text(finals[upcycled])} against {spread_text(finals['dense'])} continued dense."),
           results={"per_seed": per_seed}, seeds=sorted(per_seed))


def languages_result(study, *, plan_name: str, argv, results_dir: str) -> None:
    sparse = _best_sparse_or_none(study)
    if sparse is None:
        return
    per_seed = {}
    for seed in study.plan.seeds:
        dense, moe = (dev_scores(study.record_dir("scaling", n, seed)) for n in ("dense", sparse))
        if not dense or not moe:
            continue
        common = sorted(set(dense["pairs"]) & set(moe["pairs"]))
        gains = {pair: moe["pairs"][pair]["chrf"] - dense["pairs"][pair]["chrf"] for pair in common}
        buckets = {lang: info["bucket"] for lang, info in {**dense["languages"], **moe["languages"]}.items()}
        by_bucket: dict[str, list[float]] = {}
        for pair, gain in gains.items():
            entry = moe["pairs"][pair]
            other = entry["tgt"] if entry["src"] == "en" else entry["src"]  # the non-English language
            by_bucket.setdefault(buckets.get(other, "?"), []).append(gain)
        per_seed[seed] = {"directions": len(common), "improved": sum(g > 0 for g in gains.values()),
                          "gains": gains, "mean_gain_by_bucket": {b: statistics.fmean(g) for b, g in by_bucket.items()}}
    if not per_seed:
        return
    buckets = sorted({b for e in per_seed.values() for b in e["mean_gain_by_bucket"]})
    rows = [[f"seed {seed}", f"{e['improved']} of {e['directions']}",
             *[f"{e['mean_gain_by_bucket'][b]:+.2f}" if b in e["mean_gain_by_bucket"] else "–" for b in buckets]]
            for seed, e in per_seed.items()]
    losers: dict[str, int] = {}
    for e in per_seed.values():
        for pair, gain in e["gains"].items():
            losers[pair] = losers.get(pair, 0) + (gain < 0)
    always = sorted(p for p, n in losers.items() if n == len(per_seed))
    _write("switch_claims_languages", study, plan_name=plan_name, argv=argv, results_dir=results_dir,
           title="Switch claims: every direction, sparse against dense",
           about=(f"Dev chrF++ of every direction (eval/per_language_bleu.py --split dev --pairs all, greedy, first "
                  f"{study.plan.eval_sentences} sentences each) of each seed's {sparse} and dense models of the scaling "
                  "stage; mean chrF++ gain by the non-English language's resource bucket (training pairs in the "
                  "embedded corpus)."),
           table={"columns": ["seed", "directions where sparse wins", *[f"mean gain, {b}" for b in buckets]],
                  "rows": rows},
           headline=partial(study, per_seed) + (
               f"Directions where {sparse} beats dense: " + "; ".join(
                   f"seed {seed} {e['improved']} of {e['directions']}" for seed, e in per_seed.items())
               + f". Worse under every seed: {len(always)}"
               + (f" ({', '.join(always[:12])}{', ...' if len(always) > 12 else ''})." if always else ".")),
           results={"sparse": sparse, "per_seed": per_seed}, seeds=sorted(per_seed))


def plot(study, scaling: dict, seconds: dict[str, float] | None, path: str) -> None:
    """docs/switch_claims.png: validation loss against steps and against seconds, median and range over seeds;
    and each expert count's final loss minus the dense run of the same seed, median and range (error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    for name, per_seed in scaling.items():
        full = [e for e in per_seed.values() if e["final_loss"] is not None]
        if not full:
            continue
        steps = full[0]["steps"]
        stacked = [e["loss"] for e in full if e["steps"] == steps]
        median = [statistics.median(v) for v in zip(*stacked)]
        low, high = [min(v) for v in zip(*stacked)], [max(v) for v in zip(*stacked)]
        style = {"linestyle": "--"} if name.startswith("dense") else {}
        line, = axes[0].plot(steps, median, label=f"{name} ({len(stacked)} seed{'s' if len(stacked) != 1 else ''})", **style)
        axes[0].fill_between(steps, low, high, color=line.get_color(), alpha=0.15)
        if seconds and name in seconds:
            axes[1].plot([s * seconds[name] / 60 for s in steps], median, color=line.get_color(), **style)
    gaps = {int(n.split("-")[1]): dense_gaps(per_seed) for n, per_seed in scaling.items() if n.startswith("switch-")}
    experts = sorted(n for n, g in gaps.items() if g)
    if experts:
        median = [statistics.median(gaps[n]) for n in experts]
        below = [m - min(gaps[n]) for n, m in zip(experts, median)]
        above = [max(gaps[n]) - m for n, m in zip(experts, median)]
        axes[2].errorbar(experts, median, yerr=[below, above], marker="o", capsize=4)
        axes[2].set_xscale("log", base=2)
        axes[2].set_xticks(experts, [str(n) for n in experts])
    axes[2].axhline(0.0, color="black", linewidth=0.8, linestyle="--", label="dense, same seed")
    axes[2].set_xlabel("experts (equal FLOPs per token)")
    axes[2].set_ylabel("final validation loss minus dense (below 0: better)")
    axes[2].legend(fontsize=8)
    axes[0].set_xlabel("training step")
    axes[1].set_xlabel("training minutes (steps x seconds per step measured alone)")
    for ax in axes[:2]:
        ax.set_ylabel("validation cross-entropy")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Switch claims at this project's scale: dense vs 2..64 experts at equal FLOPs per token")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    print(f"  wrote {os.path.relpath(path, protocol.ROOT)}", flush=True)
