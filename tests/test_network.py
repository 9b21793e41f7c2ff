"""The encoder-decoder: sparse layout, cached decoding, packing, dtypes, bad configs."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from mtmoe import network, routing
from mtmoe.moe_config import MoeConfig
from tests.tolerances import assert_close_float32

# Pairwise-different sizes so a transposed axis fails.
TINY = network.TransformerConfig(
    vocab_size=23,
    d_model=12,
    num_heads=3,
    head_dim=5,
    d_ff=14,
    num_encoder_layers=2,
    num_decoder_layers=3,
    moe=MoeConfig(num_experts=4, expert_d_ff=9, max_group_size=64),
)
# Every forward pass below uses these shapes and keywords, so it compiles once.
ENCODER_TOKENS = jnp.array([[4, 9, 17, 3, 1, 0, 0], [8, 5, 1, 0, 0, 0, 0], [2, 1, 0, 0, 0, 0, 0]], jnp.int32)  # [B=3, S=7]
DECODER_INPUTS = jnp.array([[0, 6, 11, 2, 7], [0, 13, 1, 19, 4], [0, 3, 3, 3, 3]], jnp.int32)  # [B=3, T=5]


def random_params(module, *inputs, seed=0):
    """float32 params with init's tree and shapes, drawn by numpy: no init to compile."""
    shapes = nn.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs)["params"])
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: jnp.asarray(rng.normal(0.0, 0.5, leaf.shape), jnp.float32), shapes)


@pytest.fixture(scope="session")
def tiny():
    """(module, params, forward): forward(enc, dec, enc_segments, dec_segments) -> logits, jitted.
    The module routes drop-free, so that no row's output depends on the others."""
    module = network.Transformer(TINY.for_inference())
    params = random_params(module, ENCODER_TOKENS, DECODER_INPUTS)

    @jax.jit
    def forward(encoder_tokens, decoder_tokens, encoder_segments, decoder_segments):
        return module.apply(
            {"params": params},
            encoder_tokens,
            decoder_tokens,
            encoder_segment_ids=encoder_segments,
            decoder_segment_ids=decoder_segments,
        )

    return module, params, forward


def _segments(tokens, real_length):
    """Segment ids 1 on the first `real_length` positions of each row, 0 after."""
    return (jnp.arange(tokens.shape[1])[None, :] < jnp.asarray(real_length)[:, None]).astype(jnp.int32)


def test_sparse_layout_and_param_shapes():
    module = network.Transformer(TINY)
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), ENCODER_TOKENS, DECODER_INPUTS)
    params = nn.unbox(variables["params"])
    specs = nn.get_partition_spec(variables)["params"]
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    assert specs["encoder"]["layers_1"]["moe"]["wi_1"] == jax.sharding.PartitionSpec("expert", "embed", "mlp")
    assert specs["decoder"]["logits_dense"] == jax.sharding.PartitionSpec("embed", "vocab")
    # Every other FFN is MoE: encoder layer 1, decoder layer 1 (of 0, 1, 2).
    assert set(params["encoder"]["layers_1"]) >= {"moe"} and "mlp" in params["encoder"]["layers_0"]
    assert [("moe" in params["decoder"][f"layers_{i}"]) for i in range(3)] == [False, True, False]
    moe = params["decoder"]["layers_1"]["moe"]
    assert moe["wi_0"].shape == (4, 12, 9) and moe["wo"].shape == (4, 9, 12)
    assert moe["router"]["kernel"].shape == (12, 4)
    assert params["decoder"]["logits_dense"].shape == (12, 23)  # untied from token_embedder
    assert params["token_embedder"]["embedding"].shape == (23, 12)
    every_layer = TINY.replace(moe=TINY.moe.replace(encoder_sparse_every=1, decoder_sparse_every=0))
    assert every_layer.num_sparse_layers(decoder=False) == 2 and every_layer.num_sparse_layers(decoder=True) == 0


def _init_cache(module, params, encoded, encoder_tokens, max_decode_length):
    _, variables = module.apply(
        {"params": params}, encoded, encoder_tokens, max_decode_length=max_decode_length, mutable=["cache"],
        method=module.init_cache,
    )
    return variables["cache"]


def _encode(module, params, encoder_tokens):
    return module.apply({"params": params}, encoder_tokens, method=module.encode)


@pytest.fixture(scope="session")
def tiny_cache(tiny):
    """(encoded [B, S, D], init_cache's cache for 5 steps) of ENCODER_TOKENS, jitted once."""
    module, params, _ = tiny

    @jax.jit
    def encode_and_cache(tokens):
        encoded = _encode(module, params, tokens)
        return encoded, _init_cache(module, params, encoded, tokens, 5)

    return encode_and_cache(ENCODER_TOKENS)


def test_cached_decoding_equals_full_forward(tiny, tiny_cache):
    """Steps of 2 beams per sentence over a cache made for the 3 sentences equal the full pass."""
    module, params, forward = tiny
    beams = 2
    # Beam 1 follows a different prefix, so a beam read against the wrong sentence or beam fails.
    decoder_inputs = jnp.stack([DECODER_INPUTS, DECODER_INPUTS[:, ::-1].at[:, 0].set(0)], axis=1).reshape(6, 5)  # [B*K, T]
    tiled_encoder_tokens = jnp.repeat(ENCODER_TOKENS, beams, axis=0)  # [B*K, S]
    all_real = jnp.ones_like(decoder_inputs)
    full = forward(tiled_encoder_tokens, decoder_inputs, (tiled_encoder_tokens > 0).astype(jnp.int32), all_real)
    assert full.dtype == jnp.float32 and full.shape == (6, 5, 23)
    step_cache, memory_cache = network.split_cache(tiny_cache[1])
    # Only the self-attention cache follows the beams; the cross-attention cache keeps one row per sentence.
    step_cache = jax.tree.map(lambda leaf: jnp.repeat(leaf, beams, axis=0) if leaf.ndim else leaf, step_cache)
    step = jax.jit(
        lambda step_cache, token: module.apply(
            {"params": params, "cache": network.merge_cache(step_cache, memory_cache)}, None, ENCODER_TOKENS, token,
            decode=True, max_decode_length=5, mutable=["cache"], method=module.decode,
        )
    )
    steps = []
    for t in range(5):
        logits, mutated = step(step_cache, decoder_inputs[:, t : t + 1])
        step_cache, unchanged_memory = network.split_cache(mutated["cache"])
        steps.append(logits)
    assert_close_float32(jnp.concatenate(steps, axis=1), full, terms=15 * 5)  # dot products up to H*K = 15, 5 layers
    jax.tree.map(np.testing.assert_array_equal, unchanged_memory, memory_cache)


def test_cross_attention_cache_is_the_projected_encoder_output(tiny, tiny_cache):
    _, params, _ = tiny
    encoded, cache = tiny_cache  # [B, S, D]
    step_cache, memory_cache = network.split_cache(cache)
    for i in range(TINY.num_decoder_layers):
        kernels = params["decoder"][f"layers_{i}"][network.CROSS_ATTENTION]
        cached = memory_cache["decoder"][f"layers_{i}"][network.CROSS_ATTENTION]
        assert set(cached) == {"cached_key", "cached_value"}
        for name in ("key", "value"):
            expected = (encoded @ kernels[name]).reshape(3, 7, TINY.num_heads, TINY.head_dim)  # [B, S, H, K]
            expected = expected.transpose(0, 2, 1, 3)  # [B, H, S, K]: the layout attention reads
            assert_close_float32(cached[f"cached_{name}"], expected, terms=TINY.d_model)
        self_cache = step_cache["decoder"][f"layers_{i}"]["self_attention"]
        assert self_cache["cached_key"].shape == (3, TINY.num_heads, 5, TINY.head_dim)
        assert not np.any(self_cache["cached_key"]) and int(self_cache["cache_index"]) == 0
    assert network.CROSS_ATTENTION not in str(jax.tree_util.tree_structure(step_cache))


def test_cached_steps_need_the_cross_attention_cache(tiny):
    module, params, _ = tiny
    cache = jax.eval_shape(lambda: _init_cache(module, params, _encode(module, params, ENCODER_TOKENS), ENCODER_TOKENS, 5))
    step_cache, _ = network.split_cache(jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), cache))
    with pytest.raises(ValueError, match="cross-attention cache is empty: create it with Transformer.init_cache"):
        module.apply(
            {"params": params, "cache": step_cache}, None, ENCODER_TOKENS, DECODER_INPUTS[:, :1],
            decode=True, max_decode_length=5, mutable=["cache"], method=module.decode,
        )


def test_packed_sequences_equal_each_alone(tiny):
    _, _, forward = tiny
    first_src, first_tgt = [4, 9, 17, 1], [0, 6]
    second_src, second_tgt = [8, 5, 1], [0, 13, 2]
    # Row 0 packs both examples; rows 1 and 2 hold each alone, padded to the same shape.
    encoder_tokens = jnp.array([first_src + second_src, first_src + [0] * 3, second_src + [0] * 4])  # [3, 7]
    decoder_tokens = jnp.array([first_tgt + second_tgt, first_tgt + [0] * 3, second_tgt + [0] * 2])  # [3, 5]
    encoder_segments = jnp.array([[1] * 4 + [2] * 3, [1] * 4 + [0] * 3, [1] * 3 + [0] * 4])
    decoder_segments = jnp.array([[1] * 2 + [2] * 3, [1] * 2 + [0] * 3, [1] * 3 + [0] * 2])
    logits = forward(encoder_tokens, decoder_tokens, encoder_segments, decoder_segments)  # [3, 5, V]
    # packed and alone, a token's attention sums run over other lengths: dot products up to 15, 5 layers
    assert_close_float32(logits[0, :2], logits[1, :2], terms=15 * 5)
    assert_close_float32(logits[0, 2:], logits[2, :3], terms=15 * 5)
    # Packing must matter at all: without segment ids the second example sees the first.
    unpacked = forward(encoder_tokens, decoder_tokens, (encoder_tokens > 0).astype(jnp.int32), jnp.ones_like(decoder_tokens))
    assert np.abs(unpacked[0, 2:] - logits[2, :3]).max() > 1e-3


def test_bfloat16_keeps_params_logits_and_router_float32(tiny):
    _, params, _ = tiny
    # The compute dtype does not change the parameters: the float32 ones run in bfloat16.
    module = network.Transformer(dataclasses.replace(TINY, dtype="bfloat16"))
    variables = {"params": params}
    logits, state = jax.jit(
        lambda variables: module.apply(
            variables,
            ENCODER_TOKENS,
            DECODER_INPUTS,
            capture_intermediates=lambda mdl, _: mdl.name in ("router", "encoder_norm"),
            mutable=["intermediates"],
        )
    )(variables)
    assert logits.dtype == jnp.float32
    assert state["intermediates"]["encoder"]["encoder_norm"]["__call__"][0].dtype == jnp.bfloat16
    router = state["intermediates"]["encoder"]["layers_1"]["moe"]["router"]["__call__"][0]
    assert router.route.combine_weights.dtype == jnp.float32 and router.router_z_loss.dtype == jnp.float32
    assert state["intermediates"]["decoder"]["layers_1"]["moe"]["router_z_loss"][0].dtype == jnp.float32


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(moe=dict(router="top3")), "bind a router object"),
        (dict(moe=dict(dispatch="scatter")), "unknown dispatch 'scatter'"),
        (dict(moe=dict(router=routing.ExpertsChooseRouter())), "set decoder_sparse_every=0"),
        (dict(dtype="float16"), "dtype='float16' is unknown"),
        (dict(activations=("gelu", "swish")), "unknown activation 'swish'"),
        (dict(moe=dict(expert_activations=("swish",))), "unknown activation 'swish'"),
        (dict(moe=dict(num_experts=-1)), "num_experts=-1 must be >= 0"),
    ],
)
def test_bad_config_fails_at_construction_in_one_line(change, message):
    with pytest.raises(ValueError, match=message) as info:
        if "moe" in change:
            change = {**change, "moe": TINY.moe.replace(**change["moe"])}
        TINY.replace(**change)
    assert "\n" not in str(info.value)


def test_experts_choose_allowed_in_encoder_only():
    config = TINY.replace(moe=TINY.moe.replace(router=routing.ExpertsChooseRouter(), decoder_sparse_every=0))
    assert config.num_sparse_layers(decoder=True) == 0 and config.num_sparse_layers(decoder=False) == 1


def test_cache_stages_grow_by_the_factor_up_to_the_decode_length():
    assert network.FIRST_CACHE_STAGE == 64 and network.CACHE_STAGE_FACTOR == 4  # the values below assume these
    assert network.cache_stages(20) == (20,)
    assert network.cache_stages(64) == (64,)
    assert network.cache_stages(128) == (64, 128)
    assert network.cache_stages(256) == (64, 256)
    assert network.cache_stages(512) == (64, 256, 512)


def test_grow_cache_pads_self_attention_with_empty_positions(tiny, tiny_cache):
    _, cache = tiny_cache
    step_cache, _ = network.split_cache(cache)
    assert network.cache_length(step_cache) == 5
    grown = network.grow_cache(step_cache, 8)
    assert network.cache_length(grown) == 8
    for i in range(TINY.num_decoder_layers):
        before = step_cache["decoder"][f"layers_{i}"]["self_attention"]
        after = grown["decoder"][f"layers_{i}"]["self_attention"]
        assert after["cached_key"].shape == (3, TINY.num_heads, 8, TINY.head_dim)
        np.testing.assert_array_equal(after["cached_value"][:, :, :5], before["cached_value"])
        assert not np.any(after["cached_key"][:, :, 5:])
        assert int(after["cache_index"]) == int(before["cache_index"])
