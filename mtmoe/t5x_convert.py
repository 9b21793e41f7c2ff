"""`python -m mtmoe.t5x_convert T5X_MODEL_DIR OUT_DIR`: a T5X run's checkpoint as an mtmoe checkpoint.

A run of `python -m t5x.train --gin_file=gin/mswitch_base.gin` (T5X's trainer
around `mtmoe.t5x_module.T5xTransformer`) writes Orbax checkpoints
`T5X_MODEL_DIR/checkpoint_<step>/state`, whose "target" subtree is the model's
parameters with mtmoe's own names (the module is mtmoe's network), and its
operative gin config `T5X_MODEL_DIR/config.gin`. This writes the parameters of
one step (the newest by default) with the metadata mtmoe's checkpoints carry
(architecture, loss settings, task and language pairs, vocabulary, gin config)
to `OUT_DIR/checkpoints/<step>`, so that

    python -m app --checkpoint OUT_DIR
    python eval/per_language_bleu.py --checkpoint OUT_DIR
    Translator.from_checkpoint(OUT_DIR)

serve and score it. The optimizer state stays behind: the result is for
inference (and for `INITIAL_CHECKPOINT_PATH` of an mtmoe run).

Reading config.gin needs T5X importable (the config imports T5X's modules):
run the converter in the environment that trained the model. The parameters
themselves are read with Orbax alone (`read_t5x_params`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import re
import sys
from typing import Any, Sequence

import numpy as np

STATE_ITEM = "state"          # T5X's Orbax item holding the train state
PARAMS_KEY = "target"         # the parameters inside it (T5X's optimizer naming)
_STEP_DIR = re.compile(r"^checkpoint_(\d+)$")


class ConversionError(ValueError):
    """A T5X directory that cannot be converted (one-line message)."""


@dataclasses.dataclass(frozen=True)
class RunDescription:
    """What mtmoe's checkpoint metadata needs to know of a T5X run (from its config.gin)."""

    module: Any                      # the run's t5x_module.T5xTransformer
    vocabulary: Any                  # its seqio vocabulary
    label_smoothing: float
    z_loss: float
    mixture_or_task_name: str
    task_feature_lengths: dict


def t5x_checkpoint_steps(model_dir: str) -> dict[int, str]:
    """{step: T5X_MODEL_DIR/checkpoint_<step>} of the complete checkpoints of a T5X run."""
    if not os.path.isdir(model_dir):
        raise ConversionError(f"{model_dir} is not a directory; pass the MODEL_DIR of a T5X run")
    steps = {}
    for name in os.listdir(model_dir):
        match = _STEP_DIR.match(name)
        if match and os.path.isdir(os.path.join(model_dir, name, STATE_ITEM)):
            steps[int(match.group(1))] = os.path.join(model_dir, name)
    return dict(sorted(steps.items()))


def read_t5x_params(checkpoint_dir: str) -> dict:
    """The parameters (float32 NumPy arrays, mtmoe's tree) of one T5X Orbax checkpoint directory.

    Only the "target" subtree is read: a Switch-Base's optimizer state is
    never loaded for a conversion.
    """
    import jax
    import orbax.checkpoint as ocp
    from etils import epath

    path = epath.Path(os.path.abspath(checkpoint_dir)) / STATE_ITEM
    tree = ocp.PyTreeCheckpointHandler().metadata(path).tree
    if PARAMS_KEY not in tree:
        raise ConversionError(f"{path} holds no {PARAMS_KEY!r} parameters (keys: {sorted(tree)}); "
                              f"pass a checkpoint that python -m t5x.train wrote")
    is_array = lambda leaf: hasattr(leaf, "shape")  # noqa: E731  ArrayMetadata leaves
    abstract = jax.tree.map(lambda leaf: np.empty(leaf.shape, np.float32), tree[PARAMS_KEY], is_leaf=is_array)
    # Saved float32 by default (SaveCheckpointConfig.dtype); a bfloat16 save is cast back, as mtmoe keeps params.
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray, dtype=np.float32), abstract)
    with ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
            item={PARAMS_KEY: abstract}, restore_args={PARAMS_KEY: restore_args}, partial_restore=True))
    return restored[PARAMS_KEY]


def read_t5x_run(model_dir: str) -> RunDescription:
    """The run described by T5X_MODEL_DIR/config.gin (needs T5X importable)."""
    import gin

    path = os.path.join(model_dir, "config.gin")
    if not os.path.isfile(path):
        raise ConversionError(f"{path} is missing; pass the MODEL_DIR of a python -m t5x.train run")
    with open(path) as f:
        text = f.read()
    try:
        import t5x.train  # noqa: F401  the module the config's `train_script` names
    except ImportError as error:
        raise ConversionError(f"reading {path} needs T5X ({error}); run the converter where the model was "
                              f"trained (README, 'T5X')") from None
    # T5X's run files name the trainer module `__main__` (the script that parses them): t5x.train.
    text = text.replace("import __main__ as train_script", "import t5x.train as train_script")
    # The macros gin/t5x/model.gin and T5X's run files define.
    text += (
        "\nfrom mtmoe import t5x_convert\n"
        "t5x_convert.RunDescription.module = %MODULE\n"
        "t5x_convert.RunDescription.vocabulary = %VOCABULARY\n"
        "t5x_convert.RunDescription.label_smoothing = %LABEL_SMOOTHING\n"
        "t5x_convert.RunDescription.z_loss = %Z_LOSS\n"
        "t5x_convert.RunDescription.mixture_or_task_name = %MIXTURE_OR_TASK_NAME\n"
        "t5x_convert.RunDescription.task_feature_lengths = %TASK_FEATURE_LENGTHS\n"
    )
    # This module as gin imports it (under `python -m mtmoe.t5x_convert` this file is also `__main__`).
    this_module = importlib.import_module("mtmoe.t5x_convert")
    gin.clear_config()
    try:
        gin.parse_config(text)
        return gin.get_configurable(this_module.RunDescription)()
    except Exception as error:  # gin reports an unknown macro or module in many exception types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConversionError(f"{path} does not describe a run of gin/t5x/model.gin ({first_line}); "
                              f"convert runs of gin/mswitch_base.gin or files that include gin/t5x/model.gin") from None
    finally:
        gin.clear_config()


def convert(t5x_model_dir: str, out_dir: str, *, step: int | None = None, run: RunDescription | None = None,
            print_fn=print) -> int:
    """Write step `step` (default: the newest) of a T5X run as an mtmoe checkpoint in `out_dir`.

    run: the run's description; None reads it from T5X_MODEL_DIR/config.gin.
    Returns the step written. Raises ConversionError (one line) on bad input,
    before writing anything.
    """
    import jax
    from flax import linen as nn

    from mtmoe import checkpoints, input_pipeline, models, trainer
    from mtmoe.command_line import UsageError

    t5x_model_dir = os.path.abspath(t5x_model_dir)
    steps = t5x_checkpoint_steps(t5x_model_dir)
    if not steps:
        raise ConversionError(f"no T5X checkpoints in {t5x_model_dir} (expected checkpoint_<step>/{STATE_ITEM}); "
                              f"pass the MODEL_DIR of a python -m t5x.train run")
    step = max(steps) if step is None else step
    if step not in steps:
        raise ConversionError(f"no checkpoint for step {step} in {t5x_model_dir}; available: {sorted(steps)}")
    run = read_t5x_run(t5x_model_dir) if run is None else run
    model = models.EncoderDecoderModel(config=run.module.config, label_smoothing=run.label_smoothing,
                                       z_loss=run.z_loss)
    params = read_t5x_params(steps[step])
    lengths = dict(run.task_feature_lengths)
    shapes = jax.eval_shape(lambda: model.get_initial_variables(
        jax.random.PRNGKey(0), input_shapes={"encoder_input_tokens": (1, lengths["inputs"]),
                                             "decoder_input_tokens": (1, lengths["targets"])}))
    try:
        checkpoints.check_architecture(expected=checkpoints.param_shapes(nn.unbox(shapes["params"])),
                                       found=checkpoints.param_shapes(params), where=steps[step])
    except checkpoints.CheckpointError as error:
        raise ConversionError(str(error)) from None
    with open(os.path.join(t5x_model_dir, "config.gin")) as f:
        config_text = f.read()
    try:
        pairs = input_pipeline.translation_pairs(run.mixture_or_task_name)
    except UsageError as error:
        raise ConversionError(str(error)) from None
    meta = trainer.checkpoint_meta(model=model, config_text=config_text,
                                   mixture_or_task_name=run.mixture_or_task_name, lengths=lengths, pairs=pairs,
                                   vocabulary=run.vocabulary)
    meta["converted_from"] = {"t5x_checkpoint": steps[step], "step": step}
    checkpoints.check_writable(out_dir)
    checkpointer = checkpoints.Checkpointer(model_dir=out_dir, keep=None)
    try:
        checkpointer.save(step=step, params=params, opt_state=None, meta=meta)
    finally:
        checkpointer.close()
    checkpoints.write_atomic(os.path.join(os.path.abspath(out_dir), "config.gin"), config_text)
    print_fn(f"wrote {os.path.abspath(out_dir)}/{checkpoints.CHECKPOINT_SUBDIR}/{step} from {steps[step]} "
             f"({sum(leaf.size for leaf in jax.tree_util.tree_leaves(params)):,} parameters, "
             f"{len(pairs)} language pairs); serve it with: python -m app --checkpoint {out_dir}")
    return step


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mtmoe.t5x_convert",
        description="Convert a checkpoint of python -m t5x.train --gin_file=gin/mswitch_base.gin into mtmoe's "
                    "checkpoint format (for mtmoe.translate, python -m app, eval/per_language_bleu.py).")
    parser.add_argument("t5x_model_dir", help="the T5X run's MODEL_DIR (holding checkpoint_<step>/ and config.gin)")
    parser.add_argument("out_dir", help="directory for the mtmoe checkpoint (OUT_DIR/checkpoints/<step>)")
    parser.add_argument("--step", type=int, default=None, help="the step to convert (default: the newest)")
    args = parser.parse_args(argv)
    try:
        convert(args.t5x_model_dir, args.out_dir, step=args.step)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
