"""tasks/translation.py and tasks/sources.py: tags, sources, mixtures, bad input, packing."""

import json
from pathlib import Path

import pytest
import seqio
import tensorflow as tf

import tasks  # noqa: F401  registers every task and mixture
from mtmoe.data import layouts
from tasks import preprocessors, translation

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
EMBEDDED = FIXTURES / "embedded"
LENGTHS = {"inputs": 16, "targets": 16}
FIXTURE_LANGS = ["de", "fr", "pt-BR", "zh-Hans"]  # train pairs 12, 8, 3, 5


@pytest.fixture(scope="module")
def vocabulary():
    """A 400-piece SentencePiece model of the fixture corpus with tags <2en> .. <2pt-BR> (ids 3-7)."""
    return seqio.SentencePieceVocabulary(str(FIXTURES / "tiny.model"), extra_ids=100)


@pytest.fixture(scope="module")
def fixture_pairs(vocabulary):
    pairs = translation.register_embedded_tasks(
        root=EMBEDDED, corpus="fixture", vocabulary=vocabulary, tag_fn=lambda l: f"<2{l}>"
    )
    stats = layouts.load_stats(EMBEDDED)
    translation.register_translation_mixtures(
        pairs=pairs, counts={lang: stats[lang]["train"] for lang in pairs}, prefix="fixture_", top=2
    )
    return pairs


def first_examples(dataset, count):
    return list(dataset.take(count).as_numpy_iterator())


def test_add_target_tag_literal():
    dataset = tf.data.Dataset.from_tensors({"inputs": "Good morning", "targets": "Guten Morgen"})
    [example] = first_examples(preprocessors.add_target_tag(dataset, tag="<2de>"), 1)
    assert example == {"inputs": b"<2de> Good morning", "targets": b"Guten Morgen"}


def test_task_names_and_tag_is_one_piece(fixture_pairs, vocabulary):
    assert fixture_pairs["zh-Hans"] == ("fixture_translate_en_zh_Hans", "fixture_translate_zh_Hans_en")
    task = seqio.get_mixture_or_task("fixture_translate_de_en")
    [example] = first_examples(task.get_dataset(LENGTHS, split="train", shuffle=False), 1)
    assert example["inputs_pretokenized"] == b"<2en> Datei speichern"
    assert example["targets_pretokenized"] == b"Save the file"
    assert vocabulary.tokenizer.id_to_piece(3) == "<2en>"
    assert 3 in example["inputs"][:2].tolist()  # the tag, as one id, at the start
    assert example["inputs"][-1] == 1 and example["targets"][-1] == 1  # EOS on both


def test_mixture_membership_is_exact(fixture_pairs):
    members = lambda name: sorted(t.name for t in seqio.get_mixture_or_task(name).tasks)  # noqa: E731
    every = sorted(name for lang in FIXTURE_LANGS for name in fixture_pairs[lang])
    assert members("fixture_translate_all") == every
    assert members("fixture_translate_en_xx") == sorted(
        f"fixture_translate_en_{code}" for code in ["de", "fr", "pt_BR", "zh_Hans"]
    )
    assert members("fixture_translate_xx_en") == sorted(
        f"fixture_translate_{code}_en" for code in ["de", "fr", "pt_BR", "zh_Hans"]
    )
    # top=2: the two languages with most training pairs (de 12, fr 8), both directions.
    assert members("fixture_translate_101") == sorted(
        [
            "fixture_translate_en_de",
            "fixture_translate_de_en",
            "fixture_translate_en_fr",
            "fixture_translate_fr_en",
        ]
    )


def test_rates_follow_the_temperature_formula(fixture_pairs):
    train = {"de": 12, "fr": 8, "pt-BR": 3, "zh-Hans": 5}
    mixture = seqio.get_mixture_or_task("fixture_translate_all")
    for lang, names in fixture_pairs.items():
        for name in names:
            assert mixture.get_rate(seqio.get_mixture_or_task(name)) == pytest.approx(train[lang] ** 0.3)
    assert translation.temperature_rate(8, temperature=1.0) == 8.0
    with pytest.raises(ValueError, match="temperature must be > 0"):
        translation.temperature_rate(8, temperature=0.0)


def test_top_languages_breaks_ties_by_code():
    counts = {"en": 99, "fr": 5, "de": 5, "it": 7, "xx": 0}
    assert translation.top_languages(counts, count=2) == ["it", "de"]
    assert translation.top_languages(counts, count=9) == ["it", "de", "fr"]


def test_real_corpus_mixtures_are_exact():
    """translate_101: English + the 100 languages with most train pairs, both directions."""
    stats_path = layouts.EMBEDDED_DIR / "stats.json"
    if not stats_path.exists():
        pytest.skip("data/embedded/stats.json not built yet")
    stats = json.loads(stats_path.read_text())["languages"]
    train = {lang: counts["train"] for lang, counts in stats.items() if lang != "en" and counts["train"] > 0}
    code = lambda lang: lang.replace("-", "_")  # noqa: E731
    both = lambda langs: sorted(
        f"embedded_translate_{a}_{b}"
        for l in langs  # noqa: E731
        for a, b in (("en", code(l)), (code(l), "en"))
    )
    members = lambda name: sorted(t.name for t in seqio.get_mixture_or_task(name).tasks)  # noqa: E731
    assert len(train) >= 100, "the corpus has fewer than 100 non-English languages"
    top100 = sorted(train, key=lambda lang: (-train[lang], lang))[:100]
    assert members("translate_101") == both(top100)
    assert len(members("translate_101")) == 200
    assert members("translate_all") == both(train)
    assert members("translate_en_xx") == sorted(f"embedded_translate_en_{code(l)}" for l in train)
    assert members("translate_xx_en") == sorted(f"embedded_translate_{code(l)}_en" for l in train)
    assert members("translate_demo") == both(["de", "es", "fr", "ja"])
    mixture = seqio.get_mixture_or_task("translate_101")
    lang = top100[-1]
    task = seqio.get_mixture_or_task(f"embedded_translate_en_{code(lang)}")
    assert mixture.get_rate(task) == pytest.approx(train[lang] ** 0.3)
    span = members("embedded_span_corruption")
    assert members("pretrain_and_translate") == sorted(span + members("translate_all"))


def pack_one_example_of_each(names):
    """One train example of each task, in order, packed by EncDecFeatureConverter: segment count."""
    datasets = [
        seqio.get_mixture_or_task(name)
        .get_dataset(LENGTHS, split="train", shuffle=False)
        .take(1)
        .map(lambda ex: {"inputs": ex["inputs"], "targets": ex["targets"]})
        for name in names
    ]
    one_each = tf.data.Dataset.choose_from_datasets(datasets, tf.data.Dataset.range(len(datasets)))
    packed = seqio.EncDecFeatureConverter(pack=True)(one_each, LENGTHS)
    return sum(int(batch["decoder_segment_ids"].max()) for batch in packed.as_numpy_iterator())


def test_every_fixture_task_packs(fixture_pairs):
    names = [name for pair in fixture_pairs.values() for name in pair]
    assert pack_one_example_of_each(names) == len(names) == 8
    dataset = seqio.get_dataset(
        "fixture_translate_all",
        task_feature_lengths=LENGTHS,
        dataset_split="train",
        shuffle=False,
        feature_converter=seqio.EncDecFeatureConverter(pack=True),
    )
    for batch in first_examples(dataset, 3):
        assert batch["encoder_input_tokens"].shape == (16,)
        assert batch["encoder_segment_ids"].max() >= 1 and batch["decoder_loss_weights"].sum() > 0


@pytest.mark.slow
def test_every_real_corpus_task_yields_and_translate_all_packs():
    """Each embedded task's files give a pair whose tag is one piece; the mixture packs.

    Every task's graph is built (and must build) by the one seqio.get_dataset call
    over translate_all; tasks differ only in their files and tag, checked for each.
    """
    if not (layouts.EMBEDDED_DIR / "stats.json").exists():
        pytest.skip("data/embedded/stats.json not built yet")
    mixture = seqio.get_mixture_or_task("translate_all")
    vocabulary = mixture.output_features["inputs"].vocabulary
    langs = [lang for lang, counts in layouts.load_stats().items() if counts["train"] > 0]
    assert len(mixture.tasks) == 2 * len(langs)
    for lang in langs:
        for source, target in (("en", lang), (lang, "en")):
            task = seqio.get_mixture_or_task(translation.task_name("embedded", source, target))
            pair = next(task.source.examples("train"))
            assert pair["inputs"] and pair["targets"], task.name
            tag = vocabulary.tokenizer.encode(f"<2{target}>", out_type=str)
            assert tag[-1] == f"<2{target}>", (task.name, tag)  # one piece (after SentencePiece's "▁")
    dataset = seqio.get_dataset(
        "translate_all",
        task_feature_lengths={"inputs": 32, "targets": 32},
        dataset_split="train",
        shuffle=True,
        seed=0,
        feature_converter=seqio.EncDecFeatureConverter(pack=True),
    )
    for batch in first_examples(dataset, 4):
        assert batch["encoder_input_tokens"].shape == (32,)
        assert batch["decoder_segment_ids"].max() >= 1 and batch["decoder_loss_weights"].sum() > 0


def test_opus100_and_flores_layouts(monkeypatch):
    monkeypatch.setenv("OPUS100_DIR", str(FIXTURES / "opus100"))
    monkeypatch.setenv("FLORES200_DIR", str(FIXTURES / "flores200"))
    opus = translation.opus100_source(lang="de", english_first=False)
    [pair] = first_examples(opus.get_dataset("validation"), 1)
    assert pair == {
        "inputs": b"Ausgew\xc3\xa4hlte Zeilen l\xc3\xb6schen",
        "targets": b"Delete the selected rows",
    }
    assert opus.num_input_examples("train") == 6
    flores = translation.flores200_source(lang="fr", english_first=True)
    assert first_examples(flores.get_dataset("test"), 2) == [
        {"inputs": b"Print the page", "targets": b"Imprimer la page"},
        {"inputs": b"Zoom in", "targets": b"Zoom avant"},
    ]
    assert "train" not in flores.splits  # FLORES-200 is for evaluation only


def test_missing_corpora_fail_at_use_with_what_to_do(monkeypatch, tmp_path):
    task = seqio.get_mixture_or_task("opus100_translate_en_de")  # registered at import
    monkeypatch.delenv("OPUS100_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="OPUS-100 root not set: download https://.*OPUS100_DIR"):
        task.get_dataset(LENGTHS, split="train")
    monkeypatch.setenv("OPUS100_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="does not hold opus-100-corpus/v1.0/supervised"):
        task.get_dataset(LENGTHS, split="train")
    monkeypatch.delenv("FLORES200_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="FLORES200_DIR"):
        seqio.get_mixture_or_task("flores200_translate_en_de").get_dataset(LENGTHS, split="test")
    missing = translation.embedded_source(root=tmp_path, lang="de", english_first=True)
    with pytest.raises(FileNotFoundError, match="en-de.tsv.gz is missing: rebuild the embedded corpus"):
        missing.get_dataset("train")


def test_tsv_task_any_file(tmp_path, vocabulary):
    path = tmp_path / "pairs.tsv"
    path.write_text("id\tHallo Welt\tHello world\n", encoding="utf-8")
    translation.register_tsv_task(
        name="fixture_tsv_translate_de_en",
        source_lang="de",
        target_lang="en",
        files={"train": path},
        source_column=1,
        target_column=2,
        vocabulary=vocabulary,
        tag_fn=lambda l: f"<2{l}>",
    )
    task = seqio.get_mixture_or_task("fixture_tsv_translate_de_en")
    [example] = first_examples(task.get_dataset(LENGTHS, split="train", shuffle=False), 1)
    assert example["inputs_pretokenized"] == b"<2en> Hallo Welt"
    with pytest.raises(ValueError, match="unknown language code 'english'"):
        translation.register_tsv_task(
            name="bad", source_lang="english", target_lang="de", files={"train": path}, vocabulary=vocabulary
        )
    # A task's codes are the model's tags (<2de>): another spelling of one is refused, naming the project's.
    with pytest.raises(ValueError, match="task bad: write the language 'deu' as 'de'"):
        translation.register_tsv_task(
            name="bad", source_lang="en", target_lang="deu", files={"train": path}, vocabulary=vocabulary
        )


def test_corpus_roots_from_gin_then_environment(monkeypatch):
    import gin

    monkeypatch.setenv("OPUS100_DIR", "/from/env")
    assert translation.corpus_roots()["opus100"] == "/from/env"
    with gin.unlock_config():
        gin.parse_config(["import tasks.translation", "tasks.corpus_roots.opus100 = '/from/gin'"])
    try:
        assert translation.corpus_roots()["opus100"] == "/from/gin"
    finally:
        gin.clear_config()


def test_import_registers_even_after_gin_is_locked():
    """`import tasks` registers everything at once, also after gin.finalize() (as the trainer imports it)."""
    import subprocess
    import sys

    script = """
import gin
gin.parse_config(""); gin.finalize()
import seqio, tasks
print(len(seqio.TaskRegistry.names()), "opus100_translate_all" in seqio.MixtureRegistry.names())
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    count, has_mixture = out.stdout.split()[-2:]
    assert int(count) >= 500 and has_mixture == "True"
