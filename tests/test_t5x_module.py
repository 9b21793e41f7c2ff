"""T5X's module interface on mtmoe's network (mtmoe/t5x_module.py), without T5X installed.

Each call below is the one T5X's `EncoderDecoderModel` (t5x/models.py) makes of its
module: `init` with positional decoder targets, `apply` for the loss with the
"intermediates" collection mutable, `encode`, the cache created by `__call__` with
decode=True on dummy inputs, and `decode` steps on beam-tiled encoder outputs.
tests/test_t5x_interop.py runs the same through T5X itself where it is installed.
"""

import ast
import os
import re
import shlex

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util
from flax.linen import partitioning as flax_partitioning

from mtmoe import models, network, partitioning, t5x_module
from mtmoe.moe_config import MoeConfig
from tests.tolerances import assert_close_float32

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Pairwise-different sizes so a transposed axis fails; drop-free routing so that no
# row's output depends on the others (a cached step sees other tokens than the full pass).
TINY = network.TransformerConfig(
    vocab_size=23, d_model=12, num_heads=3, head_dim=5, d_ff=14, num_encoder_layers=2, num_decoder_layers=3,
    moe=MoeConfig(num_experts=4, expert_d_ff=9, max_group_size=64, encoder_sparse_every=1, decoder_sparse_every=2),
).for_inference()
ENCODER_TOKENS = jnp.array([[4, 9, 17, 3, 1, 0, 0], [8, 5, 1, 0, 0, 0, 0]], jnp.int32)       # [B=2, S=7]
DECODER_INPUTS = jnp.array([[0, 6, 11, 2, 7], [0, 13, 1, 19, 4]], jnp.int32)                  # [B=2, T=5]
DECODER_TARGETS = jnp.array([[6, 11, 2, 7, 1], [13, 1, 19, 4, 1]], jnp.int32)                 # inputs shifted left
BEAMS = 3


@pytest.fixture(scope="module")
def tiny():
    """(module, variables) as T5X's get_initial_variables makes them (float inputs, like T5X's default)."""
    module = t5x_module.T5xTransformer(TINY)
    variables = jax.jit(lambda rng: module.init(
        rng, jnp.ones((2, 7), jnp.float32), jnp.ones((2, 5), jnp.float32), jnp.ones((2, 5), jnp.float32),
        encoder_segment_ids=jnp.ones((2, 7), jnp.int32), decoder_segment_ids=jnp.ones((2, 5), jnp.int32),
        encoder_positions=jnp.ones((2, 7), jnp.int32), decoder_positions=jnp.ones((2, 5), jnp.int32),
        decode=False, enable_dropout=False))(jax.random.PRNGKey(0))
    return module, variables


def test_init_gives_plain_params_and_their_axes_as_t5x_reads_them(tiny):
    _, variables = tiny
    assert set(variables) == {"params", "params_axes"}
    params = traverse_util.flatten_dict(variables["params"], sep="/")
    assert all(isinstance(leaf, jax.Array) and leaf.dtype == jnp.float32 for leaf in params.values())
    # T5X's train_state._validate_params_axes and partitioner read the axes this way.
    axes = traverse_util.flatten_dict(flax_partitioning.get_axis_names(variables["params_axes"]), sep="/")
    assert set(axes) == set(params)
    for name, leaf in params.items():
        assert len(axes[name]) == leaf.ndim, name
    assert tuple(axes["encoder/layers_0/moe/wi_0"]) == ("expert", "embed", "mlp")
    assert tuple(axes["decoder/logits_dense"]) == ("embed", "vocab")


def test_params_are_mtmoe_networks_own(tiny):
    _, variables = tiny
    ours = network.Transformer(TINY).init(jax.random.PRNGKey(0), ENCODER_TOKENS, DECODER_INPUTS)["params"]
    ours = jax.tree.map(lambda leaf: leaf.shape, nn.unbox(ours))
    assert jax.tree.map(lambda leaf: leaf.shape, variables["params"]) == ours


def test_every_parameter_axis_has_a_rule():
    """T5X's partitioner replicates an axis no rule names; every one mtmoe uses is named."""
    boxed = jax.eval_shape(lambda: network.Transformer(TINY).init(jax.random.PRNGKey(0), ENCODER_TOKENS,
                                                                   DECODER_INPUTS))["params"]
    axes = traverse_util.flatten_dict(flax_partitioning.get_axis_names(t5x_module.params_axes(boxed)))
    used = {name for spec in axes.values() for name in spec}
    ruled = {name for name, _ in t5x_module.logical_axis_rules()}
    assert used <= ruled, used - ruled


def test_logical_axis_rules_are_mtmoes_with_the_batch_as_t5x_lays_it_out():
    ours = dict(partitioning.LOGICAL_AXIS_RULES)
    theirs = dict(t5x_module.logical_axis_rules())
    assert theirs.pop("batch") == ("expert", "data") and ours.pop("batch") == ("data", "expert")
    assert theirs == ours


def test_logits_for_t5x_loss_and_expert_metrics_under_t5x_names(tiny):
    module, variables = tiny
    logits, state = module.apply({"params": variables["params"]}, ENCODER_TOKENS, DECODER_INPUTS, DECODER_TARGETS,
                                 None, None, None, None, enable_dropout=False, mutable=["intermediates"])
    assert logits.shape == (2, 5, TINY.vocab_size) and logits.dtype == jnp.float32
    sown = traverse_util.flatten_dict(flax.core.unfreeze(state["intermediates"]))
    layers = [path[:-1] for path in sown if path[-1] == "aux_loss"]
    assert len(layers) == 3  # 2 encoder (every FFN) + 1 decoder (every other)
    for ours, theirs in models.EXPERT_METRICS.items():
        # T5X's MoE model (t5x/contrib/moe/models.py) averages every path ending in its name.
        found = [np.asarray(value, np.float32) for path, value in sown.items() if path[-1] == theirs]
        t5x_average = np.mean(np.sum(found, axis=0) / len(found))
        per_layer = np.mean([np.asarray(sown[layer + (ours,)]) for layer in layers])
        assert t5x_average == pytest.approx(per_layer, rel=1e-6), theirs


def test_encode_and_decode_shapes(tiny):
    module, variables = tiny
    encoded = module.apply({"params": variables["params"]}, ENCODER_TOKENS, enable_dropout=False, method=module.encode)
    assert encoded.shape == (2, 7, TINY.d_model)
    logits = module.apply({"params": variables["params"]}, encoded, ENCODER_TOKENS, DECODER_INPUTS, DECODER_TARGETS,
                          enable_dropout=False, method=module.decode)
    assert logits.shape == (2, 5, TINY.vocab_size)


def test_cached_decode_steps_match_the_full_pass_on_beam_tiled_rows(tiny):
    """T5X's protocol (t5x/models.py `_compute_kv_cache`, `_compute_logits_from_slice`)."""
    module, variables = tiny
    params = {"params": variables["params"]}
    full = module.apply(params, ENCODER_TOKENS, DECODER_INPUTS, DECODER_TARGETS, enable_dropout=False)  # [B, T, V]
    _, initial = module.apply(params, encoder_input_tokens=jnp.ones_like(ENCODER_TOKENS),
                              decoder_input_tokens=jnp.ones_like(DECODER_INPUTS),
                              decoder_target_tokens=jnp.ones_like(DECODER_INPUTS),
                              mutable=["cache"], decode=True, enable_dropout=False)
    encoded = module.apply(params, ENCODER_TOKENS, enable_dropout=False, method=module.encode)

    def tile(x):  # decoding.flat_batch_beam_expand: [B, ...] -> [B * beams, ...], row b*beams + k
        return jnp.repeat(x, BEAMS, axis=0)

    # T5X's beam search tiles every cache leaf but cache_index (decoding.cache_map).
    cache = traverse_util.flatten_dict(flax.core.unfreeze(initial["cache"]))
    cache = traverse_util.unflatten_dict({k: v if k[-1] == "cache_index" else tile(v) for k, v in cache.items()})
    step = jax.jit(lambda cache, tokens: module.apply(
        {**params, "cache": cache}, tile(encoded), tile(ENCODER_TOKENS), tokens, tokens, enable_dropout=False,
        decode=True, max_decode_length=DECODER_INPUTS.shape[1], mutable=["cache"], method=module.decode))
    steps = []
    for position in range(DECODER_INPUTS.shape[1]):
        logits, changed = step(cache, tile(DECODER_INPUTS[:, position:position + 1]))
        cache = changed["cache"]
        steps.append(logits)
    assert_close_float32(jnp.concatenate(steps, axis=1), tile(full), terms=TINY.d_model)


def test_the_cache_holds_self_attention_only(tiny):
    """Cross-attention reads the encoder output passed at each step, not keys cached from T5X's dummy inputs."""
    module, variables = tiny
    _, initial = module.apply({"params": variables["params"]}, ENCODER_TOKENS, DECODER_INPUTS, DECODER_TARGETS,
                              mutable=["cache"], decode=True, enable_dropout=False)
    paths = traverse_util.flatten_dict(flax.core.unfreeze(initial["cache"]))
    assert paths and all(path[-2] == "self_attention" for path in paths)
    assert {path[-1] for path in paths} == {"cached_key", "cached_value", "cache_index"}
    key = paths[("decoder", "layers_0", "self_attention", "cached_key")]
    assert key.shape == (2, TINY.num_heads, DECODER_INPUTS.shape[1], TINY.head_dim)  # [B, H, L, K]


def test_a_parameter_without_axis_names_is_refused():
    with pytest.raises(ValueError, match="encoder/bare has no logical axis names"):
        t5x_module.params_axes({"encoder": {"bare": jnp.zeros(3)}})


# ---- gin: the mtmoe side of gin/mswitch_base.gin, with its documented shrinking flags ----------------

def _documented_t5x_command() -> dict[str, str]:
    """{macro: value} of the `python -m t5x.train` command in gin/mswitch_base.gin's header."""
    with open(os.path.join(REPO, "gin", "mswitch_base.gin")) as f:
        header = "".join(line for line in f if line.startswith("#"))
    header = re.sub(r"\\\n[#\s]*", " ", header)
    commands = [line.lstrip("# ") for line in header.splitlines() if "python -m t5x.train " in line]
    shrunk = [c for c in commands if "--gin.EMBED_DIM" in c]
    assert len(shrunk) == 1, commands
    flags = shlex.split(shrunk[0].split("python -m t5x.train ", 1)[1])
    return dict(flag[len("--gin."):].split("=", 1) for flag in flags if flag.startswith("--gin."))


def test_the_t5x_entry_point_includes_the_mtmoe_side():
    with open(os.path.join(REPO, "gin", "mswitch_base.gin")) as f:
        includes = re.findall(r"^include '([^']+)'", f.read(), flags=re.M)
    assert "gin/t5x/model.gin" in includes and "gin/models/mswitch_base.gin" in includes
    with open(os.path.join(REPO, "gin", "t5x", "model.gin")) as f:
        assert "include 'gin/t5x/module.gin'" in f.read()


def test_mtmoe_side_of_the_t5x_config_parses_with_the_documented_shrinking_flags():
    import gin

    from mtmoe import command_line

    shrink = _documented_t5x_command()
    architecture = {name: value for name, value in shrink.items()
                    if name in ("EMBED_DIM", "NUM_HEADS", "HEAD_DIM", "MLP_DIM", "NUM_ENCODER_LAYERS",
                                "NUM_DECODER_LAYERS", "NUM_EXPERTS", "VOCAB_SIZE", "ACTIVATION_DTYPE")}
    assert len(architecture) == 9 and shrink["MIXTURE_OR_TASK_NAME"] in ("'embedded_span_corruption'",
                                                                         "'translate_101'")
    command_line.parse_gin(
        gin_files=["gin/models/mswitch_base.gin", "gin/models/embedded_vocab.gin", "gin/t5x/module.gin"],
        bindings=[f"{name} = {value}" for name, value in architecture.items()])
    try:
        module = gin.get_configurable(t5x_module.T5xTransformer)()
        rules = gin.get_configurable(t5x_module.logical_axis_rules)()
    finally:
        gin.clear_config()
    assert isinstance(module, t5x_module.T5xTransformer) and rules == t5x_module.logical_axis_rules()
    config = module.config
    assert (config.d_model, config.num_heads, config.head_dim, config.d_ff) == (32, 2, 16, 64)
    assert config.moe.num_experts == 4 and config.vocab_size == 16128 and config.dtype == "float32"
    lengths = ast.literal_eval(shrink["TASK_FEATURE_LENGTHS"])  # a Python literal, as gin reads it
    shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.ones((2, lengths["inputs"])),
                                                jnp.ones((2, lengths["targets"])), jnp.ones((2, lengths["targets"]))))
    assert shapes["params"]["decoder"]["logits_dense"].shape == (32, 16128)
