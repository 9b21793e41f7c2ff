"""EncoderDecoderModel: the loss, metrics, prediction and scoring around `Transformer`.

Axis letters: B batch, S source length, T target length, V vocab, K beams.

Batches are seqio `EncDecFeatureConverter` features: `encoder_input_tokens`
[B, S], `decoder_input_tokens` / `decoder_target_tokens` / `decoder_loss_weights`
[B, T], and when packed `encoder_segment_ids`, `decoder_segment_ids`,
`encoder_positions`, `decoder_positions`.

Loss = sum(weights * (cross-entropy + z_loss * logsumexp(logits)**2)) / sum(weights)
     + moe.aux_loss_factor * mean over MoE layers of the load-balancing loss
     + moe.router_z_loss_factor * mean over MoE layers of the router z-loss
(`moe` = config.moe, a `MoeConfig`).
The auxiliary losses are averaged over layers, not summed (as T5X's MoE models
do): the 0.01 / 0.001 coefficients of the Switch and ST-MoE papers are per-layer
magnitudes, and averaging keeps their weight against the cross-entropy the
same whether a model has 2 or 30 MoE layers.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mtmoe import decoding as decoding_lib
from mtmoe import network, routing
from mtmoe.data.vocabulary import EOS_ID
from mtmoe.moe_config import MoeConfig
from mtmoe.network import Transformer, TransformerConfig

Array = jax.Array

# Sown names in mtmoe.moe -> the metric names T5X's MoE trainer logs.
EXPERT_METRICS = {
    "aux_loss": "auxiliary_loss",
    "router_z_loss": "router_z_loss",
    "fraction_tokens_dropped": "fraction_tokens_left_behind",
    "expert_usage": "expert_usage",
    "router_confidence": "router_confidence",
}
_MODEL_INPUTS = (
    "encoder_segment_ids",
    "decoder_segment_ids",
    "encoder_positions",
    "decoder_positions",
)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _cross_entropy_z(logits: Array, targets: Array, z_loss: float):
    """(cross-entropy + z-loss, z-loss) per token with a hand-written gradient (as T5X).

    The automatic gradient of take_along_axis is a scatter into a zero [B, T, V]
    buffer that XLA:CPU fuses with the softmax gradient into one loop writing
    dlogits transposed: the most expensive op of a small model's train step.
    """
    return _cross_entropy_z_fwd(logits, targets, z_loss)[0]


def _cross_entropy_z_fwd(logits, targets, z_loss):
    log_z = jax.nn.logsumexp(logits, axis=-1)  # [B, T]
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]  # [B, T]
    z_term = z_loss * jnp.square(log_z)
    return (log_z - target_logit + z_term, z_term), (logits, targets, log_z)


def _cross_entropy_z_bwd(z_loss, residuals, cotangents):
    logits, targets, log_z = residuals
    g_total, g_z = cotangents  # [B, T] each
    probs = jnp.exp(logits - log_z[..., None])  # [B, T, V]
    scale = g_total * (1.0 + 2.0 * z_loss * log_z) + g_z * 2.0 * z_loss * log_z  # d/dlog_z of both outputs
    onehot = targets[..., None] == jnp.arange(logits.shape[-1], dtype=targets.dtype)  # [B, T, V]
    dlogits = scale[..., None] * probs - jnp.where(onehot, g_total[..., None], 0.0)
    return dlogits.astype(logits.dtype), None


_cross_entropy_z.defvjp(_cross_entropy_z_fwd, _cross_entropy_z_bwd)


def cross_entropy_with_logits(logits: Array, targets: Array, *, z_loss: float, label_smoothing: float = 0.0):
    """Per-token cross-entropy and z-loss, as T5X.

    logits: <float32>[B, T, V]; targets: <int32>[B, T].
    Returns (<float32>[B, T] cross-entropy + z-loss term, <float32>[B, T] z-loss term).
    With label smoothing the constant entropy of the smoothed target is
    subtracted, so a perfect prediction scores 0.
    """
    vocab_size = logits.shape[-1]
    if label_smoothing == 0.0:
        return _cross_entropy_z(logits, targets, float(z_loss))
    log_z = jax.nn.logsumexp(logits, axis=-1)  # [B, T]
    log_probs = logits - log_z[..., None]  # [B, T, V]
    target_log_prob = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # [B, T]
    if label_smoothing > 0.0:
        confidence = 1.0 - label_smoothing
        low_confidence = label_smoothing / (vocab_size - 1)
        normalizing_constant = -(
            confidence * np.log(confidence) + (vocab_size - 1) * low_confidence * np.log(low_confidence + 1e-20)
        )
        mean_log_prob = jnp.sum(log_probs, axis=-1)  # [B, T]
        smoothed = confidence * target_log_prob + low_confidence * (mean_log_prob - target_log_prob)
        loss = -smoothed - normalizing_constant
    else:
        loss = -target_log_prob
    z_term = z_loss * jnp.square(log_z)  # [B, T]  keeps the softmax normaliser near 1 (T5X)
    return loss + z_term, z_term


def collect_expert_metrics(intermediates: Mapping[str, Any]) -> dict[str, Array]:
    """Per-layer and layer-averaged expert metrics from the sown "intermediates".

    Returns {"experts/<name>": mean over layers, "experts/<layer path>/<name>": value};
    empty for a dense model.
    """
    per_name: dict[str, list[Array]] = {name: [] for name in EXPERT_METRICS.values()}
    metrics: dict[str, Array] = {}
    for path, value in traverse_util.flatten_dict(dict(intermediates)).items():
        if path[-1] not in EXPERT_METRICS:
            continue
        name = EXPERT_METRICS[path[-1]]
        # sow() appends one scalar per call; each MoE layer is called once per step.
        scalar = jnp.mean(jnp.stack([jnp.asarray(v, jnp.float32) for v in value]))
        metrics[f"experts/{'/'.join(path[:-1])}/{name}"] = scalar
        per_name[name].append(scalar)
    for name, values in per_name.items():
        if values:
            metrics[f"experts/{name}"] = jnp.mean(jnp.stack(values))
    return metrics


class EncoderDecoderModel:
    """Loss, metrics, predictions and scores of an mSwitch encoder-decoder."""

    def __init__(
        self,
        *,
        config: TransformerConfig,
        label_smoothing: float = 0.0,
        z_loss: float = 1e-4,
        inference_dtype: str | None = "float32",
        inference_capacity: str = "drop_free",
    ):
        """The inference module (`inference_module`: predict_batch, score_batch) is
        the same architecture with two inference settings:
        inference_dtype: its compute dtype (None = the training dtype `config.dtype`).
        float32 by default because bfloat16 rounding depends on the batch's matmul
        shapes, so a sentence's beam-search output would change with the batch it is
        decoded in. The parameters are float32 either way.
        inference_capacity: its MoE `eval_capacity` mode (see mtmoe.moe_config);
        "drop_free" by default, so a sentence translates and scores the same alone
        and in any batch."""
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1)")
        self.config = config
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.module = Transformer(config)
        self.inference_module = Transformer(config.for_inference(dtype=inference_dtype, eval_capacity=inference_capacity))

    # -- initialisation ---------------------------------------------------------

    def get_initial_variables(self, rng: Array, *, input_shapes: Mapping[str, tuple[int, ...]]):
        """Boxed (`nn.LogicallyPartitioned`) variables for inputs of `input_shapes`.

        input_shapes needs "encoder_input_tokens" and "decoder_input_tokens";
        jit it with `jax.eval_shape` for shapes only (see mtmoe.plan).
        """
        for key in ("encoder_input_tokens", "decoder_input_tokens"):
            if key not in input_shapes:
                raise ValueError(f"input_shapes lacks {key!r}; pass the feature shapes of a batch, e.g. (batch, length)")
        encoder_tokens = jnp.ones(input_shapes["encoder_input_tokens"], jnp.int32)
        decoder_tokens = jnp.ones(input_shapes["decoder_input_tokens"], jnp.int32)
        params_rng, dropout_rng = jax.random.split(rng)
        return self.module.init(
            {"params": params_rng, "dropout": dropout_rng},
            encoder_tokens,
            decoder_tokens,
            enable_dropout=False,
        )

    # -- training -----------------------------------------------------------------

    def _model_kwargs(self, batch: Mapping[str, Array]) -> dict[str, Array]:
        return {key: batch[key] for key in _MODEL_INPUTS if key in batch}

    def loss_fn(self, params, batch: Mapping[str, Array], dropout_rng: Array | None):
        """Returns (<float32>[] loss, dict of <float32>[] metrics); dropout_rng None = eval."""
        enable_dropout = dropout_rng is not None
        rngs = {"dropout": dropout_rng} if enable_dropout else {}
        logits, state = self.module.apply(
            {"params": params},
            batch["encoder_input_tokens"],
            batch["decoder_input_tokens"],
            decoder_target_tokens=batch["decoder_target_tokens"],
            enable_dropout=enable_dropout,
            rngs=rngs,
            mutable=["intermediates"],
            **self._model_kwargs(batch),
        )  # [B, T, V]
        targets = batch["decoder_target_tokens"]
        weights = batch.get("decoder_loss_weights")
        weights = (targets > 0).astype(jnp.float32) if weights is None else weights.astype(jnp.float32)
        token_loss, token_z = cross_entropy_with_logits(
            logits, targets, z_loss=self.z_loss, label_smoothing=self.label_smoothing
        )  # [B, T]
        num_tokens = jnp.sum(weights)
        denominator = jnp.maximum(num_tokens, 1.0)  # an all-padding batch gives 0, not nan
        cross_ent_plus_z = jnp.sum(token_loss * weights) / denominator
        z_term = jnp.sum(token_z * weights) / denominator
        correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)

        expert_metrics = collect_expert_metrics(state.get("intermediates", {}))
        loss = cross_ent_plus_z
        if expert_metrics:
            loss = (
                loss
                + self.config.moe.aux_loss_factor * expert_metrics["experts/auxiliary_loss"]
                + self.config.moe.router_z_loss_factor * expert_metrics["experts/router_z_loss"]
            )
        metrics = {
            "loss": loss,
            "cross_ent_loss": cross_ent_plus_z - z_term,
            "z_loss": z_term,
            "accuracy": jnp.sum(correct * weights) / denominator,
            "num_target_tokens": num_tokens,
            **expert_metrics,
        }
        return loss, metrics

    # -- inference ------------------------------------------------------------------

    def score_batch(self, params, batch: Mapping[str, Array]) -> Array:
        """<float32>[B] log-likelihood of each target sequence (sum over its tokens).

        Runs the inference module: with drop-free routing a sequence's score does
        not depend on the rest of the batch.
        """
        logits = self.inference_module.apply(
            {"params": params},
            batch["encoder_input_tokens"],
            batch["decoder_input_tokens"],
            decoder_target_tokens=batch["decoder_target_tokens"],
            **self._model_kwargs(batch),
        )  # [B, T, V]
        targets = batch["decoder_target_tokens"]
        weights = batch.get("decoder_loss_weights")
        weights = (targets > 0).astype(jnp.float32) if weights is None else weights.astype(jnp.float32)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        token_log_prob = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # [B, T]
        return jnp.sum(token_log_prob * weights, axis=-1)

    def _decode_setup(self, params, batch, *, max_decode_length: int):
        """Encodes once and builds the cache for `max_decode_length` steps.

        Returns (step cache, memory cache) (see network.split_cache): the
        cross-attention keys/values [B, S, H, K] are projected here, once per
        sentence, and stay un-tiled; only the step cache goes through decoding.
        """
        module = self.inference_module
        encoder_tokens = batch["encoder_input_tokens"]
        encoded = module.apply({"params": params}, encoder_tokens, method=module.encode)  # [B, S, D]
        _, variables = module.apply(
            {"params": params},
            encoded,
            encoder_tokens,
            max_decode_length=max_decode_length,
            mutable=["cache"],
            method=module.init_cache,
        )
        return network.split_cache(variables["cache"])

    def _tokens_to_logits(self, params, memory_cache, encoder_tokens):
        """tokens_to_logits over B*K rows; memory_cache and encoder_tokens keep B rows (one per sentence).
        The self-attention cache may be any of the decode's cache stages: its length is read from it."""
        module = self.inference_module

        def tokens_to_logits(state: decoding_lib.DecodingState):
            logits, mutated = module.apply(
                {"params": params, "cache": network.merge_cache(state.cache, memory_cache)},
                None,  # the encoder output is only read through the cached cross-attention keys/values
                encoder_tokens,  # [B, S]
                state.cur_token,  # [B*K, 1]
                decode=True,
                max_decode_length=network.cache_length(state.cache),
                mutable=["cache"],
                method=module.decode,
            )  # [B*K, 1, V]
            step_cache, _ = network.split_cache(mutated["cache"])
            return logits[:, 0, :], step_cache

        return tokens_to_logits

    def predict_batch(
        self,
        params,
        batch: Mapping[str, Array],
        *,
        decoding: str = "beam",
        beam_size: int = 4,
        alpha: float = 0.6,
        max_decode_length: int | None = None,
        decode_steps: Array | int | None = None,
        rng: Array | None = None,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        return_scores: bool = False,
    ):
        """Translates `batch["encoder_input_tokens"]` with the cached decoder.

        decoding ("beam" | "greedy" | "sample"): beam search with
        `beam_size` and length penalty `alpha`, argmax, or sampling with
        `temperature` / `top_k` / `top_p` from `rng`. max_decode_length defaults
        to the width of batch["decoder_input_tokens"] (seqio's target length).
        decode_steps (traced; default max_decode_length) stops decoding after
        that many output positions: under jit with max_decode_length static,
        one program serves every limit up to it (mtmoe.decoding).
        Runs the inference module: with drop-free routing a sentence translates
        the same alone and in any batch.
        Returns <int32>[B, L] tokens (EOS included, 0 after it) and, with
        return_scores, <float32>[B] scores (length-penalised log-prob for beam).
        """
        method = decoding
        if method not in ("beam", "greedy", "sample"):
            raise ValueError(f"unknown decoding {method!r}; use 'beam', 'greedy' or 'sample'")
        if method == "sample" and rng is None:
            raise ValueError("decoding='sample' needs rng=jax.random.PRNGKey(...)")
        if max_decode_length is None:
            if "decoder_input_tokens" not in batch:
                raise ValueError("pass max_decode_length or a batch with decoder_input_tokens (the target length)")
            max_decode_length = int(batch["decoder_input_tokens"].shape[1])
        encoder_tokens = batch["encoder_input_tokens"]
        batch_size = encoder_tokens.shape[0]
        # The self-attention cache starts short and grows with the output (network.cache_stages).
        stages = network.cache_stages(max_decode_length)
        growth = {"max_decode_len": max_decode_length, "decode_steps": decode_steps, "cache_stages": stages,
                  "grow_cache": network.grow_cache}
        cache, memory_cache = self._decode_setup(params, batch, max_decode_length=stages[0])
        # Decoding tiles `cache` to rows b*K .. b*K+K-1 per example; the memory cache and
        # the encoder tokens stay one row per example, shared by its beams.
        tokens_to_logits = self._tokens_to_logits(params, memory_cache, encoder_tokens)
        inputs = jnp.zeros((batch_size, max_decode_length), jnp.int32)
        if method == "beam":
            sequences, scores = decoding_lib.beam_search(
                inputs, cache, tokens_to_logits, eos_id=EOS_ID, num_decodes=beam_size, alpha=alpha, **growth
            )
        elif method == "greedy":
            sequences, scores = decoding_lib.greedy(inputs, cache, tokens_to_logits, eos_id=EOS_ID, **growth)
        else:
            sequences, scores = decoding_lib.temperature_sample(
                inputs, cache, tokens_to_logits, rng, eos_id=EOS_ID, temperature=temperature, topk=top_k,
                topp=top_p, **growth,
            )
        best, best_score = sequences[:, 0, :], scores[:, 0]  # [B, L], [B]  best first
        return (best, best_score) if return_scores else best


# Fields of TransformerConfig that checkpoints written before `MoeConfig` stored flat,
# and the loss weights they stored among the model's keyword arguments.
_FLAT_MOE_FIELDS = (
    "num_experts", "encoder_sparse_every", "decoder_sparse_every", "expert_d_ff", "expert_activations",
    "train_capacity_factor", "eval_capacity_factor", "min_expert_capacity", "max_group_size", "dispatch",
    "jitter_noise", "expert_dropout_rate",
)
_MOE_LOSS_KWARGS = ("aux_loss_factor", "router_z_loss_factor")


def model_from_meta(model_config: Mapping[str, Any], model_kwargs: Mapping[str, Any] | None = None) -> EncoderDecoderModel:
    """The model a checkpoint's meta describes ("model_config" = TransformerConfig.to_dict(), "model_kwargs").

    Also reads the flat layout of checkpoints written before `MoeConfig`
    (num_experts, router_type 'top1' | 'topk' | 'experts_choose', ... beside
    the dense fields; the loss weights in model_kwargs).
    """
    model_config, model_kwargs = dict(model_config), dict(model_kwargs or {})
    if "moe" not in model_config:
        moe = {name: model_config.pop(name) for name in _FLAT_MOE_FIELDS if name in model_config}
        router_type = model_config.pop("router_type", "top1")
        num_selected = model_config.pop("num_selected_experts", 1)
        if router_type == "experts_choose":
            router = routing.ExpertsChooseRouter()
        else:
            router = routing.TokensChooseRouter(num_selected_experts=1 if router_type == "top1" else num_selected)
        losses = {name: model_kwargs.pop(name) for name in _MOE_LOSS_KWARGS if name in model_kwargs}
        model_config["moe"] = MoeConfig(router=router, **moe, **losses).to_dict()
    return EncoderDecoderModel(config=TransformerConfig.from_dict(model_config), **model_kwargs)
