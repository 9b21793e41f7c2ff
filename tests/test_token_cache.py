"""The pre-tokenized cache: the same rows as seqio, the same training, without TensorFlow.

The cache is written from the trainer's own seqio source, so the claims are
exact: its batches equal seqio's batch for batch, and training the tiny
fixture model from it reproduces the seqio run's losses step for step (same
program, same inputs). A trainer killed on the cache path resumes where it
stopped, in a process that cannot import TensorFlow or seqio.
"""

import json
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest

from mtmoe import token_cache, train
from mtmoe.command_line import UsageError
from mtmoe.train_config import DatasetConfig
from tests.test_train import ONE_DEVICE, REPO, TINY, losses, subprocess_env, wait_for_step

LENGTHS = {"inputs": 16, "targets": 16}
BATCH = 8  # tests/fixtures/train/tiny.gin's BATCH_SIZE

# Run as `python -c`: the trainer on the cache with tensorflow and seqio unimportable.
NO_TENSORFLOW_TRAINER = """
import sys
BLOCKED = ('tensorflow', 'seqio', 'tensorflow_text', 'tensorflow_datasets')
for name in BLOCKED:
    sys.modules[name] = None  # as on a host without them: import fails, importlib.util.find_spec gives None
from mtmoe import train
status = train.main(sys.argv[1:])
assert not [m for m, v in sys.modules.items() if v is not None and m.split('.')[0] in BLOCKED], 'TensorFlow was imported'
sys.exit(status)
"""


def fixture_config(**overrides) -> DatasetConfig:
    fields = dict(mixture_or_task_name="fixture_translate_all", task_feature_lengths=LENGTHS, batch_size=BATCH,
                  shuffle_buffer_size=16, module="tests.train_fixture_tasks")
    return DatasetConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """The cache of tests/fixtures/train/tiny.gin's dataset, written by the command line (its 6 steps)."""
    out = tmp_path_factory.mktemp("cache") / "tiny"
    assert token_cache.main([TINY, "--out", str(out)]) == 0
    return str(out)


def test_cache_rows_are_seqio_rows_in_order(tiny_cache):
    from mtmoe import input_pipeline

    seqio_batches = input_pipeline.SeqioSource(fixture_config(), seed=0).train_batches(
        batch_size=BATCH, skip_batches=0, process_index=0, process_count=1)
    expected = [next(seqio_batches) for _ in range(6)]
    cache = token_cache.CacheSource(fixture_config(cache_dir=tiny_cache), seed=0)
    got = cache.train_batches(batch_size=BATCH, skip_batches=0, process_index=0, process_count=1)
    for want in expected:
        batch = next(got)
        assert batch.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(batch[name], want[name], err_msg=name)
    # a restart at batch 4 reads batch 4; process 1 of 2 reads the second half of each global batch
    resumed = cache.train_batches(batch_size=BATCH, skip_batches=4, process_index=0, process_count=1)
    np.testing.assert_array_equal(next(resumed)["decoder_target_tokens"], expected[4]["decoder_target_tokens"])
    half = cache.train_batches(batch_size=BATCH // 2, skip_batches=1, process_index=1, process_count=2)
    np.testing.assert_array_equal(next(half)["encoder_input_tokens"], expected[1]["encoder_input_tokens"][BATCH // 2:])
    # past the last row the rows repeat from the first (48 rows = 6 batches)
    wrapped = cache.train_batches(batch_size=BATCH, skip_batches=6, process_index=0, process_count=1)
    np.testing.assert_array_equal(next(wrapped)["encoder_input_tokens"], expected[0]["encoder_input_tokens"])


def test_cache_holds_what_evaluation_needs(tiny_cache):
    with open(os.path.join(tiny_cache, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["rows"] == 6 * BATCH and manifest["seed"] == 0
    assert manifest["task_feature_lengths"] == LENGTHS
    cache = token_cache.CacheSource(fixture_config(cache_dir=tiny_cache))
    assert dict(cache.pairs)["fixture_translate_en_de"] == ("en", "de")
    rows = cache.eval_rows(split="validation", limit=100, process_index=0, process_count=1)
    assert len(rows) == manifest["eval_rows"] > 0  # tiny.gin: EVAL_BATCHES 1 x BATCH_SIZE 8, fewer if the split is small
    from mtmoe import input_pipeline

    task = cache.pairs[0][0]  # tiny.gin: BLEU_PAIRS 1, BLEU_EXAMPLES 2
    expected = input_pipeline.SeqioSource(fixture_config()).pair_examples(task, split="validation", limit=2)
    assert cache.pair_examples(task, split="validation", limit=2) == expected and expected[0]
    assert os.path.isfile(cache.vocabulary.sentencepiece_model_file)


def test_a_mixtures_validation_rows_are_the_same_in_every_run():
    """The mixture samples its members for validation too; the draw must not change between runs."""
    from mtmoe import input_pipeline

    def rows():
        source = input_pipeline.SeqioSource(fixture_config())
        return source.eval_rows(split="validation", limit=16, process_index=0, process_count=1)

    first, second = rows(), rows()
    assert len(first) == len(second) > 0
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a["decoder_target_tokens"], b["decoder_target_tokens"])


@pytest.mark.slow
def test_training_from_cache_gives_the_seqio_losses(tiny_checkpoint, tiny_cache, tmp_path, capsys):
    model_dir = tmp_path / "model"
    status = train.main([TINY, f"--gin.MODEL_DIR='{model_dir}'", ONE_DEVICE, f"--gin.TRAIN_CACHE_DIR='{tiny_cache}'"])
    assert status == 0, capsys.readouterr().err
    assert "data: pre-tokenized cache" in capsys.readouterr().out
    reference, cached = losses(tiny_checkpoint), losses(model_dir)
    assert sorted(cached) == sorted(reference) == list(range(1, 7))
    # Same compiled step on the same batches in one process: equal up to the last bit; the tolerance
    # only allows for XLA choosing another reduction order between the two compilations (float32 eps).
    np.testing.assert_allclose([cached[s] for s in range(1, 7)], [reference[s] for s in range(1, 7)], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(900)  # above its own deadlines (240 s to the step, 300 s to rerun), which kill the trainer
def test_resume_on_the_cache_path_without_tensorflow(tiny_checkpoint, tiny_cache, tmp_path):
    """Killed at a random step, the TensorFlow-free trainer resumes and ends on the seqio run's losses."""
    model_dir = tmp_path / "model"
    command = [sys.executable, "-c", NO_TENSORFLOW_TRAINER, TINY, f"--gin.MODEL_DIR='{model_dir}'", ONE_DEVICE,
               f"--gin.TRAIN_CACHE_DIR='{tiny_cache}'", "--gin.BLEU_PAIRS=0"]
    process = subprocess.Popen(command, env=subprocess_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    wait_for_step(process, model_dir, random.Random().randint(3, 5))
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = sorted(int(d) for d in os.listdir(model_dir / "checkpoints") if d.isdigit())
    assert saved and max(saved) < 6
    rerun = subprocess.run(command, env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming from {model_dir}/checkpoints/{max(saved)}" in rerun.stdout
    reference, resumed = losses(tiny_checkpoint), losses(model_dir)
    assert sorted(resumed) == list(range(1, 7))
    # another process and another compilation of the same step: float32 rounding of a loss near 6
    np.testing.assert_allclose([resumed[s] for s in range(1, 7)], [reference[s] for s in range(1, 7)], rtol=1e-5)


def test_a_cache_of_another_seed_stops_the_trainer_before_it_writes(tiny_cache, tmp_path, capsys):
    model_dir = tmp_path / "model"
    status = train.main([TINY, f"--gin.MODEL_DIR='{model_dir}'", ONE_DEVICE, f"--gin.TRAIN_CACHE_DIR='{tiny_cache}'",
                         "--gin.SEED=1"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "pass --gin.SEED=0 or rewrite the cache" in err and len(err.splitlines()) == 1
    assert not model_dir.exists()


def test_a_cache_of_another_run_is_refused(tiny_cache, tmp_path):
    with pytest.raises(UsageError, match="task_feature_lengths"):
        token_cache.CacheSource(fixture_config(cache_dir=tiny_cache, task_feature_lengths={"inputs": 8, "targets": 16}))
    with pytest.raises(UsageError, match="--gin.SEED=0"):
        token_cache.CacheSource(fixture_config(cache_dir=tiny_cache), seed=1)
    with pytest.raises(UsageError, match="holds split 'train'"):
        token_cache.CacheSource(fixture_config(cache_dir=tiny_cache, split="validation"), seed=0)
    with pytest.raises(UsageError, match="not a pre-tokenized cache"):
        token_cache.CacheSource(fixture_config(cache_dir=str(tmp_path)))


def test_an_existing_directory_is_never_overwritten(tiny_cache, capsys):
    before = sorted(os.listdir(tiny_cache))
    assert token_cache.main([TINY, "--out", tiny_cache]) == 2
    err = capsys.readouterr().err.strip()
    assert "exists" in err and len(err.splitlines()) == 1
    assert sorted(os.listdir(tiny_cache)) == before

