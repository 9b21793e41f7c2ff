"""The MoE layer: dispatch paths against a slow per-expert loop, overflow, padding, metrics, errors.

Sizes are small and pairwise different (batch 3, length 4, d_model 7, d_ff 5,
experts 2/3) so that a transposed axis fails. 12 tokens with max_group_size 6
make 2 groups of 6.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtmoe import moe, moe_config, routing
from mtmoe.moe import MoeLayer
from mtmoe.moe_config import MoeConfig
from tests.tolerances import assert_close_float32

BATCH, LENGTH, D_MODEL, D_FF, EXPERTS = 3, 4, 7, 5, 3
GROUP = 6


LAYER_FIELDS = ("activations", "dtype", "is_decoder")


def make_layer(**overrides) -> MoeLayer:
    """A layer of D_FF-wide experts; `overrides` name MoeConfig fields or the layer's own."""
    layer = {name: overrides.pop(name) for name in LAYER_FIELDS if name in overrides}
    config = dict(
        num_experts=EXPERTS, max_group_size=GROUP, min_expert_capacity=1, eval_capacity_factor=1.0, jitter_noise=0.0,
    )
    config.update(overrides)
    return MoeLayer(config=MoeConfig(**config), d_ff=D_FF, **layer)


def top(k):
    return routing.TokensChooseRouter(num_selected_experts=k)


@pytest.fixture(scope="session")
def inputs():
    return jax.random.normal(jax.random.PRNGKey(0), (BATCH, LENGTH, D_MODEL))


@pytest.fixture(scope="session")
def padding_mask():
    lengths = jnp.array([4, 2, 3])
    return jnp.arange(LENGTH)[None] < lengths[:, None]  # [3, 4]


@pytest.fixture(scope="session")
def params(inputs):
    return make_layer().init(jax.random.PRNGKey(1), inputs)["params"]


@pytest.fixture(scope="session")
def collapsed_params(params):
    """Router that sends every token to expert 0 (input feature 0 is set to 1 below)."""
    kernel = jnp.zeros((D_MODEL, EXPERTS)).at[0, 0].set(12.0)
    return {**params, "router": {"kernel": params["router"]["kernel"].replace_boxed(kernel)}}


def collapsible(x):
    return x.at[..., 0].set(1.0)


def unbox(tree):
    return jax.tree.map(lambda p: p.value if hasattr(p, "value") else p, tree, is_leaf=lambda p: hasattr(p, "value"))


def apply(layer, params, x, **kwargs):
    out, state = layer.apply({"params": params}, x, mutable=["intermediates"], **kwargs)
    metrics = {name: float(state["intermediates"][name][0]) for name in moe.METRIC_NAMES}
    return np.asarray(out), metrics


def reference_loop(params, x, mask, *, num_selected, capacity):
    """Slow per-group, per-token, per-expert Switch layer in float64 numpy (tokens choose)."""
    p = unbox(params)
    kernel = np.asarray(p["router"]["kernel"], np.float64)
    wi_0, wi_1, wo = (np.asarray(p[n], np.float64) for n in ("wi_0", "wi_1", "wo"))
    tokens = np.asarray(x, np.float64).reshape(-1, GROUP, D_MODEL)
    real = np.ones(tokens.shape[:2], bool) if mask is None else np.asarray(mask).reshape(-1, GROUP)
    out = np.zeros_like(tokens)

    def gelu(v):  # tanh approximation, as T5 v1.1
        return 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3)))

    for g in range(tokens.shape[0]):
        logits = tokens[g] @ kernel
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        choices = np.argsort(-probs, axis=-1, kind="stable")[:, :num_selected]
        used = np.zeros(EXPERTS, int)
        for k in range(num_selected):  # every first choice before any second choice
            for s in range(GROUP):  # earlier tokens first
                e = choices[s, k]
                if not real[g, s] or used[e] >= capacity:
                    continue
                used[e] += 1
                h = gelu(tokens[g, s] @ wi_0[e]) * (tokens[g, s] @ wi_1[e])
                out[g, s] += probs[s, e] * (h @ wo[e])
    return out.reshape(x.shape)


# ---------------------------------------------------------------------------
# Paths agree with the loop and with each other
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dispatch", ["einsum", "sort"])
@pytest.mark.parametrize("k", [1, 2])
def test_capacity_paths_match_reference_loop_with_overflow(params, inputs, padding_mask, dispatch, k):
    # Here and below: float32 against the float64 loop, a token's output through contractions of
    # D_MODEL then D_FF terms, so the tolerance is in eps32 of the output's size (tests/tolerances.py).
    layer = make_layer(dispatch=dispatch, router=top(k))
    out, metrics = apply(layer, params, inputs, padding_mask=padding_mask)
    capacity = 2 * k  # ceil(k * 1.0 * 6 / 3)
    expected = reference_loop(params, inputs, padding_mask, num_selected=k, capacity=capacity)
    assert_close_float32(out, expected, terms=D_MODEL + D_FF)
    assert np.all(out[~np.asarray(padding_mask)] == 0.0)
    if k == 1:
        assert metrics["fraction_tokens_dropped"] > 0.0  # the case really overflows


def test_dropless_matches_reference_loop_when_nothing_overflows(params, inputs, padding_mask):
    out, metrics = apply(make_layer(dispatch="dropless", router=top(2)), params, inputs, padding_mask=padding_mask)
    expected = reference_loop(params, inputs, padding_mask, num_selected=2, capacity=GROUP)
    assert_close_float32(out, expected, terms=D_MODEL + D_FF)
    assert metrics["fraction_tokens_dropped"] == 0.0


def test_all_paths_equal_without_overflow_including_metrics(params, inputs, padding_mask):
    results = {
        d: apply(make_layer(dispatch=d, eval_capacity="drop_free"), params, inputs, padding_mask=padding_mask)
        for d in moe_config.DISPATCH_TYPES
    }
    for d in ("sort", "dropless"):
        assert_close_float32(results[d][0], results["einsum"][0], terms=D_MODEL + D_FF)
        assert results[d][1] == pytest.approx(results["einsum"][1], rel=1e-6)


def test_gradients_equal_across_paths(params, inputs, padding_mask):
    cotangent = jax.random.normal(jax.random.PRNGKey(3), inputs.shape)

    def grads(dispatch, drop_free):
        layer = make_layer(dispatch=dispatch, eval_capacity="drop_free" if drop_free else "factor")

        def loss(p, x):
            out, state = layer.apply({"params": p}, x, padding_mask=padding_mask, mutable=["intermediates"])
            return jnp.sum(out * cotangent) + state["intermediates"]["aux_loss"][0]

        return jax.grad(loss, argnums=(0, 1))(params, inputs)

    def close(a, b):
        for u, v in zip(jax.tree.leaves(unbox(a)), jax.tree.leaves(unbox(b))):
            assert_close_float32(u, v, terms=BATCH * LENGTH)  # the paths sum the 12 tokens' gradients in other orders

    close(grads("sort", False), grads("einsum", False))  # with overflow
    einsum_all = grads("einsum", True)
    close(grads("sort", True), einsum_all)
    close(grads("dropless", True), einsum_all)
    assert float(jnp.abs(unbox(einsum_all[0])["router"]["kernel"]).sum()) > 0.0  # the router learns


@pytest.mark.parametrize("dispatch", ["einsum", "sort"])
def test_experts_choose_paths_match_loop(params, inputs, padding_mask, dispatch):
    layer = make_layer(dispatch=dispatch, router=routing.ExpertsChooseRouter())
    out, metrics = apply(layer, params, inputs, padding_mask=padding_mask)
    p = unbox(params)
    tokens = np.asarray(inputs, np.float64).reshape(-1, GROUP, D_MODEL)
    real = np.asarray(padding_mask).reshape(-1, GROUP)
    expected = np.zeros_like(tokens)
    capacity = 2  # ceil(1.0 * 6 / 3)
    for g in range(tokens.shape[0]):
        logits = tokens[g] @ np.asarray(p["router"]["kernel"], np.float64)
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        for e in range(EXPERTS):
            ranked = [s for s in np.argsort(-probs[:, e], kind="stable") if real[g, s]][:capacity]
            for s in ranked:
                x = tokens[g, s]
                h = np.asarray(jax.nn.gelu(x @ np.asarray(p["wi_0"][e], np.float64))) * (x @ np.asarray(p["wi_1"][e]))
                expected[g, s] += probs[s, e] * (h @ np.asarray(p["wo"][e]))
    assert_close_float32(out, expected.reshape(inputs.shape), terms=D_MODEL + D_FF)
    assert metrics["aux_loss"] == 0.0


# ---------------------------------------------------------------------------
# Capacity: overflow order, padding, drop-free evaluation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dispatch", ["einsum", "sort"])
def test_overflow_drops_the_later_tokens_of_each_group_in_order(collapsed_params, inputs, dispatch):
    layer = make_layer(dispatch=dispatch, min_expert_capacity=4)  # capacity 4 of a group of 6
    out, metrics = apply(layer, collapsed_params, collapsible(inputs))
    per_group = np.abs(out).reshape(-1, GROUP, D_MODEL).sum(-1)  # [G, S]
    assert np.all(per_group[:, :4] > 0.0) and np.all(per_group[:, 4:] == 0.0)
    assert metrics["fraction_tokens_dropped"] == pytest.approx(2 / 6)
    assert metrics["expert_usage"] == pytest.approx(4 / (EXPERTS * 4))
    assert metrics["aux_loss"] == pytest.approx(EXPERTS, rel=1e-3)  # collapsed
    assert metrics["router_confidence"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("dispatch", ["einsum", "sort"])
def test_padding_takes_no_capacity(collapsed_params, inputs, dispatch):
    layer = make_layer(dispatch=dispatch, min_expert_capacity=3)
    mask = jnp.ones((BATCH, LENGTH), bool).at[0, :2].set(False)  # tokens 0 and 1 of group 0 are padding
    out, metrics = apply(layer, collapsed_params, collapsible(inputs), padding_mask=mask)
    per_group = np.abs(out).reshape(-1, GROUP, D_MODEL).sum(-1)
    # Group 0: padding 0-1 get zeros, the next 3 real tokens fill the capacity, token 5 overflows.
    np.testing.assert_array_equal(per_group[0] > 0, [False, False, True, True, True, False])
    np.testing.assert_array_equal(per_group[1] > 0, [True, True, True, False, False, False])
    assert metrics["fraction_tokens_dropped"] == pytest.approx(4 / 10)  # 1 + 3 of 10 real tokens


def test_sown_expert_index_is_the_first_choice_and_minus_one_at_padding(params, inputs, padding_mask):
    _, state = make_layer(router=top(2)).apply({"params": params}, inputs, padding_mask=padding_mask,
                                               mutable=["intermediates"])
    expert_index = np.asarray(state["intermediates"]["expert_index"][0])  # [B, L]
    kernel = np.asarray(unbox(params)["router"]["kernel"])
    expected = np.where(np.asarray(padding_mask), np.argmax(np.asarray(inputs) @ kernel, axis=-1), -1)
    np.testing.assert_array_equal(expert_index, expected)


def test_experts_choose_sown_expert_is_the_largest_pick_or_minus_one():
    # Group of 3 tokens, 2 experts of capacity 1: expert 0 takes token 2 (0.7), expert 1 token 2 (0.9).
    route = routing.ExpertsChooseRouting(
        token_index=jnp.array([[[2], [2]]]), combine_weights=jnp.array([[[0.7], [0.9]]]), valid=jnp.ones((1, 2, 1), bool)
    )
    np.testing.assert_array_equal(route.token_expert(3), [[-1, -1, 1]])


def _busiest_expert_load(params, x):
    """Most tokens any expert gets in any group under top-1 routing (numpy, from the router kernel)."""
    kernel = np.asarray(unbox(params)["router"]["kernel"])
    choice = np.argmax(np.asarray(x).reshape(-1, GROUP, D_MODEL) @ kernel, axis=-1)  # [G, S]
    return max(np.bincount(group, minlength=EXPERTS).max() for group in choice)


@pytest.mark.parametrize("dispatch", ["einsum", "sort", "dropless"])
@pytest.mark.parametrize("collapse", [False, True])
def test_drop_free_equals_every_token_kept_whatever_the_dispatch_and_load(params, collapsed_params, inputs,
                                                                          dispatch, collapse):
    """Drop-free evaluation runs the dropless path on one device, so even with every token on one
    expert (collapse: 6 of 6 in a group, past any capacity factor) nothing is dropped."""
    layer_params, x = (collapsed_params, collapsible(inputs)) if collapse else (params, inputs)
    assert (_busiest_expert_load(layer_params, x) == GROUP) == collapse
    layer = make_layer(dispatch=dispatch, eval_capacity="drop_free")
    jaxpr = str(jax.make_jaxpr(lambda v: layer.apply({"params": layer_params}, v, mutable=["intermediates"]))(x))
    assert "scan[" in jaxpr and "cond[" in jaxpr  # grouped_matmul's loop over blocks (this suite runs on CPU)
    out, metrics = apply(layer, layer_params, x)
    expected = reference_loop(layer_params, x, None, num_selected=1, capacity=GROUP)
    assert_close_float32(out, expected, terms=D_MODEL + D_FF)
    assert metrics["fraction_tokens_dropped"] == 0.0


def test_block_rows_is_the_average_rows_per_expert_as_a_power_of_two_within_8_and_128():
    assert moe.block_rows(128, 8) == 16  # a beam-4 decode step of 32 sentences over 8 experts
    assert moe.block_rows(100, 8) == 16  # 12.5 rows per expert, rounded up to 16
    assert moe.block_rows(4, 8) == 8  # at least 8
    assert moe.block_rows(4096, 8) == 128  # at most 128


def test_block_layout_starts_every_expert_on_a_new_block():
    # Blocks of 2 rows; experts 0..3 have 3, 0, 1 and 2 of the 7 rows (the 7th row is past the groups).
    row_at, position, block_expert, block_used, blocks = moe._block_layout(
        jnp.array([3, 0, 1, 2], jnp.int32), num_rows=7, block=2)
    # At most min(7 rows, ceil((7 + 4 experts x 1 spare row) / 2)) = 6 blocks; 4 are used:
    # [r0 r1] [r2 -] [r3 -] [r4 r5] for experts 0, 0, 2, 3; 7 marks an empty padded row.
    assert blocks == 6
    np.testing.assert_array_equal(row_at, [0, 1, 2, 7, 3, 7, 4, 5, 7, 7, 7, 7])
    np.testing.assert_array_equal(position, [0, 1, 2, 4, 6, 7, 12])  # the last row: past every block
    np.testing.assert_array_equal(block_expert[:4], [0, 0, 2, 3])
    np.testing.assert_array_equal(block_used, [True, True, True, True, False, False])


@pytest.mark.parametrize("sizes", [[5, 0, 2, 1], [0, 0, 8, 0], [1, 1, 1, 1], [3, 0, 0, 2]])
def test_grouped_matmul_multiplies_each_row_by_its_experts_weights_with_gradients(sizes):
    """The CPU blocks against a per-row numpy product; rows past the groups give zeros.
    Gradients against `jax.lax.ragged_dot`'s (what accelerators run)."""
    rows = jax.random.normal(jax.random.PRNGKey(4), (8, 6))
    weights = jax.random.normal(jax.random.PRNGKey(5), (4, 6, 3))
    group_sizes = jnp.array(sizes, jnp.int32)
    expert = np.repeat(np.arange(4), sizes)  # the expert of each row in the groups
    expected = np.zeros((8, 3))
    for i, e in enumerate(expert):
        expected[i] = np.asarray(rows[i], np.float64) @ np.asarray(weights[e], np.float64)
    out, vjp = jax.vjp(lambda r, w: moe.grouped_matmul(r, w, group_sizes), rows, weights)
    assert_close_float32(out, expected, terms=6)
    cotangent = jax.random.normal(jax.random.PRNGKey(6), (8, 3))
    _, ragged_vjp = jax.vjp(lambda r, w: jax.lax.ragged_dot(r, w, group_sizes), rows, weights)
    for got, want in zip(vjp(cotangent), ragged_vjp(cotangent)):
        assert_close_float32(got, want, terms=8)  # dw sums over at most the 8 rows


# ---------------------------------------------------------------------------
# Precision, training mode, params, errors
# ---------------------------------------------------------------------------


def test_bfloat16_layer_routes_like_float32(params, inputs):
    x16 = inputs.astype(jnp.bfloat16)
    layer16 = make_layer(dtype=jnp.bfloat16)
    (out16, state16) = layer16.apply({"params": params}, x16, mutable=["intermediates"], capture_intermediates=True)
    route = state16["intermediates"]["router"]["__call__"][0].route
    assert out16.dtype == jnp.bfloat16
    assert route.combine_weights.dtype == jnp.float32
    _, state32 = make_layer().apply({"params": params}, x16.astype(jnp.float32), mutable=["intermediates"],
                                    capture_intermediates=True)
    route32 = state32["intermediates"]["router"]["__call__"][0].route
    np.testing.assert_array_equal(np.asarray(route.combine_weights), np.asarray(route32.combine_weights))
    np.testing.assert_array_equal(np.asarray(route.expert_index), np.asarray(route32.expert_index))
    for name in ("aux_loss", "router_z_loss", "fraction_tokens_dropped"):
        assert float(state16["intermediates"][name][0]) == float(state32["intermediates"][name][0])


def test_training_mode_uses_rng_and_expert_dropout(params, inputs):
    layer = make_layer(expert_dropout_rate=0.5, jitter_noise=0.01, train_capacity_factor=1.0)
    first, _ = apply(layer, params, inputs, enable_dropout=True, rngs={"dropout": jax.random.PRNGKey(5)})
    again, _ = apply(layer, params, inputs, enable_dropout=True, rngs={"dropout": jax.random.PRNGKey(5)})
    other, _ = apply(layer, params, inputs, enable_dropout=True, rngs={"dropout": jax.random.PRNGKey(6)})
    evaluated, _ = apply(layer, params, inputs)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other) and not np.allclose(first, evaluated)


def test_param_names_shapes_and_logical_axes(inputs):
    variables = make_layer().init(jax.random.PRNGKey(1), inputs)
    boxed = variables["params"]
    assert boxed["router"]["kernel"].names == ("embed", "unmodeled")
    assert boxed["router"]["kernel"].value.shape == (D_MODEL, EXPERTS)
    for name in ("wi_0", "wi_1"):
        assert boxed[name].names == ("expert", "embed", "mlp") and boxed[name].value.shape == (EXPERTS, D_MODEL, D_FF)
    assert boxed["wo"].names == ("expert", "mlp", "embed") and boxed["wo"].value.shape == (EXPERTS, D_FF, D_MODEL)
    # Switch init scale 0.1: std sqrt(0.1 / fan_in).
    assert float(jnp.std(boxed["wi_0"].value)) == pytest.approx(math.sqrt(0.1 / D_MODEL), rel=0.35)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(router=routing.ExpertsChooseRouter(), is_decoder=True), "cannot route the decoder; set decoder_sparse"),
        (dict(router="top1"), "bind a router object"),
        (dict(dispatch="scatter"), "unknown dispatch"),
        (dict(router=top(4)), "between 1 and num_experts"),
        (dict(router=routing.ExpertsChooseRouter(), dispatch="dropless"), "needs TokensChooseRouter"),
        (dict(train_capacity_factor=0.0), "train_capacity_factor must be > 0"),
        (dict(eval_capacity="never_drop"), "unknown eval_capacity"),
        (dict(num_experts=0), "needs num_experts >= 1"),
    ],
)
def test_bad_config_fails_at_construction(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_layer(**overrides)


def test_config_round_trips_through_json_with_its_router():
    import json

    config = MoeConfig(num_experts=4, router=routing.ExpertsChooseRouter(kernel_init_scale=0.2), decoder_sparse_every=0,
                       expert_activations=("relu",))
    again = MoeConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and type(again.router) is routing.ExpertsChooseRouter
    assert config.to_dict()["router"] == {"class": "mtmoe.routing.ExpertsChooseRouter", "kernel_init_scale": 0.2}


def test_group_count_and_whole_groups_error():
    assert moe.num_groups(num_tokens=12, max_group_size=6) == 2
    assert moe.num_groups(num_tokens=12, max_group_size=5) == 3  # 3 groups of 4
    assert moe.num_groups(num_tokens=5, max_group_size=4096) == 1
    with pytest.raises(ValueError, match="change the batch size, the length or max_group_size"):
        moe.num_groups(num_tokens=13, max_group_size=4)


@pytest.mark.parametrize("num_experts, rows", [(8, 128), (8, 40), (8, 2), (6, 50)])
def test_expert_matmul_cpu_loop_equals_batched_dot_with_gradients(num_experts, rows):
    # On CPU `expert_matmul` loops over experts, one or a few per call; accelerators use one batched dot.
    # The cases cover 1, 4, all 8 and 3 (of 6) experts per call. Both must agree, gradients included.
    x = jax.random.normal(jax.random.PRNGKey(7), (num_experts, rows, 16))
    w = jax.random.normal(jax.random.PRNGKey(8), (num_experts, 16, 24))
    cotangent = jax.random.normal(jax.random.PRNGKey(9), (num_experts, rows, 24))
    loop_out, loop_vjp = jax.vjp(moe._expert_matmul_loop, x, w)
    dot_out, dot_vjp = jax.vjp(lambda a, b: jnp.einsum("emk,ekn->emn", a, b), x, w)
    assert_close_float32(loop_out, dot_out, terms=16)
    for loop_grad, dot_grad in zip(loop_vjp(cotangent), dot_vjp(cotangent)):
        assert_close_float32(loop_grad, dot_grad, terms=max(24, rows))  # dx contracts 24 outputs, dw the rows


def test_experts_per_call_reaches_the_minimum_rows_with_a_divisor_of_the_expert_count():
    assert moe.MIN_ROWS_PER_CALL == 128
    assert moe.experts_per_call(8, 1280) == 1  # one expert already has 1280 rows
    assert moe.experts_per_call(128, 80) == 2  # 160 rows a call
    assert moe.experts_per_call(256, 40) == 4  # 160 rows
    assert moe.experts_per_call(6, 50) == 3  # 2 x 50 = 100 is too few, 3 divides 6: 150 rows
    assert moe.experts_per_call(5, 30) == 5  # 5 is prime: all five at once (150 rows)
    assert moe.experts_per_call(4, 2) == 4  # 8 rows in all: one call


