"""The encoder-decoder: T5 v1.1 stacks with a sparse (Switch MoE) layout.

Axis letters: B batch, S source length, T target length, D d_model, V vocab.

Module names are the checkpoint format (renaming one needs a converter):
  token_embedder/embedding                      shared by encoder and decoder inputs
  encoder/relpos_bias, encoder/layers_<i>/{pre_attention_layer_norm, attention,
      pre_mlp_layer_norm, mlp | moe}, encoder/encoder_norm
  decoder/relpos_bias, decoder/layers_<i>/{pre_self_attention_layer_norm,
      self_attention, pre_cross_attention_layer_norm, encoder_decoder_attention,
      pre_mlp_layer_norm, mlp | moe}, decoder/decoder_norm, decoder/logits_dense
Layer i of a stack is MoE when `(i + 1) % sparse_every == 0` (`MoeConfig`;
Switch: every other FFN; 1 = every FFN as Switch-C; 0 = dense).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import traverse_util

from mtmoe import layers, moe
from mtmoe.moe_config import MoeConfig

Array = jax.Array

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# The decoder's cross-attention modules; their decode cache is the projected encoder
# output, the same at every step and for every beam of a sentence (`split_cache`).
CROSS_ATTENTION = "encoder_decoder_attention"


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Architecture of the encoder-decoder; gin files in gin/models/ fill it in.

    `activations` are the dense FFN's (("gelu", "linear") = gated GELU, T5 v1.1;
    ("relu",) = original T5). `moe` holds the sparse layout and every MoE layer
    setting (`moe.num_experts` 0 = a dense model).
    """

    vocab_size: int
    d_model: int
    num_heads: int
    head_dim: int
    d_ff: int
    num_encoder_layers: int
    num_decoder_layers: int
    dropout_rate: float = 0.0
    dtype: str = "float32"
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    activations: tuple[str, ...] = ("gelu", "linear")
    layer_norm_epsilon: float = 1e-6
    moe: MoeConfig = dataclasses.field(default_factory=MoeConfig)

    def __post_init__(self):
        # gin hands lists; tuples keep the config hashable (it is a static jit argument).
        object.__setattr__(self, "activations", tuple(self.activations))
        if self.dtype not in DTYPES:
            raise ValueError(f"TransformerConfig.dtype={self.dtype!r} is unknown; use one of {sorted(DTYPES)}")
        layers.check_activations(self.activations + (self.moe.expert_activations or ()))
        for name in ("vocab_size", "d_model", "num_heads", "head_dim", "d_ff"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TransformerConfig.{name}={getattr(self, name)} must be positive")
        # The router's own checks for each stack it routes, now rather than at the first init.
        for decoder in (False, True):
            if self.num_sparse_layers(decoder=decoder) > 0:
                self.moe.check_layer(is_decoder=decoder)

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    def replace(self, **changes) -> TransformerConfig:
        return dataclasses.replace(self, **changes)

    def for_inference(self, *, dtype: str | None = None, eval_capacity: str = "drop_free") -> TransformerConfig:
        """This architecture computing in `dtype` (None = unchanged), its MoE layers routing in `eval_capacity` mode."""
        return self.replace(dtype=dtype or self.dtype, moe=self.moe.replace(eval_capacity=eval_capacity))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (tuples become lists; `moe` as MoeConfig.to_dict); `from_dict` reads them."""
        out = {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "moe"}
        out = {name: list(value) if isinstance(value, tuple) else value for name, value in out.items()}
        return {**out, "moe": self.moe.to_dict()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TransformerConfig:
        """Inverse of `to_dict`."""
        values = {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}
        return cls(**{**values, "moe": MoeConfig.from_dict(values["moe"])})

    def is_sparse(self, layer: int, *, decoder: bool) -> bool:
        """Whether FFN `layer` (0-based) of the encoder/decoder stack is an MoE layer."""
        every = self.moe.decoder_sparse_every if decoder else self.moe.encoder_sparse_every
        return self.moe.num_experts > 0 and every > 0 and (layer + 1) % every == 0

    def num_sparse_layers(self, *, decoder: bool) -> int:
        num_layers = self.num_decoder_layers if decoder else self.num_encoder_layers
        return sum(self.is_sparse(i, decoder=decoder) for i in range(num_layers))


def make_ffn(config: TransformerConfig, *, layer: int, decoder: bool) -> nn.Module:
    """The FFN of one layer: a dense `MlpBlock` or a Switch `MoeLayer`."""
    dtype = config.compute_dtype
    if not config.is_sparse(layer, decoder=decoder):
        return layers.MlpBlock(
            d_ff=config.d_ff, activations=config.activations, dropout_rate=config.dropout_rate, dtype=dtype, name="mlp"
        )
    return moe.MoeLayer(
        config=config.moe,
        d_ff=config.moe.expert_d_ff or config.d_ff,
        activations=config.moe.expert_activations or config.activations,
        dtype=dtype,
        is_decoder=decoder,
        name="moe",
    )


def apply_ffn(ffn: nn.Module, x: Array, *, padding_mask, enable_dropout: bool) -> Array:
    if isinstance(ffn, layers.MlpBlock):
        return ffn(x, enable_dropout=enable_dropout)
    return ffn(x, padding_mask=padding_mask, enable_dropout=enable_dropout)


class EncoderLayer(nn.Module):
    config: TransformerConfig
    layer: int

    @nn.compact
    def __call__(self, x, *, mask, bias, padding_mask, enable_dropout):
        """x: <dtype>[B, S, D] -> <dtype>[B, S, D]."""
        config, dtype = self.config, self.config.compute_dtype
        norm = layers.RMSNorm(epsilon=config.layer_norm_epsilon, dtype=dtype, name="pre_attention_layer_norm")
        attention = layers.MultiHeadAttention(
            num_heads=config.num_heads, head_dim=config.head_dim, dropout_rate=config.dropout_rate, dtype=dtype, name="attention"
        )
        h = norm(x)
        h = attention(h, h, mask=mask, bias=bias, enable_dropout=enable_dropout)
        x = x + layers.Dropout(config.dropout_rate)(h, enable_dropout=enable_dropout)  # [B, S, D]

        h = layers.RMSNorm(epsilon=config.layer_norm_epsilon, dtype=dtype, name="pre_mlp_layer_norm")(x)
        ffn = make_ffn(config, layer=self.layer, decoder=False)
        h = apply_ffn(ffn, h, padding_mask=padding_mask, enable_dropout=enable_dropout)
        x = x + layers.Dropout(config.dropout_rate)(h, enable_dropout=enable_dropout)
        return layers.constrain(x, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
    config: TransformerConfig
    layer: int

    @nn.compact
    def __call__(
        self, x, encoded, *, self_mask, cross_mask, bias, padding_mask, enable_dropout, decode
    ):
        """x: <dtype>[B, T, D]; encoded: <dtype>[B, S, D] (None in cached steps) -> <dtype>[B, T, D]."""
        config, dtype = self.config, self.config.compute_dtype
        eps = config.layer_norm_epsilon

        def attention(name, *, static_kv):
            return layers.MultiHeadAttention(
                num_heads=config.num_heads,
                head_dim=config.head_dim,
                dropout_rate=config.dropout_rate,
                dtype=dtype,
                static_kv=static_kv,
                name=name,
            )

        h = layers.RMSNorm(epsilon=eps, dtype=dtype, name="pre_self_attention_layer_norm")(x)
        h = attention("self_attention", static_kv=False)(
            h, h, mask=self_mask, bias=bias, enable_dropout=enable_dropout, decode=decode
        )
        x = x + layers.Dropout(config.dropout_rate)(h, enable_dropout=enable_dropout)

        h = layers.RMSNorm(epsilon=eps, dtype=dtype, name="pre_cross_attention_layer_norm")(x)
        # In decode mode the keys/values of `encoded` come from the cache (projected once by init_cache).
        h = attention(CROSS_ATTENTION, static_kv=True)(
            h, encoded, mask=cross_mask, enable_dropout=enable_dropout, decode=decode
        )
        x = x + layers.Dropout(config.dropout_rate)(h, enable_dropout=enable_dropout)

        h = layers.RMSNorm(epsilon=eps, dtype=dtype, name="pre_mlp_layer_norm")(x)
        ffn = make_ffn(config, layer=self.layer, decoder=True)
        h = apply_ffn(ffn, h, padding_mask=padding_mask, enable_dropout=enable_dropout)
        x = x + layers.Dropout(config.dropout_rate)(h, enable_dropout=enable_dropout)
        return layers.constrain(x, ("batch", "length", "embed"))


def _relpos(config: TransformerConfig) -> layers.RelativePositionBiases:
    return layers.RelativePositionBiases(
        num_buckets=config.relative_attention_num_buckets,
        max_distance=config.relative_attention_max_distance,
        num_heads=config.num_heads,
        dtype=config.compute_dtype,
        name="relpos_bias",
    )


class Encoder(nn.Module):
    config: TransformerConfig
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, encoder_input_tokens, *, encoder_segment_ids=None, enable_dropout=False):
        """encoder_input_tokens: <int32>[B, S] (0 = padding) -> <dtype>[B, S, D]."""
        config = self.config
        padding_mask = encoder_input_tokens > 0  # [B, S]
        mask = layers.make_attention_mask(
            padding_mask, padding_mask, query_segment_ids=encoder_segment_ids, key_segment_ids=encoder_segment_ids
        )  # [B, 1, S, S]
        length = encoder_input_tokens.shape[1]
        # Relative positions need no packing offsets: within a segment they are index differences.
        bias = _relpos(config)(length, length, bidirectional=True)  # [1, H, S, S]
        x = self.shared_embedding(encoder_input_tokens.astype(jnp.int32))  # [B, S, D]
        x = layers.Dropout(config.dropout_rate)(x, enable_dropout=enable_dropout)
        x = layers.constrain(x, ("batch", "length", "embed"))
        for i in range(config.num_encoder_layers):
            x = EncoderLayer(config, i, name=f"layers_{i}")(
                x, mask=mask, bias=bias, padding_mask=padding_mask, enable_dropout=enable_dropout
            )
        x = layers.RMSNorm(epsilon=config.layer_norm_epsilon, dtype=config.compute_dtype, name="encoder_norm")(x)
        return layers.Dropout(config.dropout_rate)(x, enable_dropout=enable_dropout)


class Decoder(nn.Module):
    config: TransformerConfig
    shared_embedding: nn.Module

    @nn.compact
    def __call__(
        self,
        encoded,
        encoder_input_tokens,
        decoder_input_tokens,
        *,
        decoder_target_tokens=None,
        encoder_segment_ids=None,
        decoder_segment_ids=None,
        enable_dropout=False,
        decode=False,
        max_decode_length=None,
    ):
        """encoded: <dtype>[B, S, D]; decoder_input_tokens: <int32>[B, T] (T = 1 per cached step).
        With decode=True see `Transformer.decode` (encoded may be None, B*K decoder rows).
        Returns float32 logits [B, T, V]."""
        config = self.config
        batch, length = decoder_input_tokens.shape
        encoder_mask = encoder_input_tokens > 0  # [B, S]
        # Which decoder positions are real tokens: targets > 0 (inputs start with pad id 0
        # as BOS, so they cannot tell), else segment ids, else all of them.
        if decoder_target_tokens is not None:
            padding_mask = decoder_target_tokens > 0
        elif decoder_segment_ids is not None:
            padding_mask = decoder_segment_ids > 0
        else:
            padding_mask = jnp.ones((batch, length), dtype=bool)  # [B, T]
        if decode:
            # The cache decides what each step sees; padding and packing do not exist here.
            # The cross mask has the encoder's rows, which may be B sentences for B*K beams.
            self_mask = None
            cross_mask = encoder_mask[:, None, None, :]  # [B, 1, 1, S]
            bias_length = max_decode_length or length
            moe_padding = None
        else:
            self_mask = layers.make_attention_mask(
                padding_mask,
                padding_mask,
                query_segment_ids=decoder_segment_ids,
                key_segment_ids=decoder_segment_ids,
                causal=True,
            )  # [B, 1, T, T]
            cross_mask = layers.make_attention_mask(
                padding_mask, encoder_mask, query_segment_ids=decoder_segment_ids, key_segment_ids=encoder_segment_ids
            )  # [B, 1, T, S]
            bias_length = length
            moe_padding = padding_mask
        bias = _relpos(config)(bias_length, bias_length, bidirectional=False)  # [1, H, T, T]

        x = self.shared_embedding(decoder_input_tokens.astype(jnp.int32))  # [B, T, D]
        x = layers.Dropout(config.dropout_rate)(x, enable_dropout=enable_dropout)
        x = layers.constrain(x, ("batch", "length", "embed"))
        for i in range(config.num_decoder_layers):
            x = DecoderLayer(config, i, name=f"layers_{i}")(
                x,
                encoded,
                self_mask=self_mask,
                cross_mask=cross_mask,
                bias=bias,
                padding_mask=moe_padding,
                enable_dropout=enable_dropout,
                decode=decode,
            )
        x = layers.RMSNorm(epsilon=config.layer_norm_epsilon, dtype=config.compute_dtype, name="decoder_norm")(x)
        x = layers.Dropout(config.dropout_rate)(x, enable_dropout=enable_dropout)
        kernel = layers.param_with_axes(
            self, "logits_dense", layers.variance_scaling(1.0, [0]), (config.d_model, config.vocab_size), ("embed", "vocab")
        )
        # Untied output projection in float32: softmax over a 250k vocabulary needs the bits.
        logits = jnp.einsum("btd,dv->btv", x.astype(jnp.float32), kernel)  # [B, T, V]
        return layers.constrain(logits, ("batch", "length", "vocab"))


class Transformer(nn.Module):
    """T5 v1.1 encoder-decoder with Switch MoE FFNs; returns float32 logits."""

    config: TransformerConfig

    def setup(self):
        config = self.config
        self.token_embedder = layers.Embed(config.vocab_size, config.d_model, dtype=config.compute_dtype)
        self.encoder = Encoder(config, shared_embedding=self.token_embedder)
        self.decoder = Decoder(config, shared_embedding=self.token_embedder)

    def encode(self, encoder_input_tokens, *, encoder_segment_ids=None, enable_dropout=False):
        """<int32>[B, S] -> <dtype>[B, S, D] encoder outputs."""
        return self.encoder(
            encoder_input_tokens, encoder_segment_ids=encoder_segment_ids, enable_dropout=enable_dropout
        )

    def decode(
        self,
        encoded,
        encoder_input_tokens,
        decoder_input_tokens,
        *,
        decoder_target_tokens=None,
        encoder_segment_ids=None,
        decoder_segment_ids=None,
        decoder_positions=None,
        enable_dropout=False,
        decode=False,
        max_decode_length=None,
    ):
        """Decoder over `encoded`; with decode=True one cached step ([B, 1] tokens).

        With decode=True the "cache" collection must come from `init_cache`; the
        cross-attention then reads its keys/values from it, so `encoded` may be
        None, and `encoder_input_tokens` <int32>[B, S] (for the padding mask) may
        have fewer rows than `decoder_input_tokens` [B*K, 1]: one per sentence for
        K beams each (see layers.MultiHeadAttention).
        `decoder_positions` is accepted for seqio's packed features but unused:
        relative position biases only need index differences within a segment.
        Returns float32 logits [B, T, V].
        """
        del decoder_positions
        return self.decoder(
            encoded,
            encoder_input_tokens,
            decoder_input_tokens,
            decoder_target_tokens=decoder_target_tokens,
            encoder_segment_ids=encoder_segment_ids,
            decoder_segment_ids=decoder_segment_ids,
            enable_dropout=enable_dropout,
            decode=decode,
            max_decode_length=max_decode_length,
        )

    def init_cache(self, encoded, encoder_input_tokens, *, max_decode_length: int):
        """Creates the decoding cache; apply with mutable=["cache"], returns nothing else.

        encoded: <dtype>[B, S, D] encoder outputs; encoder_input_tokens: <int32>[B, S].
        Self-attention gets zero keys/values [B, H, max_decode_length, K] and
        cache_index 0; cross-attention gets the keys/values of `encoded`
        [B, H, S, K], projected here once per sentence rather than at every step.
        The variables are created by one decoder pass over a zero target of
        `max_decode_length` positions: under jit everything but the projections
        is dead code that XLA removes (jit it; eagerly it costs a forward pass).
        """
        batch = encoder_input_tokens.shape[0]
        self.decode(
            encoded,
            encoder_input_tokens,
            jnp.zeros((batch, max_decode_length), jnp.int32),
            decode=True,
            max_decode_length=max_decode_length,
        )

    def __call__(
        self,
        encoder_input_tokens,
        decoder_input_tokens,
        *,
        decoder_target_tokens=None,
        encoder_segment_ids=None,
        decoder_segment_ids=None,
        encoder_positions=None,
        decoder_positions=None,
        enable_dropout=False,
        decode=False,
        max_decode_length=None,
    ):
        """encoder_input_tokens: <int32>[B, S]; decoder_input_tokens: <int32>[B, T].
        Returns float32 logits [B, T, V]."""
        del encoder_positions  # see `decode`
        encoded = self.encode(
            encoder_input_tokens, encoder_segment_ids=encoder_segment_ids, enable_dropout=enable_dropout
        )
        return self.decode(
            encoded,
            encoder_input_tokens,
            decoder_input_tokens,
            decoder_target_tokens=decoder_target_tokens,
            encoder_segment_ids=encoder_segment_ids,
            decoder_segment_ids=decoder_segment_ids,
            decoder_positions=decoder_positions,
            enable_dropout=enable_dropout,
            decode=decode,
            max_decode_length=max_decode_length,
        )


def split_cache(cache) -> tuple[dict, dict]:
    """(step cache, memory cache) of an `init_cache` cache; `merge_cache` undoes it.

    The memory cache holds the cross-attention keys/values <dtype>[B, H, S, K]:
    constant over the steps and the same for every beam of a sentence, so
    decoding closes over it un-tiled instead of carrying it, tiling it to B*K
    rows and reordering it with the beams at every step. The step cache (the
    self-attention keys/values and cache_index) is what decoding carries.
    """
    flat = traverse_util.flatten_dict(flax.core.unfreeze(cache))
    memory = {path: leaf for path, leaf in flat.items() if CROSS_ATTENTION in path}
    step = {path: leaf for path, leaf in flat.items() if CROSS_ATTENTION not in path}
    return traverse_util.unflatten_dict(step), traverse_util.unflatten_dict(memory)


# The shortest self-attention cache a decode starts with, and the factor it grows by:
# stages 64, 256, 1024, ... up to the decode length (mtmoe.decoding, "Growing caches").
# Each stage is one more copy of the decoder step in the compiled program, so these
# trade compile time against the attention and beam-reorder work of the steps a
# stage runs past what they need. A first stage of 64 keeps short inputs (the web
# UI's, whose decode length is the trained 64) at one loop and one compile; from 32
# it measured no faster on the embedded test sentences.
FIRST_CACHE_STAGE = 64
CACHE_STAGE_FACTOR = 4


def cache_stages(max_decode_length: int) -> tuple[int, ...]:
    """Self-attention cache lengths a decode of `max_decode_length` steps goes through.

    64 -> (64,); 128 -> (64, 128); 512 -> (64, 256, 512); 20 -> (20,).
    """
    stages, length = [], FIRST_CACHE_STAGE
    while length < max_decode_length:
        stages.append(length)
        length *= CACHE_STAGE_FACTOR
    return (*stages, max_decode_length)


def _self_attention_leaves(step_cache):
    flat = traverse_util.flatten_dict(flax.core.unfreeze(step_cache))
    return flat, [path for path in flat if path[-1] in ("cached_key", "cached_value")]


def cache_length(step_cache) -> int:
    """Positions the self-attention caches of a step cache hold ([B, H, L, K]: L)."""
    flat, paths = _self_attention_leaves(step_cache)
    return int(flat[paths[0]].shape[2])


def grow_cache(step_cache, length: int):
    """The step cache with its self-attention keys/values padded with empty positions to `length`."""
    flat, paths = _self_attention_leaves(step_cache)
    for path in paths:
        leaf = flat[path]  # [B, H, L, K]
        flat[path] = jnp.pad(leaf, ((0, 0), (0, 0), (0, length - leaf.shape[2]), (0, 0)))
    return traverse_util.unflatten_dict(flat)


def merge_cache(step_cache, memory_cache) -> dict:
    """The whole "cache" collection from the two halves `split_cache` returns."""
    flat = traverse_util.flatten_dict(flax.core.unfreeze(step_cache))
    flat.update(traverse_util.flatten_dict(flax.core.unfreeze(memory_cache)))
    return traverse_util.unflatten_dict(flat)
