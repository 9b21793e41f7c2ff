"""The train state on a mesh and the jitted train step (T5X's `trainer.py`).

Axis letters: B the global batch (examples per step), M microbatches, L a
feature's length. Params and optimizer state are sharded by their logical axis
names (`partitioning.logical_shardings`); the batch [B, L] over
('data', 'expert'); the step number, the dropout key and `healthy` are
replicated.

- `StateLayout` / `state_layout`: shapes and shardings of params and optimizer
  state, found with `jax.eval_shape` (nothing allocated) — what a checkpoint
  restore fills and what the jitted functions take.
- `initialize_state`: fresh params (or from another checkpoint: "params",
  "upcycle", "student"; see mtmoe.upcycling) and optimizer state, created
  sharded.
- `make_train_step`: one optimizer step with gradient accumulation over strided
  microbatches and a finite-or-keep guard; `compile_steps` jits it (and the
  evaluation loss) with explicit in/out shardings and donated state.
- `checkpoint_meta`: what a checkpoint records besides arrays (model config,
  gin config, task, vocabulary) so `Translator` needs only the directory.

JAX, Flax and optax are imported inside the functions, as everywhere on the
trainer's path, so `python -m mtmoe.train --help` stays fast.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class StateLayout:
    """Shapes and shardings of the train state on one mesh (trees of the params' structure)."""

    abstract_params: Any     # jax.ShapeDtypeStruct per param, unboxed
    param_shardings: Any     # NamedSharding per param
    opt_shardings: Any       # NamedSharding per optimizer-state leaf
    target_params: Any       # abstract_params carrying their shardings: what a restore fills
    target_opt_state: Any    # the same for the optimizer state


def state_layout(*, model, optimizer, mesh, input_shapes: Mapping[str, tuple[int, ...]], init_rng) -> StateLayout:
    """The layout of `model`'s params and `optimizer`'s state on `mesh`, without allocating either.

    optimizer: an optax.GradientTransformation; input_shapes: one microbatch's
    {"encoder_input_tokens": (B/M, L_in), "decoder_input_tokens": (B/M, L_out)}."""
    import jax
    from flax import linen as nn

    from mtmoe import optimizers, partitioning

    with partitioning.mesh_context(mesh):
        boxed = jax.eval_shape(lambda r: model.get_initial_variables(r, input_shapes=input_shapes), init_rng)
    param_shardings = partitioning.logical_shardings(boxed["params"], mesh)
    abstract_params = nn.unbox(boxed["params"])  # outside the mesh: unboxing shapes must not constrain them
    abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
    opt_shardings = optimizers.optimizer_state_shardings(
        abstract_opt_state=abstract_opt, abstract_params=abstract_params, param_shardings=param_shardings, mesh=mesh)
    with_sharding = lambda tree, sh: jax.tree.map(  # noqa: E731
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, sh)
    return StateLayout(abstract_params=abstract_params, param_shardings=param_shardings, opt_shardings=opt_shardings,
                       target_params=with_sharding(abstract_params, param_shardings),
                       target_opt_state=with_sharding(abstract_opt, opt_shardings))


def initialize_state(*, model, optimizer, layout: StateLayout, mesh, input_shapes: Mapping[str, tuple[int, ...]],
                     init_rng, init_checkpoint: str | None = None, init_mode: str = "params",
                     print_fn: Callable[[str], None] = print):
    """(params, opt_state) of a fresh run, each leaf created with its sharding.

    init_checkpoint: another run's checkpoint to start from, read as `init_mode`
    says (mtmoe.upcycling.initialize_from); it raises checkpoints.CheckpointError
    when that checkpoint does not fit."""
    import jax
    from flax import linen as nn

    from mtmoe import partitioning

    with partitioning.mesh_context(mesh):
        init_fn = jax.jit(lambda r: nn.unbox(model.get_initial_variables(r, input_shapes=input_shapes)["params"]),
                          out_shardings=layout.param_shardings)
        params = init_fn(init_rng)
    if init_checkpoint:
        from mtmoe import upcycling

        params = upcycling.initialize_from(init_checkpoint, mode=init_mode, params=params,
                                           param_shardings=layout.param_shardings, print_fn=print_fn)
    with partitioning.mesh_context(mesh):
        opt_state = jax.jit(optimizer.init, in_shardings=(layout.param_shardings,),
                            out_shardings=layout.opt_shardings)(params)
    return params, opt_state


def _is_summed(name: str) -> bool:
    return name.startswith("num_")


def make_train_step(*, model, optimizer, learning_rate: Callable, num_microbatches: int,
                    batch_constraint: Callable[[Any], Any] = lambda b: b,
                    loss_fn: Callable | None = None):
    """(params, opt_state, healthy, step, batch, rng) -> (params, opt_state, healthy, metrics).

    batch: dict of <int32>[B, L] features; rng: the run's dropout key; the
    step's key is fold_in(rng, step), microbatch i's fold_in(that, i).
    `healthy` (<bool>[]) is False once a step was not finite: from then on
    the state is left unchanged."""
    import jax
    import jax.numpy as jnp
    import optax

    loss_fn = loss_fn or model.loss_fn
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step_fn(params, opt_state, healthy, step, batch, rng):
        step_rng = jax.random.fold_in(rng, step)
        if num_microbatches <= 1:
            (_, metrics), grads = grad_fn(params, batch, step_rng)
        else:
            def split(x):  # [B, ...] -> [M, B/M, ...]; microbatch m holds rows m, m+M, ... (every device's share)
                return x.reshape((x.shape[0] // num_microbatches, num_microbatches) + x.shape[1:]).swapaxes(0, 1)

            microbatches = jax.tree.map(split, batch)

            def body(grad_sum, inputs):
                index, microbatch = inputs
                microbatch = batch_constraint(microbatch)
                (_, metrics), grads = grad_fn(params, microbatch, jax.random.fold_in(step_rng, index))
                return jax.tree.map(jnp.add, grad_sum, grads), metrics

            zeros = jax.tree.map(jnp.zeros_like, params)
            grads, stacked = jax.lax.scan(body, zeros, (jnp.arange(num_microbatches), microbatches))
            grads = jax.tree.map(lambda g: g / num_microbatches, grads)
            metrics = {k: jnp.sum(v) if _is_summed(k) else jnp.mean(v) for k, v in stacked.items()}
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        grad_norm = optax.tree.norm(grads)
        param_norm = optax.tree.norm(new_params)
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
        ok = healthy & finite
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)  # noqa: E731
        metrics = dict(metrics, learning_rate=jnp.asarray(learning_rate(step), jnp.float32),
                       grad_norm=grad_norm, param_norm=param_norm)
        return keep(new_params, params), keep(new_opt_state, opt_state), ok, metrics

    return step_fn


def compile_steps(*, model, optimizer, learning_rate: Callable, num_microbatches: int, mesh, layout: StateLayout,
                  loss_fn: Callable | None = None):
    """(train_step, eval_step), jitted with explicit shardings.

    train_step: make_train_step's function; params and optimizer state are
    donated. eval_step(params, batch) -> the model's loss metrics (no dropout).
    loss_fn None: the model's own loss (a distillation loss otherwise)."""
    import jax

    from mtmoe import partitioning

    batch_sharding = partitioning.batch_sharding(mesh)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def constrain_batch(b):
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, batch_sharding), b)

    step_fn = make_train_step(model=model, optimizer=optimizer, learning_rate=learning_rate,
                              num_microbatches=num_microbatches, batch_constraint=constrain_batch, loss_fn=loss_fn)
    train_step = jax.jit(step_fn, in_shardings=(layout.param_shardings, layout.opt_shardings, replicated, replicated,
                                                batch_sharding, replicated),
                         out_shardings=(layout.param_shardings, layout.opt_shardings, replicated, replicated),
                         donate_argnums=(0, 1))
    eval_step = jax.jit(lambda p, b: model.loss_fn(p, b, None)[1],
                        in_shardings=(layout.param_shardings, batch_sharding), out_shardings=replicated)
    return train_step, eval_step


def healthy_flag(mesh):
    """The train step's `healthy` input before the first step: True, replicated over `mesh`.

    Placed as the step returns it: an uncommitted array would give the second
    step another input sharding, and jit would trace and compile the whole step
    a second time."""
    import jax
    import jax.numpy as jnp

    return jax.device_put(jnp.asarray(True), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def checkpoint_meta(*, model, config_text: str, mixture_or_task_name: str, lengths: Mapping[str, int],
                    pairs: list[tuple[str, tuple[str, str]]], vocabulary) -> dict:
    """The run-invariant part of every checkpoint's metadata (the data position is added per save)."""
    from mtmoe import checkpoints

    spm_path = getattr(vocabulary, "sentencepiece_model_file", None)
    return {
        "model_config": model.config.to_dict(),  # the router as its class path: models.model_from_meta reads it
        "model_kwargs": {k: getattr(model, k) for k in ("label_smoothing", "z_loss", "aux_loss_factor",
                                                        "router_z_loss_factor") if hasattr(model, k)},
        "gin_config": config_text,
        "mixture_or_task_name": mixture_or_task_name,
        "task_feature_lengths": dict(lengths),
        "language_pairs": [list(p) for _, p in pairs],
        "vocabulary": checkpoints.vocabulary_meta(spm_path, extra_ids=getattr(vocabulary, "extra_ids", 0))
        if spm_path else None,
    }


def count_params(tree) -> int:
    """Number of scalars in a tree of arrays or ShapeDtypeStructs."""
    import jax

    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))
