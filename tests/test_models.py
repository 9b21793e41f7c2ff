"""EncoderDecoderModel: loss terms, metrics, scoring, decoding independent of the batch."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from mtmoe import decoding as decoding_lib
from mtmoe import models, network, routing
from mtmoe.moe_config import MoeConfig
from tests.tolerances import assert_close_float32

TINY = network.TransformerConfig(
    vocab_size=29,
    d_model=10,
    num_heads=2,
    head_dim=3,
    d_ff=11,
    num_encoder_layers=2,
    num_decoder_layers=2,
    # A small eval capacity: were inference not drop-free, tokens would overflow and
    # a sentence's output would depend on its batch neighbours.
    moe=MoeConfig(num_experts=4, expert_d_ff=7, eval_capacity_factor=0.5, min_expert_capacity=1),
)
SOURCES = np.array([[5, 9, 14, 3, 1, 0], [7, 2, 1, 0, 0, 0], [11, 12, 13, 20, 8, 1]], np.int32)  # [B=3, S=6]
TARGETS = np.array([[6, 4, 1, 0], [9, 1, 0, 0], [3, 3, 7, 1]], np.int32)  # [B=3, T=4]


def make_batch(sources, targets):
    inputs = np.pad(targets, ((0, 0), (1, 0)))[:, :-1]  # shifted right, 0 = start token
    return {
        "encoder_input_tokens": jnp.asarray(sources),
        "decoder_input_tokens": jnp.asarray(inputs),
        "decoder_target_tokens": jnp.asarray(targets),
        "decoder_loss_weights": jnp.asarray(targets > 0, jnp.float32),
    }


@pytest.fixture(scope="session")
def tiny_model():
    """(model, params): float32 params with init's shapes, drawn by numpy (no init to compile)."""
    model = models.EncoderDecoderModel(config=TINY)
    shapes = jax.eval_shape(
        functools.partial(model.get_initial_variables, input_shapes={"encoder_input_tokens": (3, 6), "decoder_input_tokens": (3, 4)}),
        jax.random.PRNGKey(0),
    )
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda leaf: jnp.asarray(rng.normal(0.0, 0.7, leaf.shape), jnp.float32), nn.unbox(shapes["params"]))
    return model, params


def test_cross_entropy_hand_values():
    logits = jnp.zeros((1, 1, 4))  # uniform over 4 tokens
    loss, z_term = models.cross_entropy_with_logits(logits, jnp.array([[2]]), z_loss=0.5)
    np.testing.assert_allclose(z_term, [[0.5 * np.log(4) ** 2]], rtol=1e-6)
    np.testing.assert_allclose(loss, [[np.log(4) + 0.5 * np.log(4) ** 2]], rtol=1e-6)
    # With label smoothing a prediction equal to the smoothed target scores 0.
    smoothing = 0.3
    smoothed = np.array([0.1, 0.1, 0.7, 0.1])
    loss, _ = models.cross_entropy_with_logits(
        jnp.log(jnp.asarray(smoothed))[None, None], jnp.array([[2]]), z_loss=0.0, label_smoothing=smoothing
    )
    np.testing.assert_allclose(loss, [[0.0]], atol=1e-6)


def test_cross_entropy_hand_written_gradient_equals_autodiff():
    """The custom VJP (no label smoothing) gives the gradient of the plain formula."""
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(0.0, 2.0, (2, 3, 5)), jnp.float32)
    targets = jnp.array([[0, 4, 2], [1, 1, 3]])
    weights = jnp.asarray(rng.uniform(0.0, 1.0, (2, 3)), jnp.float32)

    def reference(logits):
        log_z = jax.nn.logsumexp(logits, axis=-1)
        target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
        z_term = 0.1 * jnp.square(log_z)
        return jnp.sum(weights * (log_z - target_logit + z_term)) + 3.0 * jnp.sum(weights * z_term)

    def custom(logits):
        loss, z_term = models.cross_entropy_with_logits(logits, targets, z_loss=0.1)
        return jnp.sum(weights * loss) + 3.0 * jnp.sum(weights * z_term)

    np.testing.assert_allclose(custom(logits), reference(logits), rtol=1e-6)
    assert_close_float32(jax.grad(custom)(logits), jax.grad(reference)(logits), terms=logits.shape[-1])  # log-sum-exps


def test_loss_adds_expert_losses_averaged_over_layers(tiny_model):
    model, params = tiny_model
    loss, metrics = jax.jit(model.loss_fn)(params, make_batch(SOURCES, TARGETS), None)
    layer_aux = [v for k, v in metrics.items() if k.endswith("/auxiliary_loss") and k != "experts/auxiliary_loss"]
    layer_z = [v for k, v in metrics.items() if k.endswith("/router_z_loss") and k != "experts/router_z_loss"]
    assert len(layer_aux) == len(layer_z) == 2  # encoder layers_1, decoder layers_1
    assert "experts/encoder/layers_1/moe/fraction_tokens_left_behind" in metrics
    np.testing.assert_allclose(metrics["experts/auxiliary_loss"], np.mean(layer_aux), rtol=1e-6)
    expected = (
        metrics["cross_ent_loss"]
        + metrics["z_loss"]
        + 0.01 * metrics["experts/auxiliary_loss"]
        + 0.001 * metrics["experts/router_z_loss"]
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert metrics["num_target_tokens"] == 9
    for name in models.EXPERT_METRICS.values():
        assert f"experts/{name}" in metrics


def test_dense_model_has_no_expert_terms(tiny_model):
    _, params = tiny_model
    dense = models.EncoderDecoderModel(config=TINY.replace(moe=MoeConfig()), z_loss=0.0)
    shapes = jax.eval_shape(
        functools.partial(dense.get_initial_variables, input_shapes={"encoder_input_tokens": (3, 6), "decoder_input_tokens": (3, 4)}),
        jax.random.PRNGKey(0),
    )
    dense_params = jax.tree.map(lambda leaf: jnp.full(leaf.shape, 0.1, jnp.float32), nn.unbox(shapes["params"]))
    batch = make_batch(SOURCES, TARGETS)
    loss, metrics = jax.jit(dense.loss_fn)(dense_params, batch, None)
    assert not any(key.startswith("experts/") for key in metrics)
    # Constant params give the same logits at every position, so CE = -mean log p(target).
    scores = dense.score_batch(dense_params, batch)
    np.testing.assert_allclose(loss, -np.sum(scores) / 9, rtol=1e-5)


def test_score_batch_equals_greedy_log_prob(tiny_model):
    model, params = tiny_model
    batch = make_batch(SOURCES, TARGETS)
    tokens, scores = jax.jit(functools.partial(model.predict_batch, decoding="greedy", return_scores=True))(params, batch)
    assert tokens.shape == (3, 4) and tokens.dtype == jnp.int32
    # Score the greedy outputs with the full (uncached) forward pass.
    weights = np.cumsum(np.asarray(tokens) == models.EOS_ID, axis=1) - (np.asarray(tokens) == models.EOS_ID) == 0
    rescored = model.score_batch(params, {**make_batch(SOURCES, np.asarray(tokens)), "decoder_loss_weights": weights})
    # cached steps against one full pass: a log-softmax over the vocabulary at every decoded position
    assert_close_float32(rescored, scores, terms=TINY.vocab_size * tokens.shape[1])


def test_sentence_decodes_the_same_alone_and_in_a_batch(tiny_model):
    model, params = tiny_model
    predict = jax.jit(functools.partial(model.predict_batch, decoding="beam", beam_size=3, max_decode_length=5))
    batched = predict(params, {"encoder_input_tokens": jnp.asarray(SOURCES)})  # [3, 5]
    for row in (0, 2):
        alone = predict(params, {"encoder_input_tokens": jnp.asarray(SOURCES[row : row + 1])})  # [1, 5]
        np.testing.assert_array_equal(alone[0], batched[row])


@pytest.mark.parametrize("decoding, beam_size", [("greedy", 1), ("beam", 4)])
@pytest.mark.parametrize("first_stage", [None, 2])
def test_cached_decoding_equals_decoding_with_the_full_forward_pass(tiny_model, decoding, beam_size, first_stage,
                                                                    monkeypatch):
    """predict_batch (cross-attention keys/values cached once, shared by the beams) against the same
    search driven by the uncached teacher-forced forward pass over each step's prefix. With
    first_stage=2 the self-attention cache grows during the search: 2, 4, then 5 positions."""
    model, params = tiny_model
    length = 5
    if first_stage is not None:
        monkeypatch.setattr(network, "FIRST_CACHE_STAGE", first_stage)
        monkeypatch.setattr(network, "CACHE_STAGE_FACTOR", 2)
        assert network.cache_stages(length) == (2, 4, 5)
    sources = jnp.asarray(SOURCES)
    rows = jnp.repeat(sources, beam_size, axis=0)  # [B*K, S]

    def full_forward_logits(state: decoding_lib.DecodingState):
        logits = model.inference_module.apply(
            {"params": params}, rows, state.sequences
        )  # [B*K, L, V]  causal, so positions after cur_index change nothing
        return jax.lax.dynamic_index_in_dim(logits, state.cur_index, axis=1, keepdims=False), state.cache

    inputs = jnp.zeros((3, length), jnp.int32)
    if decoding == "beam":
        search = functools.partial(decoding_lib.beam_search, num_decodes=beam_size, alpha=0.6)
    else:
        search = decoding_lib.greedy
    expected_tokens, expected_scores = jax.jit(
        lambda: search(inputs, {}, full_forward_logits, eos_id=models.EOS_ID, max_decode_len=length)
    )()
    tokens, scores = jax.jit(
        functools.partial(model.predict_batch, decoding=decoding, beam_size=beam_size, max_decode_length=length,
                          return_scores=True)
    )(params, {"encoder_input_tokens": sources})
    np.testing.assert_array_equal(tokens, expected_tokens[:, 0])
    assert_close_float32(scores, expected_scores[:, 0], terms=TINY.vocab_size * length)  # cached vs full logits
    assert len(set(map(tuple, np.asarray(tokens).tolist()))) > 1  # sentences differ: the rows are not mixed up


def test_sampling_needs_rng_and_unknown_decoding_fails(tiny_model):
    model, params = tiny_model
    batch = {"encoder_input_tokens": jnp.asarray(SOURCES)}
    with pytest.raises(ValueError, match="needs rng"):
        model.predict_batch(params, batch, decoding="sample", max_decode_length=3)
    with pytest.raises(ValueError, match="unknown decoding 'nucleus'"):
        model.predict_batch(params, batch, decoding="nucleus", max_decode_length=3)
    with pytest.raises(ValueError, match="max_decode_length"):
        model.predict_batch(params, batch)


def test_inference_module_sows_the_expert_of_each_token_and_drops_none(tiny_model):
    model, params = tiny_model
    module = model.inference_module
    _, state = module.apply({"params": params}, jnp.asarray(SOURCES), method=module.encode, mutable=["intermediates"])
    moe = state["intermediates"]["encoder"]["layers_1"]["moe"]
    assert set(state["intermediates"]["encoder"]) == {"layers_1"}  # the one encoder MoE layer
    experts = np.asarray(moe["expert_index"][0])  # [B, S]
    np.testing.assert_array_equal(experts == -1, SOURCES == 0)
    assert experts.max() < TINY.moe.num_experts
    assert float(moe["fraction_tokens_dropped"][0]) == 0.0  # drop-free, although eval_capacity_factor is 0.5
    assert module.config.moe.eval_capacity == "drop_free" and model.config.moe.eval_capacity == "factor"


def test_loss_weights_come_from_the_moe_config(tiny_model):
    model, params = tiny_model
    heavier = models.EncoderDecoderModel(config=TINY.replace(moe=TINY.moe.replace(aux_loss_factor=1.0)))
    batch = make_batch(SOURCES, TARGETS)
    loss, metrics = jax.jit(model.loss_fn)(params, batch, None)
    heavier_loss, _ = jax.jit(heavier.loss_fn)(params, batch, None)
    np.testing.assert_allclose(heavier_loss - loss, 0.99 * metrics["experts/auxiliary_loss"], rtol=1e-5)


def test_model_from_meta_reads_flat_configs_of_older_checkpoints():
    flat = {**{k: v for k, v in TINY.to_dict().items() if k != "moe"}, "num_experts": 4, "expert_d_ff": 7,
            "router_type": "topk", "num_selected_experts": 2, "eval_capacity_factor": 0.5, "min_expert_capacity": 1,
            "expert_activations": None}
    model = models.model_from_meta(flat, {"z_loss": 0.0, "aux_loss_factor": 0.02, "router_z_loss_factor": 0.003})
    expected = TINY.moe.replace(router=routing.TokensChooseRouter(num_selected_experts=2), aux_loss_factor=0.02,
                                router_z_loss_factor=0.003)
    assert model.config == TINY.replace(moe=expected) and model.z_loss == 0.0
    flat["router_type"] = "experts_choose"
    flat["decoder_sparse_every"] = 0
    assert type(models.model_from_meta(flat).config.moe.router) is routing.ExpertsChooseRouter
    assert models.model_from_meta(TINY.to_dict()).config == TINY  # the current layout


def test_inference_runs_in_float32_unless_asked():
    bf16 = dataclasses.replace(TINY, dtype="bfloat16")
    assert models.EncoderDecoderModel(config=bf16).inference_module.config.dtype == "float32"
    assert models.EncoderDecoderModel(config=bf16, inference_dtype=None).inference_module.config.dtype == "bfloat16"
    with pytest.raises(ValueError, match="dtype='float64' is unknown"):
        models.EncoderDecoderModel(config=bf16, inference_dtype="float64")
