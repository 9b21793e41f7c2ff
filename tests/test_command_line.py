"""mtmoe.command_line: T5X's flags become gin bindings; every gin entry point composes.

The gin tests parse and finalize configs only (nothing is built or compiled):
every model file with every run file, the entry points at the top of gin/,
the run files' lists of required macros, and the demo's dense baseline. The
commands the help, README, mtmoe/train.py and the gin files show are parsed
and composed as written.
"""

import ast
import glob
import os
import re
import shlex
import sys
import types

import pytest

from mtmoe import command_line
from mtmoe.command_line import UsageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- flags -------------------------------------------------------------------------------------------

def test_gin_flags_become_bindings():
    flags, bindings = command_line.parse_command_line([
        "--gin_file=gin/runs/pretrain.gin", "--gin.TRAIN_STEPS=3", "--gin_file", "extra.gin",
        "--gin.train.train.seed=7", "--gin_bindings", "BATCH_SIZE = 5", "--gin_bindings=PACK = False",
        "--run_mode=eval", "--gin_search_paths=a,b"])
    assert flags.gin_file == ["gin/runs/pretrain.gin", "extra.gin"]
    assert bindings == ["TRAIN_STEPS = 3", "train.train.seed = 7", "BATCH_SIZE = 5", "PACK = False"]
    assert flags.run_mode == "eval" and flags.gin_search_paths == "a,b" and not flags.multiprocess_gpu


def test_t5x_process_flags_parse():
    flags, _ = command_line.parse_command_line([
        "--multiprocess_gpu", "--coordinator_address=10.0.0.1:1234", "--process_count=3", "--process_index=2",
        "--tfds_data_dir=/data/tfds", "--seqio_additional_cache_dirs=/c1,/c2", "--alsologtostderr",
        "--gin_file=gin/mswitch_tiny.gin"])
    assert flags.multiprocess_gpu and flags.coordinator_address == "10.0.0.1:1234"
    assert (flags.process_count, flags.process_index) == (3, 2)
    assert flags.tfds_data_dir == "/data/tfds" and flags.seqio_additional_cache_dirs == ["/c1", "/c2"]
    assert flags.alsologtostderr and flags.run_mode == "train"


def test_old_flag_names_are_the_same_flags():
    flags, _ = command_line.parse_command_line(["--mode=infer", "--multiprocess"])
    assert flags.run_mode == "infer" and flags.multiprocess_gpu


@pytest.mark.parametrize("argv, expected", [
    (["--gin.TRAIN_STEPS"], "--gin.TRAIN_STEPS has no value; write --gin.NAME=VALUE"),
    (["--gin_file=a.gin", "--no_such_flag=1"], "unknown flag(s) --no_such_flag=1"),
    (["--multiproces_gpu"], "unknown flag(s) --multiproces_gpu; did you mean --multiprocess_gpu?"),
    (["--run_mode=export"], "flag --run_mode=export: value should be one of <train|eval|infer>"),
    (["--process_count=2"], "--process_count needs --coordinator_address and --process_index as well"),
    (["--coordinator_address=h:1", "--process_count=2", "--process_index=2"], "--process_index=2 must be below"),
    (["--flagfile=/no/such/file"], "--flagfile cannot be read"),
    (["--gin_file=a.gin", "b.gin"], "unexpected argument(s) b.gin"),
])
def test_bad_flags_are_one_line(argv, expected):
    with pytest.raises(UsageError) as info:
        command_line.parse_command_line(argv)
    assert expected in str(info.value) and len(str(info.value).splitlines()) == 1


def test_flagfile_holds_flags_and_gin_shorthand(tmp_path):
    flagfile = tmp_path / "run.flags"
    flagfile.write_text("# a comment\n--gin_file=gin/mswitch_tiny.gin\n--gin.MODEL_DIR='/tmp/a b'\n--run_mode=eval\n")
    flags, bindings = command_line.parse_command_line([f"--flagfile={flagfile}", "--gin.TRAIN_STEPS=3"])
    assert flags.gin_file == ["gin/mswitch_tiny.gin"] and flags.run_mode == "eval"
    assert bindings == ["MODEL_DIR = '/tmp/a b'", "TRAIN_STEPS = 3"]


def test_gin_required_error_names_the_macro():
    err = ValueError("MODEL_DIR/macro.value set to `%gin.REQUIRED` but not subsequently overridden.")
    assert command_line.gin_error_line(err) == (
        "gin macro MODEL_DIR is required but not set; pass --gin.MODEL_DIR=VALUE or set it in a gin file")


# ---- the commands the documentation shows parse and compose as written -----------------------------

def _commands(text: str, prefixes=("python -m mtmoe.train ", "mtmoe-train ")) -> list[list[str]]:
    """The flags of every command in `text` that starts with one of `prefixes` (backslash continuations joined)."""
    text = re.sub(r"\\\n[#\s]*", " ", text)
    commands = []
    for line in text.splitlines():
        line = line.lstrip("# ")
        for prefix in prefixes:
            if line.startswith(prefix):
                commands.append(shlex.split(line[len(prefix):], comments=True))
    return commands


def _parse_and_compose(argv):
    flags, bindings = command_line.parse_command_line(argv)
    command_line.parse_gin(gin_files=flags.gin_file, bindings=bindings, search_paths=flags.gin_search_paths.split(","))


def test_help_shows_every_flag_and_exits(capsys):
    with pytest.raises(SystemExit) as info:
        command_line.parse_command_line(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "Examples:" in out
    for flag in ("--gin_file", "--gin_bindings", "--gin_search_paths", "--run_mode", "--multiprocess_gpu",
                 "--coordinator_address", "--tfds_data_dir", "--seqio_additional_cache_dirs", "--flagfile",
                 "--alsologtostderr"):
        assert flag in out, flag


def test_help_examples_parse_and_compose(tmp_path, monkeypatch):
    text = command_line.help_text()
    flagfile = text.split("demo.flags above:\n")[1].split("\n\n")[0]
    (tmp_path / "demo.flags").write_text("\n".join(line.strip() for line in flagfile.splitlines()) + "\n")
    monkeypatch.chdir(tmp_path)  # the gin files are found under the repository root
    examples = _commands(text.split("Flags:")[0])
    assert len(examples) == len(command_line.EXAMPLES) and any("--flagfile=demo.flags" in e for e in examples)
    for argv in examples:
        _parse_and_compose(argv)


def test_documented_commands_parse_and_compose():
    with open(os.path.join(REPO, "mtmoe", "train.py")) as f:
        texts = {"mtmoe/train.py": ast.get_docstring(ast.parse(f.read()))}
    with open(os.path.join(REPO, "README.md")) as f:
        texts["README.md"] = f.read().split("## Training (T5X's command line)")[1].split("\n## ")[0]
    for path in glob.glob(os.path.join(REPO, "gin", "**", "*.gin"), recursive=True):
        with open(path) as f:
            texts[os.path.relpath(path, REPO)] = "\n".join(line for line in f if line.startswith("#"))
    checked = 0
    for where, text in sorted(texts.items()):
        for argv in _commands(text):
            try:
                _parse_and_compose(argv)
            except UsageError as err:
                raise AssertionError(f"{where}: {shlex.join(argv)}: {err}") from None
            checked += 1
    assert checked >= 10


# ---- what the process flags do -------------------------------------------------------------------

@pytest.fixture
def process_flag_effects(monkeypatch):
    """Records jax.distributed.initialize's arguments and seqio's directory settings instead of acting on them."""
    import jax

    effects = {}
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: effects.update(distributed=kwargs))
    fake_seqio = types.SimpleNamespace(set_tfds_data_dir_override=lambda d: effects.update(tfds_data_dir=d),
                                       add_global_cache_dirs=lambda dirs: effects.update(cache_dirs=list(dirs)))
    monkeypatch.setitem(sys.modules, "seqio", fake_seqio)
    monkeypatch.setattr(command_line, "hide_accelerators_from_tensorflow", lambda: None)
    monkeypatch.setenv("TFDS_DATA_DIR", "unset")  # restored after the test
    yield effects
    holders = [name for name, module in list(sys.modules.items()) if getattr(module, "seqio", None) is fake_seqio]
    assert not holders, f"{holders} imported the stand-in seqio; record on the real module instead"


@pytest.mark.parametrize("where", ["command line", "flagfile"])
def test_trainer_applies_t5x_flags(where, tmp_path, capsys, process_flag_effects):
    """`python -m mtmoe.train --multiprocess_gpu --tfds_data_dir=DIR ...` (or the same in a --flagfile) is
    accepted, starts jax.distributed from the environment and points seqio at DIR; TRAIN_STEPS=0 then stops
    it at train()'s first check, so nothing is built."""
    from mtmoe import train

    tfds_dir = str(tmp_path / "tfds")
    flags = ["--multiprocess_gpu", f"--tfds_data_dir={tfds_dir}", "--seqio_additional_cache_dirs=/c1,/c2",
             "--gin_file=tests/fixtures/train/tiny.gin", f"--gin.MODEL_DIR='{tmp_path / 'model'}'",
             "--gin.TRAIN_STEPS=0"]
    if where == "flagfile":
        (tmp_path / "run.flags").write_text("\n".join(flags) + "\n")
        flags = [f"--flagfile={tmp_path / 'run.flags'}"]
    status = train.main(flags)
    err = capsys.readouterr().err.strip()
    assert status == 2 and err == "error: TRAIN_STEPS=0 and BATCH_SIZE=8 must be positive"
    assert process_flag_effects == {"distributed": {"coordinator_address": None, "num_processes": None,
                                                    "process_id": None},
                                    "tfds_data_dir": tfds_dir, "cache_dirs": ["/c1", "/c2"]}
    assert os.environ["TFDS_DATA_DIR"] == tfds_dir  # tasks/mc4.py reads it
    assert not (tmp_path / "model").exists()


def test_explicit_coordinator_reaches_jax_distributed(process_flag_effects):
    flags, _ = command_line.parse_command_line(["--multiprocess_gpu", "--coordinator_address=10.0.0.1:1234",
                                                "--process_count=2", "--process_index=1"])
    command_line.apply_process_flags(flags)
    assert process_flag_effects == {"distributed": {"coordinator_address": "10.0.0.1:1234", "num_processes": 2,
                                                    "process_id": 1}}


def test_no_process_flags_no_effects(process_flag_effects):
    command_line.apply_process_flags(command_line.parse_command_line(["--gin_file=a.gin"])[0])
    assert process_flag_effects == {}


# ---- SEED is T5X's RANDOM_SEED ---------------------------------------------------------------------

def _seed_after(files, bindings, notes):
    import gin

    from mtmoe import train

    command_line.parse_gin(gin_files=files, bindings=bindings, print_fn=notes.append)
    return gin.get_bindings(train.train)["seed"]


def test_seed_binding_sets_random_seed_with_a_note():
    """The claims study's command line (--gin.SEED=N) keeps setting the seed."""
    notes = []
    argv = ["--gin_file=gin/experiments/claims.gin", "--gin.MODEL_DIR='/tmp/unused'", "--gin.TRAIN_STEPS=10",
            "--gin.SEED=3", "--gin.NUM_EXPERTS=0", "--gin.EVAL_EVERY=5", "--gin.SAVE_EVERY=5",
            "--gin.KEEP_CHECKPOINTS=1", "--gin.COOLDOWN_STEPS=0", "--gin.MAX_TRAIN_SECONDS=None", "--gin.BLEU_PAIRS=0"]
    flags, bindings = command_line.parse_command_line(argv)
    assert _seed_after(flags.gin_file, bindings, notes) == 3
    assert notes == ["note: --gin.SEED is --gin.RANDOM_SEED now (T5X's name); binding RANDOM_SEED = 3"]
    assert _seed_after(["gin/mswitch_tiny.gin"], ["MODEL_DIR='/tmp/unused'", "RANDOM_SEED = 4"], notes) == 4
    assert _seed_after(["gin/mswitch_tiny.gin"], ["MODEL_DIR='/tmp/unused'"], notes) == 0 and len(notes) == 1


def test_a_gin_file_setting_seed_next_to_random_seed_is_refused(tmp_path):
    old = tmp_path / "old.gin"
    old.write_text("include 'gin/mswitch_tiny.gin'\nSEED = 5\n")
    with pytest.raises(UsageError, match="a gin file sets SEED, which is RANDOM_SEED now"):
        command_line.parse_gin(gin_files=[str(old)], bindings=["MODEL_DIR = '/tmp/unused'"])


def test_a_config_that_defines_seed_itself_keeps_it(tmp_path):
    """A checkpoint's config.gin written before the rename sets and reads SEED: its bindings stay as they are."""
    old = tmp_path / "config.gin"
    old.write_text("from __gin__ import dynamic_registration\nfrom mtmoe import train\n"
                   "SEED = 5\ntrain.train.seed = %SEED\n")
    notes = []
    assert _seed_after([str(old)], ["SEED = 2"], notes) == 2 and notes == []


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
    (["gin/mswitch_base.mtmoe.gin"], ["MODEL_DIR='/tmp/unused'"]),
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
