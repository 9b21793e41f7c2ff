"""mtmoe.pretokenized reproduces the seqio pipeline: the same tokens, packing and features."""

import numpy as np
import pytest

from mtmoe import pretokenized

LENGTHS = {"inputs": 16, "targets": 16}  # short: trimming and row breaks both happen
PAIRS = 48


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """en->de and de->en dev pairs exported through the task registry."""
    pytest.importorskip("seqio")
    out = tmp_path_factory.mktemp("pretokenized")
    for name in ("embedded_translate_en_de", "embedded_translate_de_en"):
        pretokenized.export(mixture=name, out_dir=str(out / name), splits=("validation",),
                            max_per_language={"validation": PAIRS}, print_fn=lambda *_: None)
    return out


def _seqio_batches(task_name):
    import seqio

    from mtmoe import input_pipeline

    input_pipeline.get_mixture_or_task(task_name)
    dataset = seqio.get_dataset(task_name, task_feature_lengths=LENGTHS, dataset_split="validation",
                                shuffle=False, num_epochs=1, feature_converter=seqio.EncDecFeatureConverter(pack=True))
    rows = list(dataset.take(PAIRS).as_numpy_iterator())
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


@pytest.mark.parametrize("task_name", ["embedded_translate_en_de", "embedded_translate_de_en"])
def test_packed_features_equal_seqio(exported, task_name):
    corpus = pretokenized.Corpus(str(exported / task_name), split="validation")
    (task,) = corpus.tasks
    inputs, targets = corpus.task_examples(task, lengths=LENGTHS)
    assert len(inputs) == PAIRS
    ours = pretokenized.features(pretokenized.pack(inputs, targets, lengths=LENGTHS))
    theirs = _seqio_batches(task_name)
    # seqio packs chunks of max(LENGTHS) examples; PAIRS is a multiple of it, so our rows are its first rows
    assert PAIRS % max(LENGTHS.values()) == 0
    rows = len(ours["encoder_input_tokens"])
    assert 3 <= rows <= len(theirs["encoder_input_tokens"])
    assert set(ours) == set(theirs)
    for key in theirs:
        np.testing.assert_array_equal(ours[key][:rows], theirs[key][:rows], err_msg=key)
    assert (ours["encoder_segment_ids"].max(axis=1) >= 2).any()  # rows really hold several examples


def test_segments_positions_and_decoder_inputs_by_hand():
    inputs = [np.array([5, 6, 1]), np.array([7, 1]), np.array([8, 9, 10, 1])]
    targets = [np.array([3, 1]), np.array([4, 4, 1]), np.array([2, 1])]
    packed = pretokenized.pack(inputs, targets, lengths={"inputs": 6, "targets": 7})
    # inputs 3 + 2 fit in 6, the third (4) does not: two rows
    np.testing.assert_array_equal(packed["inputs"], [[5, 6, 1, 7, 1, 0], [8, 9, 10, 1, 0, 0]])
    got = pretokenized.features(packed)
    np.testing.assert_array_equal(got["encoder_positions"], [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]])
    np.testing.assert_array_equal(got["decoder_target_tokens"][0], [3, 1, 4, 4, 1, 0, 0])
    np.testing.assert_array_equal(got["decoder_input_tokens"][0], [0, 3, 0, 4, 4, 0, 0])
    np.testing.assert_array_equal(got["decoder_segment_ids"][0], [1, 1, 2, 2, 2, 0, 0])
    np.testing.assert_array_equal(got["decoder_loss_weights"][0], [1, 1, 1, 1, 1, 0, 0])


def test_batch_reader_epochs_cover_every_row_once():
    packed = pretokenized.pack([np.array([4, 1])] * 10, [np.array([5, 1])] * 10, lengths={"inputs": 2, "targets": 2})
    reader = pretokenized.BatchReader(packed, batch_size=5, seed=3)
    first = np.concatenate([next(reader)["encoder_input_tokens"] for _ in range(2)])
    assert first.shape == (10, 2) and reader.epoch == 0
    next(reader)
    assert reader.epoch == 1
