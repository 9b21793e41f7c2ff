"""Translation tasks (one per direction) and their temperature-sampled mixtures.

A task `<corpus>_translate_<src>_<tgt>` (hyphens in codes become `_`:
`embedded_translate_en_zh_Hans`) reads (source, target) sentence pairs,
prefixes the source with the target-language tag and tokenizes both:

    {"inputs": "<2de> Good morning", "targets": "Guten Morgen"}  -> ids + EOS

Corpora:
- `embedded`: the corpus that ships in data/embedded (both directions for every
  language in data/embedded/stats.json); splits train / validation / test.
- `opus100`: OPUS-100 v1.0 in its published layout
  (<root>/opus-100-corpus/v1.0/supervised/<xx-yy>/opus.<xx-yy>-<split>.<lang>),
  root from gin `tasks.corpus_roots.opus100` or $OPUS100_DIR.
- `flores200`: FLORES-200 (<root>/flores200_dataset/{dev,devtest}/<code>.<split>),
  evaluation only (validation = dev, test = devtest), root from gin
  `tasks.corpus_roots.flores200` or $FLORES200_DIR.
- any TSV: `register_tsv_task`.

Mixtures (rates: train pairs ** (1 / temperature), mT5's temperature 1/0.3):
translate_101 (English + the 100 non-English languages with most training
pairs, both directions: 200 tasks), translate_all, translate_en_xx,
translate_xx_en, and opus100_translate_all / _en_xx / _xx_en.
`register_translation_mixtures(..., temperature=T, prefix=...)` adds the same
shapes at another temperature.

Nothing is read at registration but data/embedded/stats.json (a few KB): a
task whose files are absent fails when its dataset is built, in one line
saying what to download or set.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import gin
import seqio

from tasks import languages
from tasks import preprocessors
from tasks import sources

MT5_TEMPERATURE = 1.0 / 0.3  # mT5: sampling rate ~ n ** 0.3
DEFAULT_TEMPERATURE = MT5_TEMPERATURE
TRANSLATE_101_LANGUAGES = 100  # non-English languages in translate_101 (plus English: 101)
# translate_demo: the main job (`make demo`) trains on 10 CPU minutes. Few tasks keep
# seqio's start-up short (one graph and shuffle buffer per task) and leave each
# language enough updates to learn something visible.
DEMO_LANGUAGES = ("de", "fr", "es", "ja")

EMBEDDED_DIR = Path(
    os.environ.get("MTMOE_EMBEDDED_DIR", Path(__file__).resolve().parents[1] / "data" / "embedded")
)
_EMBEDDED_SPLITS = {"train": "train", "validation": "dev", "test": "test"}
OPUS100_URL = "https://object.pouta.csc.fi/OPUS-100/v1.0/opus-100-corpus-v1.0.tar.gz"
FLORES200_URL = "https://dl.fbaipublicfiles.com/nllb/flores200_dataset.tar.gz"


def corpus_roots(*, opus100: str | None = None, flores200: str | None = None) -> dict:
    """Where OPUS-100 and FLORES-200 live: gin bindings first, then environment.

    In a gin file (which must import the module first: `import tasks.translation`):
    `tasks.corpus_roots.opus100 = %OPUS100_DIR`; or export OPUS100_DIR /
    FLORES200_DIR. Read when a dataset is built, not at import.
    """
    return {
        "opus100": opus100 or os.environ.get("OPUS100_DIR"),
        "flores200": flores200 or os.environ.get("FLORES200_DIR"),
    }


# Made configurable even when gin's config is already locked: mtmoe.train parses
# and finalizes gin before it imports the task registries.
with gin.unlock_config():
    corpus_roots = gin.configurable(corpus_roots, module="tasks")


def task_name(corpus: str, source_lang: str, target_lang: str) -> str:
    """`task_name("embedded", "zh-Hans", "en")` -> "embedded_translate_zh_Hans_en"."""
    return f"{corpus}_translate_{languages.task_code(source_lang)}_{languages.task_code(target_lang)}"


def _vocab_module():
    from tasks import vocab  # owned by the corpus builder; imports seqio lazily itself

    return vocab


class _DeferredVocabulary(seqio.SentencePieceVocabulary):
    """The project vocabulary before its model file exists: registration works, use fails.

    At first use it asks tasks.vocab again, which raises its one-line message
    (how to build data/vocab/mtmoe.model) if the file is still missing.
    """

    def _model_context(self):
        if not self._model:
            _vocab_module().get_vocabulary(self.sentencepiece_model_file)
        return super()._model_context()


@functools.lru_cache(maxsize=1)
def default_vocabulary() -> seqio.Vocabulary:
    """The project vocabulary (data/vocab/mtmoe.model, loaded at first use), one shared object."""
    vocab = _vocab_module()
    if os.path.isfile(vocab.DEFAULT_SPM_PATH):
        return vocab.get_vocabulary()
    return _DeferredVocabulary(vocab.DEFAULT_SPM_PATH, extra_ids=vocab.EXTRA_IDS)


def output_features(vocabulary: seqio.Vocabulary | None = None) -> dict[str, seqio.Feature]:
    """ "inputs" and "targets", both with EOS, over `vocabulary` (default: the project's)."""
    vocabulary = vocabulary or default_vocabulary()
    return {
        "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=False),
        "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
    }


def translation_metrics(
    targets: Sequence[str], predictions: Sequence[str], *, target_lang: str
) -> dict[str, float]:
    """SeqIO metric: sacreBLEU BLEU and chrF++ as eval/ computes them (mtmoe.scoring).

    Returns {"bleu": 0..100, "chrf++": 0..100}.
    """
    from mtmoe import scoring  # scoring imports sacreBLEU: only when evaluating

    scores = scoring.score_pair(list(predictions), list(targets), target_lang=target_lang)
    return {"bleu": scores["bleu"], "chrf++": scores["chrf"]}


def register_translation_task(
    *,
    name: str,
    source_lang: str,
    target_lang: str,
    source: seqio.DataSource,
    vocabulary: seqio.Vocabulary | None = None,
    tag_fn=None,
) -> seqio.Task:
    """Registers (replacing any earlier one) a task translating source_lang -> target_lang.

    `source` yields {"inputs": source text, "targets": target text}.
    `tag_fn(lang) -> "<2xx>"` defaults to tasks.vocab.language_tag.
    """
    languages.get_language(source_lang), languages.get_language(target_lang)  # validate codes
    tag = (tag_fn or _vocab_module().language_tag)(target_lang)
    seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(
        name,
        source=source,
        preprocessors=[
            functools.partial(preprocessors.add_target_tag, tag=tag),
            seqio.preprocessors.tokenize,
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features=output_features(vocabulary),
        metric_fns=[functools.partial(translation_metrics, target_lang=target_lang)],
    )


# --- The embedded corpus ---------------------------------------------------------


def load_stats(root: str | os.PathLike = EMBEDDED_DIR) -> dict[str, dict]:
    """language -> {"train": n, "dev": n, "test": n, ...} from <root>/stats.json.

    Raises:
      FileNotFoundError: no stats.json (the corpus was not built).
    """
    path = Path(root) / "stats.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: build the embedded corpus with "
            "`python -m tasks.build_corpus` or set MTMOE_EMBEDDED_DIR"
        )
    return json.loads(path.read_text(encoding="utf-8"))["languages"]


def embedded_file(root: str | os.PathLike, split: str, lang: str) -> str:
    """<root>/<dev|train|test>/en-<lang>.tsv.gz for seqio split `split`."""
    return os.fspath(Path(root) / _EMBEDDED_SPLITS[split] / f"en-{lang}.tsv.gz")


def missing_embedded_message(path: str) -> str:
    """What to do when a file of the embedded corpus is missing."""
    return (
        f"{path} is missing: rebuild the embedded corpus (`python -m tasks.build_corpus`) "
        "or point MTMOE_EMBEDDED_DIR at a built one"
    )


def embedded_source(
    *, root: str | os.PathLike, lang: str, english_first: bool, stats: Mapping[str, int] | None = None
) -> sources.TextSource:
    """Pairs of en-<lang>.tsv.gz as {"inputs", "targets"} (English is the inputs if english_first)."""
    columns = (0, 1) if english_first else (1, 0)
    return sources.TextSource(
        split_files={split: [embedded_file(root, split, lang)] for split in _EMBEDDED_SPLITS},
        read=lambda files: itertools.chain.from_iterable(sources.read_tsv(f, columns=columns) for f in files),
        features=("inputs", "targets"),
        missing_message=missing_embedded_message,
        num_examples={split: stats[key] for split, key in _EMBEDDED_SPLITS.items() if stats and key in stats},
    )


def register_embedded_tasks(
    *,
    root: str | os.PathLike = EMBEDDED_DIR,
    corpus: str = "embedded",
    vocabulary: seqio.Vocabulary | None = None,
    tag_fn=None,
) -> dict[str, tuple[str, str]]:
    """Both directions for every non-English language in <root>/stats.json.

    Returns {lang: (en->lang task name, lang->en task name)}.
    """
    stats = load_stats(root)
    return _register_english_centric(
        corpus=corpus,
        langs=sorted(lang for lang in stats if lang != "en"),
        source_fn=lambda lang, english_first: embedded_source(
            root=root, lang=lang, english_first=english_first, stats=stats[lang]
        ),
        vocabulary=vocabulary,
        tag_fn=tag_fn,
    )


# --- OPUS-100 and FLORES-200 -------------------------------------------------------


def _opus100_supervised(root: str | None) -> Path:
    if not root:
        raise FileNotFoundError(
            f"OPUS-100 root not set: download {OPUS100_URL}, unpack it and set OPUS100_DIR "
            "(or gin tasks.corpus_roots.opus100) to the directory holding opus-100-corpus"
        )
    for candidate in ("opus-100-corpus/v1.0/supervised", "v1.0/supervised", "supervised", "."):
        path = Path(root) / candidate
        if path.is_dir() and (any(path.glob("*-en")) or any(path.glob("en-*"))):
            return path
    raise FileNotFoundError(
        f"OPUS-100 root {root} does not hold opus-100-corpus/v1.0/supervised: download "
        f"{OPUS100_URL}, unpack it there, or fix OPUS100_DIR / tasks.corpus_roots.opus100"
    )


def opus100_files(lang: str, split: str) -> tuple[str, str]:
    """(English file, <lang> file) of OPUS-100 split "train" / "validation" / "test"."""
    supervised = _opus100_supervised(corpus_roots()["opus100"])
    pair = "-".join(sorted(["en", lang]))
    opus_split = {"train": "train", "validation": "dev", "test": "test"}[split]
    return tuple(os.fspath(supervised / pair / f"opus.{pair}-{opus_split}.{code}") for code in ("en", lang))


class _LazyFilesSource(sources.TextSource):
    """A TextSource whose files are found when used (roots come from gin/env then)."""

    def __init__(self, *, files_fn, splits, **kwargs):
        self._files_fn = files_fn
        super().__init__(split_files={split: [] for split in splits}, **kwargs)

    def files(self, split: str) -> list[str]:
        if split not in self._split_files:
            raise ValueError(f"no split {split!r}; this source has {', '.join(self._split_files)}")
        files = list(self._files_fn(split))
        for path in files:
            if not os.path.exists(path):
                raise FileNotFoundError(self._missing_message(path))
        return files

    def list_shards(self, split: str) -> Sequence[str]:
        return self.files(split)


def opus100_source(*, lang: str, english_first: bool) -> sources.TextSource:
    order = (0, 1) if english_first else (1, 0)
    return _LazyFilesSource(
        files_fn=lambda split: opus100_files(lang, split),
        splits=("train", "validation", "test"),
        read=lambda files: sources.read_aligned([files[i] for i in order]),
        features=("inputs", "targets"),
        missing_message=lambda path: (
            f"{path} is missing: OPUS-100 v1.0 has no such split for "
            f"{lang} or the download ({OPUS100_URL}) is incomplete"
        ),
    )


def flores200_files(lang: str, split: str) -> tuple[str, str]:
    """(English file, <lang> file) of FLORES-200 split "validation" (dev) / "test" (devtest)."""
    root = corpus_roots()["flores200"]
    if not root:
        raise FileNotFoundError(
            f"FLORES-200 root not set: download {FLORES200_URL}, unpack it and "
            "set FLORES200_DIR (or gin tasks.corpus_roots.flores200)"
        )
    flores_split = {"validation": "dev", "test": "devtest"}[split]
    base = Path(root) / "flores200_dataset"
    base = base if base.is_dir() else Path(root)
    if not (base / flores_split).is_dir():
        raise FileNotFoundError(
            f"FLORES-200 root {root} has no flores200_dataset/{flores_split}: "
            f"download {FLORES200_URL} or fix FLORES200_DIR"
        )
    return tuple(
        os.fspath(base / flores_split / f"{code}.{flores_split}")
        for code in ("eng_Latn", languages.flores_code(lang))
    )


def flores200_source(*, lang: str, english_first: bool) -> sources.TextSource:
    order = (0, 1) if english_first else (1, 0)
    return _LazyFilesSource(
        files_fn=lambda split: flores200_files(lang, split),
        splits=("validation", "test"),
        read=lambda files: sources.read_aligned([files[i] for i in order]),
        features=("inputs", "targets"),
        missing_message=lambda path: f"{path} is missing from the FLORES-200 download ({FLORES200_URL})",
    )


def _register_english_centric(
    *, corpus: str, langs: Iterable[str], source_fn, vocabulary=None, tag_fn=None
) -> dict[str, tuple[str, str]]:
    pairs = {}
    for lang in langs:
        names = []
        for english_first in (True, False):
            source_lang, target_lang = ("en", lang) if english_first else (lang, "en")
            name = task_name(corpus, source_lang, target_lang)
            register_translation_task(
                name=name,
                source_lang=source_lang,
                target_lang=target_lang,
                source=source_fn(lang=lang, english_first=english_first),
                vocabulary=vocabulary,
                tag_fn=tag_fn,
            )
            names.append(name)
        pairs[lang] = tuple(names)
    return pairs


def register_opus100_tasks(*, vocabulary=None, tag_fn=None) -> dict[str, tuple[str, str]]:
    """opus100_translate_en_<xx> and _<xx>_en for OPUS-100's 99 languages (its codes)."""
    return _register_english_centric(
        corpus="opus100",
        langs=languages.OPUS100_LANGUAGES,
        source_fn=opus100_source,
        vocabulary=vocabulary,
        tag_fn=tag_fn,
    )


def flores200_languages() -> list[str]:
    """Codes with a FLORES-200 code of their own: no English varieties, no legacy aliases."""
    seen, codes = set(), []
    for language in languages.LANGUAGES.values():
        # The first row with a FLORES code names it (`de` before `de-XX`; `he` before `iw`).
        if language.flores and language.flores not in seen and language.flores != "eng_Latn":
            seen.add(language.flores)
            codes.append(language.code)
    return codes


def register_flores200_tasks(*, vocabulary=None, tag_fn=None) -> dict[str, tuple[str, str]]:
    """flores200_translate_en_<xx> and _<xx>_en, evaluation splits only."""
    return _register_english_centric(
        corpus="flores200",
        langs=flores200_languages(),
        source_fn=flores200_source,
        vocabulary=vocabulary,
        tag_fn=tag_fn,
    )


def register_tsv_task(
    *,
    name: str,
    source_lang: str,
    target_lang: str,
    files: Mapping[str, str | os.PathLike],
    source_column: int = 0,
    target_column: int = 1,
    vocabulary=None,
    tag_fn=None,
) -> seqio.Task:
    """A translation task over any TSV files (plain or .gz), one file per split.

    register_tsv_task(name="mydata_translate_en_de", source_lang="en", target_lang="de",
                      files={"train": "train.tsv", "validation": "dev.tsv"})
    """
    columns = (source_column, target_column)
    return register_translation_task(
        name=name,
        source_lang=source_lang,
        target_lang=target_lang,
        vocabulary=vocabulary,
        tag_fn=tag_fn,
        source=sources.TextSource(
            split_files={split: [os.fspath(path)] for split, path in files.items()},
            read=lambda paths: itertools.chain.from_iterable(
                sources.read_tsv(p, columns=columns) for p in paths
            ),
            features=("inputs", "targets"),
            missing_message=lambda path: f"{path} is missing: fix the files given to {name}",
        ),
    )


# --- Mixtures ----------------------------------------------------------------------


def temperature_rate(num_examples: float, *, temperature: float = DEFAULT_TEMPERATURE) -> float:
    """Sampling rate num_examples ** (1 / temperature) (mT5: n ** 0.3)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return float(num_examples) ** (1.0 / temperature)


def counted_rate(task: seqio.Task, *, temperature: float = DEFAULT_TEMPERATURE) -> float:
    """Rate from the task's train examples, counted when the mixture is first used."""
    return temperature_rate(task.source.num_input_examples("train"), temperature=temperature)


def top_languages(counts: Mapping[str, int], *, count: int) -> list[str]:
    """The `count` non-English languages with most examples (ties: code order)."""
    ranked = sorted(
        (lang for lang in counts if lang != "en" and counts[lang] > 0), key=lambda lang: (-counts[lang], lang)
    )
    return ranked[:count]


def register_mixture(name: str, tasks_with_rates: Sequence[tuple[str, object]]) -> seqio.Mixture:
    """(Re)registers mixture `name` over (task, rate) pairs."""
    seqio.MixtureRegistry.remove(name)
    return seqio.MixtureRegistry.add(name, list(tasks_with_rates))


def register_translation_mixtures(
    *,
    pairs: Mapping[str, tuple[str, str]],
    counts: Mapping[str, int] | None,
    prefix: str = "",
    temperature: float = DEFAULT_TEMPERATURE,
    top: int | None = TRANSLATE_101_LANGUAGES,
) -> list[str]:
    """<prefix>translate_all, _en_xx, _xx_en (and _101 when `top`) over `pairs`, and
    <prefix>translate_demo over the DEMO_LANGUAGES among them, both directions.

    Args:
      pairs: {lang: (en->lang task, lang->en task)}.
      counts: {lang: train pairs}; None: count the train files when first used.
        Languages with no training pairs stay out of every mixture.
      temperature: rate = n ** (1 / temperature).
      top: number of non-English languages of <prefix>translate_101; None: none.

    Returns the registered mixture names.
    """
    if counts is None:
        rate_of = lambda lang: functools.partial(counted_rate, temperature=temperature)  # noqa: E731
        trainable = sorted(pairs)
    else:
        rate_of = lambda lang: temperature_rate(counts[lang], temperature=temperature)  # noqa: E731
        trainable = sorted(lang for lang in pairs if counts.get(lang, 0) > 0)
    if not trainable:
        logging.warning("no language has training pairs: %stranslate_* mixtures not registered", prefix)
        return []
    shapes = {
        "translate_all": [(name, rate_of(lang)) for lang in trainable for name in pairs[lang]],
        "translate_en_xx": [(pairs[lang][0], rate_of(lang)) for lang in trainable],
        "translate_xx_en": [(pairs[lang][1], rate_of(lang)) for lang in trainable],
    }
    if top is not None and counts is not None:
        chosen = top_languages({lang: counts[lang] for lang in trainable}, count=top)
        if len(chosen) < top:
            logging.warning(
                "%stranslate_101 has %d non-English languages, not %d: the corpus has "
                "no more with training pairs",
                prefix,
                len(chosen),
                top,
            )
        shapes["translate_101"] = [(name, rate_of(lang)) for lang in chosen for name in pairs[lang]]
    demo = [lang for lang in DEMO_LANGUAGES if lang in trainable]
    if demo:
        shapes["translate_demo"] = [(name, rate_of(lang)) for lang in demo for name in pairs[lang]]
    names = []
    for shape, tasks_with_rates in shapes.items():
        register_mixture(prefix + shape, tasks_with_rates)
        names.append(prefix + shape)
    return names


def register_all(*, temperature: float = DEFAULT_TEMPERATURE) -> None:
    """Everything `import tasks` registers for translation (no data is read)."""
    register_opus100_tasks()
    register_flores200_tasks()
    opus_pairs = {
        lang: (task_name("opus100", "en", lang), task_name("opus100", lang, "en"))
        for lang in languages.OPUS100_LANGUAGES
    }
    register_translation_mixtures(
        pairs=opus_pairs, counts=None, prefix="opus100_", temperature=temperature, top=None
    )
    try:
        stats = load_stats(EMBEDDED_DIR)
    except FileNotFoundError as error:
        logging.warning("embedded translation tasks not registered: %s", error)
        return
    pairs = register_embedded_tasks(root=EMBEDDED_DIR)
    register_translation_mixtures(
        pairs=pairs, counts={lang: stats[lang]["train"] for lang in pairs}, temperature=temperature
    )


import tasks as _tasks  # noqa: E402  (see tasks/__init__.py: registration waits for this module)

_tasks._register_when_ready(__name__)
