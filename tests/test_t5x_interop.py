"""`python -m t5x.train --gin_file=gin/mswitch_base.gin` with real T5X: train, resume, convert, translate.

Runs where T5X is importable (the side environment of scripts/t5x_venv.sh; README,
"T5X"); skipped, saying so, everywhere else. The trainer runs the header command of
gin/mswitch_base.gin (so the documented flags are what is tested) on the eight
`translate_demo` directions, on one CPU device: T5X's CPU mesh puts every local
device on its 'model' axis (t5x/partitioning.py, `get_cpu_mesh`), which the shrunk
model's 2 heads do not divide.
tests/test_t5x_module.py checks the module interface without T5X.
"""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("t5x", reason="T5X is not installed in this environment; scripts/t5x_venv.sh builds one "
                                  "(README, 'T5X')")

from tests.test_t5x_module import _documented_t5x_command  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # two trainer runs: minutes each on 2 cores
TASK = "translate_demo"


def _t5x_train(model_dir, *, steps: int) -> str:
    """Runs the documented shrunk command for `steps` steps in `model_dir`; returns its log."""
    flags = dict(_documented_t5x_command(), MODEL_DIR=repr(str(model_dir)), MIXTURE_OR_TASK_NAME=repr(TASK),
                 TRAIN_STEPS=str(steps), SAVE_EVERY="2", EVAL_STEPS="1", RANDOM_SEED="0")
    flags.pop("train.train_eval_dataset_cfg")  # translate_demo has a validation split: T5X evaluates on it
    command = [sys.executable, "-m", "t5x.train", "--gin_file=gin/mswitch_base.gin", "--alsologtostderr",
               *(f"--gin.{name}={value}" for name, value in flags.items())]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return log


@pytest.fixture(scope="module")
def t5x_run(tmp_path_factory):
    """(MODEL_DIR, first log, resumed log): 2 steps, then resumed to 4."""
    model_dir = tmp_path_factory.mktemp("t5x_run")
    first = _t5x_train(model_dir, steps=2)
    resumed = _t5x_train(model_dir, steps=4)
    return model_dir, first, resumed


@pytest.fixture(scope="module")
def converted(t5x_run, tmp_path_factory):
    model_dir, _, _ = t5x_run
    out = tmp_path_factory.mktemp("converted")
    result = subprocess.run([sys.executable, "-m", "mtmoe.t5x_convert", str(model_dir), str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert f"wrote {out}/checkpoints/4" in result.stdout
    return out


def _losses(log: str) -> dict[int, float]:
    return {int(step): float(loss) for step, loss in
            re.findall(r"\[(\d+)\] collection=train .*?cross_ent_loss=([-\d.e]+)", log)}


def test_t5x_trains_mtmoes_network_with_mtmoes_expert_metrics(t5x_run):
    model_dir, first, _ = t5x_run
    assert {"checkpoint_0", "checkpoint_2", "config.gin"} <= set(os.listdir(model_dir))
    losses = _losses(first)
    # Per target token (gin/t5x/model.gin), about uniform over the 16128 ids after two steps.
    assert list(losses) == [2] and np.log(16128) - 3 < losses[2] < np.log(16128) + 1
    assert re.search(r"experts/auxiliary_loss=[\d.]+", first) and "experts/fraction_tokens_left_behind" in first
    # T5X's partitioner placed the experts' kernels by mtmoe's rules: over the mesh's expert axis.
    with open(os.path.join(model_dir, "model-info.txt")) as f:
        info = f.read()
    assert re.search(r"encoder/layers_1/moe/wi_0 .*partition spec \('expert', None, 'model'\)", info)
    # ... and their factored Adafactor statistics with them (gin/t5x/model.gin's state_filter_fn).
    assert re.search(r"param_states/encoder/layers_1/moe/wo/v_row .*partition spec \('expert',\)", info)
    # T5X's training evaluation ran on the validation split.
    assert re.search(r"collection=training_eval/" + TASK, first)


def test_t5x_resumes_from_its_last_checkpoint(t5x_run):
    model_dir, _, resumed = t5x_run
    assert f"Restoring checkpoint from {model_dir}/checkpoint_2" in resumed
    assert "Starting main loop over steps 2-4" in resumed
    assert list(_losses(resumed)) == [4] and os.path.isdir(os.path.join(model_dir, "checkpoint_4"))


def test_the_converted_checkpoint_translates(t5x_run, converted):
    from mtmoe import t5x_convert
    from mtmoe.translate import Translator

    model_dir, _, _ = t5x_run
    translator = Translator.from_checkpoint(str(converted))
    assert translator.step == 4 and set(translator.languages) == {"de", "en", "es", "fr", "ja"}
    written = t5x_convert.read_t5x_params(os.path.join(model_dir, "checkpoint_4"))
    for got, want in zip(jax.tree_util.tree_leaves(translator.params), jax.tree_util.tree_leaves(written)):
        np.testing.assert_array_equal(np.asarray(got), want)
    [translation] = translator.translate(["The file could not be saved."], "de")
    assert isinstance(translation, str)


def test_t5x_decoding_and_scoring_agree_with_mtmoes(converted):
    """T5X's own decoding and scoring (t5x/models.py, t5x/decoding.py) on the module give mtmoe's results."""
    from t5x import adafactor, decoding
    from t5x.contrib.moe import models as moe_models

    from mtmoe import t5x_module
    from mtmoe.translate import Translator
    from tasks import vocab

    translator = Translator.from_checkpoint(str(converted))
    ours = translator.model

    def t5x_model(decode_fn):
        return moe_models.MoeEncoderDecoderModel(
            module=t5x_module.T5xTransformer(ours.inference_module.config), input_vocabulary=vocab.get_vocabulary(),
            output_vocabulary=vocab.get_vocabulary(), optimizer_def=adafactor.Adafactor(), decode_fn=decode_fn)

    sources = [translator.encode_source(text, "de") for text in ("Open the file.", "Save the document as PDF.")]
    encoder_tokens = np.zeros((2, 16), np.int32)
    for row, ids in enumerate(sources):
        encoder_tokens[row, :len(ids)] = ids
    batch = {"encoder_input_tokens": jnp.asarray(encoder_tokens), "decoder_input_tokens": jnp.zeros((2, 8), jnp.int32)}
    # Greedy: T5X's temperature sampling at temperature 0 (its beam search with one beam may also
    # end a sequence at an EOS that was not the argmax, its length penalty preferring it).
    greedy, _ = t5x_model(decoding.temperature_sample).predict_batch_with_aux(
        translator.params, batch, rng=jax.random.PRNGKey(0), decoder_params={"temperature": 0.0}, num_decodes=1)
    ours_greedy = ours.predict_batch(translator.params, batch, decoding="greedy", max_decode_length=8)
    np.testing.assert_array_equal(np.asarray(greedy), np.asarray(ours_greedy))
    # T5X's beam search runs on the module's cache (tiled over 4 beams, reordered at every step).
    beams, _ = t5x_model(decoding.beam_search).predict_batch_with_aux(translator.params, batch, num_decodes=4)
    assert beams.shape == (2, 8) and np.all((np.asarray(beams) >= 0) & (np.asarray(beams) < 16128))

    targets = np.asarray(ours_greedy)
    scored = dict(batch, decoder_target_tokens=jnp.asarray(targets),
                  decoder_input_tokens=jnp.asarray(np.pad(targets, ((0, 0), (1, 0)))[:, :-1]),
                  decoder_loss_weights=jnp.asarray((targets > 0).astype(np.int32)))
    np.testing.assert_allclose(np.asarray(t5x_model(decoding.beam_search).score_batch(translator.params, scored)),
                               np.asarray(ours.score_batch(translator.params, scored)), rtol=1e-5, atol=1e-5)
