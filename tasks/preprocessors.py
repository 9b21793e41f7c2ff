"""SeqIO preprocessors: the target-language tag for translation, T5 span corruption.

Axis letters: L = tokens of one example, N = noise spans.

Each preprocessor takes and returns a `tf.data.Dataset` of feature dicts, as
SeqIO preprocessors do; the literal examples in the docstrings are the ones
tests/test_mc4.py and tests/test_translation.py check.

Span corruption follows T5 (Raffel et al. 2020, section 3.1.4) and mT5: take a
chunk of text tokens, mark 15% of them as noise in spans of mean length 3,
replace each noise span in the inputs by one sentinel and let the targets list
the noise spans, each after its sentinel. Sentinels are the vocabulary's extra
ids counted down from the top (`<extra_id_0>` = vocab_size - 1), as in T5.
"""

from __future__ import annotations

import functools

import seqio
import tensorflow as tf

NOISE_DENSITY = 0.15  # T5 / mT5: 15% of tokens are corrupted
MEAN_NOISE_SPAN_LENGTH = 3.0  # T5 / mT5: spans of 3 tokens on average
MAX_CHUNK_TOKENS = 65536  # T5's select_random_chunk: a long document contributes one chunk
CONCAT_BATCH = 128  # T5's reduce_concat_tokens: short texts are joined before splitting


# --- Translation -------------------------------------------------------------


@seqio.map_over_dataset
def _prepend(features, *, prefix):
    return {**features, "inputs": tf.strings.join([prefix, features["inputs"]])}


def add_target_tag(dataset: tf.data.Dataset, *, tag: str) -> tf.data.Dataset:
    """Prefixes the source text with the target-language tag and one space.

    {"inputs": "Good morning", "targets": "Guten Morgen"}
    -> {"inputs": "<2de> Good morning", "targets": "Guten Morgen"}   (tag="<2de>")

    The tag is a user-defined piece of the vocabulary, so it becomes one token.
    """
    return _prepend(dataset, prefix=tag + " ")


# --- Span corruption -----------------------------------------------------------


def span_corruption_lengths(
    *,
    inputs_length: int,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> tuple[int, int]:
    """(tokens per chunk, targets length) so corrupted inputs + EOS fill `inputs_length`.

    T5's `random_spans_helper`: the inputs keep the non-noise tokens and one
    sentinel per noise span; the targets hold the noise tokens and one sentinel
    per span; both end with EOS. inputs_length=512 -> (568, 114), as T5 uses.
    """

    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise_tokens = int(round(tokens_length * noise_density))
        num_nonnoise_tokens = tokens_length - num_noise_tokens
        num_noise_spans = int(round(num_noise_tokens / mean_noise_span_length))
        return (num_nonnoise_tokens + num_noise_spans + 1, num_noise_tokens + num_noise_spans + 1)

    if inputs_length < 3:
        raise ValueError(
            f"span corruption needs inputs length >= 3, got {inputs_length}; "
            "raise TASK_FEATURE_LENGTHS['inputs']"
        )
    tokens_length = 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    return tokens_length, lengths(tokens_length)[1]


def random_spans_noise_mask(
    length: tf.Tensor,
    *,
    seeds,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> tf.Tensor:
    """<bool>[L]: True for noise tokens, in spans; deterministic given `seeds`.

    round(L * noise_density) noise tokens (at least 1, at most L - 1) in
    round(noise / mean_noise_span_length) spans (at least 1); the text starts
    with a non-noise span. T5's algorithm: noise and non-noise lengths are each
    split into that many random positive parts, then interleaved.

    Args:
      length: int32 scalar, the number of tokens L.
      seeds: two int32[2] stateless seeds.
    """
    original_length = length
    length = tf.maximum(length, 2)  # room for one noise and one non-noise token
    num_noise_tokens = tf.cast(tf.round(tf.cast(length, tf.float32) * noise_density), tf.int32)
    num_noise_tokens = tf.clip_by_value(num_noise_tokens, 1, length - 1)
    num_noise_spans = tf.cast(
        tf.round(tf.cast(num_noise_tokens, tf.float32) / mean_noise_span_length), tf.int32
    )
    num_noise_spans = tf.maximum(num_noise_spans, 1)
    num_nonnoise_tokens = length - num_noise_tokens

    def random_segmentation(num_items, num_segments, seed):
        """<int32>[num_segments]: positive lengths summing to num_items."""
        first_in_segment = tf.cast(tf.range(num_items - 1) < num_segments - 1, tf.int32)
        first_in_segment = seqio.utils.stateless_shuffle(first_in_segment, seed)
        first_in_segment = tf.pad(first_in_segment, [[1, 0]])  # [num_items]
        segment_id = tf.cumsum(first_in_segment)
        return tf.math.segment_sum(tf.ones_like(segment_id), segment_id)  # [num_segments]

    noise_span_lengths = random_segmentation(num_noise_tokens, num_noise_spans, seeds[0])
    nonnoise_span_lengths = random_segmentation(num_nonnoise_tokens, num_noise_spans, seeds[1])
    interleaved_span_lengths = tf.reshape(
        tf.stack([nonnoise_span_lengths, noise_span_lengths], axis=1), [num_noise_spans * 2]
    )  # [2N]
    span_starts = tf.cumsum(interleaved_span_lengths)[:-1]  # [2N-1]
    span_start_indicator = tf.math.unsorted_segment_sum(tf.ones_like(span_starts), span_starts, length)  # [L]
    span_num = tf.cumsum(span_start_indicator)
    is_noise = tf.equal(span_num % 2, 1)
    return is_noise[:original_length]


def sentinel_id(vocabulary: seqio.Vocabulary) -> int:
    """Id of the first sentinel `<extra_id_0>`: the top id, as T5 counts them."""
    return vocabulary.vocab_size - 1


def noise_span_to_unique_sentinel(
    tokens: tf.Tensor, noise_mask: tf.Tensor, *, first_sentinel: int
) -> tf.Tensor:
    """Each noise span becomes one sentinel, counting down from `first_sentinel`.

    tokens [10, 11, 12, 13, 14, 15], noise [F, T, T, F, F, T], first_sentinel 99
    -> [10, 99, 13, 14, 98]
    """
    previous_is_noise = tf.pad(noise_mask[:-1], [[1, 0]])
    first_noise_tokens = tf.logical_and(noise_mask, tf.logical_not(previous_is_noise))
    subsequent_noise_tokens = tf.logical_and(noise_mask, previous_is_noise)
    sentinels = first_sentinel + 1 - tf.cumsum(tf.cast(first_noise_tokens, tokens.dtype))
    tokens = tf.where(first_noise_tokens, sentinels, tokens)
    return tf.boolean_mask(tokens, tf.logical_not(subsequent_noise_tokens))


def nonnoise_span_to_unique_sentinel(
    tokens: tf.Tensor, noise_mask: tf.Tensor, *, first_sentinel: int
) -> tf.Tensor:
    """The targets' side: non-noise spans become sentinels, noise stays.

    tokens [10, 11, 12, 13, 14, 15], noise [F, T, T, F, F, T], first_sentinel 99
    -> [99, 11, 12, 98, 15]
    """
    return noise_span_to_unique_sentinel(tokens, tf.logical_not(noise_mask), first_sentinel=first_sentinel)


@seqio.map_over_dataset(num_seeds=1)
def _select_random_chunk(features, seed, *, max_length):
    tokens = features["targets"]
    num_chunks = (tf.size(tokens) + max_length - 1) // max_length
    chunk = tf.random.stateless_uniform([], seed=seed, maxval=tf.maximum(num_chunks, 1), dtype=tf.int32)
    return {"targets": tokens[chunk * max_length : (chunk + 1) * max_length]}


def _concat_and_split(dataset: tf.data.Dataset, *, tokens_per_chunk: int) -> tf.data.Dataset:
    """Joins the token lists of CONCAT_BATCH examples and cuts them into chunks."""
    dataset = dataset.padded_batch(CONCAT_BATCH, padded_shapes={"targets": [None]})
    # Pad id 0 never occurs in text tokens, so dropping zeros undoes the padding.
    dataset = dataset.map(
        lambda batch: tf.boolean_mask(batch["targets"], batch["targets"] > 0),
        num_parallel_calls=tf.data.AUTOTUNE,
    )  # [sum of lengths]

    def split(tokens):
        num_tokens = tf.size(tokens)
        num_chunks = (num_tokens + tokens_per_chunk - 1) // tokens_per_chunk
        padded = tf.pad(tokens, [[0, num_chunks * tokens_per_chunk - num_tokens]])
        chunks = tf.reshape(padded, [num_chunks, tokens_per_chunk])  # [chunks, tokens_per_chunk]
        lengths = tf.minimum(num_tokens - tf.range(num_chunks) * tokens_per_chunk, tokens_per_chunk)
        return tf.data.Dataset.from_tensor_slices((chunks, lengths))

    dataset = dataset.flat_map(split)
    return dataset.map(lambda chunk, length: {"targets": chunk[:length]}, num_parallel_calls=tf.data.AUTOTUNE)


@seqio.map_over_dataset(num_seeds=2)
def _denoise(features, seeds, *, first_sentinel, noise_density, mean_noise_span_length):
    tokens = features["targets"]  # [L]
    noise_mask = random_spans_noise_mask(
        tf.size(tokens),
        seeds=seeds,
        noise_density=noise_density,
        mean_noise_span_length=mean_noise_span_length,
    )
    return {
        "inputs": noise_span_to_unique_sentinel(tokens, noise_mask, first_sentinel=first_sentinel),
        "targets": nonnoise_span_to_unique_sentinel(tokens, noise_mask, first_sentinel=first_sentinel),
    }


def span_corruption(
    dataset: tf.data.Dataset,
    sequence_length,
    output_features,
    *,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> tf.data.Dataset:
    """T5 span corruption over tokenized text in "targets" (place after tokenize).

    Texts are cut to one random chunk of at most MAX_CHUNK_TOKENS tokens, joined
    and split into chunks sized so the corrupted inputs plus EOS fill
    sequence_length["inputs"], then corrupted:

    {"targets": [10, 11, 12, 13, 14, 15]}, noise [F, T, T, F, F, T], vocab_size 100
    -> {"inputs": [10, 99, 13, 14, 98], "targets": [99, 11, 12, 98, 15]}

    Which tokens are noise depends on SeqIO's preprocessing seed (the Task's
    `seed` argument / `seqio.utils.map_seed_manager`), so a seeded run repeats.
    """
    vocabulary = output_features["targets"].vocabulary
    if sequence_length is None or sequence_length.get("inputs") is None:
        raise ValueError(
            "span corruption needs sequence_length['inputs']: pass "
            "task_feature_lengths / TASK_FEATURE_LENGTHS with an 'inputs' length"
        )
    tokens_per_chunk, _ = span_corruption_lengths(
        inputs_length=sequence_length["inputs"],
        noise_density=noise_density,
        mean_noise_span_length=mean_noise_span_length,
    )
    dataset = dataset.map(
        lambda features: {"targets": features["targets"]}, num_parallel_calls=tf.data.AUTOTUNE
    )
    dataset = _select_random_chunk(dataset, max_length=MAX_CHUNK_TOKENS)
    dataset = _concat_and_split(dataset, tokens_per_chunk=tokens_per_chunk)
    return _denoise(
        dataset,
        first_sentinel=sentinel_id(vocabulary),
        noise_density=noise_density,
        mean_noise_span_length=mean_noise_span_length,
    )


# The preprocessing every text-only (span corruption) task shares, in order.
SPAN_CORRUPTION_PREPROCESSORS = (
    functools.partial(seqio.preprocessors.rekey, key_map={"inputs": None, "targets": "text"}),
    seqio.preprocessors.tokenize,
    span_corruption,
    seqio.preprocessors.append_eos_after_trim,
)

