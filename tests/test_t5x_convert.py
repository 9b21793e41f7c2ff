"""mtmoe/t5x_convert.py without T5X: a checkpoint in T5X's Orbax layout becomes a Translator's checkpoint.

The T5X checkpoint here is written with Orbax in the layout `python -m t5x.train`
writes (MODEL_DIR/checkpoint_<step>/state with "target" and "state" subtrees);
the run description, which T5X_MODEL_DIR/config.gin gives where T5X is installed,
is passed in. tests/test_t5x_interop.py converts a real T5X run.
"""

import dataclasses
import types

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import linen as nn

from mtmoe import network, t5x_convert, t5x_module
from mtmoe.data.vocabulary import DEFAULT_SPM_PATH, EXTRA_IDS
from mtmoe.moe_config import MoeConfig

# The embedded vocabulary's size (the Translator encodes with it); everything else tiny.
CONFIG = network.TransformerConfig(vocab_size=16128, d_model=6, num_heads=2, head_dim=3, d_ff=10,
                                   num_encoder_layers=2, num_decoder_layers=2, moe=MoeConfig(num_experts=4))
LENGTHS = {"inputs": 8, "targets": 8}


def _run(config=CONFIG):
    return t5x_convert.RunDescription(
        module=t5x_module.T5xTransformer(config),
        vocabulary=types.SimpleNamespace(sentencepiece_model_file=DEFAULT_SPM_PATH, extra_ids=EXTRA_IDS),
        label_smoothing=0.0, z_loss=1e-4, mixture_or_task_name="translate_demo", task_feature_lengths=LENGTHS)


@pytest.fixture(scope="module")
def t5x_dir(tmp_path_factory):
    """(MODEL_DIR, params) of a fake T5X run with checkpoints at steps 0 and 3."""
    model_dir = tmp_path_factory.mktemp("t5x")
    shapes = nn.unbox(jax.eval_shape(network.Transformer(CONFIG).init, jax.random.PRNGKey(0),
                                     np.ones((1, 8), np.int32), np.ones((1, 8), np.int32))["params"])
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda leaf: rng.normal(0.0, 0.5, leaf.shape).astype(np.float32), shapes)
    for step in (0, 3):
        state = {"target": params, "state": {"step": np.int32(step),
                                             "param_states": jax.tree.map(lambda p: {"v": np.zeros_like(p)}, params)}}
        with ocp.PyTreeCheckpointer() as checkpointer:
            checkpointer.save(model_dir / f"checkpoint_{step}" / "state", state)
    (model_dir / "config.gin").write_text("# the operative config T5X writes\n")
    return model_dir, params


def test_steps_are_t5x_checkpoint_directories(t5x_dir):
    model_dir, _ = t5x_dir
    (model_dir / "checkpoint_9.orbax-checkpoint-tmp").mkdir()  # a save T5X did not finish
    assert list(t5x_convert.t5x_checkpoint_steps(str(model_dir))) == [0, 3]


def test_params_are_read_without_the_optimizer_state(t5x_dir):
    model_dir, params = t5x_dir
    read = t5x_convert.read_t5x_params(str(model_dir / "checkpoint_3"))
    assert jax.tree.structure(read) == jax.tree.structure(params)
    for got, want in zip(jax.tree.leaves(read), jax.tree.leaves(params)):
        assert isinstance(got, np.ndarray) and got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_the_converted_checkpoint_is_a_translators(t5x_dir, tmp_path):
    from mtmoe.translate import Translator

    model_dir, params = t5x_dir
    printed = []
    assert t5x_convert.convert(str(model_dir), str(tmp_path / "out"), run=_run(), print_fn=printed.append) == 3
    assert "python -m app --checkpoint" in printed[0]
    translator = Translator.from_checkpoint(str(tmp_path / "out"))
    assert translator.step == 3 and translator.model.config == CONFIG
    assert set(translator.languages) == {"de", "en", "es", "fr", "ja"} and translator.max_length == 8
    for got, want in zip(jax.tree.leaves(translator.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(got), want)
    [translation] = translator.translate(["Open the file."], "de")
    assert isinstance(translation, str)
    assert (tmp_path / "out" / "config.gin").read_text().startswith("# the operative config T5X writes")


def test_an_older_step_can_be_chosen(t5x_dir, tmp_path):
    model_dir, _ = t5x_dir
    assert t5x_convert.convert(str(model_dir), str(tmp_path), step=0, run=_run(), print_fn=lambda _: None) == 0


@pytest.mark.parametrize("problem, message", [
    ("empty", "no T5X checkpoints in"),
    ("step", r"no checkpoint for step 7 .*available: \[0, 3\]"),
    ("architecture", "is of a different architecture"),
    ("task", "unknown task or mixture 'translate_nowhere'"),
])
def test_bad_input_says_what_to_do_before_writing(problem, message, t5x_dir, tmp_path):
    model_dir, _ = t5x_dir
    source, step, run = str(model_dir), None, _run()
    if problem == "empty":
        source = str(tmp_path / "empty")
        (tmp_path / "empty").mkdir()
    elif problem == "step":
        step = 7
    elif problem == "architecture":
        run = _run(CONFIG.replace(d_model=8))
    else:
        run = dataclasses.replace(run, mixture_or_task_name="translate_nowhere")
    with pytest.raises(t5x_convert.ConversionError, match=message):
        t5x_convert.convert(source, str(tmp_path / "out"), step=step, run=run, print_fn=print)
    assert not (tmp_path / "out").exists()


def test_the_command_line_reports_a_missing_run_in_one_line(tmp_path, capsys):
    assert t5x_convert.main([str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "is not a directory" in err and "\n" not in err
