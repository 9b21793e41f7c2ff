"""The Switch MoE layer: grouping, dispatch to experts, batched expert MLPs, combine, metrics.

Axis letters used in shape comments:
  B batch, L length, D d_model (`embed`), F expert hidden (`mlp`),
  G groups (`expert_group`), S tokens per group, E experts (`expert`),
  C expert capacity (`expert_capacity`), K experts chosen per token,
  A = K * S routing assignments per group, ordered choice-major (a = k * S + s).

Every setting comes from one `MoeConfig` (mtmoe.moe_config), the router
included: a `routing.Router` returns a routing decision and its own losses, and
the type of the decision picks the dispatch below (tokens choose or experts
choose). Tokens of the whole batch are cut into G equal groups of at most
`max_group_size` tokens; capacity and load balancing are per group (Switch,
GShard). Three dispatch paths give the same output (up to float rounding):

- "einsum": GShard one-hot dispatch and combine tensors <dtype>[G, S, E, C]; a
  token's slot in its expert's buffer comes from a cumulative sum over the
  one-hot choices. Costs O(G * S * E * C * D) = O(capacity_factor * S^2 * D) per
  group, what large TPU meshes compile well.
- "sort": each group's assignments are sorted by expert (stable, so each
  expert's tokens stay in priority order); expert e's tokens then occupy the
  sorted range [start_e, start_e + count_e), `searchsorted` gives start_e, a
  token's slot is its rank in the sorted order minus start_e, and both dispatch
  (slot -> token) and combine (token -> slot) are gathers. Costs O(A log A +
  E * C * D): nothing grows with the number of experts beyond the expert
  buffers themselves.
- "dropless": all assignments of the batch sorted by expert and multiplied by
  `grouped_matmul` (`jax.lax.ragged_dot`; on CPU a loop over blocks of rows
  that each belong to one expert); no capacity, no token dropped (tokens-choose
  only). Drop-free evaluation (`eval_capacity="drop_free"`) takes this path on
  one device, whatever `dispatch` says.

Overflowing tokens (and padding) get zeros: the residual connection around the
layer carries them. Capacity priority is every token's first choice before any
second choice, earlier tokens before later ones.

On a mesh of several devices (`partitioning.mesh_context`) whose batch axes
split the groups evenly, the einsum and sort paths run expert-parallel inside
`shard_map` (`dispatch_expert_parallel`): each device routes its own groups and
two all-to-alls over the `expert` mesh axis carry the expert slots to the
devices that hold those experts and back. Otherwise GSPMD partitions the
layer from the logical axis constraints.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from mtmoe import partitioning, routing
from mtmoe.layers import ACTIVATIONS, constrain, param_with_axes, variance_scaling
from mtmoe.moe_config import MoeConfig

Array = jax.Array
DType = Any
ExpertFn = Callable[[Array], Array]  # <dtype>[E, G, C, D] -> <dtype>[E, G, C, D]

METRIC_NAMES = ("aux_loss", "router_z_loss", "fraction_tokens_dropped", "expert_usage", "router_confidence")

EXPERT_AXES = ("expert", "expert_group", "expert_capacity", "embed")
EXPERT_HIDDEN_AXES = ("expert", "expert_group", "expert_capacity", "mlp")
GROUP_AXES = ("batch", "length", "embed")


def num_groups(*, num_tokens: int, max_group_size: int) -> int:
    """Fewest equal groups of at most `max_group_size` tokens that `num_tokens` splits into.

    Raises ValueError when the only whole split leaves groups under half the size
    asked for (e.g. a prime number of tokens), since routing over tiny groups
    wastes capacity and balances badly.
    """
    fewest = math.ceil(num_tokens / max_group_size)
    groups = next(g for g in range(fewest, num_tokens + 1) if num_tokens % g == 0)
    if 2 * (num_tokens // groups) < min(max_group_size, num_tokens):
        raise ValueError(
            f"{num_tokens} tokens (batch x length) do not split into whole groups of about max_group_size="
            f"{max_group_size} (best split: {groups} groups of {num_tokens // groups}); change the batch size, "
            f"the length or max_group_size so that one divides the other"
        )
    return groups


# On CPU each call of the per-expert loop should multiply at least this many rows:
# below it a call's fixed cost (thread hand-off, packing its weight slice)
# outweighs its arithmetic, so small experts are multiplied a few at a time.
MIN_ROWS_PER_CALL = 128


def experts_per_call(num_experts: int, rows: int) -> int:
    """Experts multiplied together by one call of the CPU loop: the fewest, dividing
    `num_experts`, that give at least MIN_ROWS_PER_CALL rows (1 when one expert has enough).

    128 experts x 80 rows -> 2 (160 rows a call); 8 experts x 1280 rows -> 1.
    """
    if num_experts * rows < MIN_ROWS_PER_CALL:
        return num_experts
    return next(c for c in range(1, num_experts + 1) if num_experts % c == 0 and c * rows >= MIN_ROWS_PER_CALL)


def _loop_over_experts(spec: str, a: Array, b: Array) -> Array:
    """einsum(spec) batched over the leading `expert` axis of a and b, as a loop of
    calls over `experts_per_call` experts each. a: [E, M, *]; b: [E, *, *].

    spec names the expert axis "e" and uses that letter for nothing else, so
    dropping it gives the one-expert matmul ("emk,ekn->emn" -> "mk,kn->mn")."""
    num_experts, rows = a.shape[:2]
    per_call = experts_per_call(num_experts, rows)
    if per_call == 1:
        plain = spec.replace("e", "")  # one expert a call: a plain matmul
        return jax.lax.map(lambda pair: jnp.einsum(plain, *pair), (a, b))
    chunks = num_experts // per_call
    a = a.reshape(chunks, per_call, *a.shape[1:])
    b = b.reshape(chunks, per_call, *b.shape[1:])
    out = jax.lax.map(lambda pair: jnp.einsum(spec, *pair), (a, b))  # [E / c, c, M, *]
    return out.reshape(num_experts, *out.shape[2:])


@jax.custom_vjp
def _expert_matmul_loop(x: Array, w: Array) -> Array:
    """x: [E, M, K] @ w: [E, K, N] -> [E, M, N], as a loop of plain (or few-expert) matmuls."""
    return _loop_over_experts("emk,ekn->emn", x, w)


def _expert_matmul_loop_fwd(x, w):
    return _expert_matmul_loop(x, w), (x, w)


def _expert_matmul_loop_bwd(residuals, grad):
    x, w = residuals
    grad_x = _loop_over_experts("emn,ekn->emk", grad, w)  # [E, M, K]
    grad_w = jnp.einsum("emk,emn->ekn", x, grad)  # [E, K, N]  one batched dot is the fast one here
    return grad_x, grad_w


_expert_matmul_loop.defvjp(_expert_matmul_loop_fwd, _expert_matmul_loop_bwd)


def expert_matmul(x: Array, w: Array) -> Array:
    """Per-expert matmul x: <dtype>[E, M, K] @ w: <dtype>[E, K, N] -> <dtype>[E, M, N].

    One batched dot_general everywhere except on CPU: there XLA's batched dot
    is slow when each expert has few rows, so the forward and input gradient
    loop over experts, `experts_per_call` at a time; the weight gradient stays
    one batched dot, which measured faster (benchmarks/moe_layer.py, benchmarks/results/moe_layer.json).
    """
    if jax.default_backend() == "cpu":
        return _expert_matmul_loop(x, w)
    return jnp.einsum("emk,ekn->emn", x, w)


@jax.named_scope("experts")  # profiles tell the experts' work from the dispatch around it
def _gated_mlp(x: Array, wi: list[Array], wo: Array, *, activations, dtype, dropout) -> Array:
    """Experts' gated MLP: prod_i act_i(x @ wi_i) @ wo, batched over the leading `expert` axis.

    x: <dtype>[E, G, C, D]; wi: float32 [E, D, F] each; wo: float32 [E, F, D].
    """
    num_experts, groups, capacity, d_model = x.shape
    rows = constrain(x.reshape(num_experts, groups * capacity, d_model), ("expert", None, "embed"))  # [E, G * C, D]
    hidden = None
    for name, kernel in zip(activations, wi):
        projected = ACTIVATIONS[name](expert_matmul(rows, kernel.astype(dtype)))  # [E, G * C, F]
        hidden = projected if hidden is None else hidden * projected
    hidden = hidden.reshape(num_experts, groups, capacity, -1)  # [E, G, C, F]
    hidden = dropout(constrain(hidden, EXPERT_HIDDEN_AXES))
    hidden = constrain(hidden.reshape(num_experts, groups * capacity, -1), ("expert", None, "mlp"))  # [E, G * C, F]
    out = expert_matmul(hidden, wo.astype(dtype)).reshape(num_experts, groups, capacity, d_model)  # [E, G, C, D]
    return constrain(out, EXPERT_AXES)


# ---------------------------------------------------------------------------
# Tokens-choose dispatch paths. Each returns (output <dtype>[G, S, D], kept <bool>[G, S, K]).
# ---------------------------------------------------------------------------


def _choice_major(x: Array) -> Array:
    """[G, S, K, ...] -> [G, K * S, ...] so that a = k * S + s (first choices first)."""
    x = jnp.swapaxes(x, 1, 2)
    return x.reshape((x.shape[0], x.shape[1] * x.shape[2]) + x.shape[3:])


def _token_major(x: Array, num_selected: int) -> Array:
    """Inverse of `_choice_major`: [G, K * S, ...] -> [G, S, K, ...]."""
    x = x.reshape((x.shape[0], num_selected, x.shape[1] // num_selected) + x.shape[2:])
    return jnp.swapaxes(x, 1, 2)


def dispatch_einsum(
    x: Array, route: routing.TokensChooseRouting, *, num_experts: int, capacity: int, expert_fn: ExpertFn
) -> tuple[Array, Array]:
    """GShard one-hot dispatch. x: <dtype>[G, S, D]."""
    num_selected = route.expert_index.shape[-1]
    chosen = jax.nn.one_hot(route.expert_index, num_experts, dtype=jnp.int32) * route.valid[..., None]  # [G, S, K, E]
    chosen_by_priority = _choice_major(chosen)  # [G, A, E]
    # Slot = how many earlier assignments (in priority order) went to the same expert.
    position = jnp.sum(jnp.cumsum(chosen_by_priority, axis=1) * chosen_by_priority, axis=-1) - 1  # [G, A]; -1 = padding
    position = _token_major(position, num_selected)  # [G, S, K]
    kept = route.valid & (position < capacity)  # [G, S, K]
    slot = jax.nn.one_hot(jnp.where(kept, position, -1), capacity, dtype=x.dtype)  # [G, S, K, C]; all 0 if not kept
    dispatch = jnp.einsum("gske,gskc->gsec", chosen.astype(x.dtype), slot)  # [G, S, E, C]
    weights = route.combine_weights.astype(x.dtype)  # [G, S, K]  combine runs in the compute dtype
    combine = jnp.einsum("gske,gskc,gsk->gsec", chosen.astype(x.dtype), slot, weights)  # [G, S, E, C]
    expert_in = constrain(jnp.einsum("gsec,gsd->egcd", dispatch, x), EXPERT_AXES)  # [E, G, C, D]
    expert_out = expert_fn(expert_in)  # [E, G, C, D]
    out = jnp.einsum("gsec,egcd->gsd", combine, expert_out)  # [G, S, D]
    return constrain(out, GROUP_AXES), kept


def dispatch_sort(
    x: Array, route: routing.TokensChooseRouting, *, num_experts: int, capacity: int, expert_fn: ExpertFn
) -> tuple[Array, Array]:
    """Sort/gather dispatch whose cost does not grow with the number of experts. x: <dtype>[G, S, D]."""
    groups, tokens, d_model = x.shape
    num_selected = route.expert_index.shape[-1]
    # Padding sorts after every real expert, under the key num_experts.
    key = _choice_major(jnp.where(route.valid, route.expert_index, num_experts))  # [G, A]
    num_assignments = key.shape[1]
    order = jnp.argsort(key, axis=-1, stable=True)  # [G, A]  by expert, priority order inside each expert
    sorted_key = jnp.take_along_axis(key, order, axis=-1)  # [G, A]
    start = jax.vmap(lambda k: jnp.searchsorted(k, jnp.arange(num_experts + 1), side="left"))(sorted_key)  # [G, E + 1]
    count = start[:, 1:] - start[:, :-1]  # [G, E]
    slots = jnp.arange(capacity)
    slot_filled = slots < count[..., None]  # [G, E, C]
    slot_source = jnp.minimum(start[:, :-1, None] + slots, num_assignments - 1)  # [G, E, C]  index into `order`
    slot_token = jnp.take_along_axis(order, slot_source.reshape(groups, -1), axis=-1) % tokens  # [G, E * C]
    # Token -> slot: rank of each assignment in the sorted order, minus its expert's start.
    rank = jnp.argsort(order, axis=-1)  # [G, A]  inverse permutation
    position = rank - jnp.take_along_axis(start, key, axis=-1)  # [G, A]
    kept = _choice_major(route.valid) & (position < capacity)  # [G, A]
    flat_slot = jnp.where(kept, key * capacity + position, 0)  # [G, A]  index into the E * C expert buffer

    expert_in = jnp.take_along_axis(x, slot_token[..., None], axis=1)  # [G, E * C, D]
    expert_in = expert_in * slot_filled.reshape(groups, -1, 1).astype(x.dtype)
    expert_in = expert_in.reshape(groups, num_experts, capacity, d_model)  # [G, E, C, D]
    expert_in = constrain(jnp.swapaxes(expert_in, 0, 1), EXPERT_AXES)  # [E, G, C, D]
    expert_out = expert_fn(expert_in)  # [E, G, C, D]
    expert_out = jnp.swapaxes(expert_out, 0, 1).reshape(groups, num_experts * capacity, d_model)  # [G, E * C, D]
    expert_out = constrain(expert_out, ("batch", "length", "embed"))
    gathered = jnp.take_along_axis(expert_out, flat_slot[..., None], axis=1)  # [G, A, D]
    weights = jnp.where(kept, _choice_major(route.combine_weights), 0.0).astype(x.dtype)  # [G, A]
    out = jnp.sum(_token_major(gathered * weights[..., None], num_selected), axis=2)  # [G, S, D]
    return constrain(out, GROUP_AXES), _token_major(kept, num_selected)


def block_rows(num_rows: int, num_experts: int) -> int:
    """Rows of one block of `grouped_matmul` on CPU: the average rows per expert, rounded up
    to a power of two, within [8, 128]. 128 decode rows over 8 experts -> 16; 4096 -> 128."""
    return min(128, max(8, 1 << (math.ceil(num_rows / num_experts) - 1).bit_length()))


def _block_layout(group_sizes: Array, *, num_rows: int, block: int) -> tuple[Array, Array, Array, Array, int]:
    """Where each expert's rows go when every expert starts a new block of `block` rows.

    group_sizes: <int32>[E], summing to at most num_rows (rows sorted by expert).
    Returns (row_at <int32>[n * block]: the sorted row each padded row holds, num_rows
    for an empty one; position <int32>[num_rows]: each sorted row's padded row, n * block
    for rows past the groups; block_expert <int32>[n]; block_used <bool>[n]) and n, the
    static block count: every expert wastes less than one block, and no used block
    holds fewer than one row.
    """
    num_experts = group_sizes.shape[0]
    num_blocks = min(num_rows, -(-(num_rows + num_experts * (block - 1)) // block))
    blocks = (group_sizes + block - 1) // block  # [E]
    padded_end = jnp.cumsum(blocks) * block  # [E]
    padded_start = padded_end - blocks * block
    end = jnp.cumsum(group_sizes)  # [E]
    start = end - group_sizes
    first_row = jnp.arange(num_blocks, dtype=jnp.int32) * block  # [n]
    block_expert = jnp.minimum(jnp.searchsorted(padded_end, first_row, side="right"), num_experts - 1)  # [n]
    block_used = first_row < padded_end[-1]  # [n]
    offset = jnp.arange(num_blocks * block, dtype=jnp.int32) - jnp.repeat(padded_start[block_expert], block)
    size = jnp.repeat(group_sizes[block_expert], block)
    holds_row = jnp.repeat(block_used, block) & (offset < size)
    row_at = jnp.where(holds_row, jnp.repeat(start[block_expert], block) + offset, num_rows)  # [n * block]
    row = jnp.arange(num_rows, dtype=jnp.int32)
    row_expert = jnp.minimum(jnp.searchsorted(end, row, side="right"), num_experts - 1)
    position = jnp.where(row < end[-1], padded_start[row_expert] + row - start[row_expert],
                         num_blocks * block)  # [num_rows]
    return row_at, position, block_expert, block_used, num_blocks


def grouped_matmul(rows: Array, weights: Array, group_sizes: Array) -> Array:
    """rows: <dtype>[N, K] sorted by expert, group_sizes[e] of them expert e's; weights:
    [E, K, M] -> <dtype>[N, M], row i times its expert's weights (rows past the groups: 0).

    `jax.lax.ragged_dot` everywhere except on CPU: there XLA computes a ragged dot as
    every expert on every row (E times the work), so each expert's rows are padded
    to whole blocks of `block_rows` and a loop multiplies each used block by its
    expert's weights: at most N + E * (block - 1) rows of work.
    """
    if jax.default_backend() != "cpu":
        return jax.lax.ragged_dot(rows, weights, group_sizes, preferred_element_type=rows.dtype)
    return _grouped_matmul_blocks(rows, weights, group_sizes)


@jax.named_scope("grouped_matmul")  # profiles attribute its kernels to the experts
def _grouped_matmul_blocks(rows: Array, weights: Array, group_sizes: Array) -> Array:
    """`grouped_matmul` on CPU: a loop over blocks of rows, each block one expert's."""
    num_rows, _ = rows.shape
    block = block_rows(num_rows, weights.shape[0])
    row_at, position, block_expert, block_used, num_blocks = _block_layout(group_sizes, num_rows=num_rows, block=block)
    padded = jnp.concatenate([rows, jnp.zeros_like(rows[:1])])[row_at].reshape(num_blocks, block, -1)  # [n, b, K]

    def multiply(args):
        x, expert, used = args
        return jax.lax.cond(used, lambda: x @ weights[expert],
                            lambda: jnp.zeros((block, weights.shape[2]), rows.dtype))

    out = jax.lax.map(multiply, (padded, block_expert, block_used)).reshape(num_blocks * block, -1)  # [n * b, M]
    return jnp.concatenate([out, jnp.zeros_like(out[:1])])[position]  # [N, M]


def dispatch_dropless(
    x: Array, route: routing.TokensChooseRouting, *, num_experts: int, expert_weights, activations, dtype, dropout
) -> tuple[Array, Array]:
    """Dropless dispatch: all assignments of all groups sorted by expert, each expert's rows
    through `grouped_matmul`; no capacity, no token dropped. x: <dtype>[G, S, D]."""
    groups, tokens, d_model = x.shape
    num_selected = route.expert_index.shape[-1]
    key = _choice_major(jnp.where(route.valid, route.expert_index, num_experts)).reshape(-1)  # [G * A]
    token = jnp.arange(groups)[:, None] * tokens + jnp.tile(jnp.arange(tokens), num_selected)[None]  # [G, A]
    order = jnp.argsort(key, stable=True)  # [G * A]
    sorted_key = key[order]
    group_sizes = jnp.diff(jnp.searchsorted(sorted_key, jnp.arange(num_experts + 1), side="left")).astype(jnp.int32)  # [E]
    rows = x.reshape(groups * tokens, d_model)[token.reshape(-1)[order]]  # [G * A, D]  sorted by expert
    rows = constrain(rows, (None, "embed"))
    wi, wo = expert_weights
    hidden = None
    for name, kernel in zip(activations, wi):
        projected = ACTIVATIONS[name](grouped_matmul(rows, kernel.astype(dtype), group_sizes))
        hidden = projected if hidden is None else hidden * projected  # [G * A, F]
    hidden = dropout(hidden)
    sorted_out = grouped_matmul(hidden, wo.astype(dtype), group_sizes)  # [G * A, D]
    out_per_assignment = sorted_out[jnp.argsort(order)].reshape(groups, -1, d_model)  # [G, A, D]
    out_per_assignment = constrain(out_per_assignment, GROUP_AXES)
    weights = _choice_major(route.combine_weights).astype(dtype)  # [G, A]  0 for padding
    out = jnp.sum(_token_major(out_per_assignment * weights[..., None], num_selected), axis=2)  # [G, S, D]
    return constrain(out, GROUP_AXES), route.valid


def expert_parallel_applies(mesh, *, groups: int, num_experts: int) -> bool:
    """Whether `dispatch_expert_parallel` runs the layer: a mesh of several devices whose
    batch axes split the G groups evenly and whose expert axis splits the experts."""
    if mesh is None or mesh.size == 1:
        return False
    batch_axes = partitioning.logical_to_mesh_spec(("batch",))[0]
    expert_axes = partitioning.logical_to_mesh_spec(("expert",))[0]
    return (
        groups % partitioning.mesh_axis_size(mesh, batch_axes) == 0
        and num_experts % partitioning.mesh_axis_size(mesh, expert_axes) == 0
    )


def dispatch_expert_parallel(
    path, x: Array, route: routing.TokensChooseRouting, *, mesh, num_experts: int, capacity: int,
    wi: list[Array], wo: Array, activations, dtype, dropout_rate: float, dropout_key: Array | None,
) -> tuple[Array, Array]:
    """Tokens-choose `path` (dispatch_einsum or dispatch_sort) with explicit expert parallelism.

    x: <dtype>[G, S, D], groups split over the batch mesh axes. Inside `shard_map`
    every device routes its own groups into a full expert buffer [E, G_local, C, D];
    an all-to-all over the expert axis hands each device its own experts' slots
    from every peer ([E_local, G_local * n, C, D]); the expert MLP runs on the
    local expert weights (a psum over the model axis when `mlp` is split); a
    second all-to-all sends the results back, and each device combines its
    tokens. Same output as the one-device path: capacity is per group, and each
    group stays whole on one device.

    Under plain GSPMD the CPU loop over experts (`expert_matmul`) slices a
    sharded expert axis, which XLA answers by gathering every expert's weights
    onto every device; here each device loops over its own experts only.
    """
    group_spec = partitioning.logical_to_mesh_spec(GROUP_AXES, mesh)  # [G, S, D]
    route_spec = partitioning.logical_to_mesh_spec(("batch", "length", None), mesh)  # [G, S, K]
    wi_spec = partitioning.logical_to_mesh_spec(("expert", "embed", "mlp"), mesh)  # [E, D, F]
    wo_spec = partitioning.logical_to_mesh_spec(("expert", "mlp", "embed"), mesh)  # [E, F, D]
    expert_axes, mlp_axes = wi_spec[0], wi_spec[2]  # None where that axis is not split
    split_axes = tuple(name for name in mesh.axis_names if mesh.shape[name] > 1)

    def vary_along_all(value: Array, spec) -> Array:
        """`value`, split as `spec` says, marked as varying along the split axes it is replicated over."""
        split_by_spec = {name for entry in spec for name in partitioning.axis_names(entry)}
        replicated = tuple(name for name in split_axes if name not in split_by_spec)
        return jax.lax.pcast(value, replicated, to="varying") if replicated else value

    def local(x, expert_index, combine_weights, valid, wi, wo, key):
        if key is not None:  # a different dropout mask on every device's block
            key = jax.random.fold_in(key, jax.lax.axis_index(split_axes))
        dropout = _expert_dropout(dropout_rate, key)

        def expert_fn(expert_in: Array) -> Array:  # [E, G_local, C, D] -> same
            if expert_axes:
                expert_in = jax.lax.all_to_all(expert_in, expert_axes, 0, 1, tiled=True)  # [E_local, G_local * n, C, D]
            # Tokens and weights made to vary along every split axis, so that autodiff sums
            # each gradient over the devices that shared its value: the weights' over the
            # batch axes, the tokens' over the model axis.
            out = _gated_mlp(
                vary_along_all(expert_in, group_spec), [vary_along_all(w, wi_spec) for w in wi],
                vary_along_all(wo, wo_spec), activations=activations, dtype=dtype, dropout=dropout,
            )
            if mlp_axes:
                out = jax.lax.psum(out, mlp_axes)  # each device held a slice of F
            if expert_axes:
                out = jax.lax.all_to_all(out, expert_axes, 1, 0, tiled=True)  # [E, G_local, C, D]
            return out

        with nn.logical_axis_rules(()):  # every array here is this device's block: no constraints
            local_route = routing.TokensChooseRouting(expert_index, combine_weights, valid)
            return path(x, local_route, num_experts=num_experts, capacity=capacity, expert_fn=expert_fn)

    run = jax.shard_map(
        local, mesh=mesh,
        in_specs=(group_spec, route_spec, route_spec, route_spec, [wi_spec] * len(wi), wo_spec, jax.sharding.PartitionSpec()),
        out_specs=(group_spec, route_spec),
    )
    return run(x, route.expert_index, route.combine_weights, route.valid, list(wi), wo, dropout_key)


# ---------------------------------------------------------------------------
# Experts-choose dispatch paths. Each returns output <dtype>[G, S, D].
# ---------------------------------------------------------------------------


def dispatch_experts_choose(
    x: Array, route: routing.ExpertsChooseRouting, *, dispatch: str, expert_fn: ExpertFn
) -> Array:
    """x: <dtype>[G, S, D]; the router already fixed every expert's C tokens."""
    groups, tokens, d_model = x.shape
    _, num_experts, capacity = route.token_index.shape
    weights = route.combine_weights.astype(x.dtype)  # [G, E, C]  0 where not valid
    if dispatch == "einsum":
        picked = jax.nn.one_hot(route.token_index, tokens, dtype=x.dtype) * route.valid[..., None]  # [G, E, C, S]
        expert_in = constrain(jnp.einsum("gecs,gsd->egcd", picked, x), EXPERT_AXES)  # [E, G, C, D]
        expert_out = expert_fn(expert_in)  # [E, G, C, D]
        out = jnp.einsum("gecs,gec,egcd->gsd", picked, weights, expert_out)  # [G, S, D]
        return constrain(out, GROUP_AXES)
    flat_index = route.token_index.reshape(groups, -1)  # [G, E * C]
    expert_in = jnp.take_along_axis(x, flat_index[..., None], axis=1)  # [G, E * C, D]
    expert_in = expert_in.reshape(groups, num_experts, capacity, d_model)  # [G, E, C, D]
    expert_in = constrain(jnp.swapaxes(expert_in, 0, 1), EXPERT_AXES)  # [E, G, C, D]
    expert_out = jnp.swapaxes(expert_fn(expert_in), 0, 1) * weights[..., None]  # [G, E, C, D]
    # A token may be picked by several experts or none: sum its picks (scatter-add, O(E * C * D)).
    out = jnp.zeros_like(x).at[jnp.arange(groups)[:, None], flat_index].add(
        expert_out.reshape(groups, -1, d_model)
    )  # [G, S, D]
    return constrain(out, GROUP_AXES)


# ---------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------


class MoeLayer(nn.Module):
    """Switch MoE feed-forward layer (replaces a dense MLP inside a residual block).

    `config` holds every MoE setting, the router included (`config.router`, a
    `routing.Router`, adopted here under the name "router"); `d_ff` and
    `activations` are the experts' (`network.make_ffn` resolves the dense defaults).

    Params: `router/kernel` float32 [D, E] ('embed', 'unmodeled'); `wi_0`, `wi_1`
    float32 [E, D, F] ('expert', 'embed', 'mlp'); `wo` float32 [E, F, D]
    ('expert', 'mlp', 'embed'). A single activation gives `wi` instead of wi_0/wi_1.
    Sown into "intermediates" per call: one float32 scalar each of aux_loss,
    router_z_loss, fraction_tokens_dropped, expert_usage, router_confidence, and
    `expert_index` <int32>[B, L], the expert each token was routed to (its first
    choice; -1 at padding and, for experts-choose, where no expert picked it).
    """

    config: MoeConfig
    d_ff: int
    activations: tuple[str, ...] = ("gelu", "linear")
    dtype: DType = jnp.float32
    is_decoder: bool = False
    kernel_init_scale: float = 0.1

    def __post_init__(self):
        if self.config.num_experts < 1:
            raise ValueError(f"an MoE layer needs num_experts >= 1, got {self.config.num_experts}")
        self.config.check_layer(is_decoder=self.is_decoder)
        if not self.activations or any(name not in ACTIVATIONS for name in self.activations):
            raise ValueError(f"activations {self.activations!r} must be a non-empty tuple of {sorted(ACTIVATIONS)}")
        super().__post_init__()

    @property
    def num_experts(self) -> int:
        return self.config.num_experts

    @nn.compact
    def __call__(
        self, inputs: Array, *, padding_mask: Array | None = None, enable_dropout: bool = False
    ) -> Array:
        """inputs: <dtype>[B, L, D]; padding_mask: <bool>[B, L] True for real tokens (None = all real).

        enable_dropout=True means training: jitter noise, expert dropout, the train
        capacity factor, rng stream "dropout". Otherwise `config.eval_capacity`
        decides (see mtmoe.moe_config).
        Returns <dtype>[B, L, D]; overflowing tokens and padding get zeros.
        """
        config = self.config
        batch, length, d_model = inputs.shape
        num_tokens = batch * length
        groups = num_groups(num_tokens=num_tokens, max_group_size=config.max_group_size)
        tokens_per_group = num_tokens // groups
        x = inputs.astype(self.dtype).reshape(groups, tokens_per_group, d_model)  # [G, S, D]
        x = constrain(x, GROUP_AXES)
        mask = None if padding_mask is None else padding_mask.astype(jnp.bool_).reshape(groups, tokens_per_group)  # [G, S]

        wi, wo = self._expert_params(d_model)
        use_dropout = enable_dropout and config.expert_dropout_rate > 0.0
        dropout_key = self.make_rng("dropout") if use_dropout else None
        dropout = _expert_dropout(config.expert_dropout_rate, dropout_key)

        def expert_fn(expert_in: Array) -> Array:
            return _gated_mlp(expert_in, wi, wo, activations=self.activations, dtype=self.dtype, dropout=dropout)

        drop_free = not enable_dropout and config.eval_capacity == "drop_free"
        capacity = tokens_per_group if drop_free else routing.expert_capacity(
            tokens_per_group=tokens_per_group, num_experts=self.num_experts,
            capacity_factor=config.train_capacity_factor if enable_dropout else config.eval_capacity_factor,
            min_expert_capacity=config.min_expert_capacity, num_selected_experts=config.router.num_selected_experts,
        )
        router = config.router.clone(parent=self, name="router")
        route, aux_loss, z_loss = router(
            x, num_experts=self.num_experts, expert_capacity=capacity, padding_mask=mask,
            jitter_noise=config.jitter_noise if enable_dropout else 0.0,
        )
        num_real = jnp.float32(num_tokens) if mask is None else jnp.sum(mask, dtype=jnp.float32)

        if isinstance(route, routing.ExpertsChooseRouting):
            out = dispatch_experts_choose(x, route, dispatch=config.dispatch, expert_fn=expert_fn)
            picked = jnp.zeros((groups, tokens_per_group), jnp.bool_).at[
                jnp.arange(groups)[:, None], route.token_index.reshape(groups, -1)
            ].max(route.valid.reshape(groups, -1))  # [G, S]
            num_dispatched = jnp.sum(route.valid, dtype=jnp.float32)
            confidence_sum = jnp.sum(route.combine_weights, dtype=jnp.float32)
            token_expert = route.token_expert(tokens_per_group)  # [G, S]
        else:
            mesh = partitioning.active_mesh()
            # Drop-free on one device: every token through its expert, in whole blocks per expert
            # (grouped_matmul). On a mesh of several devices the capped paths keep the batch
            # split: there every expert has room for every token of its group.
            if config.dispatch == "dropless" or (drop_free and (mesh is None or mesh.size == 1)):
                out, kept = dispatch_dropless(
                    x, route, num_experts=self.num_experts, expert_weights=(wi, wo), activations=self.activations,
                    dtype=self.dtype, dropout=dropout,
                )
            else:
                out, kept = self._capped_dispatch(x, route, capacity=capacity, wi=wi, wo=wo, expert_fn=expert_fn,
                                                  dropout_key=dropout_key)
            picked = jnp.any(kept, axis=-1)  # [G, S]
            num_dispatched = jnp.sum(kept, dtype=jnp.float32)
            confidence_sum = jnp.sum(jnp.where(kept, route.combine_weights, 0.0), dtype=jnp.float32)
            token_expert = route.token_expert()  # [G, S]

        real_picked = picked if mask is None else picked & mask
        # expert_usage counts against the capacity the capped paths have, so that
        # dropless reports the same value whenever nothing overflows.
        metrics = {
            "aux_loss": aux_loss,
            "router_z_loss": z_loss,
            "fraction_tokens_dropped": 1.0 - jnp.sum(real_picked, dtype=jnp.float32) / jnp.maximum(num_real, 1.0),
            "expert_usage": num_dispatched / float(self.num_experts * capacity * groups),
            "router_confidence": confidence_sum / jnp.maximum(num_dispatched, 1.0),
        }
        for name in METRIC_NAMES:
            self.sow("intermediates", name, metrics[name])
        # Groups are consecutive slices of the flattened [B * L] tokens.
        self.sow("intermediates", "expert_index", token_expert.reshape(batch, length))
        out = out.reshape(batch, length, d_model).astype(self.dtype)  # [B, L, D]
        return constrain(out, ("batch", "length", "embed"))

    def _capped_dispatch(
        self, x: Array, route: routing.TokensChooseRouting, *, capacity: int, wi, wo, expert_fn: ExpertFn,
        dropout_key: Array | None,
    ) -> tuple[Array, Array]:
        """The einsum or sort path for tokens-choose routing, expert-parallel on a mesh that
        splits the groups evenly. x: <dtype>[G, S, D]; returns (output <dtype>[G, S, D], kept <bool>[G, S, K])."""
        groups, tokens_per_group, _ = x.shape
        path = dispatch_einsum if self.config.dispatch == "einsum" else dispatch_sort
        mesh = partitioning.active_mesh()
        if expert_parallel_applies(mesh, groups=groups, num_experts=self.num_experts):
            return dispatch_expert_parallel(
                path, x, route, mesh=mesh, num_experts=self.num_experts, capacity=capacity, wi=wi, wo=wo,
                activations=self.activations, dtype=self.dtype, dropout_rate=self.config.expert_dropout_rate,
                dropout_key=dropout_key,
            )
        if mesh is not None and mesh.size > 1 and jax.default_backend() == "cpu":
            warnings.warn(
                f"MoE layer: {groups} routing group(s) of {tokens_per_group} tokens do not split evenly over the "
                f"mesh's batch shards (or {self.num_experts} experts over its expert axis), so GSPMD partitions it, "
                f"which on CPU gathers every expert's weights onto every device (slower: benchmarks/results/expert_parallel.json); "
                f"pick max_group_size (GROUP_SIZE) so that batch x length / max_group_size is a multiple of the "
                f"data x expert devices", stacklevel=3,
            )
        return path(x, route, num_experts=self.num_experts, capacity=capacity, expert_fn=expert_fn)

    def _expert_params(self, d_model: int) -> tuple[list[Array], Array]:
        """float32 wi_* [E, D, F] and wo [E, F, D], Switch init (variance scale / fan_in)."""
        init_in = variance_scaling(self.kernel_init_scale, [1])
        init_out = variance_scaling(self.kernel_init_scale, [1])
        names = ["wi"] if len(self.activations) == 1 else [f"wi_{i}" for i in range(len(self.activations))]
        wi = [
            param_with_axes(self, name, init_in, (self.num_experts, d_model, self.d_ff), ("expert", "embed", "mlp"))
            for name in names
        ]
        wo = param_with_axes(self, "wo", init_out, (self.num_experts, self.d_ff, d_model), ("expert", "mlp", "embed"))
        return wi, wo


def _expert_dropout(rate: float, key: Array | None) -> Callable[[Array], Array]:
    """Dropout on the experts' hidden activations (Switch fine-tuning uses 0.4); None key = off.

    A plain function of its key rather than a Flax submodule, so that it also
    runs inside the expert-parallel shard_map (each device folds in its index).
    """
    if key is None or rate == 0.0:
        return lambda hidden: hidden

    def drop(hidden: Array) -> Array:
        keep = jax.random.bernoulli(key, 1.0 - rate, hidden.shape)
        return jnp.where(keep, hidden / (1.0 - rate), 0.0).astype(hidden.dtype)

    return drop
