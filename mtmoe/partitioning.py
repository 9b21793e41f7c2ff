"""The one place that knows the device mesh: logical axis rules, mesh, sharding helpers.

Modules annotate parameters and activations with logical axis names only
(`batch`, `embed`, `mlp`, `expert`, ...); `LOGICAL_AXIS_RULES` maps them onto
the mesh axes `('data', 'expert', 'model')`:

  batch        -> ('data', 'expert')   the expert axis is factored out of data parallelism
  expert       -> 'expert'             expert weights and expert buffers
  expert_group -> 'data'               MoE groups stay on their data shard (all-to-all over 'expert')
  mlp, heads, joined_kv, vocab -> 'model'
  everything else (embed, length, kv, relpos_buckets, unmodeled, expert_capacity) unsharded

Trace jitted code inside `with mesh_context(mesh):` (`jax.set_mesh` + the
rules) so that the modules' `with_logical_constraint` calls take effect: Flax
applies them only when an abstract mesh is set, which a bare `with mesh:` no
longer does.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "expert", "model")
BATCH_AXES = ("data", "expert")
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("expert", "expert"),
    ("expert_group", "data"),
    ("mlp", "model"),
    ("heads", "model"),
    ("joined_kv", "model"),
    ("vocab", "model"),
    ("embed", None),
    ("length", None),
    ("kv", None),
    ("relpos_buckets", None),
    ("unmodeled", None),
    ("expert_capacity", None),
)


def make_mesh(*, data: int | None = None, expert: int = 1, model: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """Mesh of shape (data, expert, model) over `devices` (default: all devices of all hosts).

    data=None takes what is left: len(devices) // (expert * model).
    """
    devices = list(jax.devices() if devices is None else devices)
    num_devices = len(devices)
    if expert < 1 or model < 1 or (data is not None and data < 1):
        raise ValueError(f"mesh sizes must be >= 1, got data={data}, expert={expert}, model={model}")
    if data is None:
        if num_devices % (expert * model):
            raise ValueError(
                f"expert={expert} x model={model} does not divide the {num_devices} devices; "
                f"choose partition counts whose product divides {num_devices}"
            )
        data = num_devices // (expert * model)
    if data * expert * model != num_devices:
        raise ValueError(
            f"mesh data={data} x expert={expert} x model={model} = {data * expert * model} does not match the "
            f"{num_devices} devices; choose counts whose product is {num_devices} (or leave data unset)"
        )
    shape = (data, expert, model)
    try:
        device_array = mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, AssertionError, NotImplementedError):
        # Topology-aware placement only knows some platforms; order by id elsewhere.
        device_array = np.asarray(devices).reshape(shape)
    return Mesh(device_array, MESH_AXES)


def parse_mesh_spec(spec: str) -> dict[str, int]:
    """"data=2,expert=4,model=1" -> {"data": 2, "expert": 4, "model": 1} (missing axes: data=None, others 1)."""
    sizes: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in MESH_AXES or not value.isdigit():
            raise ValueError(f"bad mesh spec {spec!r}; write e.g. data=2,expert=4,model=1 with axes {MESH_AXES}")
        sizes[name] = int(value)
    return sizes


def _is_spec(x) -> bool:
    return isinstance(x, PartitionSpec)


def logical_specs(boxed_or_spec_tree: Any) -> Any:
    """Tree of logical PartitionSpecs: boxed leaves give their names, PartitionSpecs stay,
    any other leaf (an unboxed array) is replicated: P()."""

    def spec(x):
        if isinstance(x, nn.Partitioned):
            return x.get_partition_spec()
        return x if _is_spec(x) else PartitionSpec()

    return jax.tree.map(spec, boxed_or_spec_tree, is_leaf=lambda x: isinstance(x, nn.Partitioned) or _is_spec(x))


def mesh_specs(boxed_or_spec_tree: Any, *, rules=LOGICAL_AXIS_RULES) -> Any:
    """Tree of mesh PartitionSpecs for boxed params (or logical PartitionSpecs)."""
    return nn.logical_to_mesh(logical_specs(boxed_or_spec_tree), rules)


def logical_shardings(boxed_or_spec_tree: Any, mesh: Mesh, *, rules=LOGICAL_AXIS_RULES) -> Any:
    """NamedShardings for a tree of boxed params (`nn.LogicallyPartitioned`) or logical
    PartitionSpecs; unboxed leaves are replicated."""
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), mesh_specs(boxed_or_spec_tree, rules=rules), is_leaf=_is_spec)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """[batch, length] features: batch over ('data', 'expert'), length unsharded."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, None))


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Global jax.Arrays from each host's share of the batch (rows of this process).

    Every process passes its own `local_batch = global_batch / process_count`
    rows; on one host that is the whole batch.
    """
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        # Leading axis is the batch whatever the rank ([B], [B, L], ...).
        sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (value.ndim - 1))))
        global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
        out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return out


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> Iterator[None]:
    """Sets `mesh` (concrete and abstract: `jax.set_mesh`) and the logical axis rules, for
    tracing and running jitted functions whose modules constrain activations by logical name."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def active_mesh() -> jax.sharding.AbstractMesh | None:
    """The mesh set by the enclosing `mesh_context` (abstract: axis names and sizes), None outside one."""
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh


def logical_to_mesh_spec(names: Sequence[str | None], mesh=None) -> PartitionSpec:
    """PartitionSpec of mesh axes for logical axis `names` under the active `nn.logical_axis_rules`.

    With `mesh`, axes of size 1 are left out (None when none is left), so that
    `shard_map` treats a value as varying only over the axes that split it."""
    spec = nn.logical_to_mesh_axes(tuple(names))
    if mesh is None:
        return PartitionSpec(*spec)

    def split_only(axes):  # the same entry, keeping only axes of size > 1
        kept = tuple(a for a in axis_names(axes) if mesh.shape[a] > 1)
        return None if not kept else kept[0] if len(kept) == 1 else kept

    return PartitionSpec(*(split_only(axes) for axes in spec))


def axis_names(axes) -> tuple[str, ...]:
    """Mesh axis names of one PartitionSpec entry: None, an axis name or a tuple of names."""
    return () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)


def mesh_axis_size(mesh, axes) -> int:
    """Devices along one PartitionSpec entry: None, an axis name or a tuple of names."""
    return int(np.prod([mesh.shape[name] for name in axis_names(axes)]))


def initialize_distributed(
    *, coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Starts JAX's multi-host runtime (`jax.distributed.initialize`).

    With no arguments the cluster is detected (TPU pods, SLURM, ...); elsewhere
    pass all three, e.g. coordinator_address="10.0.0.1:1234", num_processes=2,
    process_id=0 on the first host. Call before any other JAX call.
    """
    given = [coordinator_address is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise ValueError(
            "pass coordinator_address, num_processes and process_id together (or none, to auto-detect a TPU/SLURM cluster)"
        )
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
        )
    except (ValueError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RuntimeError(
            f"jax.distributed.initialize failed ({first_line}); pass --coordinator_address, --num_processes and "
            f"--process_id, or run single-host without them"
        ) from error


def check_divisible(*, config, mesh: Mesh | Mapping[str, int], global_batch_size: int | None) -> None:
    """One-line ValueErrors for a model or batch that does not split over `mesh`.

    mesh: a Mesh or just its sizes {"data": D, "expert": E, "model": M} (mtmoe.plan
    plans meshes larger than this machine); global_batch_size None skips the batch checks.
    """
    sizes = dict(mesh.shape) if isinstance(mesh, Mesh) else {"data": 1, "expert": 1, "model": 1, **mesh}
    expert, model = sizes["expert"], sizes["model"]
    batch_shards = sizes["data"] * expert
    num_experts = config.moe.num_experts
    if num_experts > 0 and num_experts % expert:
        raise ValueError(
            f"num_experts={num_experts} does not divide over the mesh's expert axis ({expert}); "
            f"use a multiple of {expert} experts or a mesh expert size that divides {num_experts}"
        )
    if global_batch_size is not None and global_batch_size % batch_shards:
        raise ValueError(
            f"batch size {global_batch_size} does not divide over data x expert = {batch_shards} devices; "
            f"use a multiple of {batch_shards}"
        )
    if global_batch_size is not None and global_batch_size % jax.process_count():
        raise ValueError(
            f"batch size {global_batch_size} does not split over {jax.process_count()} hosts; use a multiple of it"
        )
    model_sharded = {
        "num_heads": config.num_heads,
        "d_ff": config.d_ff,
        "expert_d_ff": config.moe.expert_d_ff or config.d_ff,
        "vocab_size": config.vocab_size,
    }
    for name, value in model_sharded.items():
        if value % model:
            raise ValueError(
                f"{name}={value} does not divide over the mesh's model axis ({model}); "
                f"use a model axis size that divides it (or pad {name} to a multiple of {model})"
            )
