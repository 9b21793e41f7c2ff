"""Dense T5 parts: hand-derived values for buckets, norms, masks; dtypes; cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from mtmoe import layers
from tests.tolerances import assert_close_float32


def test_relative_position_bucket_hand_values():
    rel = np.array([0, -1, 1, -7, 7, -1000, 1000])  # key position - query position
    bidirectional = layers.relative_position_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128)
    # 16 buckets per direction: keys before the query in 0..15, after it in 16..31;
    # distances below 8 are exact, far ones saturate at the last bucket.
    np.testing.assert_array_equal(bidirectional, [0, 1, 17, 7, 23, 15, 31])
    causal = layers.relative_position_bucket(rel, bidirectional=False, num_buckets=32, max_distance=128)
    # Causal: all future keys share bucket 0; 16 exact past distances, then log buckets up to 31.
    np.testing.assert_array_equal(causal, [0, 1, 0, 7, 0, 31, 0])
    log_bucket = layers.relative_position_bucket(np.array([-20]), bidirectional=False, num_buckets=32, max_distance=128)
    # 16 + int(log(20/16) / log(128/16) * 16) = 16 + int(1.716) = 17
    assert int(log_bucket[0]) == 17


def test_rms_norm_hand_value():
    x = jnp.array([[[3.0, 4.0]]])
    norm = layers.RMSNorm(epsilon=0.0)
    variables = norm.init(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(norm.apply(variables, x), x / np.sqrt(12.5), rtol=1e-6)
    assert nn.get_partition_spec(variables)["params"]["scale"] == jax.sharding.PartitionSpec("embed")


def test_attention_mask_segments_and_causality():
    tokens = jnp.array([[5, 6, 7, 0]])
    segments = jnp.array([[1, 1, 2, 0]])
    mask = layers.make_attention_mask(
        tokens > 0, tokens > 0, query_segment_ids=segments, key_segment_ids=segments, causal=True
    )[0, 0]
    expected = np.array(
        [
            [1, 0, 0, 0],
            [1, 1, 0, 0],
            [0, 0, 1, 0],  # segment 2 never sees segment 1
            [0, 0, 0, 0],  # padding attends nothing
        ],
        bool,
    )
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("activations,names", [(("gelu", "linear"), {"wi_0", "wi_1", "wo"}), (("relu",), {"wi", "wo"})])
def test_mlp_params_follow_activations(activations, names):
    mlp = layers.MlpBlock(d_ff=7, activations=activations)
    variables = mlp.init(jax.random.PRNGKey(0), jnp.ones((2, 3, 5)))
    assert set(variables["params"]) == names
    assert nn.get_partition_spec(variables)["params"]["wo"] == jax.sharding.PartitionSpec("mlp", "embed")


def test_unknown_activation_is_one_line_error():
    with pytest.raises(ValueError, match="unknown activation 'swish'") as info:
        layers.MlpBlock(d_ff=7, activations=("swish",)).init(jax.random.PRNGKey(0), jnp.ones((1, 2, 3)))
    assert "\n" not in str(info.value)


def test_attention_params_float32_compute_bfloat16_and_padding_ignored():
    attention = layers.MultiHeadAttention(num_heads=3, head_dim=2, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 7)).astype(jnp.bfloat16)
    variables = attention.init(jax.random.PRNGKey(0), x, x)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nn.unbox(variables)))
    assert nn.get_partition_spec(variables)["params"]["query"] == jax.sharding.PartitionSpec("embed", "joined_kv")
    mask = layers.make_attention_mask(jnp.ones((2, 5), bool), jnp.array([[1, 1, 1, 0, 0]] * 2, bool))
    out = attention.apply(variables, x, x, mask=mask)
    assert out.dtype == jnp.bfloat16 and out.shape == (2, 5, 7)
    # Changing masked-out keys changes nothing.
    x2 = x.at[:, 3:].set(9.0)
    np.testing.assert_array_equal(attention.apply(variables, x2[:, :3], x2, mask=mask[:, :, :3]), out[:, :3])


def test_cached_attention_steps_equal_causal_full_pass():
    attention = layers.MultiHeadAttention(num_heads=2, head_dim=3)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 5))
    variables = attention.init(jax.random.PRNGKey(0), x, x)
    causal = layers.make_attention_mask(jnp.ones((2, 4), bool), jnp.ones((2, 4), bool), causal=True)
    bias = jax.random.normal(jax.random.PRNGKey(3), (1, 2, 4, 4))
    full = attention.apply(variables, x, x, mask=causal, bias=bias)
    cache = attention.init(jax.random.PRNGKey(0), x, x, decode=True)["cache"]
    steps = []
    for t in range(4):
        out, mutated = attention.apply(
            {**variables, "cache": cache}, x[:, t : t + 1], x[:, t : t + 1], bias=bias, decode=True, mutable=["cache"]
        )
        cache = mutated["cache"]
        steps.append(out)
    assert_close_float32(jnp.concatenate(steps, axis=1), full, terms=6)  # dot products of up to H*K = 6 terms
    assert int(cache["cache_index"]) == 4


def test_cached_memory_attention_shares_one_row_per_sentence_among_its_beams():
    """static_kv: keys/values projected once at cache creation; K beams of a sentence read its row."""
    sentences, beams, memory_length = 2, 3, 7
    attention = layers.MultiHeadAttention(num_heads=2, head_dim=5, static_kv=True)
    memory = jax.random.normal(jax.random.PRNGKey(4), (sentences, memory_length, 11))  # [B, S, D]
    memory_mask = jnp.array([[1] * 7, [1] * 4 + [0] * 3], bool)  # [B, S]
    queries = jax.random.normal(jax.random.PRNGKey(5), (sentences * beams, 1, 11))  # [B*K, 1, D]  all beams differ
    variables = attention.init(jax.random.PRNGKey(0), queries, jnp.repeat(memory, beams, axis=0))
    # Reference: the plain attention over the memory tiled to every beam.
    tiled_mask = layers.make_attention_mask(jnp.ones((6, 1), bool), jnp.repeat(memory_mask, beams, axis=0))
    expected = attention.apply(variables, queries, jnp.repeat(memory, beams, axis=0), mask=tiled_mask)  # [B*K, 1, D]
    _, created = attention.apply(variables, memory[:, :1], memory, decode=True, mutable=["cache"])
    cache = created["cache"]
    kernels = variables["params"]
    expected_key = (memory @ nn.unbox(kernels["key"])).reshape(2, 7, 2, 5).transpose(0, 2, 1, 3)  # [B, H, S, K]
    assert_close_float32(cache["cached_key"], expected_key, terms=11)  # D=11
    step_mask = memory_mask[:, None, None, :]  # [B, 1, 1, S]
    out, mutated = attention.apply(
        {**variables, "cache": cache}, queries, None, mask=step_mask, decode=True, mutable=["cache"]
    )
    assert_close_float32(out, expected, terms=11)  # dot products over D = 11 and S = 7
    jax.tree.map(np.testing.assert_array_equal, mutated["cache"], cache)  # read, never written
    with pytest.raises(ValueError, match="5 query rows cannot share a cached memory of 2 sentences"):
        attention.apply({**variables, "cache": cache}, queries[:5], None, decode=True)
    with pytest.raises(ValueError, match="cross-attention cache is empty"):
        attention.apply(variables, queries, None, decode=True, mutable=["cache"])
