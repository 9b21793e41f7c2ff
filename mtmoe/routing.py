"""Routers for the Switch MoE layer, their routing decisions, auxiliary losses and expert capacity.

Axis letters used in shape comments:
  G groups (`expert_group`), S tokens per group, D d_model (`embed`),
  E experts, K experts chosen per token, C expert capacity (tokens per expert).

A router is a Flax module that `moe.MoeLayer` takes through its `MoeConfig`
(`MoeConfig.router`, bound in gin as `ROUTER = @routing.TokensChooseRouter()`).
The base class `Router` owns what every router shares: the float32 kernel
`router/kernel`, multiplicative jitter and the router z-loss. A subclass says
who picks whom (`route`), which layers it may route (`check`) and its
load-balancing loss (`auxiliary_loss`); a new router is one such class and one
gin line.

Everything a router computes is float32 whatever the activation dtype (Switch
Transformer "selective precision"): the input is cast, the kernel is a float32
parameter used as float32, and the matmul, softmax, top-k and both losses run
in float32. This is code, not a default: no field turns it off.

The two routers, as in Flaxformer:
- tokens choose (`TokensChooseRouter`): each token picks its top-K experts. K=1
  is the Switch router. Priority for expert capacity is choice-major, then token
  order inside the group: every token's first choice is placed before any
  token's second choice, and earlier tokens before later ones. Which choices fit
  is decided by the dispatch code in `moe.py`.
- experts choose (`ExpertsChooseRouter`): each expert picks its top-C tokens of
  the group. It reads every token of the group, future ones included, so it is
  allowed only in the encoder.
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple, Union

import jax
import jax.numpy as jnp
from flax import linen as nn

from mtmoe.layers import param_with_axes, variance_scaling

Array = jax.Array


def expert_capacity(
    *,
    tokens_per_group: int,
    num_experts: int,
    capacity_factor: float,
    min_expert_capacity: int,
    num_selected_experts: int = 1,
) -> int:
    """Slots per expert per group.

    capacity = ceil(num_selected_experts * capacity_factor * tokens_per_group / num_experts),
    raised to `min_expert_capacity`, then capped at `tokens_per_group` (an expert
    never receives a token twice, so more slots could only stay empty).
    We round up (T5X uses `int(round(...))`) so that capacity_factor 1.0 always
    fits a perfectly balanced group: 10 tokens over 4 experts give 3 slots, not 2.
    """
    if tokens_per_group < 1 or num_experts < 1:
        raise ValueError(f"tokens_per_group ({tokens_per_group}) and num_experts ({num_experts}) must be >= 1")
    # The product is formed in float64 and nudged down by a relative 1e-9 so
    # that 1.25 * 32 / 8 is exactly 5, not 5.000000000000001 -> 6.
    wanted = num_selected_experts * capacity_factor * tokens_per_group / num_experts
    capacity = max(math.ceil(wanted * (1.0 - 1e-9)), min_expert_capacity)
    capacity = min(capacity, tokens_per_group)
    if capacity < 1:
        raise ValueError(
            f"expert capacity is {capacity} for {tokens_per_group} tokens per group over {num_experts} experts at "
            f"capacity factor {capacity_factor}: raise the capacity factor, max_group_size or min_expert_capacity"
        )
    return capacity


class TokensChooseRouting(NamedTuple):
    """Which experts each token picked (capacity not yet applied).

    expert_index: <int32>[G, S, K] chosen experts, best first.
    combine_weights: <float32>[G, S, K] router probability of each choice (0 for padding).
    valid: <bool>[G, S, K] False for padding tokens, which take no capacity.
    """

    expert_index: Array
    combine_weights: Array
    valid: Array

    def token_expert(self) -> Array:
        """<int32>[G, S] each token's first choice; -1 at padding."""
        return jnp.where(self.valid[..., 0], self.expert_index[..., 0], -1)


class ExpertsChooseRouting(NamedTuple):
    """Which tokens each expert picked.

    token_index: <int32>[G, E, C] chosen token positions inside the group, best first.
    combine_weights: <float32>[G, E, C] router probability of each pick (0 where not valid).
    valid: <bool>[G, E, C] False where the pick is a padding token.
    """

    token_index: Array
    combine_weights: Array
    valid: Array

    def token_expert(self, tokens_per_group: int) -> Array:
        """<int32>[G, S] the expert that gave each token its largest weight; -1 where none picked it."""
        groups, num_experts, capacity = self.token_index.shape
        weight = jnp.where(self.valid, self.combine_weights, -1.0)  # [G, E, C]
        expert = jnp.broadcast_to(jnp.arange(num_experts)[None, :, None], self.token_index.shape)  # [G, E, C]
        per_expert = jnp.full((groups, tokens_per_group, num_experts), -1.0, jnp.float32).at[
            jnp.arange(groups)[:, None, None], self.token_index, expert
        ].max(weight)  # [G, S, E]  -1 where expert e did not pick token s
        return jnp.where(jnp.max(per_expert, axis=-1) >= 0.0, jnp.argmax(per_expert, axis=-1), -1).astype(jnp.int32)


Routing = Union[TokensChooseRouting, ExpertsChooseRouting]


class RouterOutput(NamedTuple):
    """What a router returns to the layer.

    route: the routing decision, whose type picks the layer's dispatch.
    aux_loss: <float32>[] the router's load-balancing loss (0 for a router that needs none).
    router_z_loss: <float32>[] ST-MoE z-loss of the router logits.
    """

    route: Routing
    aux_loss: Array
    router_z_loss: Array


def tokens_choose(router_probs: Array, *, num_selected_experts: int, padding_mask: Array | None = None) -> TokensChooseRouting:
    """Top-K tokens-choose routing.

    router_probs: <float32>[G, S, E]; padding_mask: <bool>[G, S] True for real tokens.
    Combine weights are the raw router probabilities of the chosen experts (not
    renormalised over the K choices), as in Switch and Flaxformer.
    """
    if num_selected_experts == 1:
        # Switch routing: argmax is a fused reduction (first index on ties, as top_k); XLA:CPU's
        # TopK custom call grows costly with the number of experts.
        expert_index = jnp.argmax(router_probs, axis=-1)[..., None]  # [G, S, 1]
        weights = jnp.take_along_axis(router_probs, expert_index, axis=-1)  # [G, S, 1]
    else:
        weights, expert_index = jax.lax.top_k(router_probs, num_selected_experts)  # [G, S, K] each
    if padding_mask is None:
        valid = jnp.ones(expert_index.shape, jnp.bool_)  # [G, S, K]
    else:
        valid = jnp.broadcast_to(padding_mask[..., None], expert_index.shape)  # [G, S, K]
    weights = jnp.where(valid, weights, 0.0)
    return TokensChooseRouting(expert_index.astype(jnp.int32), weights, valid)


def experts_choose(router_probs: Array, *, expert_capacity: int, padding_mask: Array | None = None) -> ExpertsChooseRouting:
    """Experts-choose routing (Zhou et al. 2022): expert e takes its top-C tokens.

    router_probs: <float32>[G, S, E]; padding_mask: <bool>[G, S]. Padding tokens
    rank below every real token; if an expert still picks one (capacity larger than
    the real tokens) the pick is marked not valid and carries weight 0.
    """
    scores = jnp.swapaxes(router_probs, 1, 2)  # [G, E, S]
    if padding_mask is not None:
        # Probabilities are >= 0, so -1 puts padding below every real token.
        scores = jnp.where(padding_mask[:, None, :], scores, -1.0)
    weights, token_index = jax.lax.top_k(scores, expert_capacity)  # [G, E, C] each
    valid = weights >= 0.0
    weights = jnp.where(valid, weights, 0.0)
    return ExpertsChooseRouting(token_index.astype(jnp.int32), weights, valid)


def _masked_mean(values: Array, mask: Array | None, axis) -> Array:
    """Mean of float32 `values` over `axis`, counting only where `mask`."""
    if mask is None:
        return jnp.mean(values, axis=axis, dtype=jnp.float32)
    mask = mask.astype(jnp.float32)
    total = jnp.sum(values * mask, axis=axis, dtype=jnp.float32)
    return total / jnp.maximum(jnp.sum(mask, axis=axis), 1.0)


def load_balancing_loss(
    router_probs: Array, expert_index: Array, *, num_experts: int, padding_mask: Array | None = None
) -> Array:
    """Switch Transformer eq. 4: N * sum_i f_i * P_i, averaged over groups.

    router_probs: <float32>[G, S, E]; expert_index: <int>[G, S] or [G, S, K];
    padding_mask: <bool>[G, S] True for real tokens (padding is left out of f and P).
    f_i is the fraction of the group's routing choices that picked expert i
    (with K choices per token each choice counts 1/K, so f sums to 1) and P_i the
    mean router probability of expert i. 1.0 when perfectly balanced,
    `num_experts` when every token picks one expert with probability 1.
    Returns a float32 scalar.
    """
    if expert_index.ndim == 2:
        expert_index = expert_index[..., None]  # [G, S, 1]
    chosen = jnp.mean(jax.nn.one_hot(expert_index, num_experts, dtype=jnp.float32), axis=2)  # [G, S, E]
    mask = None if padding_mask is None else padding_mask[..., None]  # [G, S, 1]
    fraction_routed = _masked_mean(chosen, mask, axis=1)  # [G, E]
    mean_prob = _masked_mean(router_probs.astype(jnp.float32), mask, axis=1)  # [G, E]
    per_group = num_experts * jnp.sum(fraction_routed * mean_prob, axis=-1)  # [G]
    if padding_mask is None:
        return jnp.mean(per_group)
    # Groups made only of padding say nothing about balance.
    has_tokens = jnp.any(padding_mask, axis=1)  # [G]
    return _masked_mean(per_group, has_tokens, axis=0)


def router_z_loss(router_logits: Array, *, padding_mask: Array | None = None) -> Array:
    """ST-MoE router z-loss: mean over real tokens of logsumexp(logits)^2.

    router_logits: <float32>[G, S, E]; padding_mask: <bool>[G, S]. Returns a float32 scalar.
    """
    log_z = jax.nn.logsumexp(router_logits.astype(jnp.float32), axis=-1)  # [G, S]
    return _masked_mean(jnp.square(log_z), padding_mask, axis=(0, 1))


# ---------------------------------------------------------------------------
# Routers
# ---------------------------------------------------------------------------


class Router(nn.Module):
    """Base of the routers: a float32 linear map from tokens to expert probabilities.

    Param `kernel` float32 [D, E] ('embed', 'unmodeled'), truncated normal with
    variance `kernel_init_scale / D` (Switch init scale 0.1). A subclass
    implements `route` and, where it has them, `check` and `auxiliary_loss`.
    `num_selected_experts` is how many expert slots a token takes on average,
    which scales the expert capacity.
    """

    kernel_init_scale: float = 0.1
    num_selected_experts: ClassVar[int] = 1

    def check(self, *, num_experts: int, is_decoder: bool, dispatch: str) -> None:
        """Raises a one-line ValueError when this router cannot route such a layer."""
        del is_decoder, dispatch
        if not 1 <= self.num_selected_experts <= num_experts:
            raise ValueError(
                f"num_selected_experts={self.num_selected_experts} must be between 1 and num_experts={num_experts}"
            )

    def route(self, router_probs: Array, *, expert_capacity: int, padding_mask: Array | None) -> Routing:
        """The routing decision from <float32>[G, S, E] probabilities; padding_mask <bool>[G, S]."""
        raise NotImplementedError(f"{type(self).__name__} must implement route()")

    def auxiliary_loss(self, router_probs: Array, route: Routing, *, num_experts: int,
                       padding_mask: Array | None) -> Array:
        """<float32>[] load-balancing loss; none by default."""
        del router_probs, route, num_experts, padding_mask
        return jnp.float32(0.0)

    @nn.compact
    def __call__(
        self, inputs: Array, *, num_experts: int, expert_capacity: int, padding_mask: Array | None = None,
        jitter_noise: float = 0.0,
    ) -> RouterOutput:
        """inputs: <any float>[G, S, D]; padding_mask: <bool>[G, S] True for real tokens.

        jitter_noise > 0 multiplies the router input by uniform(1 - jitter_noise,
        1 + jitter_noise) noise (rng stream "dropout"), as Switch does in training.
        """
        x = inputs.astype(jnp.float32)  # [G, S, D]  selective precision: the router is always float32
        if jitter_noise > 0.0:
            noise = jax.random.uniform(self.make_rng("dropout"), x.shape, jnp.float32, 1.0 - jitter_noise,
                                       1.0 + jitter_noise)
            x = x * noise  # [G, S, D]
        kernel = param_with_axes(
            self, "kernel", variance_scaling(self.kernel_init_scale, [0]), (x.shape[-1], num_experts),
            ("embed", "unmodeled"),
        )
        # HIGHEST: on accelerators a float32 matmul may otherwise run in bfloat16 passes.
        logits = jnp.einsum("gsd,de->gse", x, kernel, precision=jax.lax.Precision.HIGHEST)  # [G, S, E]
        probs = jax.nn.softmax(logits, axis=-1)  # [G, S, E]
        route = self.route(probs, expert_capacity=expert_capacity, padding_mask=padding_mask)
        return RouterOutput(
            route=route,
            aux_loss=self.auxiliary_loss(probs, route, num_experts=num_experts, padding_mask=padding_mask),
            router_z_loss=router_z_loss(logits, padding_mask=padding_mask),
        )


class TokensChooseRouter(Router):
    """Each token picks its top-`num_selected_experts` experts (1 = the Switch router);
    Switch load-balancing loss."""

    num_selected_experts: int = 1

    def route(self, router_probs, *, expert_capacity, padding_mask):
        del expert_capacity  # the dispatch applies it
        return tokens_choose(router_probs, num_selected_experts=self.num_selected_experts, padding_mask=padding_mask)

    def auxiliary_loss(self, router_probs, route, *, num_experts, padding_mask):
        return load_balancing_loss(router_probs, route.expert_index, num_experts=num_experts, padding_mask=padding_mask)


class ExpertsChooseRouter(Router):
    """Each expert picks its top-C tokens of the group (Zhou et al. 2022); encoder only.

    Every expert fills its buffer by construction, so there is no load to
    balance and no auxiliary loss (as Flaxformer).
    """

    def check(self, *, num_experts, is_decoder, dispatch):
        super().check(num_experts=num_experts, is_decoder=is_decoder, dispatch=dispatch)
        if is_decoder:
            raise ValueError(
                "ExpertsChooseRouter reads future tokens, so it cannot route the decoder; set decoder_sparse_every=0 "
                "(DECODER_SPARSE_EVERY) or use TokensChooseRouter"
            )
        if dispatch == "dropless":
            raise ValueError("dispatch='dropless' needs TokensChooseRouter; use dispatch='sort' with ExpertsChooseRouter")

    def route(self, router_probs, *, expert_capacity, padding_mask):
        return experts_choose(router_probs, expert_capacity=expert_capacity, padding_mask=padding_mask)
