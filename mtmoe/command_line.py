"""The command line of `python -m mtmoe.train` (T5X's flags) and the gin config it builds.

    --gin_file=F (repeatable, searched in --gin_search_paths, then the working
    directory and the repository root), --gin.NAME=VALUE (a macro or
    `configurable.param`), --gin_bindings, --mode, and the multi-host flags
    --multiprocess, --coordinator_address, --process_count, --process_index.

`parse_gin` parses and finalizes the config before any work, so an unset
`%gin.REQUIRED` macro, a misspelt macro or binding, or a missing file is a
`UsageError` whose message is one line; `mtmoe.train.main` prints it and exits
with status 2. `gin_error_line` turns gin's multi-line exceptions into that line.
"""

from __future__ import annotations

import argparse
import difflib
import os
from typing import Sequence


class UsageError(ValueError):
    """Bad input to the trainer; its message is one line that says what to change."""


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mtmoe.train",
        description="Train or resume an mtmoe model from gin files (T5X's command line).",
        epilog="Example: python -m mtmoe.train --gin_file=gin/experiments/demo.gin --gin.MODEL_DIR=/tmp/demo")
    parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable), applied in order")
    parser.add_argument("--mode", choices=("train", "eval", "infer"), default="train",
                        help="train (default), eval (gin/runs/eval.gin) or infer (gin/runs/infer.gin)")
    parser.add_argument("--gin_search_paths", default="", help="comma-separated directories to look for gin files in")
    parser.add_argument("--multiprocess", action="store_true", help="start jax.distributed (multi-host training)")
    parser.add_argument("--coordinator_address", default=None, help="host:port of process 0 (multi-host)")
    parser.add_argument("--process_count", type=int, default=None, help="number of processes (multi-host)")
    parser.add_argument("--process_index", type=int, default=None, help="this process's index (multi-host)")
    return parser


def parse_command_line(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """(flags, gin bindings) from argv; `--gin.NAME=VALUE` becomes the binding `NAME = VALUE`."""
    bindings, rest = [], []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--gin.") or arg.startswith("--gin_bindings"):
            if arg.startswith("--gin_bindings"):
                body = arg.split("=", 1)[1] if "=" in arg else (args[i + 1] if i + 1 < len(args) else "")
                if "=" not in arg:
                    i += 1
                bindings.append(body)
            else:
                body = arg[len("--gin."):]
                if "=" not in body:
                    raise UsageError(f"{arg} has no value; write --gin.NAME=VALUE")
                name, value = body.split("=", 1)
                bindings.append(f"{name} = {value}")
        else:
            rest.append(arg)
        i += 1
    flags, unknown = _argument_parser().parse_known_args(rest)
    if unknown:
        raise UsageError(f"unknown flag(s) {' '.join(unknown)}; see python -m mtmoe.train --help")
    return flags, bindings


def _resolve_gin_file(path: str, search_paths: list[str]) -> str:
    candidates = [path] + [os.path.join(d, path) for d in search_paths]
    for candidate in candidates:
        if os.path.isfile(candidate):
            if not os.access(candidate, os.R_OK):
                raise UsageError(f"gin file {candidate} is not readable; check its permissions")
            return candidate
    where = ", ".join(["."] + search_paths)
    raise UsageError(f"gin file {path} not found (searched {where}); check --gin_file and --gin_search_paths")


def parse_gin(*, gin_files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] = ()) -> None:
    """Parse gin files and bindings and finalize the config; UsageError (one line) on any problem."""
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
        _check_macro_bindings(bindings)
        gin.parse_config_files_and_bindings([], list(bindings), finalize_config=False)
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


def _check_macro_bindings(bindings: Sequence[str]) -> None:
    """A `--gin.NAME=VALUE` macro must be one the gin files define: a misspelt macro is an error, not a no-op."""
    import gin

    defined = sorted(key[0] for key in gin.config._CONFIG if key[1] == "gin.macro")  # noqa: SLF001
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


def first_line(err: Exception) -> str:
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
