"""Span-corruption pre-training tasks: mC4 (as mSwitch) and the embedded corpus' text.

- `mc4_span_corruption_<lang>` for each TFDS `c4/multilingual` split (`de`,
  `ru_Latn`, ..., and `und`), T5 span corruption (noise density 0.15, mean
  span 3, sentinels from the vocabulary's extra ids; tasks/preprocessors.py);
- mixture `mc4_span_corruption`: the 107 mC4 languages (101 plus 6 romanised
  variants: mSwitch's 107 tasks; `und` stays out, as in mT5), rate ~ n ** 0.3
  with n the split's example count from the TFDS metadata, read when the
  mixture is first used;
- `embedded_span_corruption_<lang>` and mixture `embedded_span_corruption`: the
  same objective over the sentences of the embedded corpus (train split), so
  pre-training runs without mC4; rates ~ n ** 0.3 from data/embedded/stats.json;
- `pretrain_and_translate`: embedded span corruption and translate_all, half each.

Registration reads no data. Without a prepared c4/multilingual, an mC4 task
fails when used, naming the TFDS build step; nothing is ever downloaded.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os

import gin
import seqio

from mtmoe.data import languages, layouts, readers
from tasks import preprocessors, sources, translation

MC4_TFDS_NAME = "c4/multilingual:3.1.0"
MC4_BUILD_STEP = (
    "tfds build c4/multilingual --data_dir=DIR (Apache Beam over Common Crawl; "
    "see https://www.tensorflow.org/datasets/catalog/c4), then set TFDS_DATA_DIR=DIR "
    "or gin tasks.mc4_data_dir.data_dir"
)
PRETRAIN_SHARE = 0.5  # pretrain_and_translate: fraction of examples that are span corruption


def mc4_data_dir(*, data_dir: str | None = None) -> str | None:
    """TFDS data directory holding c4/multilingual: gin binding, else $TFDS_DATA_DIR, else TFDS' default."""
    return data_dir or os.environ.get("TFDS_DATA_DIR")


# Made configurable even when gin's config is already locked: mtmoe.train parses
# and finalizes gin before it imports the task registries.
with gin.unlock_config():
    mc4_data_dir = gin.configurable(mc4_data_dir, module="tasks")


def span_corruption_task_name(corpus: str, lang: str) -> str:
    """`span_corruption_task_name("mc4", "ru-Latn")` -> "mc4_span_corruption_ru_Latn"."""
    return f"{corpus}_span_corruption_{languages.task_code(lang)}"


class Mc4Source(seqio.DataSource):
    """One language of TFDS c4/multilingual; checks the data is prepared before TFDS sees it.

    seqio's TfdsDataSource would let TFDS try to build (download) a missing
    dataset; this source refuses instead, with the build step in its message.
    """

    def __init__(self, *, lang: str):
        self._lang = lang
        self._splits = {"train": lang, "validation": f"{lang}-validation"}
        self._tfds_source = None
        super().__init__(splits=tuple(self._splits), num_input_examples=None, caching_permitted=True)

    def _builder(self):
        import tensorflow_datasets as tfds  # heavy: only when an mC4 task is used

        data_dir = mc4_data_dir()
        try:
            builder = tfds.builder(MC4_TFDS_NAME, data_dir=data_dir)
            prepared = os.path.exists(os.path.join(builder.data_dir, "dataset_info.json"))
        except Exception as error:  # noqa: BLE001  TFDS raises many kinds for a missing dataset
            raise FileNotFoundError(
                f"mC4 ({MC4_TFDS_NAME}) not found ({error}); build it: {MC4_BUILD_STEP}"
            ) from error
        if not prepared:
            raise FileNotFoundError(
                f"mC4 ({MC4_TFDS_NAME}) is not prepared in "
                f"{data_dir or '~/tensorflow_datasets'}; build it: {MC4_BUILD_STEP}"
            )
        return builder

    def _source(self) -> seqio.TfdsDataSource:
        if self._tfds_source is None:
            self._builder()  # raises with the build step when absent
            self._tfds_source = seqio.TfdsDataSource(
                tfds_name=MC4_TFDS_NAME, tfds_data_dir=mc4_data_dir(), splits=self._splits
            )
        return self._tfds_source

    def get_dataset(
        self,
        split: str = "train",
        shuffle: bool = True,
        seed: int | None = None,
        shard_info: seqio.ShardInfo | None = None,
        *,
        sequence_length=None,
        use_cached: bool = False,
        num_epochs: int | None = 1,
    ):
        return self._source().get_dataset(split=split, shuffle=shuffle, seed=seed, shard_info=shard_info)

    def num_input_examples(self, split: str) -> int:
        return self._builder().info.splits[self._splits[split]].num_examples

    def list_shards(self, split: str):
        return self._source().list_shards(split)

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True


def _register_span_corruption(name: str, source: seqio.DataSource, vocabulary) -> seqio.Task:
    seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(
        name,
        source=source,
        preprocessors=list(preprocessors.SPAN_CORRUPTION_PREPROCESSORS),
        output_features=translation.output_features(vocabulary),
        metric_fns=[],
    )


def register_mc4_tasks(
    *, vocabulary: seqio.Vocabulary | None = None, temperature: float = translation.DEFAULT_TEMPERATURE
) -> list[str]:
    """mc4_span_corruption_<lang> for every c4/multilingual split and the mixture.

    Returns the names of the tasks in mixture `mc4_span_corruption`.
    """
    for lang in languages.MC4_LANGUAGES + (languages.MC4_UNKNOWN_LANGUAGE,):
        _register_span_corruption(span_corruption_task_name("mc4", lang), Mc4Source(lang=lang), vocabulary)
    names = [span_corruption_task_name("mc4", lang) for lang in languages.MC4_LANGUAGES]
    rate = functools.partial(translation.counted_rate, temperature=temperature)
    translation.register_mixture("mc4_span_corruption", [(name, rate) for name in names])
    return names


def embedded_text_source(*, root, lang: str, langs_in_corpus, num_examples: int) -> sources.TextSource:
    """The `lang` side of the embedded corpus' train pairs as {"text"}.

    English is read from every en-<xx> file (the English side of each pair).
    """
    if lang == "en":
        files, column = [layouts.embedded_file(root, "train", xx) for xx in langs_in_corpus], 0
    else:
        files, column = [layouts.embedded_file(root, "train", lang)], 1
    return sources.TextSource(
        split_files={"train": files},
        read=lambda paths: itertools.chain.from_iterable(
            readers.read_tsv(p, columns=(column,)) for p in paths
        ),
        features=("text",),
        missing_message=layouts.missing_embedded_message,
        num_examples={"train": num_examples},
    )


def register_embedded_span_corruption(
    *,
    root=layouts.EMBEDDED_DIR,
    corpus: str = "embedded",
    vocabulary: seqio.Vocabulary | None = None,
    temperature: float = translation.DEFAULT_TEMPERATURE,
    mixture: str = "embedded_span_corruption",
) -> list[str]:
    """<corpus>_span_corruption_<lang> for English and every corpus language, and the mixture.

    English's example count is the sum of all languages' train pairs (its side of each).
    """
    stats = layouts.load_stats(root)
    others = sorted(lang for lang in stats if lang != "en" and stats[lang]["train"] > 0)
    counts = {lang: stats[lang]["train"] for lang in others}
    counts["en"] = sum(counts.values())
    names = []
    for lang in ["en"] + others:
        name = span_corruption_task_name(corpus, lang)
        _register_span_corruption(
            name,
            embedded_text_source(root=root, lang=lang, langs_in_corpus=others, num_examples=counts[lang]),
            vocabulary,
        )
        names.append(name)
    translation.register_mixture(
        mixture,
        [
            (
                span_corruption_task_name(corpus, lang),
                translation.temperature_rate(counts[lang], temperature=temperature),
            )
            for lang in ["en"] + others
        ],
    )
    return names


def register_all(*, temperature: float = translation.DEFAULT_TEMPERATURE) -> None:
    """Everything `import tasks` registers for span corruption (no data is read)."""
    register_mc4_tasks(temperature=temperature)
    try:
        register_embedded_span_corruption(temperature=temperature)
    except FileNotFoundError as error:
        logging.warning("embedded span corruption not registered: %s", error)
        return
    if "translate_all" in seqio.MixtureRegistry.names():
        translation.register_mixture(
            "pretrain_and_translate",
            [("embedded_span_corruption", PRETRAIN_SHARE), ("translate_all", 1.0 - PRETRAIN_SHARE)],
        )

