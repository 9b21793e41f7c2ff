"""Routers, expert capacity and the two auxiliary losses, checked against hand-derived values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtmoe import routing

# ---------------------------------------------------------------------------
# Expert capacity: ceil(k * cf * tokens / experts), at least min, at most tokens
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tokens, experts, factor, minimum, k, expected",
    [
        (10, 4, 1.0, 0, 1, 3),  # 2.5 rounds up (T5X's round() would give 2 and drop a token of a balanced group)
        (32, 8, 1.25, 0, 1, 5),  # exactly 5.0: float noise must not push it to 6
        (7, 3, 2.0, 0, 1, 5),  # 4.67 -> 5
        (7, 3, 2.0, 6, 1, 6),  # min_expert_capacity wins
        (3, 5, 1.25, 4, 1, 3),  # capped at the group size: an expert cannot get a token twice
        (10, 4, 1.0, 0, 2, 5),  # top-2 doubles the assignments
        (4096, 128, 1.25, 4, 1, 40),
    ],
)
def test_expert_capacity_rounding_is_pinned(tokens, experts, factor, minimum, k, expected):
    capacity = routing.expert_capacity(
        tokens_per_group=tokens, num_experts=experts, capacity_factor=factor, min_expert_capacity=minimum,
        num_selected_experts=k,
    )
    assert capacity == expected


def test_expert_capacity_zero_is_an_error():
    with pytest.raises(ValueError, match="raise the capacity factor"):
        routing.expert_capacity(tokens_per_group=8, num_experts=4, capacity_factor=0.0, min_expert_capacity=0)


# ---------------------------------------------------------------------------
# Load-balancing loss (Switch eq. 4) and router z-loss
# ---------------------------------------------------------------------------


def test_balanced_routing_loss_is_one():
    probs = jnp.full((2, 10, 5), 0.2)
    expert = jnp.broadcast_to(jnp.arange(10) % 5, (2, 10))  # each expert chosen twice per group
    assert float(routing.load_balancing_loss(probs, expert, num_experts=5)) == pytest.approx(1.0)


def test_collapsed_routing_loss_is_num_experts():
    probs = jax.nn.one_hot(jnp.zeros((2, 7), jnp.int32), 5)  # every token sure of expert 0
    expert = jnp.zeros((2, 7), jnp.int32)
    assert float(routing.load_balancing_loss(probs, expert, num_experts=5)) == pytest.approx(5.0)


def test_load_balancing_loss_ignores_padding():
    # Real tokens balanced over 3 experts; padding tokens all collapsed on expert 2.
    expert = jnp.array([[0, 1, 2, 2, 2]])
    probs = jnp.array([[[1 / 3] * 3] * 3 + [[0.0, 0.0, 1.0]] * 2])
    mask = jnp.array([[True, True, True, False, False]])
    assert float(routing.load_balancing_loss(probs, expert, num_experts=3, padding_mask=mask)) == pytest.approx(1.0)
    # Counting padding: f = P = (1/5, 1/5, 3/5) -> 3 * (0.04 + 0.04 + 0.36) = 1.32.
    assert float(routing.load_balancing_loss(probs, expert, num_experts=3)) == pytest.approx(1.32)


def test_top2_balanced_loss_is_one():
    probs = jnp.full((1, 6, 3), 1 / 3)
    expert = jnp.stack([jnp.arange(6) % 3, (jnp.arange(6) + 1) % 3], axis=-1)[None]  # [1, 6, 2]
    assert float(routing.load_balancing_loss(probs, expert, num_experts=3)) == pytest.approx(1.0)


def test_router_z_loss_hand_value_and_padding():
    # Zero logits over 5 experts: logsumexp = log 5 for every token.
    logits = jnp.zeros((2, 3, 5)).at[1, 2].set(100.0)  # one padding token with huge logits
    mask = jnp.ones((2, 3), bool).at[1, 2].set(False)
    assert float(routing.router_z_loss(logits, padding_mask=mask)) == pytest.approx(math.log(5) ** 2, rel=1e-6)
    assert float(routing.router_z_loss(logits)) > 1000.0


# ---------------------------------------------------------------------------
# Routers
# ---------------------------------------------------------------------------


def route_with(router, x, **kwargs):
    """(variables, apply) of `router` over x: <float>[G, S, D] with 3 experts and capacity 2."""
    variables = router.init(jax.random.PRNGKey(1), x, num_experts=3, expert_capacity=2)
    return variables, lambda inputs, **more: router.apply(variables, inputs, num_experts=3, expert_capacity=2,
                                                          **kwargs, **more)


def test_router_is_float32_under_bfloat16_and_picks_like_float32():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 5)).astype(jnp.bfloat16)
    variables, run = route_with(routing.TokensChooseRouter(num_selected_experts=2), x)
    assert variables["params"]["kernel"].value.dtype == jnp.float32
    out16, out32 = run(x), run(x.astype(jnp.float32))
    assert out16.route.combine_weights.dtype == jnp.float32
    assert out16.aux_loss.dtype == jnp.float32 and out16.router_z_loss.dtype == jnp.float32
    for a, b in zip(jax.tree.leaves(out16), jax.tree.leaves(out32)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_jitter_is_multiplicative_within_eps_and_only_when_asked():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 5, 7))
    variables, run = route_with(routing.TokensChooseRouter(), x)

    kernel = np.asarray(variables["params"]["kernel"].value)
    clean = run(x).route.combine_weights
    noisy = run(x, jitter_noise=0.01, rngs={"dropout": jax.random.PRNGKey(2)}).route.combine_weights
    assert not np.allclose(noisy, clean)
    # Both pick the same expert here; its probability moves by at most the logit shift.
    bound = 0.01 * np.abs(np.asarray(x))[..., None] * np.abs(kernel)[None, None]  # [1, 5, 7, 3]
    assert np.all(np.abs(np.log(np.asarray(noisy)) - np.log(np.asarray(clean))) <= 2 * bound.sum(axis=(2, 3))[..., None])


def test_routers_own_their_auxiliary_loss():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 5))
    tokens = route_with(routing.TokensChooseRouter(), x)[1](x)
    experts = route_with(routing.ExpertsChooseRouter(), x)[1](x)
    assert float(tokens.aux_loss) >= 1.0  # Switch loss: 1.0 when perfectly balanced, more otherwise
    assert float(experts.aux_loss) == 0.0  # every expert fills its buffer: nothing to balance
    assert float(tokens.router_z_loss) == pytest.approx(float(experts.router_z_loss))  # same kernel init, same logits
    assert experts.route.token_index.shape == (2, 3, 2)  # [G, E, C]


@pytest.mark.parametrize(
    "router, layer, message",
    [
        (routing.ExpertsChooseRouter(), dict(is_decoder=True, dispatch="sort"), "set decoder_sparse_every=0"),
        (routing.ExpertsChooseRouter(), dict(is_decoder=False, dispatch="dropless"), "use dispatch='sort'"),
        (routing.TokensChooseRouter(num_selected_experts=4), dict(is_decoder=False, dispatch="sort"), "between 1"),
    ],
)
def test_router_checks_say_what_to_change(router, layer, message):
    with pytest.raises(ValueError, match=message):
        router.check(num_experts=3, **layer)
    routing.TokensChooseRouter(num_selected_experts=2).check(num_experts=3, is_decoder=True, dispatch="dropless")


def test_tokens_choose_top2_order_and_padding():
    probs = jnp.array([[[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]])  # [1, 2, 3]
    route = routing.tokens_choose(probs, num_selected_experts=2, padding_mask=jnp.array([[True, False]]))
    np.testing.assert_array_equal(route.expert_index, [[[1, 2], [0, 2]]])
    np.testing.assert_allclose(route.combine_weights, [[[0.6, 0.3], [0.0, 0.0]]])
    np.testing.assert_array_equal(route.valid, [[[True, True], [False, False]]])


def test_experts_choose_picks_top_tokens_and_never_prefers_padding():
    probs = jnp.array([[[0.9, 0.1], [0.2, 0.8], [0.95, 0.05], [0.6, 0.4]]])  # [1, S=4, E=2]
    mask = jnp.array([[True, True, False, True]])
    route = routing.experts_choose(probs, expert_capacity=3, padding_mask=mask)
    # Expert 0 ranks real tokens 0 (0.9), 3 (0.6), 1 (0.2); padding token 2 (0.95) is never taken over them.
    np.testing.assert_array_equal(route.token_index[0, 0], [0, 3, 1])
    np.testing.assert_array_equal(route.token_index[0, 1], [1, 3, 0])
    assert bool(route.valid.all())
    route = routing.experts_choose(probs, expert_capacity=4, padding_mask=mask)
    assert int(route.token_index[0, 0, 3]) == 2 and not bool(route.valid[0, 0, 3])
    assert float(route.combine_weights[0, 0, 3]) == 0.0


def test_top1_tokens_choose_matches_top_k_ties_and_gradient_included():
    # top-1 takes argmax rather than lax.top_k; both pick the first of tied experts.
    probs = jnp.array([[[0.1, 0.4, 0.4, 0.1], [0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]]])  # [G=1, S=3, E=4]
    route = routing.tokens_choose(probs, num_selected_experts=1)
    np.testing.assert_array_equal(route.expert_index[..., 0], [[1, 0, 0]])
    np.testing.assert_allclose(route.combine_weights[..., 0], [[0.4, 0.7, 0.25]])

    def chosen_weight_sum(p, pick):
        return jnp.sum(pick(p) * jnp.arange(1.0, 4.0)[None, :, None])

    def top1(p):
        return routing.tokens_choose(p, num_selected_experts=1).combine_weights

    grad_argmax = jax.grad(chosen_weight_sum)(probs, top1)
    grad_top_k = jax.grad(chosen_weight_sum)(probs, lambda p: jax.lax.top_k(p, 1)[0])
    np.testing.assert_allclose(grad_argmax, grad_top_k)
    np.testing.assert_allclose(grad_argmax[0, :, :2], [[0.0, 1.0], [2.0, 0.0], [3.0, 0.0]])
