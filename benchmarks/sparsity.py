"""Does sparsity pay? Validation loss against steps and wall-clock, dense vs 8/16/32 experts.

    .venv/bin/python benchmarks/sparsity.py                  # < 15 minutes on 2 shared CPU cores
    .venv/bin/python benchmarks/sparsity.py --steps 400 --eval_every 50 --concurrency 1

Switch Transformer figure 4 at toy scale, on the embedded translation corpus
(by default English <-> de, fr, es, ja, both directions, equal rates; `--languages all`
for the whole `translate_all` mixture), with the real trainer (`mtmoe.train.main`)
and the demo architecture (gin/experiments/demo.gin: d_model 96, 2+2 layers, FFN 384,
MoE at every other FFN, 64 x 32-token packed rows per step). Runs:

  dense         NUM_EXPERTS=0: equal FLOPs per token (a top-1 expert has the dense FFN's width)
  switch-8/16/32  NUM_EXPERTS=8/16/32
  dense-params  NUM_EXPERTS=0, MLP_DIM widened so that the parameter count matches
                switch-8's (the printed counts say how close)

Each run trains `--steps` steps (same data order, same seed, same learning-rate
schedule) and evaluates the validation loss every `--eval_every` steps
(EVAL_BATCHES batches of the validation split, cross-entropy without the z-loss
and the MoE auxiliary losses; BLEU off). Wall-clock is the
trainer's own step time (its `timing/steps_per_second` at LOG_EVERY=1,
evaluation and checkpointing excluded; the first step, which compiles, is
counted at the median step time). Runs go `--concurrency` at a time: with all
of them at once (the default) every run sees the same load from the other
processes on the shared cores, so their wall-clock curves compare fairly.

Reports each run's validation loss at the last step that every run evaluated
(runs still going at `--timeout_s` are stopped), and for each sparse run the
step and time at which it first reaches the dense run's loss at that step
(linear interpolation between evaluations): speed-up = dense steps (time) /
sparse steps (time). Writes benchmarks/results/sparsity.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
PROJECT_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
RESULT_PATH = os.path.join(ROOT, "benchmarks", "results", "sparsity.json")
EXPERIMENT = "gin/experiments/demo.gin"
RUNS = {
    "dense": {"NUM_EXPERTS": "0"},
    "switch-8": {"NUM_EXPERTS": "8"},
    "switch-16": {"NUM_EXPERTS": "16"},
    "switch-32": {"NUM_EXPERTS": "32"},
    "dense-params": {"NUM_EXPERTS": "0"},  # MLP_DIM set in main() to match switch-8's parameters
}


MIXTURE = "sparsity_benchmark_mixture"


def trainer_main(argv: list[str]) -> int:
    """`python -m mtmoe.train` with a small mixture registered first (see --languages)."""
    sys.path.insert(0, ROOT)
    languages = os.environ["SPARSITY_LANGUAGES"].split(",")
    import seqio

    import tasks  # noqa: F401  registers the embedded translation tasks

    names = []
    for lang in languages:
        code = lang.replace("-", "_")
        names += [f"embedded_translate_en_{code}", f"embedded_translate_{code}_en"]
    unknown = [n for n in names if n not in seqio.TaskRegistry.names()]
    if unknown:
        raise SystemExit(f"unknown tasks {unknown}; pick --languages from data/embedded/stats.json")
    seqio.MixtureRegistry.add(MIXTURE, [(name, 1.0) for name in names])  # equal rates: equal sizes
    from mtmoe import train

    return train.main(argv)


def missing_prerequisites() -> list[str]:
    """What the benchmark needs from the trainer and the data pipeline and does not find."""
    missing = []
    for path, what in [
        ("mtmoe/train.py", "the trainer"),
        ("tasks/__init__.py", "the SeqIO tasks"),
        ("data/vocab/mtmoe.model", "the SentencePiece vocabulary (python -m mtmoe.data.build.train_vocab)"),
        ("data/embedded/stats.json", "the embedded corpus (python -m mtmoe.data.build.build_corpus)"),
        (EXPERIMENT, "the demo experiment gin file"),
    ]:
        if not os.path.exists(os.path.join(ROOT, path)):
            missing.append(f"{path} ({what})")
    return missing


def parameter_count(bindings: dict[str, str]) -> int:
    """Parameters of the experiment's model with `bindings`, by abstract evaluation (no memory)."""
    code = f"""
import json, sys
sys.path.insert(0, {ROOT!r})
import gin, jax
from mtmoe import models, network
gin.add_config_file_search_path({ROOT!r})
gin.parse_config_files_and_bindings([{os.path.join(ROOT, EXPERIMENT)!r}],
    {[f"{k} = {v}" for k, v in bindings.items()]!r} + ["MODEL_DIR = '/nonexistent'"])
model = gin.get_configurable(models.EncoderDecoderModel)(config=gin.get_configurable(network.TransformerConfig)())
shapes = {{"encoder_input_tokens": (1, 8), "decoder_input_tokens": (1, 8)}}
abstract = jax.eval_shape(lambda r: model.get_initial_variables(r, input_shapes=shapes), jax.random.PRNGKey(0))
import flax.linen as nn
print(json.dumps(sum(x.size for x in jax.tree.leaves(nn.unbox(abstract["params"])))))
"""
    out = subprocess.run([PROJECT_PYTHON, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"counting parameters failed: {out.stderr.strip().splitlines()[-1]}")
    return int(out.stdout.strip().splitlines()[-1])


def demo_mlp_dim() -> int:
    """MLP_DIM of the experiment file (the dense FFN width that the wide dense run starts from)."""
    code = (f"import gin; gin.add_config_file_search_path({ROOT!r}); import sys; sys.path.insert(0, {ROOT!r}); "
            f"gin.parse_config_files_and_bindings([{os.path.join(ROOT, EXPERIMENT)!r}], ['MODEL_DIR = \\'/x\\'']); "
            "print(gin.query_parameter('%MLP_DIM'))")
    out = subprocess.run([PROJECT_PYTHON, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"reading MLP_DIM failed: {out.stderr.strip().splitlines()[-1]}")
    return int(out.stdout.strip().splitlines()[-1])


def read_curves(model_dir: str) -> dict:
    """Validation loss per evaluated step and cumulative training seconds from MODEL_DIR/metrics.jsonl."""
    step_time: dict[int, float] = {}
    evals: dict[int, float] = {}
    train_loss: dict[int, float] = {}
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if row["kind"] == "train" and "timing/steps_per_second" in row:
                step_time[row["step"]] = 1.0 / row["timing/steps_per_second"]
            if row["kind"] == "train" and "loss" in row:
                train_loss[row["step"]] = row["loss"]
            if row["kind"] == "eval" and "cross_ent_loss" in row:
                # Cross-entropy alone: the total loss adds the MoE runs' auxiliary terms.
                evals[row["step"]] = row["cross_ent_loss"]
    steps = sorted(step_time)
    later = [step_time[s] for s in steps[1:]] or [step_time[steps[0]]]
    typical = statistics.median(later)
    clock, elapsed = {0: 0.0}, 0.0
    for s in steps:
        elapsed += typical if s == steps[0] else step_time[s]  # the first step compiles
        clock[s] = elapsed
    return {
        "eval_steps": sorted(evals),
        "eval_loss": [evals[s] for s in sorted(evals)],
        "eval_seconds": [clock.get(s, float("nan")) for s in sorted(evals)],
        "median_step_seconds": typical,
        "first_step_seconds": step_time[steps[0]] if steps else None,
        "train_loss": [train_loss[s] for s in sorted(train_loss)],
    }


def first_reach(steps, seconds, losses, target):
    """(step, seconds) where the loss curve first reaches `target`, interpolated; None if never."""
    prev = None
    for s, t, loss in zip(steps, seconds, losses):
        if loss <= target:
            if prev is None:
                return s, t
            ps, pt, pl = prev
            frac = (pl - target) / (pl - loss) if pl != loss else 1.0
            return ps + frac * (s - ps), pt + frac * (t - pt)
        prev = (s, t, loss)
    return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--trainer"]:  # a child run: everything after it goes to mtmoe.train
        sys.exit(trainer_main(argv[1:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--languages", default="de,fr,es,ja",
                        help="English <-> X pairs of the embedded corpus to train on (both directions); "
                             "'all' = the whole translate_all mixture (its input pipeline takes minutes to start)")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--eval_every", type=int, default=20)
    parser.add_argument("--eval_batches", type=int, default=4)
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--concurrency", type=int, default=len(RUNS))
    parser.add_argument("--timeout_s", type=int, default=840, help="stop waiting for the runs after this long")
    parser.add_argument("--work_dir", default=None, help="where the runs' MODEL_DIRs go (default: a temp dir)")
    parser.add_argument("--dense_params_mlp_dim", type=int, default=None,
                        help="MLP_DIM of the dense-params run (default: matched to switch-8's parameter count)")
    parser.add_argument("--analyze", action="store_true",
                        help="do not train: read the runs already in --work_dir and write the result")
    parser.add_argument("--out", default=RESULT_PATH)
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from hf_switch import git_state

    missing = missing_prerequisites()
    if missing:
        raise SystemExit("sparsity.py needs: " + "; ".join(missing))

    names = [n for n in args.runs.split(",") if n]
    for name in names:
        if name not in RUNS:
            raise SystemExit(f"unknown run {name!r}; use some of {','.join(RUNS)}")
    runs = {name: dict(RUNS[name]) for name in names}
    params = {}
    if "dense-params" in runs and args.dense_params_mlp_dim:
        runs["dense-params"]["MLP_DIM"] = str(args.dense_params_mlp_dim)
    elif "dense-params" in runs:
        target = parameter_count({"NUM_EXPERTS": "8"})
        dense = parameter_count({"NUM_EXPERTS": "0"})
        base_ff = demo_mlp_dim()
        # Parameters grow linearly with the width of every FFN: measure the slope, solve for the width.
        per_unit = (parameter_count({"NUM_EXPERTS": "0", "MLP_DIM": str(base_ff + 128)}) - dense) / 128
        wide = base_ff + round((target - dense) / per_unit / 64) * 64  # a multiple of 64
        runs["dense-params"]["MLP_DIM"] = str(wide)
    for name, bindings in runs.items():
        params[name] = parameter_count(bindings)
    print("parameters: " + ", ".join(f"{n} {p / 1e6:.2f}M" for n, p in params.items()), flush=True)

    if args.analyze and not args.work_dir:
        raise SystemExit("--analyze needs --work_dir (the directory of an earlier run)")
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="mtmoe_sparsity_")
    os.makedirs(work_dir, exist_ok=True)
    procs, logs, started = {}, {}, {}
    model_dirs = {name: os.path.join(work_dir, name) for name in runs}
    pending = [] if args.analyze else list(runs)
    deadline = time.time() + args.timeout_s
    while pending or procs:
        while pending and len(procs) < args.concurrency:
            name = pending.pop(0)
            model_dir = os.path.join(work_dir, name)
            shutil.rmtree(model_dir, ignore_errors=True)
            model_dirs[name] = model_dir
            if args.languages == "all":
                cmd = [PROJECT_PYTHON, "-m", "mtmoe.train", "--gin.MIXTURE_OR_TASK_NAME='translate_all'"]
            else:
                cmd = [PROJECT_PYTHON, os.path.abspath(__file__), "--trainer", f"--gin.MIXTURE_OR_TASK_NAME='{MIXTURE}'"]
            cmd += [f"--gin_file={EXPERIMENT}",
                   f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TRAIN_STEPS={args.steps}",
                   f"--gin.EVAL_EVERY={args.eval_every}", f"--gin.EVAL_BATCHES={args.eval_batches}",
                   "--gin.LOG_EVERY=1", f"--gin.SAVE_EVERY={args.steps}", "--gin.BLEU_PAIRS=0",
                   "--gin.MAX_TRAIN_SECONDS=None"]
            cmd += [f"--gin.{k}={v}" for k, v in runs[name].items()]
            env = dict(os.environ, SPARSITY_LANGUAGES=args.languages)
            env.pop("XLA_FLAGS", None)
            logs[name] = open(os.path.join(work_dir, f"{name}.log"), "w")
            procs[name] = subprocess.Popen(cmd, stdout=logs[name], stderr=subprocess.STDOUT, cwd=ROOT, env=env)
            started[name] = time.time()
            print(f"started {name}: {' '.join(cmd[2:])}", flush=True)
        time.sleep(5)
        for name, proc in list(procs.items()):
            if proc.poll() is not None:
                logs[name].close()
                print(f"{name} finished (exit {proc.returncode}) after {time.time() - started[name]:.0f}s", flush=True)
                del procs[name]
        if time.time() > deadline:
            for name, proc in procs.items():
                print(f"{name}: still running at the {args.timeout_s}s limit, stopped", flush=True)
                proc.terminate()
            for proc in procs.values():
                proc.wait(timeout=60)
            break

    curves, failures = {}, {}
    for name in runs:
        try:
            curves[name] = read_curves(model_dirs[name])
        except (OSError, ValueError, KeyError, statistics.StatisticsError) as err:
            with open(os.path.join(work_dir, f"{name}.log")) as f:
                tail = f.read().strip().splitlines()[-3:]
            failures[name] = f"{err}; log: {' | '.join(tail)}"
            print(f"{name}: no curve ({failures[name]})")

    summary = {}
    dense = curves.get("dense")
    # Compare at the last evaluation every run reached (a run cut by --timeout_s has fewer).
    common = min((c["eval_steps"][-1] for c in curves.values() if c["eval_steps"]), default=None)
    target = None
    if dense and common in dense["eval_steps"]:
        at = dense["eval_steps"].index(common)
        target, target_seconds = dense["eval_loss"][at], dense["eval_seconds"][at]
    print(f"\nreference: the dense run's validation loss at step {common} (the last step every run evaluated): "
          f"{target if target is None else round(target, 4)}")
    print(f"\n{'run':13s} {'params':>8s} {'step s':>7s} {'val loss @ref':>15s} {'steps to dense':>15s} "
          f"{'speed-up (steps)':>17s} {'speed-up (time)':>16s}")
    for name, curve in curves.items():
        at_common = curve["eval_steps"].index(common) if common in curve["eval_steps"] else None
        row = {"params": params[name],
               "final_eval_loss": curve["eval_loss"][at_common] if at_common is not None else None,
               "final_step": common, "last_eval_step": curve["eval_steps"][-1] if curve["eval_steps"] else None,
               "median_step_seconds": curve["median_step_seconds"]}
        if target is not None and name != "dense" and curve["eval_loss"]:
            hit = first_reach(curve["eval_steps"], curve["eval_seconds"], curve["eval_loss"], target)
            if hit:
                row["reach_dense_final"] = {"step": hit[0], "seconds": hit[1]}
                row["speedup_steps"] = common / hit[0]
                row["speedup_time"] = target_seconds / hit[1]
        summary[name] = row
        reach = row.get("reach_dense_final")
        final = row["final_eval_loss"]
        cells = (f"{reach['step']:.0f}", f"{row['speedup_steps']:.2f}x", f"{row['speedup_time']:.2f}x") if reach \
            else ("-", "-", "-")
        print(f"{name:13s} {params[name] / 1e6:7.2f}M {row['median_step_seconds']:7.2f} "
              f"{final if final is not None else float('nan'):15.3f} {cells[0]:>15s} {cells[1]:>17s} {cells[2]:>16s}")
    print("\nvalidation loss by step:")
    for name, curve in curves.items():
        print(f"  {name:13s} " + "  ".join(f"{s}:{loss:.3f}" for s, loss in zip(curve["eval_steps"], curve["eval_loss"])))

    result = {
        "benchmark": "sparsity",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "note": f"2 CPU cores shared with other processes; {args.concurrency} runs at a time"},
        "command": "python benchmarks/sparsity.py " + " ".join(argv),
        "git": git_state(), "experiment": EXPERIMENT, "languages": args.languages, "runs": runs, "steps": args.steps, "eval_every": args.eval_every,
        "compared_at_step": common, "summary": summary, "curves": curves, "failures": failures, "work_dir": work_dir,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
