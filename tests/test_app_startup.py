"""Start-up of the web UI (app/server.py main, TranslationService.start_warm, the compilation cache).

The warm-up after the first shape runs in the background once the server
serves, and a request never waits for one of its steps; compiled executables
are kept on disk across processes unless --no-compilation-cache is given.
"""

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from gradio_client import Client

from app.page import build_app
from app.server import build_parser, configure_compilation_cache, launch, make_services
from app.service import Limits, TranslationService
from mtmoe.compilation_cache import default_compilation_cache
from tests.fixtures.app.fake_translator import FakeTranslator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMITS = Limits(max_chars=300, max_file_bytes=2000, max_file_lines=20, batch_size=4)


class GatedTranslator(FakeTranslator):
    """A FakeTranslator whose first batch of two (a warm-up step) blocks until `gate` is set,
    as a long compilation would."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.gate = threading.Event()
        self.blocked = threading.Event()  # set while the batch of two waits at the gate

    def translate(self, texts, target_lang, **kwargs):
        if len(texts) == 2 and not self.gate.is_set():
            self.blocked.set()
            self.gate.wait(60)
        return super().translate(texts, target_lang, **kwargs)


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_warm_up_waits_for_serving_then_for_a_quiet_moment():
    fake = FakeTranslator()
    service = TranslationService(fake, name="t", limits=LIMITS)
    serving = threading.Event()
    warming = service.start_warm(max_batch=2, after=serving, quiet_s=1.0)
    wait_for(lambda: len(fake.calls) == 1)  # the commonest shape, before serving
    time.sleep(0.3)
    assert len(fake.calls) == 1 and not warming.done()  # the rest waits for the server
    serving.set()
    answer = service.translate_text("Hello there.", source_lang="en", target_lang="de")
    assert answer.text == "[de] Hello there."
    assert warming.result(timeout=60) > 0
    # The request went first: the steps after serving waited for a second without requests.
    assert fake.calls[1][0] == ["Hello there."]
    assert [len(texts) for texts, *_ in fake.calls] == [1, 1, 1, 1, 2, 2, 2]
    assert service.load_detector().done()  # the warm-up built the detector


def test_request_runs_beside_a_warm_up_step_instead_of_waiting():
    fake = GatedTranslator()
    service = TranslationService(fake, name="t", limits=LIMITS)
    warming = service.start_warm(max_batch=2)
    assert fake.blocked.wait(30)  # the warm-up is inside its first batch of two
    assert service.translate_text("Hello.", source_lang="en", target_lang="de").text == "[de] Hello."
    assert not warming.done()
    fake.gate.set()
    assert warming.result(timeout=30) > 0


def test_server_answers_while_the_background_warm_up_runs(monkeypatch):
    monkeypatch.setattr("app.server.WARM_UP_QUIET_S", 0.1)
    fake = GatedTranslator()
    serving = threading.Event()
    services = make_services({"m": fake}, limits=LIMITS, warm_batch=2, background=True, serving=serving)
    port = free_port()
    demo = build_app(services, url=f"http://127.0.0.1:{port}/")
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True)
    try:
        serving.set()
        assert fake.blocked.wait(60)  # a warm-up step is in progress (and cannot finish)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert client.predict("Das ist die Datei, die ich gespeichert habe.", "auto", "en",
                              api_name="/translate") == "[en] Das ist die Datei, die ich gespeichert habe."
        assert not fake.gate.is_set()
    finally:
        fake.gate.set()
        demo.close()


def test_compilation_cache_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_compilation_cache() == str(tmp_path / "xdg" / "mtmoe" / "jax")
    assert build_parser().parse_args([]).compilation_cache == default_compilation_cache()
    assert build_parser().parse_args(["--compilation-cache", "c"]).compilation_cache == "c"
    assert build_parser().parse_args(["--no-compilation-cache"]).compilation_cache is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--no-compilation-cache", "--compilation-cache", "c"])
    assert configure_compilation_cache(None) is None
    (tmp_path / "a_file").write_text("")
    assert configure_compilation_cache(str(tmp_path / "a_file" / "cache")) is None  # cannot be made: run without


def test_compilation_cache_is_written_then_read_by_the_next_process(tmp_path):
    """In fresh interpreters (JAX reads the cache settings once per process)."""
    code = textwrap.dedent("""
        import sys
        import jax, jax.numpy as jnp
        from jax import monitoring
        from app.server import configure_compilation_cache
        hits = []
        monitoring.register_event_listener(lambda name, **kw: hits.append(name))
        assert configure_compilation_cache(sys.argv[1]) == sys.argv[1]
        y = jax.jit(lambda x: jnp.tanh(x @ x.T) * 3.0)(jnp.ones((5, 3)))  # compiles in well under a second
        print("HITS", hits.count("/jax/compilation_cache/cache_hits"), float(y[0, 0]))
    """)
    cache = tmp_path / "cache"

    def run() -> int:
        result = subprocess.run([sys.executable, "-c", code, str(cache)], cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        return int(next(line for line in result.stdout.splitlines() if line.startswith("HITS")).split()[1])

    assert run() == 0
    assert any(name.startswith("jit_") for name in os.listdir(cache))  # quick CPU compiles are kept too
    assert run() >= 1


@pytest.mark.slow
@pytest.mark.timeout(600)  # above its own 300 s start-up deadline, which prints the server's log
def test_python_m_app_serves_the_first_translation_and_fills_the_cache(tiny_checkpoint, tmp_path):
    """The real start-up path: `python -m app` on the tiny checkpoint answers through gradio_client."""
    port = free_port()
    cache = tmp_path / "cache"
    log = open(tmp_path / "server.log", "w+")
    server = subprocess.Popen([sys.executable, "-m", "app", "--checkpoint", str(tiny_checkpoint), "--port", str(port),
                               "--warm-batch", "1", "--compilation-cache", str(cache)], cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, open(tmp_path / "server.log").read()[-3000:]
            assert time.monotonic() < deadline, "python -m app did not serve within 300 s"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        answer = Client(f"http://127.0.0.1:{port}/", verbose=False).predict("Open the file.", "en", "de",
                                                                           api_name="/translate")
        assert isinstance(answer, str)
        assert any(name.startswith("jit_predict_batch") for name in os.listdir(cache))
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_langid_is_unpacked_once_in_the_background():
    from app import language_detection

    thread = language_detection.start_unpacking_langid()
    detector = language_detection.LanguageDetector(languages=["en", "de", "fr"], min_probability=0.8)  # waits for it
    thread.join(60)
    assert not thread.is_alive()
    assert language_detection._unpack_langid_model.cache_info().misses == 1  # never unpacked twice, whoever asked first
    assert detector.detect("Das ist die Datei, die ich gespeichert habe.")[0] == "de"


def test_page_import_skips_gradio_stub_writing_and_chooses_agg():
    """app.page makes `import gradio` skip regenerating its .pyi stubs, and gives matplotlib a backend so
    that gradio's per-event backend check does not import pyplot (in a fresh interpreter)."""
    code = textwrap.dedent("""
        import os, sys
        os.environ.pop("MPLBACKEND", None)
        import app.page
        import gradio.component_meta
        import matplotlib
        assert gradio.component_meta.create_or_modify_pyi(None, "X", []) is None  # the real one fails on None
        assert not any(type(finder).__name__ == "_SkipGradioStubs" for finder in sys.meta_path)
        assert matplotlib.get_backend().lower() == "agg" and "matplotlib.pyplot" not in sys.modules
        print("OK")
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-2000:]
