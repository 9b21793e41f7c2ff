"""JAX's persistent compilation cache, as the app and the evaluation harness use it.

A beam search of one (batch, length) shape takes seconds to compile on a small
CPU and is the same program at every start; with the cache a later start (of
the web UI, or of a harness run on the same model size) loads it instead.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def default_compilation_cache() -> str:
    """$XDG_CACHE_HOME/mtmoe/jax, else ~/.cache/mtmoe/jax."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "mtmoe", "jax")


# The cache is bounded (least recently used entries go first); an executable of the
# shipped model's beam search for one shape is about 0.2 MB on CPU.
COMPILATION_CACHE_MAX_BYTES = 1 << 30


def add_arguments(parser, *, separator: str = "-") -> None:
    """--compilation-cache DIR / --no-compilation-cache (dest `compilation_cache`; None = off).

    separator: "-" or "_", the spelling of the command's other flags (the app's
    flags use dashes, the harness's underscores, as their neighbours do)."""
    flag = f"--compilation{separator}cache"
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(flag, dest="compilation_cache", default=default_compilation_cache(), metavar="DIR",
                       help="keep compiled programs here (the app and the evaluation harness share it), so that a "
                            f"later run on a model of the same size skips compiling (default {default_compilation_cache()})")
    cache.add_argument(f"--no{separator}compilation{separator}cache", dest="compilation_cache", action="store_const",
                       const=None, help="compile everything in this run; write nothing to disk")


def configure_compilation_cache(path: str | None) -> str | None:
    """Keep JAX's compiled executables in `path` across runs (None: leave JAX's setting alone).

    Every executable is written, however small or quick to compile (JAX's
    defaults skip those under one second of compile time, which on a fast
    machine is most of the CPU ones). Returns the folder in use, or None when
    it cannot be created (then the run goes on without the cache, with a warning).
    Call before the first compilation: JAX reads these settings once.
    """
    if path is None:
        return None
    path = os.path.abspath(os.path.expanduser(path))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        log.warning("compilation cache %s cannot be created (%s); running without it", path, e.strerror)
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # -1: no size floor
    # The size bound needs filelock, which gradio's dependencies always bring.
    jax.config.update("jax_compilation_cache_max_size", COMPILATION_CACHE_MAX_BYTES)
    return path
