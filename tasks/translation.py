"""Translation tasks (one per direction) and their temperature-sampled mixtures.

A task `<corpus>_translate_<src>_<tgt>` (hyphens in codes become `_`:
`embedded_translate_en_zh_Hans`) reads (source, target) sentence pairs,
prefixes the source with the target-language tag and tokenizes both:

    {"inputs": "<2de> Good morning", "targets": "Guten Morgen"}  -> ids + EOS

Corpora:
- `embedded`: the corpus that ships in data/embedded (both directions for every
  language in data/embedded/stats.json); splits train / validation / test.
- `opus100`: OPUS-100 v1.0, root from gin `tasks.corpus_roots.opus100` or $OPUS100_DIR.
- `flores200`: FLORES-200, evaluation only (validation, test), root from gin
  `tasks.corpus_roots.flores200` or $FLORES200_DIR.
- any TSV: `register_tsv_task`.

File layouts, split names and readers are `mtmoe.data.layouts` and
`mtmoe.data.readers`; this module turns them into seqio tasks.

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
import logging
import os
from typing import Iterable, Mapping, Sequence

import gin
import seqio

from mtmoe.data import languages, layouts, readers
from mtmoe.data.vocabulary import language_tag
from tasks import preprocessors, sources, vocab

MT5_TEMPERATURE = 1.0 / 0.3  # mT5: sampling rate ~ n ** 0.3
DEFAULT_TEMPERATURE = MT5_TEMPERATURE
TRANSLATE_101_LANGUAGES = 100  # non-English languages in translate_101 (plus English: 101)
# translate_demo: the main job (`make demo`) trains for 10 CPU minutes. Few tasks leave
# each direction enough updates to learn something visible.
DEMO_LANGUAGES = ("de", "fr", "es", "ja")



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


def output_features(vocabulary: seqio.Vocabulary | None = None) -> dict[str, seqio.Feature]:
    """ "inputs" and "targets", both with EOS, over `vocabulary` (default: the project's)."""
    vocabulary = vocabulary or vocab.default_vocabulary()
    return {
        "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=False),
        "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
    }


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
    `tag_fn(lang) -> "<2xx>"` defaults to mtmoe.data.vocabulary.language_tag.
    """
    for lang in (source_lang, target_lang):
        code = languages.get_language(lang).code  # one line for an unknown code
        if code != lang:  # the code becomes the model's target tag (<2de>): one spelling per language
            raise ValueError(f"task {name}: write the language {lang!r} as {code!r}, the project's code for it")
    tag = (tag_fn or language_tag)(target_lang)
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
        metric_fns=[],  # scored by eval/per_language_bleu.py and mtmoe.evaluation, not by seqio
    )


# --- The embedded corpus ---------------------------------------------------------


def embedded_source(
    *, root: str | os.PathLike, lang: str, english_first: bool, stats: Mapping[str, int] | None = None
) -> sources.TextSource:
    """Pairs of en-<lang>.tsv.gz as {"inputs", "targets"} (English is the inputs if english_first)."""
    columns = (0, 1) if english_first else (1, 0)
    return sources.TextSource(
        split_files={split: [layouts.embedded_file(root, split, lang)] for split in layouts.EMBEDDED_SPLIT_DIRS},
        read=lambda files: itertools.chain.from_iterable(readers.read_tsv(f, columns=columns) for f in files),
        features=("inputs", "targets"),
        missing_message=layouts.missing_embedded_message,
        num_examples={
            split: stats[key] for split, key in layouts.EMBEDDED_SPLIT_DIRS.items() if stats and key in stats
        },
    )


def register_embedded_tasks(
    *,
    root: str | os.PathLike = layouts.EMBEDDED_DIR,
    corpus: str = "embedded",
    vocabulary: seqio.Vocabulary | None = None,
    tag_fn=None,
) -> dict[str, tuple[str, str]]:
    """Both directions for every non-English language in <root>/stats.json.

    Returns {lang: (en->lang task name, lang->en task name)}.
    """
    stats = layouts.load_stats(root)
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


# corpus -> (its name in messages, where to download it, the environment variable of its root)
_ROOTS = {
    "opus100": ("OPUS-100", layouts.OPUS100_URL, "OPUS100_DIR"),
    "flores200": ("FLORES-200", layouts.FLORES200_URL, "FLORES200_DIR"),
}


def _find_in_root(corpus: str, find):
    """find(root of `corpus`); its FileNotFoundError also says how to point at another copy."""
    label, url, variable = _ROOTS[corpus]
    root = corpus_roots()[corpus]
    if not root:
        raise FileNotFoundError(
            f"{label} root not set: download {url}, unpack it and set {variable} "
            f"(or gin tasks.corpus_roots.{corpus}) to the directory it unpacked into"
        )
    try:
        return find(root)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error}, or fix {variable} / tasks.corpus_roots.{corpus}") from None


def opus100_files(lang: str, split: str) -> tuple[str, str]:
    """(English file, <lang> file) of OPUS-100 split "train" / "validation" / "test"."""
    supervised = _find_in_root("opus100", layouts.opus100_supervised_dir)
    return tuple(os.fspath(path) for path in layouts.opus100_files(supervised, lang, split))


def flores200_files(lang: str, split: str) -> tuple[str, str]:
    """(English file, <lang> file) of FLORES-200 split "validation" (dev) / "test" (devtest)."""
    split_dir = _find_in_root("flores200", lambda root: layouts.flores200_split_dir(root, split))
    files = layouts.flores200_files(split_dir)
    codes = (layouts.FLORES200_ENGLISH, languages.flores_code(lang))
    return tuple(os.fspath(files.get(code, split_dir / f"{code}.{split_dir.name}")) for code in codes)


def _aligned_source(*, files_fn, splits, english_first: bool, missing_message) -> sources.TextSource:
    """{"inputs", "targets"} from an English file and a line-aligned file of the other language."""
    order = (0, 1) if english_first else (1, 0)
    return sources.LazyFilesSource(
        files_fn=files_fn,
        splits=splits,
        read=lambda files: readers.read_aligned([files[i] for i in order]),
        features=("inputs", "targets"),
        missing_message=missing_message,
    )


def opus100_source(*, lang: str, english_first: bool) -> sources.TextSource:
    return _aligned_source(
        files_fn=lambda split: opus100_files(lang, split),
        splits=layouts.SPLITS,
        english_first=english_first,
        missing_message=lambda path: (
            f"{path} is missing: OPUS-100 v1.0 has no such split for "
            f"{lang} or the download ({layouts.OPUS100_URL}) is incomplete"
        ),
    )


def flores200_source(*, lang: str, english_first: bool) -> sources.TextSource:
    return _aligned_source(
        files_fn=lambda split: flores200_files(lang, split),
        splits=tuple(layouts.FLORES200_SPLIT_DIRS),
        english_first=english_first,
        missing_message=lambda path: f"{path} is missing from the FLORES-200 download ({layouts.FLORES200_URL})",
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
        # The first row with a FLORES code names it (`pt` before `pt-BR`, `fil` before `tl`).
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
                readers.read_tsv(p, columns=columns) for p in paths
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
        stats = layouts.load_stats(layouts.EMBEDDED_DIR)
    except FileNotFoundError as error:
        logging.warning("embedded translation tasks not registered: %s", error)
        return
    pairs = register_embedded_tasks(root=layouts.EMBEDDED_DIR)
    register_translation_mixtures(
        pairs=pairs, counts={lang: stats[lang]["train"] for lang in pairs}, temperature=temperature
    )

