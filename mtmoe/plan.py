"""Parameter count and per-device memory of a model config on a mesh, without allocating.

    python -m mtmoe.plan --gin_file=gin/models/switch_base.gin [--mesh data=8,expert=16,model=1] [--json]

The model is initialised under `jax.eval_shape` (shapes only, so Switch-C's
1.6T parameters cost nothing), parameters are counted by kind, and each
parameter's shard on one device follows `partitioning.LOGICAL_AXIS_RULES` on
a mesh of the given sizes (the mesh may be larger than this machine).
Optimizer state: Adafactor as T5X runs it (no momentum, second moments
factored into row and column statistics for parameters whose two largest
dimensions are >= 128, optax's default) and AdamW (two float32 moments).
Activations are not counted: they depend on the batch, the length and remat.
Never imports TensorFlow or seqio.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Sequence

import jax
from flax import linen as nn
from flax import traverse_util

from mtmoe import models, network, partitioning

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BYTES_PER_PARAM = 4  # params and optimizer state are float32
ADAFACTOR_MIN_DIM_TO_FACTOR = 128  # optax.adafactor's min_dim_size_to_factor
KINDS = ("embeddings", "attention", "dense_mlp", "experts", "routers", "other")
_ATTENTION_MODULES = {"attention", "self_attention", "encoder_decoder_attention", "relpos_bias"}


def load_config(
    gin_files: Sequence[str], *, bindings: Sequence[str] = (), search_paths: Sequence[str] = ()
) -> network.TransformerConfig:
    """TransformerConfig from gin/models/*.gin files (includes resolve against the repo root)."""
    import gin  # gin is a command-line concern: the library never needs it

    gin.clear_config()
    for path in (*search_paths, REPO_ROOT):
        gin.add_config_file_search_path(path)
    for path in gin_files:
        if not os.path.exists(path) and not os.path.exists(os.path.join(REPO_ROOT, path)):
            raise FileNotFoundError(f"gin file {path!r} not found; pass e.g. --gin_file=gin/models/switch_base.gin")
    gin.parse_config_files_and_bindings(list(gin_files), list(bindings), finalize_config=False)
    return gin.get_configurable(network.TransformerConfig)()


def abstract_params(config: network.TransformerConfig) -> Any:
    """Boxed params as ShapeDtypeStructs (nothing allocated)."""
    model = models.EncoderDecoderModel(config=config)
    # 8 tokens split into one MoE group whatever the group size; shapes do not depend on them.
    input_shapes = {"encoder_input_tokens": (1, 8), "decoder_input_tokens": (1, 8)}
    variables = jax.eval_shape(
        lambda rng: model.get_initial_variables(rng, input_shapes=input_shapes), jax.random.PRNGKey(0)
    )
    return variables["params"]


def param_kind(path: tuple[str, ...], names: tuple[str | None, ...]) -> str:
    """Which of KINDS a parameter (by module path and logical axis names) belongs to."""
    if "token_embedder" in path or path[-1] == "logits_dense":
        return "embeddings"
    if "router" in path:
        return "routers"
    if "expert" in names:
        return "experts"
    if _ATTENTION_MODULES & set(path):
        return "attention"
    if "mlp" in path:
        return "dense_mlp"
    return "other"


def shard_shape(shape: tuple[int, ...], mesh_spec, mesh_sizes: dict[str, int]) -> tuple[int, ...]:
    """Per-device shape of an array of `shape` partitioned by a mesh PartitionSpec."""
    out = []
    for index, dim in enumerate(shape):
        axes = mesh_spec[index] if index < len(mesh_spec) else None
        axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        ways = math.prod(mesh_sizes[axis] for axis in axes)
        out.append(-(-dim // ways))  # ceil: an uneven split pads the last shard
    return tuple(out)


def adafactor_state_size(shape: tuple[int, ...], local_shape: tuple[int, ...]) -> int:
    """Elements on one device of optax.adafactor's second-moment state for a parameter.

    Whether to factor is decided on the global `shape` (the two largest dims, both
    >= 128); the row / column statistics keep the other dims' sharding, so
    their per-device size comes from `local_shape`.
    """
    if len(shape) < 2:
        return math.prod(local_shape)
    largest_two = sorted(range(len(shape)), key=lambda i: shape[i])[-2:]
    if shape[largest_two[0]] < ADAFACTOR_MIN_DIM_TO_FACTOR:
        return math.prod(local_shape)
    row = math.prod(d for i, d in enumerate(local_shape) if i != largest_two[1])
    col = math.prod(d for i, d in enumerate(local_shape) if i != largest_two[0])
    return row + col


def plan(config: network.TransformerConfig, *, mesh_sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """Parameter counts and bytes per device for `config` on a mesh of `mesh_sizes`.

    Returns {"total_params", "params_by_kind", "active_params_per_token",
    "mesh", "num_devices", "bytes_per_device": {...}, "total_bytes": {...}}.
    """
    mesh_sizes = {"data": 1, "expert": 1, "model": 1, **(mesh_sizes or {})}
    partitioning.check_divisible(config=config, mesh=mesh_sizes, global_batch_size=None)
    boxed = abstract_params(config)
    logical = traverse_util.flatten_dict(partitioning.logical_specs(boxed))
    mesh_specs = traverse_util.flatten_dict(partitioning.mesh_specs(boxed))
    shapes = traverse_util.flatten_dict(nn.unbox(boxed))

    by_kind = dict.fromkeys(KINDS, 0)
    per_device = {"params": 0, "adafactor": 0, "adamw": 0}
    for path, leaf in shapes.items():
        size = math.prod(leaf.shape)
        by_kind[param_kind(path, tuple(logical[path]))] += size
        local = shard_shape(leaf.shape, mesh_specs[path], mesh_sizes)
        per_device["params"] += math.prod(local) * BYTES_PER_PARAM
        per_device["adafactor"] += adafactor_state_size(leaf.shape, local) * BYTES_PER_PARAM
        per_device["adamw"] += 2 * math.prod(local) * BYTES_PER_PARAM
    total = sum(by_kind.values())
    selected = config.moe.router.num_selected_experts
    active = total - by_kind["experts"]
    if config.moe.num_experts:
        active += by_kind["experts"] * selected // config.moe.num_experts
    return {
        "total_params": total,
        "params_by_kind": by_kind,
        "active_params_per_token": active,
        "mesh": mesh_sizes,
        "num_devices": math.prod(mesh_sizes.values()),
        "bytes_per_device": {
            "params": per_device["params"],
            "adafactor_state": per_device["adafactor"],
            "adamw_state": per_device["adamw"],
            "params_plus_adafactor": per_device["params"] + per_device["adafactor"],
            "params_plus_adamw": per_device["params"] + per_device["adamw"],
        },
        "config": {
            "d_model": config.d_model,
            "num_heads": config.num_heads,
            "d_ff": config.d_ff,
            "layers": [config.num_encoder_layers, config.num_decoder_layers],
            "num_experts": config.moe.num_experts,
            "moe_layers": [config.num_sparse_layers(decoder=False), config.num_sparse_layers(decoder=True)],
            "vocab_size": config.vocab_size,
        },
    }


def _human(n: float, unit: str = "") -> str:
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def format_plan(result: dict[str, Any], *, title: str = "") -> str:
    lines = [title] if title else []
    lines.append(f"total parameters       {result['total_params']:>18,}  ({_human(result['total_params'])})")
    for kind, count in result["params_by_kind"].items():
        lines.append(f"  {kind:<20} {count:>18,}")
    lines.append(f"active per token       {result['active_params_per_token']:>18,}")
    mesh = ",".join(f"{k}={v}" for k, v in result["mesh"].items())
    lines.append(f"mesh {mesh} ({result['num_devices']} devices), float32 bytes per device:")
    for name, value in result["bytes_per_device"].items():
        lines.append(f"  {name:<20} {_human(value, 'B'):>18}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mtmoe.plan", description=__doc__.splitlines()[0])
    parser.add_argument("--gin_file", action="append", required=True, help="gin/models/NAME.gin (repeatable)")
    parser.add_argument("--gin_search_paths", action="append", default=[], help="extra gin include paths")
    parser.add_argument("--mesh", default="", help="data=D,expert=E,model=M (default: one device)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args, rest = parser.parse_known_args(argv)
    bindings = []
    for arg in rest:  # T5X style --gin.NAME=VALUE
        if not arg.startswith("--gin.") or "=" not in arg:
            parser.error(f"unknown argument {arg!r}; use --gin.NAME=VALUE for gin bindings")
        name, value = arg[len("--gin."):].split("=", 1)
        bindings.append(f"{name} = {value}")
    try:
        mesh_sizes = partitioning.parse_mesh_spec(args.mesh)
        config = load_config(args.gin_file, bindings=bindings, search_paths=args.gin_search_paths)
        result = plan(config, mesh_sizes=mesh_sizes)
    except (ValueError, FileNotFoundError) as error:
        print(f"mtmoe.plan: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"gin_file": args.gin_file, **result}))
    else:
        print(format_plan(result, title=" ".join(args.gin_file)))
    return 0


def console_main() -> None:
    """Entry point of the `mtmoe-plan` script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
