"""A new router is one class and one gin line: a router defined here, bound through gin, trains the tiny model."""

import os

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from mtmoe import models, routing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RoundRobinRouter(routing.Router):
    """Token s of each group goes to expert s mod E, weighted by its router probability
    (so the router kernel still learns); Switch load-balancing loss."""

    def route(self, router_probs, *, expert_capacity, padding_mask):
        del expert_capacity  # the dispatch applies it
        groups, tokens, num_experts = router_probs.shape
        expert = jnp.broadcast_to(jnp.arange(tokens) % num_experts, (groups, tokens))[..., None]  # [G, S, 1]
        valid = jnp.ones(expert.shape, bool) if padding_mask is None else padding_mask[..., None]  # [G, S, 1]
        weights = jnp.where(valid, jnp.take_along_axis(router_probs, expert, axis=-1), 0.0)  # [G, S, 1]
        return routing.TokensChooseRouting(expert.astype(jnp.int32), weights, valid)

    def auxiliary_loss(self, router_probs, route, *, num_experts, padding_mask):
        return routing.load_balancing_loss(router_probs, route.expert_index, num_experts=num_experts,
                                           padding_mask=padding_mask)


# A router in an importable module needs no registration: gin files name it as
# `ROUTER = @my_module.MyRouter()` under `from __gin__ import dynamic_registration`.
gin.external_configurable(RoundRobinRouter, "RoundRobinRouter")


# The tiny shapes of tests/test_models.py, through the gin files every model uses.
GIN = """
include 'gin/models/common.gin'
VOCAB_SIZE = 29
EMBED_DIM = 10
NUM_HEADS = 2
HEAD_DIM = 3
MLP_DIM = 11
NUM_ENCODER_LAYERS = 2
NUM_DECODER_LAYERS = 2
NUM_EXPERTS = 4
MIN_EXPERT_CAPACITY = 1
ACTIVATION_DTYPE = 'float32'
ROUTER = @RoundRobinRouter()
"""


@pytest.fixture
def gin_model():
    gin.clear_config()
    gin.add_config_file_search_path(REPO)
    try:
        gin.parse_config(GIN)
        gin.finalize()
        yield gin.get_configurable(models.EncoderDecoderModel)()
    finally:
        gin.clear_config()


@pytest.mark.slow
def test_a_router_bound_in_gin_trains_the_tiny_model(gin_model):
    model = gin_model
    assert type(model.config.moe.router) is RoundRobinRouter
    sources = np.array([[5, 9, 14, 3, 1, 0], [7, 2, 1, 0, 0, 0], [11, 12, 13, 20, 8, 1]], np.int32)  # [B=3, S=6]
    targets = np.array([[6, 4, 1, 0], [9, 1, 0, 0], [3, 3, 7, 1]], np.int32)  # [B=3, T=4]
    batch = {
        "encoder_input_tokens": jnp.asarray(sources),
        "decoder_input_tokens": jnp.asarray(np.pad(targets, ((0, 0), (1, 0)))[:, :-1]),
        "decoder_target_tokens": jnp.asarray(targets),
    }
    params = nn.unbox(model.get_initial_variables(
        jax.random.PRNGKey(0), input_shapes={"encoder_input_tokens": (3, 6), "decoder_input_tokens": (3, 4)}
    )["params"])
    optimizer = optax.adam(3e-2)

    @jax.jit
    def step(params, opt_state, rng):
        (loss, metrics), grads = jax.value_and_grad(model.loss_fn, has_aux=True)(params, batch, rng)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, metrics

    opt_state = optimizer.init(params)
    kernel = params["encoder"]["layers_1"]["moe"]["router"]["kernel"]
    losses = []
    for i in range(8):
        params, opt_state, loss, metrics = step(params, opt_state, jax.random.PRNGKey(i))
        losses.append(float(loss))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert not np.allclose(params["encoder"]["layers_1"]["moe"]["router"]["kernel"], kernel)  # the router learns
    assert float(metrics["experts/auxiliary_loss"]) > 0.0
