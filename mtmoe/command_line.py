"""The command line of `python -m mtmoe.train` (T5X's flags, parsed by absl) and the gin config it builds.

The flags have T5X's names and meanings (t5x/train.py, t5x/main.py, t5x/gin_utils.py):

    --gin_file=F              repeatable, applied in order; searched in --gin_search_paths, then the
                              working directory and the repository root
    --gin_bindings=B          repeatable; --gin.NAME=VALUE is short for --gin_bindings='NAME = VALUE'
    --gin_search_paths=A,B    comma-separated directories
    --run_mode=train|eval|infer          (--mode is the same flag)
    --multiprocess_gpu        start jax.distributed from --coordinator_address, --process_count and
                              --process_index or, without them, from the cluster's environment
                              (--multiprocess is the same flag)
    --tfds_data_dir=D         the TFDS data directory of every task
    --seqio_additional_cache_dirs=A,B    more directories holding seqio-cached tasks
    --flagfile=F              absl's: more flags from F, one a line
    --alsologtostderr, --logtostderr     absl's: show absl's INFO lines (seqio's) on stderr

`parse_command_line` turns argv into flag values and gin bindings,
`apply_process_flags` does what the flags do to the process, and `parse_gin`
parses and finalizes the config before any work. A bad flag, an unset
`%gin.REQUIRED` macro, a misspelt macro or binding, or a missing file is a
`UsageError` whose message is one line; `mtmoe.train.main` prints it and exits
with status 2. `gin_error_line` turns gin's multi-line exceptions into that line.
"""

from __future__ import annotations

import difflib
import logging
import os
from typing import Callable, Sequence

from absl import flags as absl_flags


class UsageError(ValueError):
    """Bad input to the trainer; its message is one line that says what to change."""


PROG = "python -m mtmoe.train"
RUN_MODES = ("train", "eval", "infer")
# Shown by --help; tests/test_command_line.py parses and composes every one.
EXAMPLES = (
    f"{PROG} --gin_file=gin/experiments/demo.gin --gin.MODEL_DIR=\"'/tmp/demo'\" --gin.RANDOM_SEED=1",
    f"{PROG} --run_mode=eval --gin_file=gin/runs/eval.gin --gin.CHECKPOINT_PATH=\"'/tmp/demo'\" "
    "--gin.MIXTURE_OR_TASK_NAME=\"'translate_all'\"",
    f"{PROG} --multiprocess_gpu --gin_file=gin/mswitch_base.mtmoe.gin --gin.MODEL_DIR=\"'gs://bucket/run'\" "
    "--tfds_data_dir=gs://bucket/tensorflow_datasets",
    f"{PROG} --multiprocess_gpu --coordinator_address=10.0.0.1:1234 --process_count=2 --process_index=0 "
    "--gin_file=gin/mswitch_base.mtmoe.gin --gin.MODEL_DIR=\"'/shared/run'\"",
    f"{PROG} --flagfile=demo.flags --alsologtostderr",
)
FLAGFILE_EXAMPLE = ("--gin_file=gin/experiments/demo.gin", "--gin.MODEL_DIR='/tmp/demo'")  # demo.flags above


def _flag_values() -> absl_flags.FlagValues:
    """A fresh set of the trainer's flags: absl's global FLAGS would keep one parse's values for the next."""
    fv = absl_flags.FlagValues()
    absl_flags.DEFINE_multi_string(
        "gin_file", [], "gin file, repeatable, applied in order (a later one overrides an earlier); searched in "
        "--gin_search_paths, then the working directory and the repository root", flag_values=fv)
    absl_flags.DEFINE_multi_string(
        "gin_bindings", [], "gin binding, repeatable, applied after the files; --gin.NAME=VALUE is short for "
        "--gin_bindings='NAME = VALUE'", flag_values=fv)
    absl_flags.DEFINE_string("gin_search_paths", "", "comma-separated directories to look for gin files in",
                             flag_values=fv)
    absl_flags.DEFINE_enum("run_mode", "train", RUN_MODES,
                           "train, eval (with gin/runs/eval.gin) or infer (with gin/runs/infer.gin)", flag_values=fv)
    absl_flags.DEFINE_alias("mode", "run_mode", flag_values=fv)
    absl_flags.DEFINE_boolean(
        "multiprocess_gpu", False, "start jax.distributed, one process per host: from --coordinator_address, "
        "--process_count and --process_index, or without them from the cluster's environment (SLURM, Open MPI, "
        "TPU pods)", flag_values=fv)
    absl_flags.DEFINE_alias("multiprocess", "multiprocess_gpu", flag_values=fv)
    absl_flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (implies --multiprocess_gpu)",
                             flag_values=fv)
    absl_flags.DEFINE_integer("process_count", None, "number of processes", lower_bound=1, flag_values=fv)
    absl_flags.DEFINE_integer("process_index", None, "this process's index, 0 to process_count - 1",
                              lower_bound=0, flag_values=fv)
    absl_flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory of every task (overrides the tasks' own)",
                             flag_values=fv)
    absl_flags.DEFINE_list("seqio_additional_cache_dirs", [], "comma-separated directories searched for "
                           "seqio-cached tasks (read with DatasetConfig.use_cached)", flag_values=fv)
    absl_flags.DEFINE_boolean("alsologtostderr", False, "show absl's INFO log lines (seqio's) on stderr; "
                              "otherwise those below ERROR are hidden", flag_values=fv)
    absl_flags.DEFINE_boolean("logtostderr", False, "the same as --alsologtostderr: this program logs only to stderr",
                              flag_values=fv)
    absl_flags.DEFINE_boolean("help", False, "show this help and exit", short_name="h", flag_values=fv)
    return fv


def help_text() -> str:
    """What `--help` prints: examples, the quoting rules, then every flag."""
    lines = [f"{PROG}: train, evaluate or translate with an mtmoe model configured by gin files (T5X's flags).",
             "", "Examples:", *(f"  {example}" for example in EXAMPLES), "",
             "A gin value is a Python literal: a string keeps its own quotes inside the shell's (\"'/tmp/demo'\").",
             "A --flagfile holds one flag a line, as the program receives it (no shell quotes); demo.flags above:",
             *(f"  {line}" for line in FLAGFILE_EXAMPLE), "", "Flags:", _flag_values().get_help()]
    return "\n".join(lines)


def parse_command_line(argv: Sequence[str]) -> tuple[absl_flags.FlagValues, list[str]]:
    """(flags, gin bindings) from argv (without the program name); `--help` prints `help_text()` and exits.

    Flagfiles are read first, so `--gin.NAME=VALUE` works inside one as well.
    """
    fv = _flag_values()
    try:
        args = fv.read_flags_from_files(list(argv), force_gnu=False)
        rest = fv([PROG, *(_gin_shorthand(arg) for arg in args)], known_only=True)[1:]
    except absl_flags.CantOpenFlagFileError as err:
        reason = _one_line(err).split("Unable to open flagfile: ")[-1]
        raise UsageError(f"--flagfile cannot be read ({reason}); check its path") from None
    except absl_flags.Error as err:
        raise UsageError(f"{_one_line(err)}; see {PROG} --help") from None
    if fv.help:
        print(help_text())
        raise SystemExit(0)
    unknown = [arg for arg in rest if arg.startswith("-")]
    if unknown:
        guesses = [difflib.get_close_matches(arg.lstrip("-").split("=")[0], list(fv), n=1) for arg in unknown]
        hint = ", ".join(f"--{close[0]}" for close in guesses if close)
        hint = f"did you mean {hint}? " if hint else ""
        raise UsageError(f"unknown flag(s) {' '.join(unknown)}; {hint}see {PROG} --help")
    if rest:
        raise UsageError(f"unexpected argument(s) {' '.join(rest)}; every argument is a flag, e.g. --gin_file=F")
    _check_multiprocess_flags(fv)
    return fv, list(fv.gin_bindings)


def _gin_shorthand(arg: str) -> str:
    """T5X's `--gin.NAME=VALUE` as the flag it stands for, `--gin_bindings=NAME = VALUE`."""
    if not arg.startswith("--gin."):
        return arg
    name, equals, value = arg[len("--gin."):].partition("=")
    if not equals:
        raise UsageError(f"{arg} has no value; write --gin.NAME=VALUE")
    return f"--gin_bindings={name} = {value}"


def _check_multiprocess_flags(fv: absl_flags.FlagValues) -> None:
    named = {name: fv[name].value for name in ("coordinator_address", "process_count", "process_index")}
    given = [f"--{name}" for name, value in named.items() if value is not None]
    if given and len(given) < len(named):
        missing = [f"--{name}" for name, value in named.items() if value is None]
        raise UsageError(f"{' '.join(given)} needs {' and '.join(missing)} as well; or pass none of the three, "
                         "with --multiprocess_gpu, to take them from the cluster's environment")
    if given and fv.process_index >= fv.process_count:
        raise UsageError(f"--process_index={fv.process_index} must be below --process_count={fv.process_count}")


def apply_process_flags(fv: absl_flags.FlagValues) -> None:
    """What the flags do to this process, before any JAX or seqio work (jax.distributed first, as in T5X).

    UsageError (one line) when jax.distributed does not start.
    """
    # seqio logs notices per task through absl: hidden unless asked for, so the trainer's progress lines stay readable.
    show_absl = fv.alsologtostderr or fv.logtostderr
    logging.getLogger("absl").setLevel(logging.INFO if show_absl else logging.ERROR)
    if fv.multiprocess_gpu or fv.coordinator_address is not None:
        from mtmoe import partitioning

        try:
            partitioning.initialize_distributed(coordinator_address=fv.coordinator_address,
                                                num_processes=fv.process_count, process_id=fv.process_index)
        except RuntimeError as err:
            cause = first_line(err.__cause__ or err)
            raise UsageError(f"jax.distributed did not start ({cause}); pass --coordinator_address, --process_count "
                             "and --process_index, or run where the cluster's environment supplies them") from None
    if fv.tfds_data_dir:
        # seqio's override reaches seqio's TFDS sources; tasks/mc4.py asks $TFDS_DATA_DIR (as TFDS does on import).
        os.environ["TFDS_DATA_DIR"] = fv.tfds_data_dir
    if fv.tfds_data_dir or fv.seqio_additional_cache_dirs:
        hide_accelerators_from_tensorflow()  # importing seqio starts TensorFlow
        import seqio

        if fv.tfds_data_dir:
            seqio.set_tfds_data_dir_override(fv.tfds_data_dir)
        seqio.add_global_cache_dirs(fv.seqio_additional_cache_dirs)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _resolve_gin_file(path: str, search_paths: list[str]) -> str:
    candidates = [path] + [os.path.join(d, path) for d in search_paths]
    for candidate in candidates:
        if os.path.isfile(candidate):
            if not os.access(candidate, os.R_OK):
                raise UsageError(f"gin file {candidate} is not readable; check its permissions")
            return candidate
    where = ", ".join(["."] + search_paths)
    raise UsageError(f"gin file {path} not found (searched {where}); check --gin_file and --gin_search_paths")


def parse_gin(*, gin_files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] = (),
              print_fn: Callable[[str], None] = print) -> None:
    """Parse gin files and bindings and finalize the config; UsageError (one line) on any problem.

    A binding of a macro's old name (`MACRO_ALIASES`) sets the new one, and print_fn gets a note saying so.
    """
    import gin

    gin.clear_config()  # a second run in one process (tests) starts from a clean, unlocked config
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    search = list(dict.fromkeys([p for p in search_paths if p] + [os.getcwd(), repo_root]))
    for directory in search:
        gin.add_config_file_search_path(directory)
    files = [_resolve_gin_file(f, search) for f in gin_files]
    if not files:
        raise UsageError("no --gin_file given; e.g. --gin_file=gin/experiments/demo.gin")
    try:
        gin.parse_config_files_and_bindings(files, [], finalize_config=False)
        bindings = _follow_macro_aliases(bindings, print_fn=print_fn)
        _check_macro_bindings(bindings)
        gin.parse_config_files_and_bindings([], bindings, finalize_config=False)
        gin.finalize()
    except UsageError:
        raise
    except ImportError as err:
        raise UsageError(f"a gin file imports a module that cannot be imported: {err}") from None
    except Exception as err:  # gin reports parse and binding errors with several exception types
        raise UsageError(gin_error_line(err)) from None


# Macros an earlier layout of the gin files defined, and what replaces each.
RENAMED_MACROS = {
    "ROUTER_TYPE": "the router is an object now: --gin.ROUTER=@routing.TokensChooseRouter() (top-k: "
                   "--gin.NUM_SELECTED_EXPERTS=K) or --gin.ROUTER=@routing.ExpertsChooseRouter()",
}
# Macros renamed to T5X's names; a binding of the old name still sets the new one.
MACRO_ALIASES = {"SEED": "RANDOM_SEED"}


def _defined_macros() -> list[str]:
    """The macros the parsed gin files set (a `%NAME` reference alone defines nothing)."""
    import gin

    return sorted(key[0] for key in gin.config._CONFIG if key[1] == "gin.macro")  # noqa: SLF001


def _follow_macro_aliases(bindings: Sequence[str], *, print_fn: Callable[[str], None]) -> list[str]:
    """`SEED = 3` becomes `RANDOM_SEED = 3` where the files set RANDOM_SEED; a file that also sets SEED is refused.

    Files that set only the old name (a checkpoint's config.gin) keep it, and their bindings with it.
    """
    defined = _defined_macros()
    for old, new in MACRO_ALIASES.items():
        if old in defined and new in defined:  # the old name would be set and read by nothing
            raise UsageError(f"a gin file sets {old}, which is {new} now (T5X's name); rename it in that file")
    followed = []
    for binding in bindings:
        name, equals, value = binding.partition("=")
        new = MACRO_ALIASES.get(name.strip())
        if equals and new in defined and name.strip() not in defined:
            binding = f"{new} = {value.strip()}"
            print_fn(f"note: --gin.{name.strip()} is --gin.{new} now (T5X's name); binding {binding}")
        followed.append(binding)
    return followed


def _check_macro_bindings(bindings: Sequence[str]) -> None:
    """A `--gin.NAME=VALUE` macro must be one the gin files define: a misspelt macro is an error, not a no-op."""
    defined = _defined_macros()
    for name in RENAMED_MACROS:
        if name in defined:  # a gin file still sets it: gin would ignore it silently
            raise UsageError(f"a gin file sets {name}, which is gone; {RENAMED_MACROS[name]}")
    for binding in bindings:
        name = binding.split("=", 1)[0].strip()
        if "." in name or "/" in name or not name:
            continue  # configurable.parameter: gin itself checks it
        if name in RENAMED_MACROS:
            raise UsageError(f"--gin.{name} is gone; {RENAMED_MACROS[name]}")
        if name not in defined:
            close = difflib.get_close_matches(name, defined, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}?" if close else "no gin file defines it"
            raise UsageError(f"--gin.{name} sets a macro the gin files do not use; {hint}")


def gin_error_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    if "set to `%gin.REQUIRED` but not subsequently overridden" in text:
        macro = text.split("/macro.value")[0].split()[-1]
        return f"gin macro {macro} is required but not set; pass --gin.{macro}=VALUE or set it in a gin file"
    if "No configurable matching" in text:
        return f"gin binding refers to something that does not exist ({text[:200]}); check the spelling"
    if "not a parameter of" in text or "not a valid parameter" in text or "Unknown parameter" in text:
        return f"gin binding names a parameter that does not exist ({text[:200]}); check the spelling"
    return f"gin config error: {text[:300]}"


def first_line(err: BaseException) -> str:
    """The message without the 'In call to configurable ...' lines gin appends."""
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def is_gin_call_error(message: str) -> bool:
    """True when a configurable was called with a required binding unset (gin raises it at call time)."""
    return "Required bindings for" in message or "gin.REQUIRED" in message


def hide_accelerators_from_tensorflow() -> None:
    """seqio uses TensorFlow only on the CPU; keep it from grabbing accelerator memory."""
    try:
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")
    except Exception:  # TensorFlow absent or already initialised: nothing to hide
        pass
