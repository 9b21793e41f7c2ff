"""mtmoe.command_line: T5X's flags become gin bindings; every gin entry point composes.

The gin tests parse and finalize configs only (nothing is built or compiled):
every model file with every run file, the entry points at the top of gin/,
the run files' lists of required macros, and the demo's dense baseline.
"""

import os

import pytest

from mtmoe import command_line
from mtmoe.command_line import UsageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- flags -------------------------------------------------------------------------------------------

def test_gin_flags_become_bindings():
    flags, bindings = command_line.parse_command_line([
        "--gin_file=gin/runs/pretrain.gin", "--gin.TRAIN_STEPS=3", "--gin_file", "extra.gin",
        "--gin.train.train.seed=7", "--gin_bindings", "BATCH_SIZE = 5", "--gin_bindings=PACK = False",
        "--mode=eval", "--process_count=2"])
    assert flags.gin_file == ["gin/runs/pretrain.gin", "extra.gin"]
    assert bindings == ["TRAIN_STEPS = 3", "train.train.seed = 7", "BATCH_SIZE = 5", "PACK = False"]
    assert flags.mode == "eval" and flags.process_count == 2 and not flags.multiprocess


@pytest.mark.parametrize("argv, expected", [
    (["--gin.TRAIN_STEPS"], "--gin.TRAIN_STEPS has no value; write --gin.NAME=VALUE"),
    (["--gin_file=a.gin", "--no_such_flag=1"], "unknown flag(s) --no_such_flag=1"),
])
def test_bad_flags_are_one_line(argv, expected):
    with pytest.raises(UsageError) as info:
        command_line.parse_command_line(argv)
    assert expected in str(info.value) and len(str(info.value).splitlines()) == 1


def test_gin_required_error_names_the_macro():
    err = ValueError("MODEL_DIR/macro.value set to `%gin.REQUIRED` but not subsequently overridden.")
    assert command_line.gin_error_line(err) == (
        "gin macro MODEL_DIR is required but not set; pass --gin.MODEL_DIR=VALUE or set it in a gin file")


# ---- gin: every model composes with every run, entry points compose ---------------------------------

RUN_MACROS = ["MODEL_DIR='/tmp/unused'", "MIXTURE_OR_TASK_NAME='translate_all'",
              "TASK_FEATURE_LENGTHS={'inputs': 8, 'targets': 8}", "TRAIN_STEPS=1", "BATCH_SIZE=8"]


def _compose(files, bindings):
    import gin

    command_line.parse_gin(gin_files=files, bindings=bindings)
    return gin


@pytest.mark.parametrize("model_file", sorted(f for f in os.listdir(os.path.join(REPO, "gin", "models"))
                                              if f.endswith(".gin") and f not in ("common.gin", "embedded_vocab.gin")))
def test_every_model_composes_with_every_run(model_file):
    for run_file, extra in (("pretrain.gin", []), ("finetune.gin", ["INITIAL_CHECKPOINT_PATH='/tmp/unused'"])):
        gin = _compose([f"gin/models/{model_file}", f"gin/runs/{run_file}"], RUN_MACROS + extra)
        assert gin.query_parameter("train.train.model") is not None


@pytest.mark.parametrize("files, bindings", [
    (["gin/mswitch_base.gin"], ["MODEL_DIR='/tmp/unused'"]),
    (["gin/mswitch_tiny.gin"], ["MODEL_DIR='/tmp/unused'"]),
    (["gin/experiments/demo.gin"], []),
    (["gin/experiments/demo_dense.gin"], []),
    (["gin/experiments/upcycle.gin"], ["INITIAL_CHECKPOINT_PATH='/tmp/unused'"]),
    (["gin/experiments/distill.gin"], ["TEACHER_PATH='/tmp/unused'"]),
    (["gin/runs/eval.gin"], ["CHECKPOINT_PATH='/tmp/unused'", "MIXTURE_OR_TASK_NAME='translate_all'"]),
    (["gin/runs/infer.gin"], ["CHECKPOINT_PATH='/tmp/unused'", "INPUT_FILE='in.txt'", "OUTPUT_FILE='out.txt'",
                              "TARGET_LANG='de'"]),
])
def test_entry_points_compose(files, bindings):
    demo_dir = [] if any("MODEL_DIR" in b for b in bindings) or "runs/" in files[0] else ["MODEL_DIR='/tmp/unused'"]
    _compose(files, bindings + demo_dir)


def test_run_files_list_their_required_macros():
    for name in ("pretrain", "finetune", "eval", "infer"):
        with open(os.path.join(REPO, "gin", "runs", f"{name}.gin")) as f:
            text = f.read()
        header = text.split("from __gin__")[0]
        required = [line.split("=")[0].strip() for line in text.splitlines() if "%gin.REQUIRED" in line]
        assert required, name
        for macro in required:
            assert macro in header, f"{name}.gin requires {macro} but its header does not list it"


def test_demo_dense_baseline_has_equal_flops_per_token():
    gin = _compose(["gin/experiments/demo.gin"], ["MODEL_DIR='/tmp/unused'"])
    moe = {k: gin.query_parameter(f"{k}/macro.value") for k in ("EMBED_DIM", "MLP_DIM", "NUM_EXPERTS")}
    expert_width = gin.query_parameter("EXPERT_MLP_DIM/macro.value") or moe["MLP_DIM"]
    gin = _compose(["gin/experiments/demo_dense.gin"], ["MODEL_DIR='/tmp/unused'"])
    dense = {k: gin.query_parameter(f"{k}/macro.value") for k in ("EMBED_DIM", "MLP_DIM", "NUM_EXPERTS")}
    assert moe["NUM_EXPERTS"] > 1 and dense["NUM_EXPERTS"] == 0
    assert gin.query_parameter("NUM_SELECTED_EXPERTS/macro.value") == 1  # top-1: one expert's FLOPs per token
    assert expert_width == dense["MLP_DIM"] and moe["EMBED_DIM"] == dense["EMBED_DIM"]


def test_a_renamed_macro_says_what_replaced_it():
    with pytest.raises(UsageError) as info:
        command_line.parse_gin(gin_files=["gin/mswitch_tiny.gin"],
                               bindings=["MODEL_DIR = '/tmp/unused'", "ROUTER_TYPE = 'topk'"])
    message = str(info.value)
    assert "--gin.ROUTER_TYPE is gone" in message and "--gin.ROUTER=@routing.TokensChooseRouter()" in message
    assert len(message.splitlines()) == 1


def test_a_gin_file_setting_a_renamed_macro_is_refused(tmp_path):
    old = tmp_path / "old.gin"
    old.write_text("include 'gin/mswitch_tiny.gin'\nROUTER_TYPE = 'top1'\n")
    with pytest.raises(UsageError, match="a gin file sets ROUTER_TYPE, which is gone; the router is an object"):
        command_line.parse_gin(gin_files=[str(old)], bindings=["MODEL_DIR = '/tmp/unused'"])
