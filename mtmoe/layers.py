"""Dense T5 v1.1 parts: embedding, RMSNorm, relative-position attention, gated MLP.

Axis letters used in shape comments:
  B batch, L length (Q query length, K key length), D d_model (`embed`),
  H heads, K head_dim (`kv`, in einsum strings `k`), F MLP hidden (`mlp`), V vocab.

Every parameter is created float32 with logical axis names
(`nn.with_logical_partitioning`) and cast to the compute `dtype` at use, as
T5X does; activations carry logical names through `nn.with_logical_constraint`
(a no-op unless `partitioning.py` installed rules and a mesh).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Array = jax.Array
DType = Any
Initializer = Callable[..., Array]

# Masks are added to attention logits; a large finite value keeps bfloat16 and
# fully-masked rows (padding queries) free of NaNs, unlike -inf.
NEG_INF = -1e10


def param_with_axes(module: nn.Module, name: str, init_fn: Initializer, shape, names):
    """Creates a float32 parameter boxed with its logical axis names."""
    return module.param(name, nn.with_logical_partitioning(init_fn, names), shape, jnp.float32)


def constrain(x: Array, names: tuple[str | None, ...]) -> Array:
    """Sharding constraint by logical names (no-op without rules and a mesh)."""
    return nn.with_logical_constraint(x, names)


def variance_scaling(scale: float, fan_in_axes: Sequence[int]) -> Initializer:
    """Truncated-normal init with variance scale / fan_in, fan_in over `fan_in_axes`."""

    def init(key, shape, dtype=jnp.float32):
        fan_in = int(np.prod([shape[axis] for axis in fan_in_axes]))
        stddev = np.sqrt(scale / fan_in) / 0.87962566103423978  # std of a [-2, 2] truncated normal
        return (jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32) * stddev).astype(dtype)

    return init


# ---------------------------------------------------------------------------
# Embedding and normalisation
# ---------------------------------------------------------------------------


class Embed(nn.Module):
    """Token embedding: float32 table [V, D], looked up then cast to `dtype`."""

    num_embeddings: int
    features: int
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, tokens: Array) -> Array:
        """tokens: <int32>[B, L] -> <dtype>[B, L, D]."""
        embedding = param_with_axes(
            self, "embedding", nn.initializers.normal(stddev=1.0), (self.num_embeddings, self.features), ("vocab", "embed")
        )
        # One-hot-free gather; the table stays float32 and only the rows are cast.
        return jnp.take(embedding, tokens, axis=0).astype(self.dtype)  # [B, L, D]


class RMSNorm(nn.Module):
    """T5 layer norm: scale only, no mean subtraction, no bias; statistics in float32."""

    epsilon: float = 1e-6
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = x.shape[-1]
        scale = param_with_axes(self, "scale", nn.initializers.ones, (features,), ("embed",))
        x32 = x.astype(jnp.float32)  # variance of bfloat16 activations loses too many bits
        mean_square = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)  # [B, L, 1]
        y = x32 * jax.lax.rsqrt(mean_square + self.epsilon)
        return (y * scale).astype(self.dtype)


# ---------------------------------------------------------------------------
# Relative position bias and masks
# ---------------------------------------------------------------------------


def relative_position_bucket(
    relative_position: np.ndarray, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> Array:
    """T5's bucketing of `key_position - query_position` into `num_buckets` ids.

    Half of the buckets hold exact small distances, the rest grow
    logarithmically up to `max_distance`; bidirectional splits the buckets
    between keys before and after the query. Static shapes, so numpy: the
    buckets are compile-time constants.
    """
    ret = np.zeros_like(relative_position)
    n = -relative_position
    if bidirectional:
        num_buckets //= 2
        ret = ret + (n < 0).astype(np.int32) * num_buckets
        n = np.abs(n)
    else:
        n = np.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # np.finfo eps keeps log(0) finite; those entries are replaced by is_small.
    with np.errstate(divide="ignore"):
        val_if_large = max_exact + (
            np.log(n.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
            / np.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        ).astype(np.int32)
    val_if_large = np.minimum(val_if_large, num_buckets - 1)
    return ret + np.where(is_small, n, val_if_large)


class RelativePositionBiases(nn.Module):
    """Learned bias per (head, distance bucket), one table shared by a whole stack."""

    num_buckets: int
    max_distance: int
    num_heads: int
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, query_length: int, key_length: int, *, bidirectional: bool) -> Array:
        """Returns <dtype>[1, H, Q, K]."""
        context = np.arange(query_length, dtype=np.int32)[:, None]
        memory = np.arange(key_length, dtype=np.int32)[None, :]
        buckets = relative_position_bucket(
            memory - context,
            bidirectional=bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )  # [Q, K]
        table = param_with_axes(
            self,
            "rel_embedding",
            nn.initializers.normal(stddev=1.0 / np.sqrt(self.num_buckets)),
            (self.num_heads, self.num_buckets),
            ("heads", "relpos_buckets"),
        )
        bias = jnp.take(table, buckets, axis=1)  # [H, Q, K]
        return bias[None].astype(self.dtype)  # [1, H, Q, K]


def make_attention_mask(
    query_mask: Array, key_mask: Array, *, query_segment_ids=None, key_segment_ids=None, causal: bool = False
) -> Array:
    """<bool>[B, 1, Q, K] mask: True where a query may attend a key.

    query_mask/key_mask: <bool>[B, Q] / [B, K] real tokens. Segment ids keep
    packed examples apart; `causal` forbids keys after the query.
    """
    mask = query_mask[:, :, None] & key_mask[:, None, :]  # [B, Q, K]
    if query_segment_ids is not None:
        mask &= query_segment_ids[:, :, None] == key_segment_ids[:, None, :]
    if causal:
        q_len, k_len = query_mask.shape[1], key_mask.shape[1]
        mask &= jnp.arange(q_len)[:, None] >= jnp.arange(k_len)[None, :]
    return mask[:, None]  # [B, 1, Q, K]


# ---------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------


class MultiHeadAttention(nn.Module):
    """Multi-head dot-product attention without biases (T5 v1.1), with a KV cache.

    With `decode=True` the first call on a "cache" collection that lacks this
    module's entries creates them (see `Transformer.init_cache`):
      * self-attention (`static_kv=False`): a zero cache [B, H, L, K] sized by
        the inputs; every later call takes one query position and appends its
        key/value at `cache_index`;
      * attention to a fixed memory (`static_kv=True`, the decoder's
        cross-attention over the encoder output): the keys/values projected
        from `inputs_kv` once, so later calls only project their query and may
        pass `inputs_kv=None`. The cached memory may hold fewer rows than the
        query: B sentences against B*K query rows (row b*K + k is beam k of
        sentence b, `decoding.tile_beams`' layout); each sentence's beams then
        read its keys/values as extra query positions, so the memory is
        neither tiled nor reordered with the beams.

    Keys and values are held heads-major, [B, H, L, K], the layout both
    attention products read without a transpose: with the sequence-major
    [B, L, H, K] layout XLA:CPU copied every cached key and value into this
    layout at every decoding step, the largest cost of a beam-search step.
    """

    num_heads: int
    head_dim: int
    dropout_rate: float = 0.0
    dtype: DType = jnp.float32
    static_kv: bool = False

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array | None,
        *,
        mask: Array | None = None,
        bias: Array | None = None,
        enable_dropout: bool = False,
        decode: bool = False,
    ) -> Array:
        """inputs_q: [B, Q, D]; inputs_kv: [B, K, D]; mask: <bool>[B, 1, Q, K];
        bias: [1|B, H, Q, K] (in decode: the full [1, H, max_len, max_len]).
        With decode and static_kv once the cache exists: inputs_kv may be None and
        mask is <bool>[B_memory, 1, 1, K] (the memory's rows), broadcast over queries.
        Returns <dtype>[B, Q, D]."""
        features = inputs_q.shape[-1]
        joined = self.num_heads * self.head_dim
        # Kernels stored 2-D [D, H*K] as T5X ('joined_kv'): Adafactor factors their
        # second moments (it only factors the two largest dims, both >= 128).
        # T5 folds 1/sqrt(head_dim) into the query init instead of scaling logits.
        q_kernel = param_with_axes(
            self, "query", variance_scaling(1.0 / self.head_dim, [0]), (features, joined), ("embed", "joined_kv")
        )
        k_kernel = param_with_axes(self, "key", variance_scaling(1.0, [0]), (features, joined), ("embed", "joined_kv"))
        v_kernel = param_with_axes(self, "value", variance_scaling(1.0, [0]), (features, joined), ("embed", "joined_kv"))
        o_kernel = param_with_axes(self, "out", variance_scaling(1.0, [0]), (joined, features), ("joined_kv", "embed"))

        def project(x, kernel):  # [B, L, D] -> [B, H, L, K]
            y = x @ kernel.astype(self.dtype)  # [B, L, H*K]
            y = y.reshape(y.shape[:-1] + (self.num_heads, self.head_dim))  # [B, L, H, K]
            return constrain(jnp.swapaxes(y, 1, 2), ("batch", "heads", "length", "kv"))

        query = project(inputs_q, q_kernel)  # [B, H, Q, K]
        batch, query_length = query.shape[0], query.shape[2]
        if decode and self.static_kv:
            if inputs_kv is None and not self.has_variable("cache", "cached_key"):
                raise ValueError(
                    "the cross-attention cache is empty: create it with Transformer.init_cache "
                    "(or pass inputs_kv on the first decode=True call)"
                )
            # Projected once per sentence, when the cache is created; read back at every step.
            key = self.variable("cache", "cached_key", lambda: project(inputs_kv, k_kernel)).value  # [B_mem, H, S, Kv]
            value = self.variable("cache", "cached_value", lambda: project(inputs_kv, v_kernel)).value
            if bias is not None:
                raise ValueError("attention to a cached memory takes no position bias; pass bias=None")
            memory_rows = key.shape[0]
            if batch % memory_rows:
                raise ValueError(
                    f"{batch} query rows cannot share a cached memory of {memory_rows} sentences; "
                    "pass B*K query rows (K beams per sentence) for a memory cached for B sentences"
                )
            if memory_rows != batch and mask is not None and (mask.shape[0] != memory_rows or mask.shape[2] != 1):
                raise ValueError(
                    f"the mask of a memory cached for {memory_rows} sentences needs {memory_rows} rows "
                    f"([B, 1, 1, K]), got {mask.shape}; build it from the un-tiled encoder tokens"
                )
            # Beams of one sentence become extra query positions: [B*K, H, Q, K] -> [B, H, K*Q, K].
            beams = batch // memory_rows
            query = query.reshape((memory_rows, beams) + query.shape[1:])  # [B, K, H, Q, Kv]
            query = jnp.swapaxes(query, 1, 2).reshape(memory_rows, self.num_heads, beams * query_length, -1)
        else:
            key = project(inputs_kv, k_kernel)  # [B, H, T, K]
            value = project(inputs_kv, v_kernel)  # [B, H, T, K]
        if decode and not self.static_kv:
            is_initialized = self.has_variable("cache", "cached_key")
            cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
            cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
            cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, dtype=jnp.int32))
            if is_initialized:
                _, num_heads, max_length, head_dim = cached_key.value.shape
                if query_length != 1:
                    raise ValueError(
                        f"cached decoding takes one position per call, got {query_length}; "
                        "run the full forward pass without decode=True instead"
                    )
                index = cache_index.value
                key = jax.lax.dynamic_update_slice(cached_key.value, key, (0, 0, index, 0))  # [B, H, max_len, Kv]
                value = jax.lax.dynamic_update_slice(cached_value.value, value, (0, 0, index, 0))
                cached_key.value, cached_value.value = key, value
                cache_index.value = index + 1
                # Only positions written so far are visible to the new query.
                step_mask = (jnp.arange(max_length) <= index)[None, None, None, :]  # [1, 1, 1, max_len]
                step_mask = jnp.broadcast_to(step_mask, (batch, 1, 1, max_length))
                mask = step_mask if mask is None else (mask & step_mask)
                if bias is not None:
                    # The bias row of the current query position.
                    bias = jax.lax.dynamic_slice_in_dim(bias, index, 1, axis=2)  # [1, H, 1, max_len]

        logits = jnp.einsum("bhqk,bhtk->bhqt", query, key, preferred_element_type=jnp.float32)  # [B, H, Q, T]
        # Softmax in float32: bfloat16 exp/sum over long rows loses the small weights.
        if bias is not None:
            logits = logits + bias.astype(jnp.float32)
        if mask is not None:
            logits = jnp.where(mask, logits, NEG_INF)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)  # [B, H, Q, K]
        if enable_dropout and self.dropout_rate > 0.0:
            weights = nn.Dropout(rate=self.dropout_rate)(weights, deterministic=False)
        context = jnp.einsum("bhqt,bhtk->bhqk", weights, value)  # [B, H, Q, Kv]
        context = jnp.swapaxes(context, 1, 2)  # [B, Q, H, Kv]  (with a cached memory: [B, K*Q, H, Kv])
        context = constrain(context, ("batch", "length", "heads", "kv"))
        context = context.reshape((batch, query_length, joined))  # [B, Q, H*K]  beams back on the batch axis
        out = context @ o_kernel.astype(self.dtype)  # [B, Q, D]
        return constrain(out, ("batch", "length", "embed"))


# ---------------------------------------------------------------------------
# MLP
# ---------------------------------------------------------------------------

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=True),  # T5 v1.1 uses the tanh approximation
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "linear": lambda x: x,
}


def check_activations(activations: Sequence[str]) -> None:
    """One-line error for an unknown activation name."""
    for name in activations:
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; use one of {sorted(ACTIVATIONS)}")


class MlpBlock(nn.Module):
    """T5 feed-forward: product of `activations` applied to separate projections, then `wo`.

    ("gelu", "linear") is T5 v1.1's gated GELU (params wi_0, wi_1, wo);
    a single activation ("relu",) is the original T5 MLP (params wi, wo).
    """

    d_ff: int
    activations: tuple[str, ...] = ("gelu", "linear")
    dropout_rate: float = 0.0
    dtype: DType = jnp.float32

    @nn.compact
    def __call__(self, inputs: Array, *, enable_dropout: bool = False) -> Array:
        """inputs: <dtype>[B, L, D] -> <dtype>[B, L, D]."""
        check_activations(self.activations)
        features = inputs.shape[-1]
        hidden = None
        for index, name in enumerate(self.activations):
            param_name = "wi" if len(self.activations) == 1 else f"wi_{index}"
            kernel = param_with_axes(self, param_name, variance_scaling(1.0, [0]), (features, self.d_ff), ("embed", "mlp"))
            projected = ACTIVATIONS[name](inputs @ kernel.astype(self.dtype))  # [B, L, F]
            hidden = projected if hidden is None else hidden * projected
        hidden = constrain(hidden, ("batch", "length", "mlp"))
        if enable_dropout and self.dropout_rate > 0.0:
            hidden = nn.Dropout(rate=self.dropout_rate, broadcast_dims=(-2,))(hidden, deterministic=False)
        wo = param_with_axes(self, "wo", variance_scaling(1.0, [0]), (self.d_ff, features), ("mlp", "embed"))
        out = hidden @ wo.astype(self.dtype)  # [B, L, D]
        return constrain(out, ("batch", "length", "embed"))


class Dropout(nn.Module):
    """Dropout active only when `enable_dropout` (training); rng stream "dropout"."""

    rate: float = 0.0

    @nn.compact
    def __call__(self, x: Array, *, enable_dropout: bool = False) -> Array:
        if not enable_dropout or self.rate == 0.0:
            return x
        return nn.Dropout(rate=self.rate)(x, deterministic=False)
