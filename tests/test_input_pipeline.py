"""mtmoe.input_pipeline: task names -> language pairs, unknown names -> one line.

The pipeline itself (determinism, the data position a restart skips to) is
tested end to end in tests/test_train.py (exact resume after SIGKILL).
"""

import pytest

from mtmoe import input_pipeline
from mtmoe.command_line import UsageError


@pytest.mark.parametrize("task_name, pair", [
    ("embedded_translate_en_de", ("en", "de")),
    ("embedded_translate_zh_Hans_en", ("zh-Hans", "en")),   # the first cut 'zh' / 'Hans-en' is no language
    ("opus100_translate_en_pt_BR", ("en", "pt-BR")),
    ("embedded_translate_en_CA_af", ("en-CA", "af")),  # not `en` / `ca-AF`: task names hold the codes as written
    ("embedded_span_corruption", None),
    ("mc4_span_corruption", None),
])
def test_pair_from_task_name(task_name, pair):
    assert input_pipeline.pair_from_task_name(task_name) == pair


def test_unknown_mixture_suggests_the_nearest_name():
    from tests import train_fixture_tasks

    train_fixture_tasks.register()  # the fixture corpus: independent of data/embedded
    with pytest.raises(UsageError) as info:
        input_pipeline.get_mixture_or_task("fixture_translate_al")
    assert "unknown task or mixture 'fixture_translate_al'" in str(info.value)
    assert "did you mean fixture_translate_all" in str(info.value) and len(str(info.value).splitlines()) == 1


def test_translation_pairs_of_a_mixture():
    from tests import train_fixture_tasks

    train_fixture_tasks.register()
    pairs = dict(input_pipeline.translation_pairs("fixture_translate_all"))
    assert pairs["fixture_translate_zh_Hans_en"] == ("zh-Hans", "en")
    assert set(pairs.values()) == {(a, b) for lang in ("de", "fr", "pt-BR", "zh-Hans")
                                   for a, b in (("en", lang), (lang, "en"))}


def _register_fixture_span_corruption():
    """fixture_span_corruption_<lang> over the fixture corpus' train text (the embedded tasks' twin)."""
    import seqio

    from tasks import mc4
    from tests import train_fixture_tasks

    train_fixture_tasks.register()
    if "fixture_span_corruption" not in seqio.MixtureRegistry.names():
        vocabulary = seqio.SentencePieceVocabulary(train_fixture_tasks.SPM_PATH, extra_ids=100)
        mc4.register_embedded_span_corruption(root=train_fixture_tasks.EMBEDDED, corpus="fixture",
                                              vocabulary=vocabulary, mixture="fixture_span_corruption")


def _examples(dataset) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    return [(tuple(ex["inputs"].tolist()), tuple(ex["targets"].tolist())) for ex in dataset.as_numpy_iterator()]


def test_tasks_share_the_preprocessors_after_their_own_language_tag():
    import seqio

    from tasks import preprocessors

    _register_fixture_span_corruption()
    translation_tasks = seqio.get_mixture_or_task("fixture_translate_all").tasks
    span_tasks = seqio.get_mixture_or_task("fixture_span_corruption").tasks
    groups = input_pipeline._shared_preprocessing(translation_tasks + span_tasks)
    assert len(groups) == 2
    (shared, members), (span_shared, span_members) = groups
    # translation: each task keeps its tag; tokenizing and EOS run once for all eight
    assert shared == [seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim]
    assert [task.name for task, _ in members] == [task.name for task in translation_tasks]
    assert all(len(own) == 1 and own[0].func is preprocessors.add_target_tag for _, own in members)
    assert [own[0].keywords["tag"] for task, own in members] == [
        f"<2{input_pipeline.pair_from_task_name(task.name)[1]}>" for task in translation_tasks]
    # span corruption: the same list for every language, so nothing per task
    assert span_shared == list(preprocessors.SPAN_CORRUPTION_PREPROCESSORS)
    assert [own for _, own in span_members] == [[]] * len(span_tasks)


def test_mixture_pipeline_gives_each_task_exactly_its_own_examples():
    """One epoch, unshuffled: the mixture's examples are the union of what seqio makes of each task."""
    import seqio

    from tests import train_fixture_tasks

    train_fixture_tasks.register()
    lengths = {"inputs": 32, "targets": 32}
    mixture = seqio.get_mixture_or_task("fixture_translate_all")
    merged = input_pipeline._mixture_dataset(mixture, lengths=lengths, split="train", shuffle=False, seed=0,
                                             num_epochs=1, shard_info=None, shuffle_buffer_size=16)
    expected = []
    for task in mixture.tasks:
        expected += _examples(task.get_dataset(sequence_length=lengths, split="train", shuffle=False, num_epochs=1))
    got = _examples(merged)
    assert len(got) == len(expected) and sorted(got) == sorted(expected)


def test_mixture_pipeline_samples_tasks_at_the_mixture_rates():
    """Two tasks at rates 3:1, repeated: the first n examples hold about 3/4 of the first task's."""
    import seqio

    from tasks import translation
    from tests import train_fixture_tasks

    train_fixture_tasks.register()
    first, second = "fixture_translate_en_de", "fixture_translate_en_fr"
    translation.register_mixture("fixture_three_to_one", [(first, 3.0), (second, 1.0)])
    lengths = {"inputs": 32, "targets": 32}
    of_first = set(_examples(seqio.get_mixture_or_task(first).get_dataset(
        sequence_length=lengths, split="train", shuffle=False, num_epochs=1)))
    n = 4000
    merged = input_pipeline._mixture_dataset(seqio.get_mixture_or_task("fixture_three_to_one"), lengths=lengths,
                                             split="train", shuffle=True, seed=0, num_epochs=None,
                                             shard_info=None, shuffle_buffer_size=64)
    share = sum(example in of_first for example in _examples(merged.take(n))) / n
    # binomial: std of the share = sqrt(0.75 * 0.25 / 4000) = 0.0068; 4 std
    assert abs(share - 0.75) < 4 * 0.0068
