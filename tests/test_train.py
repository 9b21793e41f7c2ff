"""The trainer end to end on the tiny fixture model (tests/fixtures/train/tiny.gin).

Runs that must be separate processes (SIGKILL, SIGTERM, two jax.distributed
processes) start `python -m mtmoe.train`; the rest call `train.main` in this
process. The compilation cache set up by the `tiny_checkpoint` fixture lets
them all reuse one compiled train step.
"""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from mtmoe import train
from tests.tolerances import assert_close_float32

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "--gin_file=tests/fixtures/train/tiny.gin"
ONE_DEVICE = "--gin.DATA_PARALLELISM=1"


def losses(model_dir) -> dict[int, float]:
    """{step: training loss} from metrics.jsonl; a step logged twice (re-run after a kill) keeps the last."""
    out = {}
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if record["kind"] == "train" and "loss" in record:
                out[record["step"]] = record["loss"]
    return out


def final_params(model_dir):
    from mtmoe.translate import Translator

    translator = Translator.from_checkpoint(model_dir)
    import jax

    return translator.step, jax.tree_util.tree_leaves(jax.device_get(translator.params))


def run_main(args, capsys):
    status = train.main(args)
    err = capsys.readouterr().err.strip()
    return status, err


def trainer_command(model_dir, *extra):
    return [sys.executable, "-m", "mtmoe.train", TINY, f"--gin.MODEL_DIR='{model_dir}'", *extra]


def subprocess_env(**overrides):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    env.update(overrides)
    return env


def wait_for_step(process, model_dir, step, *, timeout=240):
    """Block until metrics.jsonl shows `step` (the process is still running)."""
    deadline = time.time() + timeout
    path = os.path.join(model_dir, "metrics.jsonl")
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"trainer exited early with {process.returncode}: {process.stderr.read()[-2000:]}")
        if os.path.exists(path) and step in losses(model_dir):
            return
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"trainer did not reach step {step} in {timeout}s")


# ---- bad input: one line, nothing written ---------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (["--gin_file=gin/no_such_file.gin"], "gin file gin/no_such_file.gin not found"),
    ([TINY], "gin macro MODEL_DIR is required but not set"),
    ([TINY, "--gin.MODEL_DIR='/tmp/x'", "--gin.TRAIN_STEP=3"], "did you mean TRAIN_STEPS?"),
    ([TINY, "--gin.MODEL_DIR='/tmp/x'", "--gin.train.train.batch_sise=3"], "batch_sise"),
])
def test_gin_errors_are_one_line(args, expected, capsys):
    status, err = run_main(args, capsys)
    assert status == 2
    assert expected in err
    assert len(err.splitlines()) == 1 and err.startswith("error: ")


def test_unreadable_gin_file(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = tmp_path / "secret.gin"
    path.write_text("A = 1\n")
    path.chmod(0)
    status, err = run_main([f"--gin_file={path}"], capsys)
    assert status == 2 and "not readable" in err


def test_bad_run_inputs_fail_before_writing(tmp_path, capsys):
    model_dir = tmp_path / "model"
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    cases = [
        (["--gin.MIXTURE_OR_TASK_NAME='fixture_translate_al'", f"--gin.MODEL_DIR='{model_dir}'", ONE_DEVICE],
         "unknown task or mixture 'fixture_translate_al'", "did you mean fixture_translate_all"),
        ([f"--gin.MODEL_DIR='{not_a_dir}/model'", ONE_DEVICE], "is not writable", "--gin.MODEL_DIR"),
        (["--gin.BATCH_SIZE=6", "--gin.DATA_PARALLELISM=2", "--gin.EXPERT_PARALLELISM=4",
          f"--gin.MODEL_DIR='{model_dir}'"], "BATCH_SIZE=6 does not divide over the mesh", "multiple of"),
    ]
    for extra, first, second in cases:
        status, err = run_main([TINY, *extra], capsys)
        assert status == 2, err
        assert first in err and second in err and len(err.splitlines()) == 1, err
    assert not model_dir.exists()


def test_checkpoint_of_another_architecture(tiny_checkpoint, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model_dir)
    before = {p: os.path.getmtime(os.path.join(r, p)) for r, _, files in os.walk(model_dir) for p in files}
    status, err = run_main([TINY, f"--gin.MODEL_DIR='{model_dir}'", ONE_DEVICE, "--gin.EMBED_DIM=24",
                            "--gin.TRAIN_STEPS=8"], capsys)
    assert status == 2
    assert "different architecture" in err and "(6, 16)" not in err and len(err.splitlines()) == 1, err
    after = {p: os.path.getmtime(os.path.join(r, p)) for r, _, files in os.walk(model_dir) for p in files}
    assert after == before  # nothing overwritten


# ---- the run itself ---------------------------------------------------------------------------------

def test_tiny_run_learns_and_saves(tiny_checkpoint):
    curve = losses(tiny_checkpoint)
    assert sorted(curve) == list(range(1, 7))
    assert curve[6] < curve[1] - 0.5  # 6 Adafactor steps at lr 0.3 on 28 sentence pairs
    steps = sorted(int(d) for d in os.listdir(os.path.join(tiny_checkpoint, "checkpoints")) if d.isdigit())
    assert steps == [2, 4, 6]
    assert os.path.isfile(os.path.join(tiny_checkpoint, "config.gin"))
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(tiny_checkpoint, "train")))
    with open(os.path.join(tiny_checkpoint, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    train_record = next(r for r in records if r["kind"] == "train" and r["step"] == 6 and "loss" in r)
    assert {"accuracy", "learning_rate", "experts/auxiliary_loss", "experts/fraction_tokens_left_behind",
            "experts/router_confidence", "experts/expert_usage"} <= set(train_record)
    # expert metrics of each MoE layer (layer 1 of each 2-layer stack)
    assert any(k.startswith("experts/encoder/layers_1/") for k in train_record)
    assert any(k.startswith("experts/decoder/layers_1/") for k in train_record)
    eval_record = next(r for r in records if r["kind"] == "eval")
    assert np.isfinite(eval_record["loss"]) and ("bleu/de-en" in eval_record or "bleu/en-de" in eval_record)


@pytest.mark.slow
@pytest.mark.timeout(900)  # above its own deadlines (240 s to the step, 300 s to rerun), which kill the trainer
def test_resume_after_sigkill_is_exact(tiny_checkpoint, tmp_path):
    """Killed at a random step and restarted with the same command, the run ends where the uninterrupted one did."""
    model_dir = tmp_path / "model"
    command = trainer_command(model_dir, ONE_DEVICE, "--gin.TRAIN_STEPS=6")
    kill_at = random.Random().randint(3, 5)
    process = subprocess.Popen(command, env=subprocess_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    wait_for_step(process, model_dir, kill_at)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = sorted(int(d) for d in os.listdir(model_dir / "checkpoints") if d.isdigit())
    assert saved and max(saved) < 6, f"killed at step {kill_at}, saved {saved}"
    rerun = subprocess.run(command, env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming from {model_dir}/checkpoints/{max(saved)}" in rerun.stdout
    reference, resumed = losses(tiny_checkpoint), losses(model_dir)
    assert sorted(resumed) == sorted(reference)
    np.testing.assert_allclose([resumed[s] for s in sorted(resumed)], [reference[s] for s in sorted(reference)],
                               rtol=1e-5)
    (step_a, params_a), (step_b, params_b) = final_params(tiny_checkpoint), final_params(model_dir)
    assert step_a == step_b == 6
    for a, b in zip(params_a, params_b):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(600)  # above its own deadlines (240 s to the step, 120 s to save), which say which one it missed
def test_sigterm_saves_before_exiting(tmp_path):
    model_dir = tmp_path / "model"
    command = trainer_command(model_dir, ONE_DEVICE, "--gin.TRAIN_STEPS=1000", "--gin.SAVE_EVERY=1000")
    process = subprocess.Popen(command, env=subprocess_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    wait_for_step(process, model_dir, 2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == train.PREEMPTED_EXIT_CODE, err[-2000:]
    saved = sorted(int(d) for d in os.listdir(model_dir / "checkpoints") if d.isdigit())
    assert len(saved) == 1 and saved[0] >= 2
    assert f"saved checkpoint {model_dir}/checkpoints/{saved[0]}" in err and "rerun the same command" in err


@pytest.mark.slow
def test_nan_stops_and_keeps_last_good_checkpoint(tiny_checkpoint, tmp_path, capsys):
    from mtmoe import checkpoints

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model_dir)
    before = checkpoints.Checkpointer(model_dir=str(model_dir), read_only=True).read_meta(6)["fingerprint"]
    # lr = 1e400 = inf: the first update turns the parameters into inf/nan
    status, err = run_main([TINY, f"--gin.MODEL_DIR='{model_dir}'", ONE_DEVICE, "--gin.TRAIN_STEPS=10",
                            "--gin.LEARNING_RATE=1e400"], capsys)
    assert status == train.NONFINITE_EXIT_CODE
    assert "at step 7" in err and f"Last good checkpoint: {model_dir}/checkpoints/6" in err, err
    assert len(err.splitlines()) == 1
    ckpt = checkpoints.Checkpointer(model_dir=str(model_dir), read_only=True)
    assert ckpt.all_steps() == [2, 4, 6]
    assert ckpt.read_meta(6)["fingerprint"] == before


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:MoE layer.*GSPMD:UserWarning")  # 2 groups over 8 devices: the GSPMD fallback
def test_eight_devices_match_one(tiny_checkpoint, tmp_path, capsys):
    """data=2 x expert=4 fake CPU devices give the one-device losses (same global batch, same routing groups)."""
    model_dir = tmp_path / "model"
    status, err = run_main([TINY, f"--gin.MODEL_DIR='{model_dir}'", "--gin.DATA_PARALLELISM=2",
                            "--gin.EXPERT_PARALLELISM=4", "--gin.TRAIN_STEPS=3", "--gin.BLEU_PAIRS=0"], capsys)
    assert status == 0, err
    reference, sharded = losses(tiny_checkpoint), losses(model_dir)
    # Step 1 is one forward pass: 8 x 16 tokens summed in another order through 4 layers.
    assert_close_float32(sharded[1], reference[1], terms=8 * 16 * 4)
    # Steps 2-3 follow Adafactor updates, which scale a vector's elements to lr * sign(g): a gradient
    # element within float32 reorder noise of zero flips its step, so they are held to an empirical 2e-4, not to eps.
    np.testing.assert_allclose([sharded[s] for s in (2, 3)], [reference[s] for s in (2, 3)], rtol=2e-4)
    # a checkpoint trained on 8 devices loads onto one
    from mtmoe.translate import Translator

    translator = Translator.from_checkpoint(str(model_dir))
    import jax

    assert {len(x.devices()) for x in jax.tree_util.tree_leaves(translator.params)} == {1}


@pytest.mark.slow
def test_microbatches_match_full_batch(tiny_checkpoint, tmp_path, capsys):
    model_dir = tmp_path / "model"
    status, err = run_main([TINY, f"--gin.MODEL_DIR='{model_dir}'", ONE_DEVICE, "--gin.NUM_MICROBATCHES=2",
                            "--gin.TRAIN_STEPS=2", "--gin.BLEU_PAIRS=0", "--gin.DROPOUT_RATE=0.0",
                            "--gin.JITTER_NOISE=0.0"], capsys)
    assert status == 0, err
    # The first step's loss is the mean of the two halves' losses; with token-weighted
    # means and routing groups of different sizes the match is close, not exact.
    np.testing.assert_allclose(losses(model_dir)[1], losses(tiny_checkpoint)[1], rtol=0.02)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(900)  # above its own deadline (400 s a process), which kills both trainers
def test_two_processes_train_one_model(tmp_path):
    """Two jax.distributed processes on loopback (one CPU device each) train one model together."""
    model_dir = tmp_path / "model"
    port = _free_port()
    env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=1")
    logs = [tmp_path / f"process{index}.log" for index in (0, 1)]
    processes = []
    for index, log in enumerate(logs):
        with open(log, "w") as out:  # files, not pipes: a full pipe would stall one process and both with it
            processes.append(subprocess.Popen(
                trainer_command(model_dir, "--gin.TRAIN_STEPS=3", "--gin.BLEU_PAIRS=0", "--multiprocess",
                                f"--coordinator_address=127.0.0.1:{port}", "--process_count=2",
                                f"--process_index={index}"),
                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT))
    try:
        for process in processes:
            process.wait(timeout=400)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    outputs = [log.read_text() for log in logs]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    assert "mesh {'data': 2, 'expert': 1, 'model': 1}, 2 process(es)" in outputs[0]
    curve = losses(model_dir)
    assert sorted(curve) == [1, 2, 3] and all(np.isfinite(list(curve.values())))
    step, params = final_params(model_dir)
    assert step == 3 and all(np.all(np.isfinite(p)) for p in params)


@pytest.mark.slow
def test_train_step_compiles_once(tmp_path, capsys, caplog):
    """Every step after the first reuses the first step's program (a recompile costs seconds per run)."""
    import logging

    import jax

    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING):
            status, err = run_main([TINY, ONE_DEVICE, f"--gin.MODEL_DIR='{tmp_path / 'run'}'", "--gin.TRAIN_STEPS=3",
                                    "--gin.EVAL_BATCHES=0", "--gin.BLEU_PAIRS=0"], capsys)
    finally:
        jax.config.update("jax_log_compiles", False)
    assert status == 0, err
    compiles = [r for r in caplog.records if r.getMessage().startswith("Compiling jit(step_fn)")]
    assert len(compiles) == 1, f"the train step was compiled {len(compiles)} times"
