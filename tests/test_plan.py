"""mtmoe.plan: paper parameter counts, hand counts, per-device bytes, gin files, CLI."""

import dataclasses
import glob
import json
import os
import subprocess
import sys

import pytest

from mtmoe import network, plan
from mtmoe.moe_config import MoeConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Switch Transformer Table 9 (released checkpoints) and the published mT5-Base.
PUBLISHED = {
    "switch_base": 7.4e9,
    "switch_large": 26.3e9,
    "switch_xxl": 395e9,
    "switch_c": 1571e9,
    "mt5_base": 580e6,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_within_5_percent_of_published(name):
    config = plan.load_config([f"gin/models/{name}.gin"])
    result = plan.plan(config)
    assert result["total_params"] == pytest.approx(PUBLISHED[name], rel=0.05)
    assert sum(result["params_by_kind"].values()) == result["total_params"]


def test_tiny_count_by_hand():
    config = network.TransformerConfig(
        vocab_size=11, d_model=4, num_heads=2, head_dim=3, d_ff=5, num_encoder_layers=1, num_decoder_layers=2,
        moe=MoeConfig(num_experts=3, expert_d_ff=7), relative_attention_num_buckets=6,
    )
    result = plan.plan(config)
    d, joined = 4, 6
    attention = 4 * d * joined
    expected = {
        "embeddings": 11 * d * 2,  # shared input table + untied logits
        # enc self x1 + (dec self + dec cross) x2 = 5 blocks; 2 relpos tables of heads x buckets.
        "attention": 5 * attention + 2 * (2 * 6),
        "dense_mlp": 1 * 3 * d * 5 + 1 * 3 * d * 5,  # encoder layer 0 and decoder layer 0 are dense, gated GELU
        "experts": 1 * 3 * 3 * d * 7,  # decoder layer 1 only: (i + 1) % 2 == 0
        "routers": d * 3,
        "other": d * (2 * 1 + 1 + 3 * 2 + 1),  # RMSNorm scales: 2 per enc layer, 3 per dec layer, 2 final norms
    }
    assert result["params_by_kind"] == expected
    assert result["active_params_per_token"] == result["total_params"] - expected["experts"] + expected["experts"] // 3


def test_bytes_per_device_follow_the_mesh():
    config = plan.load_config(["gin/models/switch_base.gin"])
    one = plan.plan(config)
    sharded = plan.plan(config, mesh_sizes={"data": 2, "expert": 8, "model": 1})
    experts_bytes = one["params_by_kind"]["experts"] * 4
    # Only the experts shard over the expert axis; data parallelism replicates.
    assert one["bytes_per_device"]["params"] == one["total_params"] * 4
    assert sharded["bytes_per_device"]["params"] == one["total_params"] * 4 - experts_bytes + experts_bytes // 8
    assert one["bytes_per_device"]["adamw_state"] == 2 * one["bytes_per_device"]["params"]
    # Adafactor's factored second moments are tiny next to the parameters.
    assert one["bytes_per_device"]["adafactor_state"] < one["bytes_per_device"]["params"] / 50
    with pytest.raises(ValueError, match="num_experts=128 does not divide over the mesh's expert axis \\(3\\)"):
        plan.plan(config, mesh_sizes={"expert": 3})


def test_adafactor_state_and_shard_shapes_by_hand():
    assert plan.adafactor_state_size((256, 512), (256, 512)) == 256 + 512
    assert plan.adafactor_state_size((8, 768, 2048), (1, 768, 2048)) == 768 + 2048  # per-expert rows and cols
    assert plan.adafactor_state_size((768, 64), (768, 64)) == 768 * 64  # a dim under 128: not factored
    assert plan.adafactor_state_size((768,), (768,)) == 768
    assert plan.shard_shape((128, 10, 7), ("expert", None, "model"), {"expert": 8, "model": 2, "data": 1}) == (16, 10, 4)


def test_every_model_gin_file_parses():
    names = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(REPO, "gin/models/*.gin")))
    for name in names:
        if name in ("common", "embedded_vocab"):
            continue
        config = plan.load_config([f"gin/models/{name}.gin"])
        assert config.vocab_size % 128 == 0, name
        assert config.moe.num_experts == 0 or config.num_sparse_layers(decoder=False) > 0, name


def test_common_gin_macros_restate_the_moe_config_defaults():
    """The macros (NUM_EXPERTS, ROUTER, GROUP_SIZE, ...) exist so that runs and --gin.NAME flags can set
    them; their values must be MoeConfig's own defaults, which stay the one place to change one."""
    bound = plan.load_config(["gin/models/mswitch_tiny.gin"]).moe
    assert dataclasses.replace(bound, num_experts=0) == MoeConfig()


def test_tiny_models_have_equal_flops_per_token():
    tiny = plan.plan(plan.load_config(["gin/models/mswitch_tiny.gin"]))
    dense = plan.plan(plan.load_config(["gin/models/t5_1_1_tiny.gin"]))
    router = tiny["params_by_kind"]["routers"]
    assert tiny["active_params_per_token"] - router == dense["active_params_per_token"]
    assert tiny["total_params"] > dense["total_params"]


def test_cli_json_and_no_tensorflow():
    code = (
        "import sys; from mtmoe import plan; rc = plan.main(['--gin_file=gin/models/mswitch_tiny.gin', "
        "'--gin.NUM_EXPERTS=16', '--json']); "
        "assert 'tensorflow' not in sys.modules and 'seqio' not in sys.modules, 'plan imported TensorFlow'; sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["config"]["num_experts"] == 16 and result["total_params"] > 0
    bad = subprocess.run(
        [sys.executable, "-m", "mtmoe.plan", "--gin_file=gin/models/switch_base.gin", "--mesh", "expert=3"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "expert axis (3)" in bad.stderr


def test_embedded_vocab_size_matches_the_sentencepiece_model():
    import sentencepiece

    model_path = os.path.join(REPO, "data/vocab/mtmoe.model")
    if not os.path.exists(model_path):
        pytest.skip("data/vocab/mtmoe.model not built")
    pieces = sentencepiece.SentencePieceProcessor(model_file=model_path).vocab_size()
    expected = -(-(pieces + 100) // 128) * 128  # + seqio extra_ids, padded to a multiple of 128
    assert plan.load_config(["gin/models/mswitch_tiny.gin"]).vocab_size == expected
