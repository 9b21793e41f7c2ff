"""`python -m app [--checkpoint DIR ...]`: load, warm and serve the page (default: the shipped model).

    python -m app --checkpoint /tmp/mtmoe/run1
    python -m app --checkpoint runs/a runs/b --port 8080 --auth me:secret
    python -m app --checkpoint runs/a --host 0.0.0.0      # reachable from the network: you asked

Binds to 127.0.0.1 unless --host says otherwise and never opens a public share
link unless --share is given. Requests wait in a bounded queue (--queue-size;
more are refused with a message), at most --concurrency of them are in
progress at once, and the sentences of those in progress are decoded together
in batches by one model thread per model (app/batching.py).

Start-up, shortest path to the first translation (BENCHMARKS.md, "Cold start
of the web UI"): langid's model starts unpacking in a background thread (so
that a first "auto" request finds the detector ready), the models are loaded,
each compiles its commonest shape (one sentence of up to 16 tokens) in a
background thread while gradio is imported and the page is built and served,
and the rest of the warm-up (the other shapes of --warm-batch, the routing
view) runs once the server serves and no request is in progress. XLA
executables are kept in JAX's persistent compilation cache
(--compilation-cache, default ~/.cache/mtmoe/jax), so every start after the
first loads them instead of compiling them; --no-compilation-cache turns that
off.

This path never imports TensorFlow or seqio: Translator reads the vocabulary
with sentencepiece, and language names come from mtmoe/data/languages.py.
"""

import argparse
import functools
import logging
import os
import sys
import threading
import time
from pathlib import Path

from app.service import Limits, TranslationService, start_unpacking_langid
from mtmoe import compilation_cache, host_memory
from mtmoe.compilation_cache import configure_compilation_cache

REPO_ROOT = Path(__file__).resolve().parent.parent
RELEASE_MODEL = REPO_ROOT / "data" / "models" / "mswitch-release"  # the model that ships (MODEL_CARD.md there)

log = logging.getLogger(__name__)


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """'user:password' -> (user, password); None passes through."""
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("--auth takes user:password, both non-empty (e.g. --auth me:secret)")
    return user, password


def model_names(checkpoints: list[str]) -> list[str]:
    """Picker names: the folder's name, with its parent's where two would clash."""
    bases = [os.path.basename(os.path.normpath(path)) or path for path in checkpoints]
    names = []
    for path, base in zip(checkpoints, bases):
        parent = os.path.basename(os.path.dirname(os.path.normpath(path)))
        names.append(f"{parent}/{base}" if bases.count(base) > 1 else base)
    if len(set(names)) != len(names):
        raise SystemExit(f"--checkpoint names the same folder twice: {checkpoints}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="Serve the mtmoe translation page and API.")
    parser.add_argument("--checkpoint", nargs="+", default=[str(RELEASE_MODEL)], metavar="DIR",
                        help="checkpoint directory (several: a model picker on the page; the first is the API default); "
                             f"default: the shipped model {RELEASE_MODEL.relative_to(REPO_ROOT)}")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step to load (default: the latest)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (off unless given)")
    parser.add_argument("--auth", type=parse_auth, default=None, metavar="USER:PASSWORD",
                        help="require this login on the page and the API")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="requests in progress at once; their sentences are batched together (default 16)")
    parser.add_argument("--queue-size", type=int, default=128, help="requests that may wait; more are refused (default 128)")
    parser.add_argument("--max-chars", type=int, default=Limits.max_chars, help="character limit of typed text")
    parser.add_argument("--max-file-kb", type=int, default=Limits.max_file_bytes // 1000, help="size limit of an uploaded file")
    # Each (batch, length) shape costs one compilation (seconds on a small CPU): warm the
    # shapes concurrent single sentences use; bigger batches compile on first use.
    parser.add_argument("--warm-batch", type=int, default=4,
                        help="compile batches of 1, 2, 4, ... up to this many sentences, in the background "
                             "while serving (default 4; 1: single sentences only; 0: no warm-up)")
    compilation_cache.add_arguments(parser, separator="-")
    return parser


# The warm-up after the first shape runs only once no request has been in progress for this
# long: a script that sends its first request as soon as the port opens gets the CPU to itself,
# while a person opening the page and typing a sentence takes longer than this.
WARM_UP_QUIET_S = 2.0


def make_services(translators: dict, *, limits: Limits = Limits(), warm_batch: int = 1,
                  background: bool = False, serving: threading.Event | None = None) -> dict[str, TranslationService]:
    """One TranslationService per translator, warmed up to batches of `warm_batch` (0: not warmed).

    background=False waits for the warm-up; True starts it and returns at once:
    its steps after the first wait for `serving` to be set and then for the
    model to be free of requests for WARM_UP_QUIET_S (TranslationService.start_warm).
    """
    services = {}
    for name, translator in translators.items():
        service = TranslationService(translator, name=name, limits=limits)
        if warm_batch > 0 and background:
            log.info("warming %s (batches up to %d) in the background ...", name, warm_batch)
            warming = service.start_warm(max_batch=warm_batch, after=serving, quiet_s=WARM_UP_QUIET_S)
            warming.add_done_callback(functools.partial(_log_warm_up, name))
        elif warm_batch > 0:
            log.info("warming %s (batches up to %d) ...", name, warm_batch)
            log.info("warmed %s in %.1f s", name, service.warm(max_batch=warm_batch))
        services[name] = service
    return services


def _log_warm_up(name: str, warming) -> None:
    if warming.exception() is not None:
        log.error("warming %s failed; requests compile their own shapes", name, exc_info=warming.exception())
    else:
        log.info("warmed %s in %.1f s", name, warming.result())


def launch(demo, *, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
           auth: tuple[str, str] | None = None, concurrency: int = 16, queue_size: int = 128,
           max_file_bytes: int = Limits.max_file_bytes, prevent_thread_lock: bool = False, quiet: bool | None = None):
    """Queue and launch `demo`; returns what Blocks.launch returns (app, local url, share url).

    Gradio's own upload limit is four times the service's file limit, so a file
    a little too large gets the service's message and a huge one is cut off at
    the door. quiet (default: prevent_thread_lock) leaves out gradio's banner.
    """
    from app.page import CSS

    demo.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    return demo.launch(server_name=host, server_port=port, share=share, auth=auth, prevent_thread_lock=prevent_thread_lock,
                       show_error=True, quiet=prevent_thread_lock if quiet is None else quiet,
                       max_file_size=4 * max_file_bytes, css=CSS, footer_links=["api", "gradio"], ssr_mode=False)


def main(argv: list[str] | None = None) -> None:
    host_memory.apply_for_command_line()  # before JAX allocates: see mtmoe/host_memory.py
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("absl", "jax"):  # orbax logs each restore step at INFO through absl
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    for path in args.checkpoint:
        if not os.path.isdir(path):
            raise SystemExit(f"--checkpoint {path}: no such directory; give a model directory written by mtmoe.train")
    started = time.perf_counter()
    start_unpacking_langid()  # beside the imports and the loading below: see app/service.py
    cache = configure_compilation_cache(args.compilation_cache)
    log.info("compilation cache: %s", cache or "off")
    # Imported here so `python -m app --help` answers at once.
    from mtmoe.translate import Translator

    # Order matters on a small machine: the Python work (imports, loading, tracing) holds
    # the GIL whatever thread runs it, but XLA compiles without it, so the models are
    # loaded first and their warm-up compiles while gradio is imported and the page served.
    translators = {}
    for name, path in zip(model_names(args.checkpoint), args.checkpoint):
        loading = time.perf_counter()
        translators[name] = Translator.from_checkpoint(path, step=args.step)
        log.info("loaded %s (step %s) in %.1f s", path, translators[name].step, time.perf_counter() - loading)
    limits = Limits(max_chars=args.max_chars, max_file_bytes=args.max_file_kb * 1000)
    serving = threading.Event()
    services = make_services(translators, limits=limits, warm_batch=args.warm_batch, background=True,
                             serving=serving)
    from app.page import build_app

    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}/"
    demo = build_app(services, url=url)
    for module in ("tensorflow", "seqio"):
        if module in sys.modules:
            log.warning("%s was imported on the web UI path; start-up is slower than it needs to be", module)
    launch(demo, host=args.host, port=args.port, share=args.share, auth=args.auth, concurrency=args.concurrency,
           queue_size=args.queue_size, max_file_bytes=limits.max_file_bytes, prevent_thread_lock=True, quiet=False)
    log.info("serving %s, %.1f s after start-up began", url, time.perf_counter() - started)
    serving.set()  # the rest of the warm-up may now take the CPU (when no request is in progress)
    demo.block_thread()
