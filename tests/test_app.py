"""The web UI: served in-process on a free loopback port and called through gradio_client.

The model is tests/fixtures/app/fake_translator.py (the Translator interface,
"[de] Hello."), so these tests check the app: limits, detection, batching,
files, errors, the queue. A test through the real Translator runs when the
trainer's `tiny_checkpoint` fixture exists.
"""

import concurrent.futures
import io
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import zipfile

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app import experts_view
from app import text as text_lib
from app.batching import Batcher
from app.page import build_app
from app.server import build_parser, launch, make_services, model_names, parse_auth
from app.service import AUTO, Limits, TranslationService
from tests.fixtures.app.fake_translator import FakeTranslator

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "app")
L10N = os.path.join(os.path.dirname(__file__), "fixtures", "l10n")  # tests/test_localize.py's files
LIMITS = Limits(max_chars=300, max_file_bytes=2000, max_file_lines=20, batch_size=4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(services, **kwargs):
    port = free_port()
    demo = build_app(services, url=f"http://127.0.0.1:{port}/")
    _, url, share_url = launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True,
                               max_file_bytes=LIMITS.max_file_bytes, **kwargs)
    assert share_url is None  # never a public link unless --share
    return demo, url


@pytest.fixture(scope="module")
def server():
    """(client, {name: FakeTranslator}, url): three models, the first the API default."""
    translators = {"tiny": FakeTranslator(delay_s=0.005), "small": FakeTranslator(languages=("en", "de"), step=3),
                   "wide": FakeTranslator(languages=("de", "en", "he", "nb", "sv", "zh-Hans", "zh-Hant"))}
    demo, url = serve(make_services(translators, limits=LIMITS), concurrency=8, queue_size=64)
    yield Client(url, verbose=False), translators, url
    demo.close()


# -- text splitting ----------------------------------------------------------


def test_sentences_split_and_rejoin_in_layout():
    text = "Open the file. Save it!\n\n  See J. Smith, e.g. here. 3.5 GB free.\n文件已保存。请关闭窗口。"
    layout = text_lib.split_segments(text)
    assert layout.lines == [["Open the file.", "Save it!"], [], ["See J. Smith, e.g. here.", "3.5 GB free."],
                            ["文件已保存。", "请关闭窗口。"]]
    assert layout.indents == ["", "", "  ", ""]
    out = text_lib.join_segments(layout, [s.upper() for s in layout.sentences], target_lang="de")
    assert out == "OPEN THE FILE. SAVE IT!\n\n  SEE J. SMITH, E.G. HERE. 3.5 GB FREE.\n文件已保存。 请关闭窗口。"
    chinese = text_lib.split_segments("好。对。")
    assert text_lib.join_segments(chinese, ["好。", "对。"], target_lang="zh-Hans") == "好。对。"  # no space in Chinese
    # By the script: Japanese and Traditional Chinese go without spaces; Thai puts a space between sentences,
    # and Korean (Hangul) and German do.
    assert [text_lib.join_segments(chinese, ["a", "b"], target_lang=lang) for lang in ("ja", "th", "zh-TW", "ko", "de")] == [
        "ab", "a b", "ab", "a b", "a b"]
    with pytest.raises(ValueError, match="one per input"):
        text_lib.join_segments(layout, ["x"], target_lang="de")


# -- the service without a server --------------------------------------------


def test_detector_restricted_to_model_languages_and_variants():
    service = TranslationService(FakeTranslator(), name="t", limits=LIMITS)
    assert service.resolve_source("Die Datei konnte nicht gespeichert werden.", AUTO)[0] == "de"
    assert service.resolve_source("Не удалось открыть файл.", AUTO)[0] == "ru"
    assert service.resolve_source("无法打开这个文件，请检查权限。", AUTO)[0] == "zh-Hans"
    assert service.resolve_source("無法開啟這個檔案，請檢查權限。", AUTO)[0] == "zh-Hant"
    # Italian is not a language of this model: the detector answers among the model's own.
    assert service.resolve_source("Impossibile aprire il file richiesto.", AUTO)[0] in service.source_languages
    for undetectable in ("12345 67", "ok", "!!!"):  # translated all the same, from an "unknown" source
        assert service.resolve_source(undetectable, AUTO)[0] == "unknown"


def test_batcher_joins_waiting_requests_and_isolates_a_failure():
    release = threading.Event()
    calls = []

    def translate_batch(segments, key):
        calls.append((list(segments), key))
        if len(calls) == 1:
            release.wait(10)  # hold the model thread so that the next requests queue up
        if "💥" in segments:
            raise RuntimeError("bad segment")
        return [f"{key}:{segment}" for segment in segments]

    batcher = Batcher(translate_batch, max_segments=5)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        first = pool.submit(batcher.submit, ["a"], "de")
        while not calls:
            time.sleep(0.01)
        waiting = [pool.submit(batcher.submit, segments, key) for segments, key in
                   [(["b", "c"], "de"), (["d"], "fr"), (["💥"], "de"), (["e", "f"], "de"), (["g"], "de")]]
        while batcher._queue.qsize() < len(waiting):
            time.sleep(0.01)
        release.set()
        assert first.result(10) == ["de:a"]
        assert waiting[0].result(10) == ["de:b", "de:c"]
        assert waiting[1].result(10) == ["fr:d"]
        with pytest.raises(RuntimeError, match="bad segment"):
            waiting[2].result(10)
        assert waiting[3].result(10) == ["de:e", "de:f"]
        assert waiting[4].result(10) == ["de:g"]
    # Call 2 joins the waiting "de" requests up to 5 segments; it fails on "💥", so
    # its requests are retried alone; then the "fr" request and the last "de" one.
    assert calls[1] == (["b", "c", "💥", "e", "f"], "de")
    assert [segments for segments, _ in calls[2:5]] == [["b", "c"], ["💥"], ["e", "f"]]
    assert sorted(map(tuple, (segments for segments, _ in calls[5:]))) == [("d",), ("g",)]


def test_warm_up_compiles_every_batch_bucket():
    fake = FakeTranslator()
    TranslationService(fake, name="t", limits=LIMITS).warm(max_batch=4)
    assert [len(texts) for texts, *_ in fake.calls] == [1, 1, 1, 2, 2, 2, 4, 4, 4]
    assert {target for _, target, *_ in fake.calls} == {"en"}


def test_routing_view_draws_tokens_as_text():
    trace = {"tokens": ["▁$x", "▁<b>bold</b>", "▁a_b^c", "</s>"],
             "layers": {"encoder/layers_1/mlp": [0, 3, 1, 2], "encoder/layers_3/mlp": [2, 2, 0, 1]},
             "fraction_dropped": {"encoder/layers_1/mlp": 0.0, "encoder/layers_3/mlp": 0.25}}
    figure = experts_view.routing_figure(trace)
    png = io.BytesIO()
    figure.savefig(png, format="png")  # an unbalanced "$" would fail under mathtext
    assert png.getvalue()[:4] == b"\x89PNG"
    labels = [label.get_text() for label in figure.axes[0].get_xticklabels()]
    assert labels == ["·$x", "·<b>bold</b>", "·a_b^c", "</s>"]
    assert figure.axes[0].get_title() == "expert chosen per token (4 distinct experts used)"
    # The title counts the experts that appear, not the largest index + 1.
    sparse = experts_view.routing_figure({"tokens": ["a", "b", "c"], "layers": {"l": [0, 6, 6]}})
    assert sparse.axes[0].get_title() == "expert chosen per token (2 distinct experts used)"
    assert experts_view.routing_table(trace) == [["encoder/layers_1/mlp", "0.0%", "4 / 4"],
                                                 ["encoder/layers_3/mlp", "25.0%", "3 / 4"]]


def test_command_line_defaults_are_local_and_private():
    args = build_parser().parse_args(["--checkpoint", "a", "b"])
    assert (args.host, args.port, args.share, args.auth) == ("127.0.0.1", 7860, False, None)
    assert parse_auth("me:se:cret") == ("me", "se:cret")
    for bad in ("me", ":pw", "me:"):
        with pytest.raises(Exception, match="user:password"):
            parse_auth(bad)
    assert model_names(["runs/a/ckpt", "runs/b/ckpt", "runs/c"]) == ["a/ckpt", "b/ckpt", "c"]


def test_web_ui_imports_no_tensorflow_or_seqio():
    """Start-up must not pay for TensorFlow: import and build the app in a fresh interpreter."""
    code = textwrap.dedent("""
        import importlib.util, sys
        from app.server import make_services
        from app.page import build_app
        from tests.fixtures.app.fake_translator import FakeTranslator
        if importlib.util.find_spec("mtmoe.translate") is not None:
            import mtmoe.translate
        build_app(make_services({"m": FakeTranslator()}))
        heavy = [name for name in ("tensorflow", "seqio", "tensorflow_text") if name in sys.modules]
        assert not heavy, f"the web UI imported {heavy}"
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# -- through the server -------------------------------------------------------


def test_round_trip_is_one_batch_of_sentences(server):
    client, translators, _ = server
    fake = translators["tiny"]
    answer = client.predict("Open the file. Save it!\nClose the window.", "en", "de", api_name="/translate")
    assert answer == "[de] Open the file. [de] Save it!\n[de] Close the window."
    texts, target, source, beam, max_length = fake.calls[-1]
    assert (texts, target, source, beam, max_length) == (["Open the file.", "Save it!", "Close the window."], "de", "en", 4, None)


def test_auto_detects_the_source(server):
    client, translators, _ = server
    answer = client.predict("Die Datei konnte nicht gespeichert werden, weil der Datenträger voll ist.", "auto", "en",
                            api_name="/translate")
    assert answer == "[en] Die Datei konnte nicht gespeichert werden, weil der Datenträger voll ist."
    assert translators["tiny"].calls[-1][2] == "de"
    assert client.predict("Не удалось открыть файл.", api_name="/detect_language")["language"] == "ru"


@pytest.mark.parametrize("text, model, language", [
    ("Не удалось открыть файл.", None, "ru"),
    ("Die Datei konnte nicht gespeichert werden.", "tiny", "de"),
    ("Filen kunde inte sparas eftersom disken är full.", "wide", "sv"),
])
def test_detect_language_answers_the_code_and_its_probability(server, text, model, language):
    client, _, _ = server
    answer = client.predict(text, model, api_name="/detect_language")
    assert set(answer) == {"language", "probability"} and answer["language"] == language
    assert LIMITS.min_detect_probability <= answer["probability"] <= 1
    # Below min_detect_probability the language is "unknown", with the probability of the best guess.
    unsure = client.predict("12345 678", model, api_name="/detect_language")
    assert unsure["language"] == "unknown" and 0 <= unsure["probability"] < LIMITS.min_detect_probability


def test_model_picker_routes_to_the_named_model(server):
    client, translators, _ = server
    before = len(translators["small"].calls)
    assert client.predict("Hello.", "en", "de", "small", api_name="/translate") == "[de] Hello."
    assert len(translators["small"].calls) == before + 1
    with pytest.raises(AppError, match=r"unsupported target language 'fr' \(French\); the closest supported code is"):
        client.predict("Hello.", "en", "fr", "small", api_name="/translate")
    with pytest.raises(AppError, match="unknown model 'nope'"):
        client.predict("Hello.", "en", "de", "nope", api_name="/translate")


@pytest.mark.parametrize("text, source, target, message", [
    ("", "en", "de", "the text is empty"),
    ("   \n ", "auto", "de", "the text is empty"),
    ("x" * (LIMITS.max_chars + 1), "en", "de", f"over the limit of {LIMITS.max_chars}"),
    ("Hello.", "en", "xx", "unknown target language 'xx'"),
    ("Hello.", "klingon", "de", "unknown source language 'klingon'"),
])
def test_bad_text_input_gets_a_clear_message(server, text, source, target, message):
    client, _, _ = server
    with pytest.raises(AppError) as error:
        client.predict(text, source, target, api_name="/translate")
    assert message in str(error.value)
    assert "Traceback" not in str(error.value)


@pytest.mark.parametrize("source, target, model_source, model_target", [
    ("en", "zh-CN", "en", "zh-Hans"),   # likely script of China
    ("iw", "sv-SE", "he", "sv"),        # deprecated Hebrew code; a region the model does not name
    ("deu", "zh_TW", "de", "zh-Hant"),  # ISO 639-3; "_" for "-"
    ("ZH", "no", "zh-Hans", "nb"),      # case; Norwegian -> Bokmål
])
def test_any_spelling_of_a_model_language_is_taken_for_it(server, source, target, model_source, model_target):
    client, translators, _ = server
    answer = client.predict("Hello.", source, target, "wide", api_name="/translate")
    assert answer == f"[{model_target}] Hello."
    assert translators["wide"].calls[-1][1:3] == (model_target, model_source)


def test_file_translation_takes_any_spelling_and_names_the_model_language(server):
    client, translators, _ = server
    path = client.predict(handle_file(os.path.join(FIXTURES, "sample.txt")), "deu", "zh-CN", "wide", 4, 0,
                          api_name="/translate_file")
    assert os.path.basename(path) == "sample.zh-Hans.txt"
    assert translators["wide"].calls[-1][1:3] == ("zh-Hans", "de")


@pytest.mark.parametrize("source, target, message", [
    ("en", "nn", "unsupported target language 'nn' (Norwegian Nynorsk); the closest supported code is 'nb' "
                 "(Norwegian Bokmål)"),
    ("sr-Latn", "de", "unsupported source language 'sr-Latn' (Serbian (Latin)); the closest supported code is "),
    ("en", "zh-Latn", "unsupported target language 'zh-Latn' (Chinese (Latin)); the closest supported code is "),
])
def test_a_language_the_model_lacks_is_one_line_with_the_closest(server, source, target, message):
    client, _, _ = server
    with pytest.raises(AppError) as error:
        client.predict("Hello.", source, target, "wide", api_name="/translate")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_model_failure_is_one_line_and_server_stays_up(server):
    client, _, _ = server
    with pytest.raises(AppError, match=r"the model failed on this request \(RuntimeError\)"):
        client.predict("💥 Boom.", "en", "de", api_name="/translate")
    assert client.predict("Still here.", "en", "de", api_name="/translate") == "[de] Still here."


def test_file_translation_keeps_lines(server, tmp_path):
    client, translators, _ = server
    path = client.predict(handle_file(os.path.join(FIXTURES, "sample.txt")), "en", "de", "tiny", 2, 40,
                          api_name="/translate_file")
    assert os.path.basename(path) == "sample.de.txt"
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    with open(os.path.join(FIXTURES, "sample.txt"), encoding="utf-8") as f:
        expected = [("" if not line.strip() else line[: len(line) - len(line.lstrip())] + "[de] " + line.strip())
                    for line in f.read().split("\n")]
    assert lines == expected  # blank line, indentation, HTML-looking text and final newline kept as text
    assert translators["tiny"].calls[-1][3:] == (2, 40)  # beam size and max length reach the model


def test_translate_takes_the_options_of_translate_file(server):
    client, translators, _ = server
    fake = translators["tiny"]
    assert client.predict("Hello.", "en", "de", "tiny", 2, 40, api_name="/translate") == "[de] Hello."
    assert fake.calls[-1][3:] == (2, 40)
    client.predict("Hello.", "en", "de", beam_size=1, max_length=7, api_name="/translate")  # as in the README
    assert fake.calls[-1][3:] == (1, 7)
    # Left out: the first model, its default target (English), beam 4, the model's own max length.
    assert client.predict("Hello.", "en", api_name="/translate") == "[en] Hello."
    assert fake.calls[-1][1:] == ("en", "en", 4, None)
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    options = {name: [(p["parameter_name"], p["parameter_has_default"], p["parameter_default"])
                      for p in api[name]["parameters"][1:]] for name in ("/translate", "/translate_file")}
    assert options["/translate"] == options["/translate_file"] == [
        ("source_lang", True, AUTO), ("target_lang", True, "en"), ("model", True, "tiny"),
        ("beam_size", True, 4), ("max_length", True, 0)]


@pytest.mark.parametrize("beam_size, max_length, message", [
    (LIMITS.max_beam_size + 1, 0, f"beam size must be a whole number from 1 to {LIMITS.max_beam_size}, got 9"),
    (0, 0, "beam size must be a whole number from 1 to 8, got 0"),
    (2.5, 0, "beam size must be a whole number from 1 to 8, got 2.5"),
    ("four", 0, "beam size must be a whole number from 1 to 8, got 'four'"),
    (4, LIMITS.max_length_cap + 1, f"max length must be a whole number from 1 to {LIMITS.max_length_cap} tokens"),
    (4, -1, "max length must be a whole number from 1 to 512 tokens (0 = the model's default), got -1"),
])
def test_both_endpoints_check_the_options_alike(server, beam_size, max_length, message):
    client, _, _ = server
    sample = handle_file(os.path.join(FIXTURES, "sample.txt"))
    for first, endpoint in (("Hello.", "/translate"), (sample, "/translate_file")):
        with pytest.raises(AppError) as error:
            client.predict(first, "en", "de", "tiny", beam_size, max_length, api_name=endpoint)
        assert message in str(error.value) and "\n" not in str(error.value), endpoint
    for first, endpoint in (("Hello.", "/translate"), (sample, "/translate_file")):
        with pytest.raises(AppError, match="unknown model 'nope'; choose one of: tiny, small, wide"):
            client.predict(first, "en", "de", "nope", api_name=endpoint)


def test_languages_lists_each_model_with_english_and_native_names(server):
    client, translators, _ = server
    english, german = ({"code": "en", "name": "English", "native_name": "English"},
                       {"code": "de", "name": "German", "native_name": "Deutsch"})
    assert client.predict("small", api_name="/languages") == {"small": {"source": [english, german],
                                                                        "target": [english, german]}}
    every = client.predict(api_name="/languages")
    assert list(every) == ["tiny", "small", "wide"]  # the first is the API's default model
    for name, table in every.items():
        for side, codes in (("source", translators[name].source_languages), ("target", translators[name].languages)):
            assert sorted(row["code"] for row in table[side]) == sorted(codes)
            names = [row["name"].casefold() for row in table[side]]
            assert names == sorted(names)  # the page's order
    wide = {row["code"]: (row["name"], row["native_name"]) for row in every["wide"]["target"]}
    assert wide["he"] == ("Hebrew", "עברית") and wide["nb"] == ("Norwegian Bokmål", "norsk bokmål")
    assert wide["zh-Hant"] == ("Chinese (Traditional)", "中文（繁體）")
    with pytest.raises(AppError, match="unknown model 'nope'"):
        client.predict("nope", api_name="/languages")


@pytest.mark.parametrize("endpoint, source, target, what", [
    ("/translate", "en", "xq", "unknown target language 'xq'"),
    ("/translate", "en", "nn", "unsupported target language 'nn' (Norwegian Nynorsk)"),
    ("/translate_file", "klingon", "de", "unknown source language 'klingon'"),
    ("/translate_file", "en", "nn", "unsupported target language 'nn' (Norwegian Nynorsk)"),
])
def test_an_unknown_code_is_one_line_naming_the_closest_and_pointing_to_languages(server, endpoint, source, target,
                                                                                 what):
    client, _, _ = server
    first = "Hello." if endpoint == "/translate" else handle_file(os.path.join(FIXTURES, "sample.txt"))
    with pytest.raises(AppError) as error:
        client.predict(first, source, target, "wide", api_name=endpoint)
    message = str(error.value)
    assert message.startswith(what + "; the closest supported code is '") and "\n" not in message
    assert message.endswith("; see the /languages endpoint for the rest")
    named = message.split("the closest supported code is '")[1].split("'")[0]
    table = client.predict("wide", api_name="/languages")["wide"]["source" if "source" in what else "target"]
    assert named in {row["code"] for row in table}
    assert named == "nb" or target != "nn"  # a related language before a code spelled alike


@pytest.mark.parametrize("content, message", [
    ("Grüße aus Köln.\n".encode("latin-1"), "is not UTF-8 text"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "is not a text file"),
    (("A line.\n" * 300).encode(), f"over the limit of {LIMITS.max_file_bytes}"),
    (("Line.\n" * 30).encode(), f"over the limit of {LIMITS.max_file_lines}"),
    (b"\n \n", "has no text"),
])
def test_bad_file_gets_a_clear_message(server, tmp_path, content, message):
    client, _, _ = server
    path = tmp_path / "upload.txt"
    path.write_bytes(content)
    with pytest.raises(AppError) as error:
        client.predict(handle_file(str(path)), "en", "de", api_name="/translate_file")
    assert message in str(error.value)


# A catalog under the test server's 2,000-byte limit (tests/fixtures/l10n/sw.po is over it): two of sw.po's
# entries, one already translated into German.
SMALL_CATALOG = """msgid ""
msgstr ""
"Language: de\\n"
"Content-Type: text/plain; charset=UTF-8\\n"
"Plural-Forms: nplurals=2; plural=n != 1;\\n"

#. The name of the person whose change is accepted replaces $1.
msgctxt "STR_ACCEPT_REDLINE"
msgid "Accept change: $1"
msgstr "Änderung akzeptieren: $1"

msgctxt "STR_UNDO_TABS"
msgid "One tab"
msgid_plural "$1 tabs"
msgstr[0] ""
msgstr[1] ""
"""


def test_localize_file_translates_a_catalog_into_two_languages(server, tmp_path):
    from translate.storage import pypo

    client, translators, _ = server
    catalog = tmp_path / "writer.po"
    catalog.write_text(SMALL_CATALOG, encoding="utf-8")
    path, summary = client.predict(handle_file(str(catalog)), ["de", "FR"], api_name="/localize_file")
    assert os.path.basename(path) == "writer.de-fr.zip"
    with zipfile.ZipFile(path) as zipped:
        assert sorted(zipped.namelist()) == ["de.po", "fr.po"]
        zipped.extractall(tmp_path / "out")
    assert summary == ("German (de): 1 translated, 1 skipped (already translated), 0 flagged\n"
                       "French (fr): 2 translated, 0 skipped (already translated), 0 flagged")
    german = {u.getcontext(): u for u in pypo.pofile.parsefile(str(tmp_path / "out" / "de.po")).units}
    assert german["STR_ACCEPT_REDLINE"].target == "Änderung akzeptieren: $1"  # already German: kept
    assert german["STR_UNDO_TABS"].target.strings == ["[de] One tab", "[de] $1 tabs"] and german["STR_UNDO_TABS"].isfuzzy()
    french = {u.getcontext(): u for u in pypo.pofile.parsefile(str(tmp_path / "out" / "fr.po")).units}
    assert french["STR_ACCEPT_REDLINE"].target == "[fr] Accept change: $1" and french["STR_ACCEPT_REDLINE"].isfuzzy()
    assert french["STR_ACCEPT_REDLINE"].getnotes("developer") == "The name of the person whose change is accepted replaces $1."
    assert {call[1] for call in translators["tiny"].calls[-2:]} == {"de", "fr"}


def test_localize_file_into_one_language_gives_the_file(server):
    client, translators, _ = server
    path, summary = client.predict(handle_file(os.path.join(L10N, "commonDialogs.properties")), "zh-CN", False,
                                   "wide", 1, api_name="/localize_file")
    assert os.path.basename(path) == "commonDialogs_zh_Hans.properties"
    assert summary.startswith("Chinese (Simplified) (zh-Hans): 16 translated")
    with open(path, encoding="utf-8") as f:
        assert "ScriptDlgHeading=[zh-Hans] The page at %S says:" in f.read()
    assert translators["wide"].calls[-1][1] == "zh-Hans" and translators["wide"].calls[-1][3] == 1  # beam size
    # A Fluent file goes in a folder named for its language, as in Mozilla's repositories: a zip keeps it.
    path, _ = client.predict(handle_file(os.path.join(L10N, "findbar.ftl")), "de", api_name="/localize_file")
    with zipfile.ZipFile(path) as zipped:
        assert zipped.namelist() == ["de/findbar.ftl"]
        assert "[one] [de] { $current } of { $total } match" in zipped.read("de/findbar.ftl").decode()


LATIN1_FLUENT = "size = Größe\n".encode("iso-8859-1")


@pytest.mark.parametrize("name, content, targets, message", [
    ("bad.po", b'msgid "Open"\nmsgstr "Auf"\n\nmsgid "Close\nmsgstr "Zu"\n', ["de"],
     "bad.po is not a valid gettext catalog: end-of-line within string on line 4: 'msgid \"Close\\n'; fix that line "
     "(msgfmt -c bad.po checks the whole file)"),
    ("strings.resx", b"<root/>", ["de"], "strings.resx: unknown format '.resx'; give a file ending in .ftl, .po, .pot, "
                                         ".properties, .txt, .xlf, .xliff"),
    ("sw.po", None, ["de"], "sw.po is {size:,} bytes, over the limit of 2,000; split it into smaller files"),
    ("latin.ftl", LATIN1_FLUENT, ["de"], "latin.ftl: line 1: byte 0xF6 is not utf-8; Fluent files are UTF-8: save it as UTF-8"),
    ("size.ftl", b"size = Size\n", ["de", "gsw"], "unsupported target language 'gsw' (Swiss German); the closest "
                                                  "supported code is 'de' (German); see the /languages endpoint for the rest"),
    ("size.ftl", b"size = Size\n", [], "no target language chosen; pick one or more languages to translate into"),
])
def test_bad_localisation_input_gets_the_commands_line(server, tmp_path, name, content, targets, message):
    client, _, _ = server
    path = tmp_path / name
    path.write_bytes(content if content is not None else open(os.path.join(L10N, name), "rb").read())
    with pytest.raises(AppError) as error:
        client.predict(handle_file(str(path)), targets, api_name="/localize_file")
    assert str(error.value) == message.format(size=os.path.getsize(path))


def test_huge_file_is_stopped_at_upload(server, tmp_path):
    client, _, _ = server
    path = tmp_path / "huge.txt"
    path.write_bytes(b"A line.\n" * (LIMITS.max_file_bytes // 2 + 1))  # over 4x the limit: gradio's own upload cap
    with pytest.raises(Exception, match="exceeds the maximum file size"):
        client.predict(handle_file(str(path)), "en", "de", api_name="/translate_file")
    assert client.predict("Still here.", "en", "de", api_name="/translate") == "[de] Still here."


def test_fifty_concurrent_requests_all_answered(server):
    client, _, url = server
    threads, per_thread = 5, 10

    def work(worker: int) -> list[str]:
        own = Client(url, verbose=False)
        return [own.predict(f"Sentence {worker}-{i}.", "en", "de", api_name="/translate") for i in range(per_thread)]

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        answers = [answer for batch in pool.map(work, range(threads)) for answer in batch]
    assert sorted(answers) == sorted(f"[de] Sentence {w}-{i}." for w in range(threads) for i in range(per_thread))
    assert time.perf_counter() - started < 60
    assert client.predict("After the load.", "en", "de", api_name="/translate") == "[de] After the load."


def test_page_and_api_view_are_served(server):
    client, _, url = server
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
    api = client.view_api(return_format="dict", print_info=False)
    translate = api["named_endpoints"]["/translate"]
    assert [p["parameter_name"] for p in translate["parameters"]][:3] == ["text", "source_lang", "target_lang"]
    # The page's own events are not part of the public API.
    assert set(api["named_endpoints"]) == {"/translate", "/detect_language", "/translate_file", "/localize_file",
                                           "/languages"}


def test_auth_is_required_when_asked():
    demo, url = serve(make_services({"m": FakeTranslator()}, limits=LIMITS, warm_batch=0), auth=("me", "secret"))
    try:
        from gradio_client.exceptions import AuthenticationError

        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(url, verbose=False).predict("Hello.", "en", "de", api_name="/translate")
        client = Client(url, auth=("me", "secret"), verbose=False)
        assert client.predict("Hello.", "en", "de", api_name="/translate") == "[de] Hello."
    finally:
        demo.close()


def test_real_translator_round_trip(tiny_checkpoint):
    """Through mtmoe.translate.Translator on the trainer's tiny checkpoint (en <-> de, fr, pt-BR, zh-Hans)."""
    from mtmoe.translate import Translator

    translator = Translator.from_checkpoint(tiny_checkpoint)
    services = make_services({"tiny": translator}, limits=LIMITS, warm_batch=0)  # warm-up: tested with the fake
    demo, url = serve(services)
    try:
        client = Client(url, verbose=False)
        answer = client.predict("Die Datei wurde gespeichert. Bitte schließen Sie das Fenster.", "auto", "en",
                                api_name="/translate")
        assert isinstance(answer, str) and "\n" not in answer
        assert client.predict("O arquivo não pôde ser aberto.", api_name="/detect_language")["language"] == "pt-BR"
        with pytest.raises(AppError, match="unsupported target language 'ru'"):
            client.predict("Hello.", "en", "ru", api_name="/translate")
        assert isinstance(client.predict("Die Datei wurde gespeichert.", "deu", "zh-CN", api_name="/translate"), str)
        trace = services["tiny"].route("Open the file.", target_lang="de")
        assert trace["tokens"][-1] == "</s>" and trace["layers"]
        assert all(len(experts) == len(trace["tokens"]) for experts in trace["layers"].values())
        assert set(trace["fraction_dropped"]) == set(trace["layers"])
        experts_view.routing_figure(trace).savefig(io.BytesIO(), format="png")
    finally:
        demo.close()
