"""The translation service behind the page and the API: limits, language
detection, sentence batching, file translation (text and localisation files,
mtmoe.localize) and routing traces.

Nothing here imports gradio: the page (app/page.py) turns `RequestError` into
`gr.Error` so the message reaches the browser and gradio_client unchanged.

Source-language detection is app/language_detection.py. Asking the model
itself (score the input under every source tag) would cost one forward pass
per language and only works for languages whose tag the model learned on the
source side. A source the detector is unsure of is translated all the same and
reported as "unknown" (the model reads the source as it is); languages the
detector does not know can still be chosen by hand in the Source list.
"""

import concurrent.futures
import dataclasses
import functools
import logging
import os
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from app import text as text_lib
from app.batching import Batcher
from app.language_detection import UNKNOWN, LanguageDetector, start_unpacking_langid  # noqa: F401 (app/server.py)
from mtmoe import localize
from mtmoe.data import languages as language_lookup

log = logging.getLogger(__name__)

AUTO = "auto"  # the source "language" that asks for detection
DEFAULT_BEAM_SIZE = 4
# Closes every "unknown language" message: the closest code is named, the full list is one call away.
SEE_LANGUAGES = "see the /languages endpoint for the rest"


class RequestError(ValueError):
    """Bad input that the user can fix; its message says how, in one line."""


class TranslatorLike(Protocol):
    """What the app needs from `mtmoe.translate.Translator`."""

    languages: list[str]
    source_languages: list[str]

    def translate(self, texts: list[str], target_lang: str, *, source_lang: str | None = None,
                  beam_size: int = 4, max_length: int | None = None) -> list[str]: ...

    def route(self, text: str, target_lang: str) -> dict: ...


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask for.

    max_chars: characters of typed text (code points, as the page counts them).
    max_file_bytes: size of an uploaded file (.txt or localisation file).
    max_file_lines: lines of an uploaded .txt file (/translate_file).
    batch_size: most sentences per translator call (one request's and others'
    batched together); bounds the memory of one call.
    max_beam_size / max_length_cap: upper ends of the Advanced controls.
    min_detect_probability: the detector's probability below which the source
    is reported as unknown (and translated all the same).
    """

    max_chars: int = 5000
    max_file_bytes: int = 1_000_000
    max_file_lines: int = 5000
    batch_size: int = 32
    max_beam_size: int = 8
    max_length_cap: int = 512
    min_detect_probability: float = 0.8


def language_label(code: str) -> str:
    """'German (de)'; the bare code for a code the language table lacks."""
    try:
        return f"{language_lookup.language_name(code)} ({code})"
    except ValueError:
        return code


def describe_language(code: str) -> dict[str, str]:
    """{"code": "de", "name": "German", "native_name": "Deutsch"}; both names are the code where the table lacks it."""
    try:
        return {"code": code, "name": language_lookup.language_name(code),
                "native_name": language_lookup.language_name(code, native=True)}
    except ValueError:
        return {"code": code, "name": code, "native_name": code}


def _whole_number(value: object, what: str, allowed: str) -> int:
    """`value` as an int when it is a whole number (4, 4.0, "4"); RequestError naming `allowed` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = float("nan")
    if isinstance(value, bool) or not number.is_integer():
        raise RequestError(f"{what} must be a whole number {allowed}, got {value!r}")
    return int(number)


@dataclasses.dataclass
class Translation:
    """One answered text request."""

    text: str
    source_lang: str
    detected_probability: float | None  # None when the user chose the source
    num_sentences: int
    seconds: float


Progress = Callable[[float, str], Any]


class TranslationService:
    """Validates requests and batches them through one translator."""

    def __init__(self, translator: TranslatorLike, *, name: str, limits: Limits = Limits()):
        self.translator = translator
        self.name = name
        self.limits = limits
        self.languages = list(translator.languages)
        self.source_languages = list(translator.source_languages)
        if not self.languages:
            raise ValueError(f"model {name!r} lists no target languages; check its checkpoint's vocabulary and config")
        self._detector: concurrent.futures.Future | None = None  # see load_detector
        self._detector_lock = threading.Lock()
        self._out_root = tempfile.mkdtemp(prefix="mtmoe-app-")
        self._batcher = Batcher(self._call_model, max_segments=limits.batch_size)

    def load_detector(self) -> concurrent.futures.Future:
        """Start building the language detector in a background thread (once); returns its future.

        The warm-up builds it once the server serves; the first detection
        waits for it (and starts it if nobody has). Building it takes
        milliseconds once py3langid's model is unpacked, which the server starts
        at once (start_unpacking_langid); here it waits for that unpacking,
        or does it if nobody has.
        """
        with self._detector_lock:
            if self._detector is None:
                self._detector = concurrent.futures.Future()
                threading.Thread(target=self._build_detector, name=f"mtmoe-langid-{self.name}", daemon=True).start()
            return self._detector

    def _build_detector(self) -> None:
        try:
            self._detector.set_result(LanguageDetector(languages=self.source_languages,
                                                       min_probability=self.limits.min_detect_probability))
        except BaseException as e:  # raised again where the detector is used
            self._detector.set_exception(e)

    @property
    def detector(self) -> LanguageDetector:
        """The source-language detector (waits while it is being built)."""
        return self.load_detector().result()

    def _call_model(self, segments: list[str], key: tuple) -> list[str]:
        target_lang, source_lang, beam_size, max_length = key
        source_lang = None if source_lang == UNKNOWN else source_lang  # the model reads the source as it is
        return self.translator.translate(segments, target_lang=target_lang, source_lang=source_lang,
                                         beam_size=beam_size, max_length=max_length)

    # -- choices for the page ------------------------------------------------

    def target_choices(self) -> list[tuple[str, str]]:
        """(label, code) pairs sorted by label."""
        return sorted(((language_label(code), code) for code in self.languages), key=lambda pair: pair[0].casefold())

    def source_choices(self) -> list[tuple[str, str]]:
        """'Detect language' first, then the source languages by label."""
        pairs = sorted(((language_label(code), code) for code in self.source_languages), key=lambda pair: pair[0].casefold())
        return [("Detect language", AUTO), *pairs]

    def default_target(self) -> str:
        """English when the model writes it and something else is there, else the first language."""
        return "en" if "en" in self.languages else self.languages[0]

    @functools.cached_property
    def language_table(self) -> dict[str, list[dict[str, str]]]:
        """{"source": [...], "target": [...]}: `describe_language` of each code, in the page's order (by English name)."""
        def described(codes: Sequence[str]) -> list[dict[str, str]]:
            return sorted((describe_language(code) for code in codes), key=lambda row: row["name"].casefold())

        return {"source": described(self.source_languages), "target": described(self.languages)}

    # -- validation ----------------------------------------------------------

    def check_target(self, target_lang: str) -> str:
        """The model's code for `target_lang`, any spelling of it (`zh-CN`, `iw`, `sv-SE`, `deu`: see match_language)."""
        code = target_lang.strip() if isinstance(target_lang, str) else target_lang
        try:
            return language_lookup.match_language(code, self.languages, what="target language")
        except ValueError as error:
            raise RequestError(f"{error}; {SEE_LANGUAGES}") from None

    def check_targets(self, target_langs: str | Sequence[str] | None) -> list[str]:
        """The model's codes for several targets (a list, or "de,fr"), in order, once each (see check_target)."""
        codes = target_langs.split(",") if isinstance(target_langs, str) else list(target_langs or [])
        codes = [code for code in codes if not isinstance(code, str) or code.strip()]
        if not codes:
            raise RequestError("no target language chosen; pick one or more languages to translate into")
        return list(dict.fromkeys(self.check_target(code) for code in codes))

    def resolve_source(self, text: str, source_lang: str | None) -> tuple[str, float | None]:
        """(the model's source code, detection probability or None); `auto`/empty detects (UNKNOWN when unsure)."""
        source_lang = source_lang or AUTO
        if isinstance(source_lang, str):
            source_lang = source_lang.strip()
        if source_lang == AUTO:
            return self.detector.detect(text)
        try:
            code = language_lookup.match_language(source_lang, self.source_languages, what="source language")
        except ValueError as error:
            raise RequestError(f"{error}, or 'auto' to detect it; {SEE_LANGUAGES}") from None
        return code, None

    def check_options(self, beam_size: int | float | None, max_length: int | float | None) -> tuple[int, int | None]:
        """(beam size, max length) of a request, as ints: beam size None (the default) or a whole number in
        [1, max_beam_size]; max length None or 0 (the model's default) or a whole number in [1, cap].

        The one check of these options: the page's sliders, /translate and /translate_file all come here.
        """
        beam_range = f"from 1 to {self.limits.max_beam_size}"
        beam = DEFAULT_BEAM_SIZE if beam_size is None else _whole_number(beam_size, "beam size", beam_range)
        if not 1 <= beam <= self.limits.max_beam_size:
            raise RequestError(f"beam size must be a whole number {beam_range}, got {beam}")
        length_range = f"from 1 to {self.limits.max_length_cap} tokens (0 = the model's default)"
        length = 0 if max_length is None else _whole_number(max_length, "max length", length_range)
        if length == 0:
            return beam, None
        if not 1 <= length <= self.limits.max_length_cap:
            raise RequestError(f"max length must be a whole number {length_range}, got {length}")
        return beam, length

    def check_text(self, text: str | None) -> str:
        text = text or ""
        if not text.strip():
            raise RequestError("the text is empty; type or paste something to translate")
        if len(text) > self.limits.max_chars:
            raise RequestError(f"the text has {len(text)} characters, over the limit of {self.limits.max_chars}; "
                               "shorten it or upload it as a .txt file")
        return text

    # -- work ----------------------------------------------------------------

    def _translate_batch(self, segments: list[str], *, target_lang: str, source_lang: str, beam_size: int,
                         max_length: int | None, progress: Progress | None = None) -> list[str]:
        """Translate in chunks of `batch_size` through the batcher (which may join
        them with other requests' segments); one output per segment."""
        out: list[str] = []
        for start in range(0, len(segments), self.limits.batch_size):
            chunk = segments[start : start + self.limits.batch_size]
            if progress is not None:
                progress(start / len(segments), f"{start}/{len(segments)} segments")
            translated = self._batcher.submit(chunk, (target_lang, source_lang, beam_size, max_length))
            out.extend(str(piece) for piece in translated)
        if progress is not None:
            progress(1.0, f"{len(segments)}/{len(segments)} segments")
        return out

    def translate_text(self, text: str | None, *, source_lang: str | None, target_lang: str,
                       beam_size: int | float | None = DEFAULT_BEAM_SIZE,
                       max_length: int | float | None = None) -> Translation:
        """Translate typed text: split into sentences, one batch, same layout back."""
        started = time.perf_counter()
        text = self.check_text(text)
        target_lang = self.check_target(target_lang)
        beam, length = self.check_options(beam_size, max_length)
        source, probability = self.resolve_source(text, source_lang)
        layout = text_lib.split_segments(text, language=source)
        sentences = layout.sentences
        translations = self._translate_batch(sentences, target_lang=target_lang, source_lang=source,
                                             beam_size=beam, max_length=length)
        joined = text_lib.join_segments(layout, translations, target_lang=target_lang)
        return Translation(text=joined, source_lang=source, detected_probability=probability,
                           num_sentences=len(sentences), seconds=time.perf_counter() - started)

    def read_text_file(self, path: str | os.PathLike) -> tuple[list[str], bool]:
        """(lines, ended with a newline) of an uploaded UTF-8 .txt file; RequestError otherwise."""
        name = os.path.basename(os.fspath(path))
        size = os.path.getsize(path)
        if size > self.limits.max_file_bytes:
            raise RequestError(f"{name} is {size} bytes, over the limit of {self.limits.max_file_bytes}; split it into smaller files")
        with open(path, "rb") as f:
            data = f.read()
        if b"\x00" in data:
            raise RequestError(f"{name} is not a text file (it holds NUL bytes); upload a UTF-8 .txt file, one segment per line")
        try:
            content = data.decode("utf-8-sig")  # a BOM from Windows editors is not text
        except UnicodeDecodeError as e:
            raise RequestError(f"{name} is not UTF-8 text (bad byte at offset {e.start}); save it as UTF-8 and upload it again") from None
        content = content.replace("\r\n", "\n").replace("\r", "\n")
        ends_with_newline = content.endswith("\n")
        lines = content.split("\n")
        if ends_with_newline:
            lines.pop()
        if not any(line.strip() for line in lines):
            raise RequestError(f"{name} has no text; upload a .txt file with one segment per line")
        if len(lines) > self.limits.max_file_lines:
            raise RequestError(f"{name} has {len(lines)} lines, over the limit of {self.limits.max_file_lines}; split it into smaller files")
        for number, line in enumerate(lines, start=1):
            if len(line) > self.limits.max_chars:
                raise RequestError(f"line {number} of {name} has {len(line)} characters, over the limit of {self.limits.max_chars}; break it into shorter lines")
        return lines, ends_with_newline

    def translate_file(self, path: str | os.PathLike, *, source_lang: str | None, target_lang: str,
                       beam_size: int | float | None = DEFAULT_BEAM_SIZE, max_length: int | float | None = None,
                       progress: Progress | None = None) -> tuple[str, str]:
        """Translate a .txt file line by line (one segment per line, blank lines kept).

        Returns (path of the translated file, source language used). The output
        is `<stem>.<target>.txt` in a fresh folder under this service's temp dir.
        """
        target_lang = self.check_target(target_lang)
        beam, length = self.check_options(beam_size, max_length)
        lines, ends_with_newline = self.read_text_file(path)
        sample = "\n".join(line for line in lines if line.strip())[: self.limits.max_chars]
        source, _ = self.resolve_source(sample, source_lang)
        positions = [i for i, line in enumerate(lines) if line.strip()]
        translations = self._translate_batch([lines[i].strip() for i in positions], target_lang=target_lang,
                                             source_lang=source, beam_size=beam, max_length=length, progress=progress)
        out_lines = [""] * len(lines)
        for i, translation in zip(positions, translations):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            out_lines[i] = indent + translation.strip()
        stem = os.path.splitext(os.path.basename(os.fspath(path)))[0] or "translation"
        out_dir = tempfile.mkdtemp(dir=self._out_root)
        out_path = os.path.join(out_dir, f"{stem}.{target_lang}.txt")
        with open(out_path, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(out_lines) + ("\n" if ends_with_newline else ""))
        return out_path, source

    def localize_file(self, path: str | os.PathLike, *, target_langs: str | Sequence[str] | None,
                      retranslate: bool = False, beam_size: int | float | None = DEFAULT_BEAM_SIZE,
                      progress: Progress | None = None) -> tuple[str, list[localize.Outcome]]:
        """Translate a localisation file (.po, .pot, .ftl, .properties, .xlf, .xliff) or a .txt into each target.

        The file goes through mtmoe.localize exactly as `python -m mtmoe.localize`
        does, its segments through this service's batcher. Returns (path of the
        result, one Outcome per target): the translated file for one target, a
        zip of them (their paths as the command writes them) for several or
        where the file goes in a folder of its language.
        """
        codes = self.check_targets(target_langs)
        beam, _ = self.check_options(beam_size, None)
        if not isinstance(retranslate, bool):
            raise RequestError(f"retranslate must be true or false, got {retranslate!r}")
        try:
            source = localize.read_source(path, max_bytes=self.limits.max_file_bytes)
        except localize.FileError as error:
            raise RequestError(str(error)) from None
        out_dir = tempfile.mkdtemp(dir=self._out_root)

        def report(done: int, total: int, target: str) -> None:
            if progress is not None:
                progress(done / total if total else 1.0, f"{target}: {done}/{total} segments")

        segments = localize.protected_translation(_BatchedTranslator(self), beam_size=beam)
        try:
            outcomes = localize.localize(source, codes, out_dir, translate_segments=segments, retranslate=retranslate,
                                         progress=report)
        except localize.FileError as error:
            raise RequestError(str(error)) from None
        if len(outcomes) == 1 and os.path.dirname(os.path.relpath(outcomes[0].path, out_dir)) == "":
            return outcomes[0].path, outcomes
        # Several files, or one in a folder named for its language (Fluent's de/browser.ftl), which a
        # download of the file alone would lose.
        stem = os.path.splitext(source.name)[0] or "translations"
        archive = os.path.join(out_dir, f"{stem}.{'-'.join(codes)}.zip")
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
            for outcome in outcomes:
                zipped.write(outcome.path, os.path.relpath(outcome.path, out_dir))
        return archive, outcomes

    def route(self, text: str | None, *, target_lang: str, max_tokens: int = 64) -> dict:
        """Routing trace of the first sentence of `text`.

        Returns {"tokens": [str] (at most max_tokens), "layers": {name: [int]},
        "fraction_dropped": {name: float}, "truncated": bool, "sentence": str}.
        """
        text = self.check_text(text)
        target_lang = self.check_target(target_lang)
        sentences = text_lib.split_segments(text).sentences
        sentence = sentences[0]
        trace = self.translator.route(sentence, target_lang=target_lang)
        tokens = [str(token) for token in trace["tokens"]]
        layers = {str(name): [int(expert) for expert in experts] for name, experts in trace["layers"].items()}
        for name, experts in layers.items():
            if len(experts) != len(tokens):
                raise RuntimeError(f"routing trace of layer {name} has {len(experts)} entries for {len(tokens)} tokens")
        dropped = {str(name): float(value) for name, value in trace.get("fraction_dropped", {}).items()}
        return {
            "tokens": tokens[:max_tokens],
            "layers": {name: experts[:max_tokens] for name, experts in layers.items()},
            "fraction_dropped": dropped,
            "truncated": len(tokens) > max_tokens or len(sentences) > 1,
            "sentence": sentence,
        }

    def warm(self, *, max_batch: int = 1) -> float:
        """Compile ahead of the first user and wait for it; returns seconds (see `start_warm`)."""
        return self.start_warm(max_batch=max_batch).result()

    def start_warm(self, *, max_batch: int = 1, after: threading.Event | None = None,
                   quiet_s: float = 0.0) -> concurrent.futures.Future:
        """Start the warm-up in a background thread; the future's result is its seconds.

        The Translator compiles once per (power-of-two batch size, power-of-two
        source length) and the batcher forms batches of any size up to
        `batch_size`, so this translates sentences that fill the 16-, 8- and
        32-token source buckets (measured with the translator's `encode_source`
        where it has one): the first one alone, then (when `after` is set) the
        language detector is built, the other two are translated alone, one is
        traced for the routing view, and all three in batches of 2, 4, ... up to
        `max_batch` (beam 4, the default).

        after: the steps after the first wait until this event is set. The
        server sets it once it serves: tracing a shape holds the GIL for about a
        second, which would slow gradio's import and the page's set-up, while
        the first step's compilation (XLA releases the GIL) overlaps them.
        quiet_s: each step after the first waits until no request has been in
        progress for this long (Batcher.wait_idle), counted from `after` at
        the earliest. A request that arrives during a step runs beside it
        rather than waiting for it; if it needs the shape being compiled, JAX
        compiles it once and both wait for it.
        """
        started = time.perf_counter()
        target = self.default_target()
        source = next((code for code in self.source_languages if code != target), None)
        sentences = self._warm_sentences(target)

        def translate(texts: list[str]) -> None:
            self.translator.translate(texts, target_lang=target, source_lang=source)

        steps = [functools.partial(translate, [sentence]) for sentence in sentences[1:]]
        steps.append(functools.partial(self.translator.route, sentences[0], target_lang=target))
        batch = 2
        while batch <= max_batch:
            steps.extend(functools.partial(translate, [sentence] * batch) for sentence in sentences)
            batch *= 2
        steps.insert(0, lambda: self.detector)  # built here unless a detection asked for it first
        warming: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                translate([sentences[0]])
                if after is not None:
                    after.wait()
                since = time.monotonic()
                for step in steps:
                    self._batcher.wait_idle(quiet_s, since=since)
                    step()
            except BaseException as e:  # the caller sees it on the future
                warming.set_exception(e)
            else:
                warming.set_result(time.perf_counter() - started)

        threading.Thread(target=run, name=f"mtmoe-warm-{self.name}", daemon=True).start()
        return warming

    def _warm_sentences(self, target: str) -> list[str]:
        encode = getattr(self.translator, "encode_source", None)
        if encode is None:
            return list(_WARM_SENTENCES)
        words = " ".join(sorted(_WARM_SENTENCES, key=len)).split()
        sentences = []
        for bucket in _WARM_BUCKETS:
            count = 1
            while count < len(words) and len(encode(" ".join(words[: count + 1]), target)) <= bucket:
                count += 1
            sentences.append(" ".join(words[:count]))  # the longest prefix that still fits the bucket
        return sentences


class _BatchedTranslator:
    """The translator interface mtmoe.protected_spans needs, through a service's batcher."""

    def __init__(self, service: TranslationService):
        self.service = service

    def translate(self, texts: Sequence[str], target_lang: str, *, beam_size: int = DEFAULT_BEAM_SIZE,
                  **_: Any) -> list[str]:
        # The model reads the source as it is: a localisation file's language is not asked for.
        return self.service._translate_batch(list(texts), target_lang=target_lang, source_lang=UNKNOWN,
                                             beam_size=beam_size, max_length=None)


# Source-length buckets to warm, commonest first: of 9,120 sentences drawn from
# both sides of every embedded dev set (40 per pair; "<2de> " tag, EOS, the
# shipped vocabulary), 34% fill 16 tokens, 30% 8, 22% 32 (and 10% 64, left to
# compile on first use).
_WARM_BUCKETS = (16, 8, 32)

# Roughly 12, 4 and 28 pieces with a large vocabulary (16-, 8-, 32-token buckets).
_WARM_SENTENCES = (
    "The document could not be saved because the disk is full.",
    "Open the file.",
    "Select the cells that you want to format, then choose a style from the list "
    "or create a new one with the button below.",
)
