"""tasks/mc4.py and the span-corruption preprocessors: literal examples, mixtures, missing mC4."""

from pathlib import Path

import numpy as np
import pytest
import seqio
import tensorflow as tf

import tasks  # noqa: F401  registers every task and mixture
from mtmoe.data import languages
from tasks import mc4, preprocessors, translation

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
SEEDS = tf.constant([[1, 2], [3, 4]])


@pytest.fixture(scope="module")
def vocabulary():
    return seqio.SentencePieceVocabulary(str(FIXTURES / "tiny.model"), extra_ids=100)


def test_sentinel_literals():
    tokens = tf.constant([10, 11, 12, 13, 14, 15])
    noise = tf.constant([False, True, True, False, False, True])
    inputs = preprocessors.noise_span_to_unique_sentinel(tokens, noise, first_sentinel=99)
    targets = preprocessors.nonnoise_span_to_unique_sentinel(tokens, noise, first_sentinel=99)
    assert inputs.numpy().tolist() == [10, 99, 13, 14, 98]
    assert targets.numpy().tolist() == [99, 11, 12, 98, 15]


def test_sentinels_are_the_top_extra_ids(vocabulary):
    assert preprocessors.sentinel_id(vocabulary) == 400 + 100 - 1
    assert vocabulary.decode_tf(tf.constant([499])).numpy() == b"<extra_id_0>"


def test_t5_lengths():
    # T5's numbers: 512 input tokens hold a 568-token chunk; targets need 114.
    assert preprocessors.span_corruption_lengths(inputs_length=512) == (568, 114)
    assert preprocessors.span_corruption_lengths(inputs_length=16) == (17, 5)
    with pytest.raises(ValueError, match="raise TASK_FEATURE_LENGTHS"):
        preprocessors.span_corruption_lengths(inputs_length=2)


def spans(mask):
    """Lengths of the runs of True in a boolean list."""
    runs, current = [], 0
    for value in list(mask) + [False]:
        if value:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


@pytest.mark.parametrize("length,noise,num_spans", [(20, 3, 1), (100, 15, 5), (7, 1, 1)])
def test_noise_mask_density_and_spans(length, noise, num_spans):
    mask = preprocessors.random_spans_noise_mask(tf.constant(length), seeds=SEEDS).numpy()
    assert mask.shape == (length,) and not mask[0]  # text starts with a kept span
    assert mask.sum() == noise  # round(0.15 * length)
    assert len(spans(mask)) == num_spans  # round(noise / 3)
    again = preprocessors.random_spans_noise_mask(tf.constant(length), seeds=SEEDS).numpy()
    np.testing.assert_array_equal(mask, again)  # deterministic given the seeds


def reconstruct(inputs, targets, first_sentinel):
    """Undo span corruption: put each target span back in place of its sentinel."""
    spans_by_sentinel, current = {}, None
    for token in targets:
        if token > first_sentinel - 100:
            current = token
            spans_by_sentinel[current] = []
        else:
            spans_by_sentinel[current].append(token)
    out = []
    for token in inputs:
        out.extend(spans_by_sentinel[token] if token > first_sentinel - 100 else [token])
    return out


def test_span_corruption_round_trip(vocabulary):
    """Texts are joined, cut to 17-token chunks (inputs length 16) and corrupted reversibly."""
    texts = [list(range(10, 30)), list(range(40, 45))]  # 25 tokens -> chunks of 17 and 8
    dataset = tf.data.Dataset.from_generator(
        lambda: ({"targets": t} for t in texts), output_signature={"targets": tf.TensorSpec([None], tf.int32)}
    )
    features = {"inputs": seqio.Feature(vocabulary), "targets": seqio.Feature(vocabulary)}
    with seqio.utils.map_seed_manager(7):
        corrupted = list(
            preprocessors.span_corruption(dataset, {"inputs": 16, "targets": 5}, features).as_numpy_iterator()
        )
    joined = list(range(10, 30)) + list(range(40, 45))
    assert [reconstruct(ex["inputs"], ex["targets"], 499) for ex in corrupted] == [joined[:17], joined[17:]]
    first = corrupted[0]
    assert len(first["inputs"]) == 15 and len(first["targets"]) == 4  # + EOS: 16 and 5
    assert first["targets"][0] == 499 and first["inputs"][0] != 499  # text starts with a kept span


def test_span_corruption_task_literal(vocabulary):
    """embedded_span_corruption_<lang> over the fixture corpus: real text, corrupted, EOS."""
    names = mc4.register_embedded_span_corruption(
        root=FIXTURES / "embedded", corpus="fixture", vocabulary=vocabulary, mixture="fixture_span"
    )
    assert names == [f"fixture_span_corruption_{c}" for c in ["en", "de", "fr", "pt_BR", "zh_Hans"]]
    task = seqio.get_mixture_or_task("fixture_span_corruption_de")
    with seqio.utils.map_seed_manager(3):
        [example] = (
            task.get_dataset({"inputs": 16, "targets": 8}, split="train", shuffle=False, seed=3)
            .take(1)
            .as_numpy_iterator()
        )
    text = vocabulary.encode("Datei speichern") + vocabulary.encode("Ein neues Fenster öffnen")
    restored = reconstruct(example["inputs"][:-1], example["targets"][:-1], 499)
    assert restored == text[: len(restored)] and len(restored) == 17
    assert example["inputs"][-1] == 1 and example["targets"][-1] == 1
    mixture = seqio.get_mixture_or_task("fixture_span")
    assert sorted(t.name for t in mixture.tasks) == sorted(names)
    english = seqio.get_mixture_or_task("fixture_span_corruption_en")
    assert mixture.get_rate(english) == pytest.approx((12 + 8 + 3 + 5) ** 0.3)  # every English side


def test_mc4_registry_is_exact():
    expected = sorted(f"mc4_span_corruption_{lang.replace('-', '_')}" for lang in languages.MC4_LANGUAGES)
    assert len(expected) == 107
    assert sorted(t.name for t in seqio.get_mixture_or_task("mc4_span_corruption").tasks) == expected
    assert "mc4_span_corruption_und" in seqio.TaskRegistry.names()  # a task, not in the mixture
    assert "mc4_span_corruption_ru_Latn" in expected and "mc4_span_corruption_iw" in expected


def test_mc4_rate_is_n_to_the_0_3():
    class Counted:
        source = type("Source", (), {"num_input_examples": staticmethod(lambda split: 1_000_000)})

    assert translation.counted_rate(Counted) == pytest.approx(1_000_000**0.3)
    assert translation.counted_rate(Counted, temperature=1.0) == pytest.approx(1_000_000)


def test_missing_mc4_fails_at_use_naming_the_build_step(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    task = seqio.get_mixture_or_task("mc4_span_corruption_de")
    with pytest.raises(FileNotFoundError, match="not prepared in .*tfds build c4/multilingual"):
        task.get_dataset({"inputs": 16, "targets": 8}, split="train")
    mixture = seqio.get_mixture_or_task("mc4_span_corruption")
    with pytest.raises(FileNotFoundError, match="tfds build c4/multilingual"):
        mixture.get_rate(task)
