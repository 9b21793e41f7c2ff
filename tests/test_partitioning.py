"""Mesh building, logical rules, divisibility errors, and sharded = single-device numerics."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import PartitionSpec as P

from mtmoe import models, network, partitioning
from mtmoe.moe_config import MoeConfig
from tests.tolerances import assert_close_float32

CONFIG = network.TransformerConfig(
    vocab_size=27,
    d_model=10,
    num_heads=2,
    head_dim=3,
    d_ff=11,
    num_encoder_layers=2,
    num_decoder_layers=2,
    # 8 examples x 6 tokens = 2 groups of max_group_size: capacity is per group.
    moe=MoeConfig(num_experts=4, expert_d_ff=7, max_group_size=24, min_expert_capacity=1, train_capacity_factor=1.0),
)


def test_make_mesh_shapes_and_one_line_errors():
    mesh = partitioning.make_mesh(data=2, expert=4)
    assert dict(mesh.shape) == {"data": 2, "expert": 4, "model": 1}
    assert dict(partitioning.make_mesh(expert=2, model=2).shape) == {"data": 2, "expert": 2, "model": 2}
    for kwargs in (dict(expert=3), dict(data=3, expert=2), dict(data=1, expert=1, model=1)):
        with pytest.raises(ValueError, match="devices") as info:
            partitioning.make_mesh(**kwargs)
        assert "\n" not in str(info.value)


def test_parse_mesh_spec():
    assert partitioning.parse_mesh_spec("data=2,expert=4") == {"data": 2, "expert": 4}
    with pytest.raises(ValueError, match="bad mesh spec"):
        partitioning.parse_mesh_spec("tensor=2")


def test_check_divisible_errors():
    mesh = partitioning.make_mesh(data=2, expert=4)
    partitioning.check_divisible(config=CONFIG, mesh=mesh, global_batch_size=16)
    with pytest.raises(ValueError, match="num_experts=6 does not divide over the mesh's expert axis") as info:
        partitioning.check_divisible(config=CONFIG.replace(moe=CONFIG.moe.replace(num_experts=6)), mesh=mesh, global_batch_size=16)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="batch size 12 does not divide over data x expert = 8"):
        partitioning.check_divisible(config=CONFIG, mesh=mesh, global_batch_size=12)
    with pytest.raises(ValueError, match="num_heads=2 does not divide over the mesh's model axis"):
        partitioning.check_divisible(config=dataclasses.replace(CONFIG, vocab_size=24), mesh={"model": 4}, global_batch_size=None)


def test_rules_map_logical_names_to_mesh_axes():
    logical = {
        "experts": P("expert", "embed", "mlp"),
        "attention": P("embed", "joined_kv"),
        "logits": P("embed", "vocab"),
        "router": P("embed", "unmodeled"),
        "activations": P("batch", "length", "embed"),
        "buffers": P("expert", "expert_group", "expert_capacity", "embed"),
    }
    mesh_specs = partitioning.mesh_specs(logical)
    assert mesh_specs == {
        "experts": P("expert", None, "model"),
        "attention": P(None, "model"),
        "logits": P(None, "model"),
        "router": P(None, None),
        "activations": P(("data", "expert"), None, None),
        "buffers": P("expert", "data", None, None),
    }


def test_shard_batch_puts_rows_over_data_and_expert():
    mesh = partitioning.make_mesh(data=2, expert=4)
    batch = partitioning.shard_batch({"tokens": np.arange(16 * 3).reshape(16, 3), "weights": np.ones(16)}, mesh)
    assert batch["tokens"].sharding.spec == P(("data", "expert"), None)
    assert batch["tokens"].addressable_shards[1].data.shape == (2, 3)
    np.testing.assert_array_equal(np.asarray(batch["tokens"]), np.arange(48).reshape(16, 3))


def _batch():
    rng = np.random.default_rng(3)
    targets = rng.integers(2, 27, (8, 6)).astype(np.int32)
    targets[:, -2:] = 0  # padding
    targets[:, -3] = 1  # eos
    sources = rng.integers(2, 27, (8, 6)).astype(np.int32)
    sources[::2, -1] = 0
    return {
        "encoder_input_tokens": sources,
        "decoder_input_tokens": np.pad(targets, ((0, 0), (1, 0)))[:, :-1],
        "decoder_target_tokens": targets,
        "decoder_loss_weights": (targets > 0).astype(np.float32),
    }


@pytest.mark.filterwarnings("ignore:MoE layer.*GSPMD:UserWarning")  # the 24 case falls back on purpose
@pytest.mark.parametrize(
    "max_group_size",
    [24, 6],  # 2 groups: GSPMD partitions the MoE layers; 8 groups, one per batch shard: explicit expert parallelism
)
def test_sharded_forward_and_backward_equal_single_device(max_group_size):
    model = models.EncoderDecoderModel(config=CONFIG.replace(moe=CONFIG.moe.replace(max_group_size=max_group_size)))
    input_shapes = {"encoder_input_tokens": (8, 6), "decoder_input_tokens": (8, 6)}
    boxed = jax.eval_shape(functools.partial(model.get_initial_variables, input_shapes=input_shapes), jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda leaf: rng.normal(0.0, 0.7, leaf.shape).astype(np.float32), nn.unbox(boxed["params"]))
    batch = _batch()
    dropout_rng = jax.random.PRNGKey(5)

    def loss_and_grad(params, batch):
        # Training mode (dropout rng given, jitter noise, train capacity) is the path that must agree.
        (loss, metrics), grads = jax.value_and_grad(model.loss_fn, has_aux=True)(params, batch, dropout_rng)
        return loss, metrics, grads

    single = jax.jit(loss_and_grad)(params, batch)

    mesh = partitioning.make_mesh(data=2, expert=4)
    param_shardings = partitioning.logical_shardings(boxed["params"], mesh)
    assert param_shardings["encoder"]["layers_1"]["moe"]["wo"].spec == P("expert", "model", None)
    with partitioning.mesh_context(mesh):
        sharded_params = jax.device_put(params, param_shardings)
        sharded_batch = partitioning.shard_batch(batch, mesh)
        replicated = jax.sharding.NamedSharding(mesh, P())
        compiled = jax.jit(
            loss_and_grad,
            in_shardings=(param_shardings, partitioning.batch_sharding(mesh)),
            out_shardings=(replicated, replicated, param_shardings),  # gradients laid out like the params
        ).lower(sharded_params, sharded_batch).compile()
        sharded = compiled(sharded_params, sharded_batch)
    if max_group_size == 6:  # explicit expert parallelism moves tokens, never gathers expert weights
        assert "all-to-all" in compiled.as_text() and "all-gather" not in compiled.as_text()
    wo = sharded[2]["encoder"]["layers_1"]["moe"]["wo"]
    assert len({shard.device for shard in wo.addressable_shards}) == 8 and wo.addressable_shards[0].data.shape == (1, 7, 10)
    # Eight devices sum the 48 tokens in another order: the loss ends 4 layers of such sums, each
    # gradient 8 (forward and back); a missing psum or a wrong shard would be off by O(max|leaf|).
    assert_close_float32(sharded[0], single[0], terms=48 * 4)
    for key in ("cross_ent_loss", "experts/auxiliary_loss", "experts/fraction_tokens_left_behind"):
        assert_close_float32(sharded[1][key], single[1][key], terms=48 * 4, err_msg=key)
    # Backward through softmaxes at weights of std 0.7 amplifies: measured up to 115 eps32 * max|leaf|
    # on the 2-core AVX2 CPU = 5.9 * sqrt(48 * 8), so safety 16 (2.7x margin), still 1e4x under a bug.
    jax.tree.map(lambda a, b: assert_close_float32(a, b, terms=48 * 8, safety=16), sharded[2], single[2])


def _moe_layer_loss_and_grads(layer, params, x, cotangent):
    """Training-mode forward + backward of one MoE layer: (output . cotangent + aux losses, grads)."""

    def loss_fn(params, x):
        out, state = layer.apply({"params": params}, x, enable_dropout=True, rngs={"dropout": jax.random.PRNGKey(4)},
                                 mutable=["intermediates"])
        metrics = state["intermediates"]
        return jnp.sum(out * cotangent) + 0.01 * metrics["aux_loss"][0] + 0.001 * metrics["router_z_loss"][0]

    return jax.value_and_grad(loss_fn, argnums=(0, 1))(params, x)


@pytest.mark.parametrize(
    "mesh_sizes, dispatch",
    [(dict(data=2, expert=4), "sort"), (dict(data=1, expert=4, model=2), "einsum")],
)
def test_expert_parallel_moe_layer_equals_single_device(mesh_sizes, dispatch):
    """8 groups of 6 tokens, one per batch shard: each device routes its groups, two
    all-to-alls over 'expert' move the expert slots, no device gathers the experts' weights."""
    from mtmoe.moe import MoeLayer

    layer = MoeLayer(config=MoeConfig(num_experts=8, max_group_size=6, dispatch=dispatch, min_expert_capacity=1,
                                      train_capacity_factor=1.0), d_ff=12)
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 6, 10))
    cotangent = jax.random.normal(jax.random.PRNGKey(1), x.shape)
    boxed = layer.init({"params": jax.random.PRNGKey(2), "dropout": jax.random.PRNGKey(3)}, x)["params"]
    params = nn.unbox(boxed)
    step = functools.partial(_moe_layer_loss_and_grads, layer, cotangent=cotangent)
    single = jax.jit(step)(params, x)

    mesh = partitioning.make_mesh(**mesh_sizes)
    with partitioning.mesh_context(mesh):
        shardings = partitioning.logical_shardings(boxed, mesh)
        batch_sharding = jax.sharding.NamedSharding(mesh, P(partitioning.BATCH_AXES))
        sharded_step = jax.jit(step, in_shardings=(shardings, batch_sharding), out_shardings=(None, (shardings, batch_sharding)))
        hlo = sharded_step.lower(params, x).compile().as_text()
        sharded = sharded_step(jax.device_put(params, shardings), jax.device_put(x, batch_sharding))
    assert "all-to-all" in hlo and "all-gather" not in hlo
    # One layer, 48 tokens summed in another order by the all-to-alls' split.
    assert_close_float32(sharded[0], single[0], terms=48)
    jax.tree.map(lambda a, b: assert_close_float32(a, b, terms=48), sharded[1], single[1])


def test_expert_parallel_applies_only_when_groups_and_experts_split_evenly():
    from mtmoe.moe import expert_parallel_applies

    mesh = partitioning.make_mesh(data=2, expert=4)
    with partitioning.mesh_context(mesh):
        active = partitioning.active_mesh()
        assert expert_parallel_applies(active, groups=8, num_experts=8)
        assert not expert_parallel_applies(active, groups=2, num_experts=8)  # 2 groups over 8 batch shards
        assert not expert_parallel_applies(active, groups=8, num_experts=6)
    assert partitioning.active_mesh() is None and not expert_parallel_applies(None, groups=8, num_experts=8)


def test_moe_layer_warns_when_it_falls_back_to_gspmd_on_cpu():
    from mtmoe.moe import MoeLayer

    layer = MoeLayer(config=MoeConfig(num_experts=8, max_group_size=24, min_expert_capacity=1), d_ff=12)  # 48 tokens: 2 groups
    x = jnp.ones((8, 6, 10))
    with partitioning.mesh_context(partitioning.make_mesh(data=2, expert=4)):
        with pytest.warns(UserWarning, match="2 routing group.*multiple of the data x expert devices"):
            jax.eval_shape(lambda x: layer.init(jax.random.PRNGKey(0), x), x)


def test_expert_parallel_expert_dropout_follows_the_rng():
    """Inside shard_map every device draws its own expert-dropout mask from the layer's key."""
    from mtmoe.moe import MoeLayer

    layer = MoeLayer(config=MoeConfig(num_experts=8, max_group_size=6, expert_dropout_rate=0.5, min_expert_capacity=1),
                     d_ff=12)
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 6, 10))
    params = nn.unbox(layer.init({"params": jax.random.PRNGKey(2), "dropout": jax.random.PRNGKey(3)}, x)["params"])
    mesh = partitioning.make_mesh(data=2, expert=4)
    with partitioning.mesh_context(mesh):
        apply = jax.jit(lambda p, x, key, train: layer.apply({"params": p}, x, enable_dropout=train, rngs={"dropout": key},
                                                             mutable=["intermediates"])[0], static_argnums=3)
        first, again, other, evaluated = (apply(params, x, jax.random.PRNGKey(k), train)
                                          for k, train in ((5, True), (5, True), (6, True), (5, False)))
        hlo = jax.jit(apply, static_argnums=3).lower(params, x, jax.random.PRNGKey(5), True).as_text()
    assert "all_to_all" in hlo or "all-to-all" in hlo  # the expert-parallel path ran
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other) and not np.allclose(first, evaluated)


def test_expert_parallel_drop_free_routing_equals_single_device():
    """On a mesh, drop-free routing runs the shard_map'd capped dispatch with room for every token."""
    from mtmoe.moe import MoeLayer

    config = MoeConfig(num_experts=8, max_group_size=6, min_expert_capacity=1, eval_capacity_factor=1.0,
                       eval_capacity="drop_free")  # groups of 6 tokens here
    layer = MoeLayer(config=config, d_ff=12)
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 6, 10))
    boxed = layer.init(jax.random.PRNGKey(2), x)["params"]
    params = nn.unbox(boxed)
    forward = lambda p, x: layer.apply({"params": p}, x, mutable=["intermediates"])  # noqa: E731
    single, single_metrics = jax.jit(forward)(params, x)
    mesh = partitioning.make_mesh(data=2, expert=4)
    with partitioning.mesh_context(mesh):
        shardings = partitioning.logical_shardings(boxed, mesh)
        batch_sharding = jax.sharding.NamedSharding(mesh, P(partitioning.BATCH_AXES))
        sharded_forward = jax.jit(forward, in_shardings=(shardings, batch_sharding))
        assert "all-to-all" in sharded_forward.lower(params, x).compile().as_text()
        sharded, sharded_metrics = sharded_forward(jax.device_put(params, shardings), jax.device_put(x, batch_sharding))
    assert_close_float32(sharded, single, terms=12)  # per token: dot products of at most d_ff=12 terms
    assert float(sharded_metrics["intermediates"]["fraction_tokens_dropped"][0]) == pytest.approx(0.0, abs=1e-6)
