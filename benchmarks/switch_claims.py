"""The Switch Transformer's claims at this project's scale, with seeds: one command, resumable.

    make claims                                              # = python -m benchmarks.switch_claims --plan cpu --commit
    .venv/bin/python -m benchmarks.switch_claims --plan cpu --stages scaling --seeds 0
    .venv/bin/python -m benchmarks.switch_claims --plan cpu --stages report    # tables and plots from what ran

Every training run is an ordinary `python -m mtmoe.train` run with its own
MODEL_DIR under --work_dir (default runs/switch_claims/<plan>): a stopped study
is resumed by the same command, each run continuing from its last checkpoint.
When a run finishes, its record (metrics.jsonl, config.gin, run.json: the load
average and seconds of each invocation, and, once scored,
dev_scores/results.json: a few kB) is copied into --records_dir (default
benchmarks/results/switch_claims/<plan>), and with --commit committed. A run
whose record has the evaluation of its last step is not trained again, so the
study goes on from the repository on another machine or another day; a run
whose checkpoint a later stage needs (the teacher, the dense model to upcycle,
a model to score) and that is recorded but not on this machine is trained again
here, and its rerun replaces the record. The report reads the records only.
Every run of a seed reads the same batches, from a pre-tokenized
cache of that seed's data (mtmoe.token_cache, written once per seed under
--work_dir/cache; the batches seqio would give, without its per-step cost).
Stages, in order:

  scaling    dense and 2, 4, ..., 64 experts at equal FLOPs per token (top-1,
             every expert as wide as the dense MLP), and "dense-params", a
             dense model whose wider MLP gives it switch-8's parameters; every
             configuration once per seed, all from the plan's gin file.
  capacity   one extra run for the likeliest reason many experts trail at
             this scale: with groups of GROUP_SIZE tokens, each expert's
             capacity (group / experts x the capacity factor) shrinks as the
             experts grow, and more tokens overflow it and skip the layer. The
             plan's largest expert count again, first seed, with the whole
             batch as one group (plan.capacity_group_size tokens).
  distill    Switch section 4: each seed's model of the best sparse
             configuration (lowest mean final validation loss) distilled into
             the dense model: non-expert weights from the teacher, loss
             0.75 x ground truth + 0.25 x the teacher's probabilities; and a
             control, "no-teacher": the same start and steps, ground truth only.
  upcycle    each seed's final dense model continued for the plan's
             upcycle_steps twice: as dense, and upcycled to upcycle_experts
             experts (copies of its MLP); both start a fresh optimizer.
  languages  every direction's dev chrF++ (eval/per_language_bleu.py,
             greedy, the plan's eval_sentences per direction) for each seed's
             dense, best sparse, distilled and no-teacher control model.
  step_time  seconds per train step of every configuration, measured alone
             under the benchmark protocol (benchmarks/results/
             switch_claims_step_time.json): wall-clock curves are steps x this,
             so the study's own runs need not have the machine to themselves.
  report     benchmarks/results/switch_claims_*.json (rendered into
             BENCHMARKS.md) and docs/switch_claims.png, from the runs' records
             (benchmarks/claims_report.py).

Plans (PLANS) fix the model, steps and seeds; --steps, --seeds, --experts and
the other flags override one for a shorter look. The cpu plan is sized for this
2-core machine; the accelerator plan for one GPU or TPU host.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

STAGES = ("scaling", "capacity", "distill", "upcycle", "languages", "step_time", "report")
TEACHER_WEIGHT = 0.25  # Switch table 6: 0.25 teacher, 0.75 ground truth
RUN_CONDITIONS = "run.json"  # what each invocation of a run ran under (record_conditions)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the study trains: `gin_file` with `bindings`, each configuration for `steps` steps per seed."""

    gin_file: str
    steps: int
    eval_every: int
    seeds: tuple[int, ...]
    experts: tuple[int, ...]              # 0 = the dense model
    upcycle_steps: int
    upcycle_experts: int
    eval_sentences: int                   # dev sentences per direction in the languages stage
    capacity_group_size: int              # the capacity stage's GROUP_SIZE: the tokens of one batch
    eval_data: str = "embedded"           # eval/per_language_bleu.py --data
    bindings: tuple[str, ...] = ()        # gin bindings of every run (NAME=VALUE)
    about: str = ""


PLANS = {
    # The demo's model (d_model 96, 2+2 layers, FFN 384, MoE at every other FFN, 64 x 32-token packed rows a
    # step, Adafactor at 0.5 / sqrt(step)) on every direction of the embedded corpus. 0.6-0.75 s a step here
    # (1.3 s for dense-params; benchmarks/results/switch_claims_step_time.json): the scaling stage takes about
    # 1.7 hours per seed, the whole study about 6.5 hours on the 2 cores.
    "cpu": Plan(
        gin_file="gin/experiments/claims.gin", steps=1000, eval_every=100, seeds=(0, 1, 2),
        experts=(0, 2, 4, 8, 16, 32, 64), upcycle_steps=500, upcycle_experts=8, eval_sentences=20,
        capacity_group_size=2048,  # 64 rows x 32 target tokens
        about="the demo's model on all 228 directions, sized for a 2-core CPU"),
    # mSwitch-Small-like width on one accelerator: d_model 512, 6+6 layers, 256 x 64-token rows a step.
    "accelerator": Plan(
        gin_file="gin/experiments/claims.gin", steps=20000, eval_every=1000, seeds=(0, 1, 2),
        experts=(0, 2, 4, 8, 16, 32, 64), upcycle_steps=10000, upcycle_experts=8, eval_sentences=200,
        capacity_group_size=16384,  # 256 rows x 64 target tokens
        bindings=("EMBED_DIM=512", "NUM_HEADS=8", "HEAD_DIM=64", "MLP_DIM=1024", "NUM_ENCODER_LAYERS=6",
                  "NUM_DECODER_LAYERS=6", "BATCH_SIZE=256", "TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 64}",
                  "LEARNING_RATE=1.0", "WARMUP_STEPS=1000", "EVAL_BATCHES=32", "GROUP_SIZE=4096"),
        about="d_model 512, 6+6 layers on all 228 directions, for one accelerator"),
}


def configurations(plan: Plan) -> dict[str, dict[str, str]]:
    """{name: gin bindings} of the scaling stage: "dense", "switch-N" per expert count, "dense-params"."""
    configs = {("dense" if n == 0 else f"switch-{n}"): {"NUM_EXPERTS": str(n)} for n in plan.experts}
    if 0 in plan.experts and 8 in plan.experts:
        configs["dense-params"] = {"NUM_EXPERTS": "0"}  # MLP_DIM: dense_params_mlp_dim()
    return configs


# -- runs ------------------------------------------------------------------------------------------


def run_done(model_dir: str, steps: int) -> bool:
    """Whether the run in `model_dir` evaluated its last step (mtmoe.train's final evaluation)."""
    path = os.path.join(model_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return any(row.get("kind") == "eval" and row.get("step") == steps
                   for row in map(json.loads, filter(str.strip, f)))


def run_logged(command: list[str], path: str, doing: str) -> tuple[int, float]:
    """Runs `command` from the repository root, its output appended to PATH.log; (exit status, seconds)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    started = time.monotonic()
    print(f"  {os.path.relpath(path, ROOT)}: {doing} (log: {os.path.relpath(path, ROOT)}.log)", flush=True)
    # Every run of the study trains on one CPU device, as its first runs did: mtmoe.train's one device per core
    # computes the same steps with float32 sums in another order, and the seeds' runs should differ by seed alone.
    env = {**os.environ, "MTMOE_CPU_DEVICES": "1"}
    with open(f"{path}.log", "a") as log:
        status = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    return status, time.monotonic() - started


def write_cache(cache_dir: str, plan: Plan, *, seed: int, python: str) -> None:
    """The seed's pre-tokenized training batches for plan.steps steps (mtmoe.token_cache), once."""
    if os.path.exists(os.path.join(cache_dir, "manifest.json")):
        return
    command = [python, "-m", "mtmoe.token_cache", f"--gin_file={plan.gin_file}", "--out", cache_dir,
               "--steps", str(plan.steps), f"--gin.RANDOM_SEED={seed}", *(f"--gin.{b}" for b in plan.bindings)]
    status, seconds = run_logged(command, cache_dir, f"writing seed {seed}'s batches")
    if status != 0:
        raise SystemExit(f"switch_claims: writing the token cache {cache_dir} failed (exit status {status}); "
                         f"see {cache_dir}.log")
    print(f"  {os.path.relpath(cache_dir, ROOT)}: written in {seconds:.0f} s", flush=True)


def train(model_dir: str, plan: Plan, *, steps: int, seed: int, bindings: dict[str, str], python: str,
          cache_dir: str) -> None:
    """`python -m mtmoe.train` for `model_dir` up to `steps` (resuming it) over the seed's token cache,
    its output in MODEL_DIR.log."""
    write_cache(cache_dir, plan, seed=seed, python=python)
    gin = {"MODEL_DIR": repr(model_dir), "TRAIN_CACHE_DIR": repr(cache_dir), "TRAIN_STEPS": str(steps),
           "RANDOM_SEED": str(seed),
           "EVAL_EVERY": str(plan.eval_every), "SAVE_EVERY": str(plan.eval_every), "KEEP_CHECKPOINTS": "1",
           "COOLDOWN_STEPS": "0", "MAX_TRAIN_SECONDS": "None", "BLEU_PAIRS": "0"}
    command = [python, "-m", "mtmoe.train", f"--gin_file={plan.gin_file}"]
    command += [f"--gin.{binding}" for binding in plan.bindings]
    command += [f"--gin.{name}={value}" for name, value in {**gin, **bindings}.items()]
    started, load_before = time.time(), os.getloadavg()
    status, seconds = run_logged(command, model_dir, f"training to step {steps}")
    record_conditions(model_dir, started=started, seconds=seconds, load_before=load_before)
    if status != 0 or not run_done(model_dir, steps):
        raise SystemExit(f"switch_claims: the run {model_dir} stopped (exit status {status}) before step {steps}; "
                         f"see {model_dir}.log, then rerun the same command to resume it")
    print(f"  {os.path.relpath(model_dir, ROOT)}: done in {seconds:.0f} s", flush=True)


def record_conditions(model_dir: str, *, started: float, seconds: float, load_before: tuple[float, ...]) -> None:
    """Appends what one `python -m mtmoe.train` invocation of the run ran under to MODEL_DIR/run.json
    ({"segments": [...]}, one per invocation: a resumed run has several): start time, seconds, the load
    average before and after (other runs of the study beside it show there), commit, CPU. Kept in the
    run's record; the wall-clock curves come from switch_claims_step_time, measured alone."""
    from benchmarks import protocol

    path = os.path.join(model_dir, RUN_CONDITIONS)
    segments = []
    if os.path.exists(path):
        with open(path) as f:
            segments = json.load(f)["segments"]
    machine = protocol.cpu_info()
    segments.append({
        "started": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1), "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()], "commit": protocol.git_state()["commit"],
        "cpu": machine["cpu"], "cores": machine["cores"]})
    os.makedirs(model_dir, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"segments": segments}, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def final_loss(model_dir: str) -> float:
    """Validation cross-entropy of the run's last evaluation."""
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        evals = [row for row in map(json.loads, filter(str.strip, f)) if row.get("kind") == "eval"]
    return evals[-1]["cross_ent_loss"]


# -- dense-params width ----------------------------------------------------------------------------


def parameter_count(plan: Plan, bindings: dict[str, str], python: str) -> int:
    """Parameters of the plan's model with `bindings`, by abstract evaluation in a child process."""
    code = (
        "import json, sys, gin, jax\n"
        "import flax.linen as nn\n"
        "from mtmoe import command_line\n"
        f"command_line.parse_gin(gin_files=[{plan.gin_file!r}], bindings={list(plan.bindings)!r} + "
        f"{[f'{k}={v}' for k, v in bindings.items()]!r} + [\"MODEL_DIR='/unused'\"])\n"
        "model = gin.query_parameter('%MODEL').scoped_configurable_fn()\n"
        "shapes = {'encoder_input_tokens': (1, 8), 'decoder_input_tokens': (1, 8)}\n"
        "tree = jax.eval_shape(lambda r: model.get_initial_variables(r, input_shapes=shapes), jax.random.PRNGKey(0))\n"
        "print(sum(x.size for x in jax.tree.leaves(nn.unbox(tree['params']))))\n"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"switch_claims: counting parameters failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return int(out.stdout.strip().splitlines()[-1])


def dense_params_mlp_dim(plan: Plan, python: str) -> tuple[int, dict[str, int]]:
    """(MLP_DIM, {config: parameters}): the dense MLP width whose parameter count is switch-8's.

    Parameters grow linearly with MLP_DIM: two counts give the slope; the width
    is rounded to a multiple of 64."""
    base = parameter_count(plan, {"NUM_EXPERTS": "0"}, python)
    target = parameter_count(plan, {"NUM_EXPERTS": "8"}, python)
    mlp_dim = int(subprocess.run(
        [python, "-c", f"from mtmoe import command_line; import gin; command_line.parse_gin(gin_files=[{plan.gin_file!r}], "
                       f"bindings={list(plan.bindings)!r} + [\"MODEL_DIR='/unused'\"]); print(gin.query_parameter('%MLP_DIM'))"],
        capture_output=True, text=True, cwd=ROOT, check=True).stdout.split()[-1])
    wider = parameter_count(plan, {"NUM_EXPERTS": "0", "MLP_DIM": str(mlp_dim + 64)}, python)
    width = mlp_dim + 64 * round((target - base) / (wider - base))
    return width, {"dense": base, "switch-8": target}


# -- stages ----------------------------------------------------------------------------------------


class Study:
    """The plan's runs: checkpoints under `work_dir`, each finished run's record under `records_dir`
    (module docstring)."""

    def __init__(self, plan: Plan, work_dir: str, records_dir: str, python: str = sys.executable,
                 commit: bool = False):
        self.plan, self.work_dir, self.python = plan, os.path.abspath(work_dir), python
        self.records_dir, self.commit = os.path.abspath(records_dir), commit
        self.configs = configurations(plan)
        self._widths_path = os.path.join(self.work_dir, "dense_params.json")

    def run_dir(self, stage: str, name: str, seed: int) -> str:
        """The run's MODEL_DIR: checkpoints, logs and metrics, on this machine only."""
        return os.path.join(self.work_dir, stage, f"{name}-s{seed}")

    def record_dir(self, stage: str, name: str, seed: int) -> str:
        """The run's record: its metrics.jsonl, config.gin, run.json and dev_scores/results.json, kept in the repository."""
        return os.path.join(self.records_dir, stage, f"{name}-s{seed}")

    def config_bindings(self, name: str) -> dict[str, str]:
        bindings = dict(self.configs[name])
        if name == "dense-params":
            bindings["MLP_DIM"] = str(self.dense_params()["mlp_dim"])
        return bindings

    def dense_params(self) -> dict:
        """{"mlp_dim", "params"}: the dense-params width, computed once and kept in work_dir."""
        if not os.path.exists(self._widths_path):
            width, params = dense_params_mlp_dim(self.plan, self.python)
            params["dense-params"] = parameter_count(self.plan, {"NUM_EXPERTS": "0", "MLP_DIM": str(width)},
                                                     self.python)
            os.makedirs(self.work_dir, exist_ok=True)
            with open(self._widths_path, "w") as f:
                json.dump({"mlp_dim": width, "params": params}, f)
        with open(self._widths_path) as f:
            return json.load(f)

    # -- runs and their records --------------------------------------------------------------------

    def spec(self, stage: str, name: str, seed: int) -> tuple[int, dict[str, str], list[tuple[str, str]]]:
        """(steps, gin bindings, [(stage, name) whose checkpoint of the same seed it starts from]) of a run."""
        plan = self.plan
        if stage == "scaling":
            return plan.steps, self.config_bindings(name), []
        if stage == "capacity":
            return plan.steps, self.capacity_run()[1], []
        if stage == "distill":
            teacher = self.best_sparse()
            teacher_dir = self.run_dir("scaling", teacher, seed)
            start = {"NUM_EXPERTS": "0", "INITIAL_CHECKPOINT_PATH": repr(teacher_dir), "INIT_MODE": "'student'"}
            if name == "student":
                start |= {"TEACHER_PATH": repr(teacher_dir), "TEACHER_WEIGHT": str(TEACHER_WEIGHT)}
            return plan.steps, start, [("scaling", teacher)]
        if stage == "upcycle":
            experts = 0 if name == "dense" else plan.upcycle_experts
            start = {"NUM_EXPERTS": str(experts), "INITIAL_CHECKPOINT_PATH": repr(self.run_dir("scaling", "dense", seed)),
                     "INIT_MODE": repr("params" if experts == 0 else "upcycle")}
            return plan.upcycle_steps, start, [("scaling", "dense")]
        raise ValueError(f"no run {stage}/{name}")

    def done(self, stage: str, name: str, seed: int) -> bool:
        """Whether the run's record holds the evaluation of its last step."""
        steps = self.plan.upcycle_steps if stage == "upcycle" else self.plan.steps
        return run_done(self.record_dir(stage, name, seed), steps)

    def ensure(self, stage: str, name: str, seed: int, *, checkpoint: bool = False) -> None:
        """Trains the run unless its record says it has finished; with `checkpoint`, also when its record
        has finished but its checkpoint is not on this machine (a later stage starts from it or scores it).

        The rerun's metrics then replace the record, so that every result derived from the
        checkpoint and the record stand on the same run."""
        model_dir, record = self.run_dir(stage, name, seed), self.record_dir(stage, name, seed)
        steps, bindings, needs = self.spec(stage, name, seed)
        if run_done(model_dir, steps):
            print(f"  {os.path.relpath(model_dir, ROOT)}: done", flush=True)
            self.keep(model_dir, record, ("metrics.jsonl", "config.gin", RUN_CONDITIONS))
            return
        if run_done(record, steps):
            if not checkpoint:
                print(f"  {os.path.relpath(record, ROOT)}: done (recorded)", flush=True)
                return
            print(f"  {os.path.relpath(model_dir, ROOT)}: recorded, but its checkpoint is not here; training it "
                  "again (the rerun replaces the record)", flush=True)
        for need_stage, need_name in needs:
            self.ensure(need_stage, need_name, seed, checkpoint=True)
        train(model_dir, self.plan, steps=steps, seed=seed, bindings=bindings, python=self.python,
              cache_dir=os.path.join(self.work_dir, "cache", f"s{seed}"))
        self.keep(model_dir, record, ("metrics.jsonl", "config.gin", RUN_CONDITIONS))

    def keep(self, model_dir: str, record: str, files: tuple[str, ...]) -> None:
        """Copies the run's small files into its record (each replaced whole, never half-written); with
        --commit, commits the record alone."""
        changed = []
        for name in files:
            source, target = os.path.join(model_dir, name), os.path.join(record, name)
            if name == RUN_CONDITIONS and not os.path.exists(source):
                continue  # a run trained before its conditions were recorded
            with open(source, "rb") as f:
                data = f.read()
            if os.path.exists(target):
                with open(target, "rb") as f:
                    if f.read() == data:
                        continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = f"{target}.tmp.{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
            changed.append(target)
        if changed and self.commit:
            commit_record(record, f"switch_claims: record of {os.path.relpath(record, self.records_dir)}")

    # -- stages ------------------------------------------------------------------------------------

    def scaling(self) -> None:
        for seed in self.plan.seeds:  # seed-major: after the first seed every configuration has a curve
            for name in self.configs:
                self.ensure("scaling", name, seed)

    def capacity_run(self) -> tuple[str, dict[str, str]]:
        """(run name, bindings) of the capacity stage's run."""
        experts, group = max(self.plan.experts), self.plan.capacity_group_size
        return f"switch-{experts}-group{group}", {"NUM_EXPERTS": str(experts), "GROUP_SIZE": str(group)}

    def capacity(self) -> None:
        self.ensure("capacity", self.capacity_run()[0], self.plan.seeds[0])

    def best_sparse(self, seeds: tuple[int, ...] | None = None) -> str:
        """The sparse configuration with the lowest mean final validation loss over `seeds` (default: the plan's)."""
        seeds = self.plan.seeds if seeds is None else seeds
        sparse = [name for name in self.configs if name.startswith("switch-")]
        missing = [self.record_dir("scaling", n, s) for n in sparse for s in seeds if not self.done("scaling", n, s)]
        if missing:
            raise SystemExit(f"switch_claims: the scaling stage has not finished ({len(missing)} runs left, e.g. "
                             f"{missing[0]}); run --stages scaling first")
        mean = {n: sum(final_loss(self.record_dir("scaling", n, s)) for s in seeds) / len(seeds) for n in sparse}
        return min(mean, key=mean.get)

    def finished_seeds(self) -> tuple[int, ...]:
        """The plan's seeds whose scaling runs have all finished."""
        return tuple(s for s in self.plan.seeds if all(self.done("scaling", n, s) for n in self.configs))

    def distill(self) -> None:
        for seed in self.plan.seeds:
            self.ensure("distill", "student", seed)
            # The control: the same start and steps on the ground truth alone, so that what the
            # teacher's probabilities add is told apart from the head start its weights give.
            self.ensure("distill", "no-teacher", seed)

    def upcycle(self) -> None:
        for seed in self.plan.seeds:
            for name in ("dense", f"switch-{self.plan.upcycle_experts}"):
                self.ensure("upcycle", name, seed)

    def scored_models(self) -> dict[str, tuple[str, str]]:
        """{label: (stage, name)} of the models the languages stage scores."""
        return {"dense": ("scaling", "dense"), "sparse": ("scaling", self.best_sparse()),
                "distilled": ("distill", "student"), "no-teacher control": ("distill", "no-teacher")}

    def languages(self) -> None:
        from benchmarks import claims_report

        for seed in self.plan.seeds:
            for stage, name in self.scored_models().values():
                record = self.record_dir(stage, name, seed)
                scores = claims_report.dev_scores(record)
                if scores and "seconds" in scores:  # written when every direction is scored
                    print(f"  {os.path.relpath(os.path.join(record, 'dev_scores'), ROOT)}: done (recorded)",
                          flush=True)
                    continue
                self.ensure(stage, name, seed, checkpoint=True)
                model_dir = self.run_dir(stage, name, seed)
                out = os.path.join(model_dir, "dev_scores")
                command = [self.python, "eval/per_language_bleu.py", "--checkpoint", model_dir, "--split", "dev",
                           "--pairs", "all", "--max_sentences", str(self.plan.eval_sentences), "--beam_size", "1",
                           "--data", self.plan.eval_data, "--output", out,
                           "--compilation_cache", os.path.join(self.work_dir, "jax_cache")]
                status, _ = run_logged(command, out, "scoring every direction")
                if status != 0:
                    raise SystemExit(f"switch_claims: scoring {model_dir} failed (exit status {status}); see {out}.log")
                self.keep(model_dir, record, (os.path.join("dev_scores", "results.json"),))


def commit_record(path: str, message: str) -> None:
    """`git commit` of `path` alone (other staged or changed files stay as they are); one line if git cannot."""
    # From the record's own directory: the repository that holds the records, wherever the runs are.
    add = subprocess.run(["git", "add", "--", "."], cwd=path, capture_output=True, text=True)
    done = add if add.returncode else subprocess.run(["git", "commit", "-q", "-m", message, "--", "."], cwd=path,
                                                     capture_output=True, text=True)
    if done.returncode:
        why = (done.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  switch_claims: could not commit {os.path.relpath(path, ROOT)} ({why}); it is written, commit it "
              "by hand", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="cpu", choices=sorted(PLANS))
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {','.join(STAGES)}")
    parser.add_argument("--work_dir", default=None, help="where the runs go (default runs/switch_claims/<plan>)")
    parser.add_argument("--gin_file", default=None, help="the plan's model and run (default: the plan's)")
    parser.add_argument("--gin_bindings", action="append", default=[], help="more gin bindings of every run")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--eval_every", type=int, default=None)
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the plan's)")
    parser.add_argument("--experts", default=None, help="comma-separated expert counts, 0 = dense (default: the plan's)")
    parser.add_argument("--upcycle_steps", type=int, default=None)
    parser.add_argument("--eval_sentences", type=int, default=None)
    parser.add_argument("--eval_data", default=None, help="eval/per_language_bleu.py --data (default embedded)")
    parser.add_argument("--results_dir", default=os.path.join(ROOT, "benchmarks", "results"))
    parser.add_argument("--records_dir", default=None,
                        help="each finished run's metrics (default RESULTS_DIR/switch_claims/<plan>)")
    parser.add_argument("--commit", action="store_true",
                        help="git commit each run's record as it finishes, so the study goes on from the repository "
                             "on another machine")
    parser.add_argument("--plot", default=os.path.join(ROOT, "docs", "switch_claims.png"))
    parser.add_argument("--step_time_reps", type=int, default=5)
    parser.add_argument("--allow-load", dest="allow_load", action="store_true",
                        help="step_time: measure on a busy machine (the result is then marked as a note)")
    args = parser.parse_args(argv)

    plan = PLANS[args.plan]
    try:
        overrides = {
            "gin_file": args.gin_file, "steps": args.steps, "eval_every": args.eval_every,
            "upcycle_steps": args.upcycle_steps, "eval_sentences": args.eval_sentences, "eval_data": args.eval_data,
            "seeds": tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None,
            "experts": tuple(int(n) for n in args.experts.split(",")) if args.experts else None,
            "bindings": plan.bindings + tuple(args.gin_bindings) if args.gin_bindings else None,
        }
    except ValueError:
        parser.error("--seeds and --experts take comma-separated integers")
    plan = dataclasses.replace(plan, **{k: v for k, v in overrides.items() if v is not None})
    stages = [s for s in args.stages.split(",") if s]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"--stages: unknown {', '.join(unknown)}; use some of {','.join(STAGES)}")
    if 0 not in plan.experts or not any(n > 0 for n in plan.experts):
        parser.error("--experts needs 0 (the dense baseline) and at least one expert count")
    if plan.steps % plan.eval_every or plan.upcycle_steps % plan.eval_every:
        parser.error(f"--steps ({plan.steps}) and --upcycle_steps ({plan.upcycle_steps}) must be multiples of "
                     f"--eval_every ({plan.eval_every}): curves are compared at the evaluated steps")
    if not os.path.exists(os.path.join(ROOT, plan.gin_file)):
        parser.error(f"--gin_file {plan.gin_file}: no such file")

    study = Study(plan, args.work_dir or os.path.join(ROOT, "runs", "switch_claims", args.plan),
                  args.records_dir or os.path.join(args.results_dir, "switch_claims", args.plan), commit=args.commit)
    print(f"switch_claims: plan {args.plan} ({plan.steps} steps, seeds {list(plan.seeds)}, experts "
          f"{list(plan.experts)}) in {study.work_dir}", flush=True)
    from benchmarks import claims_report

    for stage in stages:
        print(f"== {stage}", flush=True)
        if stage == "step_time":
            claims_report.measure_step_time(study, reps=args.step_time_reps, allow_load=args.allow_load,
                                            results_dir=args.results_dir)
        elif stage == "report":
            claims_report.report(study, plan_name=args.plan, argv=sys.argv[1:] if argv is None else argv,
                                 results_dir=args.results_dir, plot_path=args.plot)
        else:
            getattr(study, stage)()


if __name__ == "__main__":
    main()
