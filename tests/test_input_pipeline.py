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
