"""mtmoe's encoder-decoder with the module interface of T5X's `EncoderDecoderModel`.

`python -m t5x.train --gin_file=gin/mswitch_base.gin` trains `T5xTransformer`
through T5X's own model class (`t5x.contrib.moe.models.MoeEncoderDecoderModel`),
trainer, partitioner and checkpointer. It is `network.Transformer` itself (the
same parameter tree, so a T5X checkpoint's parameters are an mtmoe
checkpoint's: `mtmoe.t5x_convert`), with four conventions of T5X's added:

* Signatures: T5X passes `decoder_target_tokens` and the segment ids
  positionally, `encode`'s and `decode`'s arguments too.
* Logical axis names: T5X reads them from a "params_axes" collection of
  `flax.linen.partitioning.AxisMetadata` (leaf `<param>_axes`) and wants plain
  arrays in "params"; mtmoe's parameters carry their names in their boxes
  (`nn.with_logical_partitioning`). `init` returns T5X's form.
* The decode cache: T5X creates it with `__call__(..., decode=True)` on dummy
  all-ones inputs, tiles it over the beams, and passes the (tiled) encoder
  output to every `decode` step. mtmoe's cross-attention would cache keys and
  values projected from the dummy encoder output, so `decode` keeps the
  cross-attention out of the "cache" collection: it is projected from
  `encoded` at every step (as in T5X's own networks; mtmoe's decoding
  projects it once per sentence), and the cache holds only the self-attention
  keys/values and `cache_index` (`[B, H, L, K]` heads-major; T5X's beam search
  maps over the leading axis only).
* Expert metrics: T5X's MoE model averages sown "intermediates" named
  `auxiliary_loss`, `router_z_loss`, `fraction_tokens_left_behind`,
  `expert_usage`, `router_confidence` over all paths that end in each name.
  mtmoe's MoE layers sow `router_z_loss`, `expert_usage` and
  `router_confidence` under those names; `__call__` sows each
  layer's `aux_loss` and `fraction_tokens_dropped` again under T5X's names (at
  the top of the tree), so that its averages are the mean over MoE layers.

No T5X import here: the adapter is tested in the main environment
(tests/test_t5x_module.py) and with T5X in a side one (tests/test_t5x_interop.py).

Axis letters: B batch, S source length, T target length, D d_model, V vocab,
H heads, K head_dim, L cache length.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
from flax import linen as nn
from flax import traverse_util
from flax.linen import partitioning as flax_partitioning

from mtmoe import models, network, partitioning

Array = jax.Array

# T5X's names for the metrics mtmoe sows under another name (models.EXPERT_METRICS: mtmoe -> T5X).
RENAMED_EXPERT_METRICS = {ours: theirs for ours, theirs in models.EXPERT_METRICS.items() if ours != theirs}


def params_axes(boxed_params: Any) -> dict:
    """The "params_axes" collection T5X reads for a tree of boxed params.

    Each `nn.LogicallyPartitioned` leaf `.../<name>` becomes
    `.../<name>_axes = AxisMetadata(names)` (flax.linen.partitioning's
    convention, which `flax_partitioning.get_axis_names` strips back).
    """
    flat = traverse_util.flatten_dict(
        flax.core.unfreeze(boxed_params), is_leaf=lambda _, value: isinstance(value, nn.Partitioned)
    )
    axes = {}
    for path, leaf in flat.items():
        if not isinstance(leaf, nn.Partitioned):
            raise ValueError(f"parameter {'/'.join(path)} has no logical axis names; create it with "
                             f"layers.param_with_axes so that T5X's partitioner can place it")
        axes[path[:-1] + (f"{path[-1]}_axes",)] = flax_partitioning.AxisMetadata(names=tuple(leaf.names))
    return traverse_util.unflatten_dict(axes)


def logical_axis_rules() -> tuple[tuple[str, Any], ...]:
    """mtmoe's rules table (`partitioning.LOGICAL_AXIS_RULES`) for T5X's MoE partitioner.

    The same mesh axes ('data', 'expert', 'model') and the same placement of every
    parameter; only `batch` lists its axes as ('expert', 'data'), the order in which
    T5X's `MoePjitPartitioner` shards the input batches, so that activations keep the
    layout their batch arrives in.
    """
    return tuple((name, ("expert", "data") if name == "batch" else axes)
                 for name, axes in partitioning.LOGICAL_AXIS_RULES)


def _without_cross_attention(cache: dict) -> dict:
    """The "cache" collection minus the cross-attention entries (see the module docstring)."""
    flat = traverse_util.flatten_dict(flax.core.unfreeze(cache))
    return traverse_util.unflatten_dict({path: leaf for path, leaf in flat.items()
                                         if network.CROSS_ATTENTION not in path})


class T5xTransformer(network.Transformer):
    """`network.Transformer` as T5X's `EncoderDecoderModel` calls its module (module docstring).

    Every argument of mtmoe's `Transformer` methods is accepted as before, so
    its own `__call__` and `init_cache` keep working; T5X's positional forms
    are added. Returns float32 logits [B, T, V].
    """

    @nn.nowrap
    def init(self, rngs, *args, **kwargs):
        """`Module.init` with unboxed "params" and their logical axis names in "params_axes"."""
        variables = flax.core.unfreeze(super().init(rngs, *args, **kwargs))
        boxed = variables.pop("params")
        return {"params": nn.unbox(boxed), "params_axes": params_axes(boxed), **variables}

    def __call__(
        self,
        encoder_input_tokens,
        decoder_input_tokens,
        decoder_target_tokens=None,
        encoder_segment_ids=None,
        decoder_segment_ids=None,
        encoder_positions=None,
        decoder_positions=None,
        *,
        enable_dropout=False,
        decode=False,
        max_decode_length=None,
    ):
        """<int32>[B, S] encoder and [B, T] decoder tokens -> <float32>[B, T, V] logits."""
        logits = super().__call__(
            encoder_input_tokens,
            decoder_input_tokens,
            decoder_target_tokens=decoder_target_tokens,
            encoder_segment_ids=encoder_segment_ids,
            decoder_segment_ids=decoder_segment_ids,
            encoder_positions=encoder_positions,
            decoder_positions=decoder_positions,
            enable_dropout=enable_dropout,
            decode=decode,
            max_decode_length=max_decode_length,
        )
        if self.is_mutable_collection("intermediates"):
            self._sow_t5x_expert_metrics()
        return logits

    def encode(self, encoder_input_tokens, encoder_segment_ids=None, enable_dropout=False):
        """<int32>[B, S] -> <dtype>[B, S, D] encoder outputs."""
        return super().encode(
            encoder_input_tokens, encoder_segment_ids=encoder_segment_ids, enable_dropout=enable_dropout
        )

    @functools.partial(nn.map_variables, mapped_collections="cache", trans_in_fn=_without_cross_attention,
                       trans_out_fn=_without_cross_attention, mutable=True)
    def decode(
        self,
        encoded,
        encoder_input_tokens,
        decoder_input_tokens,
        decoder_target_tokens=None,
        encoder_segment_ids=None,
        decoder_segment_ids=None,
        decoder_positions=None,
        enable_dropout=False,
        decode=False,
        max_decode_length=None,
    ):
        """Decoder over `encoded` <dtype>[B, S, D]; with decode=True one cached step.

        A cached step takes decoder tokens <int32>[B, 1] and the encoder output
        and tokens with the same B rows (T5X tiles them over the beams); the
        cache is the one `__call__(..., decode=True)` created for
        `max_decode_length` positions. Returns <float32>[B, T, V] logits.
        """
        return super().decode(
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

    def _sow_t5x_expert_metrics(self) -> None:
        # Each MoE layer sowed one scalar per name; these are sown again, one per layer.
        sown = traverse_util.flatten_dict(flax.core.unfreeze(self.variables.get("intermediates", {})))
        for path, values in sorted(sown.items()):
            if path[-1] in RENAMED_EXPERT_METRICS:
                for value in values:
                    self.sow("intermediates", RENAMED_EXPERT_METRICS[path[-1]], value)
