"""Orbax checkpoints: params, optimizer state, step, data position, config, vocabulary.

Layout of a model directory (`MODEL_DIR`):

    MODEL_DIR/config.gin              operative gin config of the latest run (for people)
    MODEL_DIR/checkpoints/<step>/     one Orbax checkpoint per saved step, items:
        params/                       the model parameters (a pytree of arrays)
        opt_state/                    the optimizer state (absent in params-only exports)
        meta/                         JSON: step, data position, model config, parameter
                                      shapes, parameter fingerprint, gin config, vocabulary
    MODEL_DIR/corrupt_checkpoints/    checkpoints found unreadable, moved aside (never deleted)

Orbax writes every checkpoint into a temporary directory and renames it when
complete, so a run killed while saving leaves no half-written step behind.
Whatever else damages a step (a truncated or altered file) is caught on
restore: the arrays must load and must match the fingerprint (per-parameter
sum and sum of squares, up to rounding) stored in `meta`; otherwise the step
is moved aside with a warning and the previous one is used. A checkpoint whose parameter shapes differ from the
model being built is refused with one line.

The vocabulary (the SentencePiece model file) and the gin config are stored in
each checkpoint's `meta`, so a checkpoint directory is self-describing: the
Translator needs nothing else. No TensorFlow or seqio import here.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoints"
CORRUPT_SUBDIR = "corrupt_checkpoints"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked (one-line message)."""


def path_name(path) -> str:
    """'encoder/layers_0/attention/query/kernel' for a jax key path."""
    names = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                names.append(str(getattr(entry, attr)))
                break
    return "/".join(names)


def param_shapes(params: Any) -> dict[str, list[int]]:
    """{path: shape} of a params tree (arrays or ShapeDtypeStructs)."""
    return {path_name(p): list(leaf.shape) for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def abstract_params(shapes: dict[str, list[int]], *, dtype: Any, sharding: Any = None) -> dict:
    """The nested {name: ShapeDtypeStruct} params tree that `param_shapes` flattened, all of `dtype`.

    Inverse of `param_shapes` for Flax's params (dicts of dicts keyed by module and
    parameter name, which never contain "/"), so a restore can skip tracing the model's
    `init` when the checkpoint's meta already lists every parameter's shape."""
    tree: dict = {}
    for path, shape in shapes.items():
        *scopes, name = path.split("/")
        node = tree
        for scope in scopes:
            node = node.setdefault(scope, {})
        node[name] = jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)
    return tree


@jax.jit
def _device_leaf_sums(params):
    # float32 sum and sum of squares per leaf, on the arrays' own devices: cheap, sharding-agnostic up to rounding.
    return jnp.stack([jnp.stack([jnp.sum(x.astype(jnp.float32)), jnp.sum(jnp.square(x.astype(jnp.float32)))])
                      for x in jax.tree_util.tree_leaves(params)])       # [num_leaves, 2]


def _host_leaf_sums(leaves) -> list[list[float]]:
    # The same sums in float64 with NumPy: a fresh process would otherwise compile an XLA reduction per
    # params tree structure. NumPy casts to float64 in small buffered chunks, so no float64 copy of a leaf is made.
    sums = []
    for leaf in leaves:
        flat = np.asarray(leaf).ravel()
        sums.append([float(np.sum(flat, dtype=np.float64)), float(np.einsum("i,i->", flat, flat, dtype=np.float64))])
    return sums                                                          # [num_leaves, 2]


def _on_host(leaf) -> bool:
    """True for NumPy arrays and for jax Arrays that this process holds whole in CPU memory."""
    if not isinstance(leaf, jax.Array):
        return True
    return leaf.is_fully_addressable and all(device.platform == "cpu" for device in leaf.devices())


def fingerprint(params: Any) -> list[list[float]]:
    """Per-leaf [sum, sum of squares] of a params tree, to detect damaged restores.

    Arrays in this process's CPU memory are summed on the host in float64 (NumPy);
    others (accelerator or multi-host arrays) on their devices in float32, which
    saves copying them to the host. Both round differently from the exact sums by
    far less than the tolerance of `fingerprints_match(..., sizes=...)`, so either
    one verifies the other's (tests/test_checkpoints.py)."""
    leaves = jax.tree_util.tree_leaves(params)
    if all(_on_host(leaf) for leaf in leaves):
        return _host_leaf_sums(leaves)
    return np.asarray(jax.device_get(_device_leaf_sums(params)), np.float64).tolist()


def fingerprints_match(a, b, *, sizes: list[int] | None = None, rtol: float = 1e-4) -> bool:
    """Whether two fingerprints agree up to rounding; `sizes` (elements per leaf) widens the sums' test.

    A sum that nearly cancels is known only to within its rounding error, which any
    summation order (float32 on a device, float64 on the host) keeps far under
    rtol * sum|x| <= rtol * sqrt(size * sum of squares): without `sizes` such a sum
    can fail between two machines. The sum of squares never cancels and keeps the
    plain relative test, so damage that changes values' magnitudes is caught as before."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)   # [num_leaves, 2]: sum, sum of squares
    if a.shape != b.shape or (sizes is not None and len(sizes) != len(a)):
        return False
    scale = np.maximum(np.abs(a), np.abs(b)) + 1e-3
    if sizes is not None and len(a):
        scale[:, 0] += np.sqrt(np.asarray(sizes, np.float64) * np.maximum(a[:, 1], b[:, 1]))
    return bool(np.all(np.abs(a - b) <= rtol * scale))


def check_architecture(*, expected: dict[str, list[int]], found: dict[str, list[int]], where: str) -> None:
    """One-line CheckpointError when a checkpoint's parameter shapes differ from the model's."""
    if expected == found:
        return
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    differ = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if differ:
        k = differ[0]
        detail = f"{k} is {tuple(found[k])} there but {tuple(expected[k])} in this model"
    elif missing:
        detail = f"{missing[0]} is missing there ({len(missing)} parameters missing)"
    else:
        detail = f"it has {extra[0]} which this model lacks ({len(extra)} extra parameters)"
    raise CheckpointError(
        f"checkpoint {where} is of a different architecture ({detail}); use a fresh MODEL_DIR "
        f"or the gin model file it was trained with")


@dataclasses.dataclass
class Restored:
    step: int
    params: Any
    opt_state: Any
    meta: dict


class Checkpointer:
    """Save / restore training state under MODEL_DIR/checkpoints with Orbax.

    Use:
        ckpt = Checkpointer(model_dir=d, keep=3)
        ckpt.save(step=s, params=p, opt_state=o, meta={...})
        r = ckpt.restore_latest(abstract_params=..., abstract_opt_state=...)  # None when empty
    """

    def __init__(self, *, model_dir: str, keep: int | None = 3, read_only: bool = False):
        self.model_dir = os.path.abspath(model_dir)
        self.directory = os.path.join(self.model_dir, CHECKPOINT_SUBDIR)
        self.keep = keep
        self.read_only = read_only
        self._manager = self._make_manager()

    def _make_manager(self) -> ocp.CheckpointManager:
        if self.read_only and not os.path.isdir(self.directory):
            raise CheckpointError(f"no checkpoints in {self.model_dir} (expected {self.directory}/<step>); "
                                  f"pass the MODEL_DIR a training run wrote")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=self.keep, create=not self.read_only, read_only=self.read_only,
            enable_async_checkpointing=False,  # saves complete before training goes on: simple and atomic
            cleanup_tmp_directories=not self.read_only)
        return ocp.CheckpointManager(self.directory, options=options,
                                     item_names=("params", "opt_state", "meta"))

    def all_steps(self) -> list[int]:
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, *, step: int, params: Any, opt_state: Any | None, meta: dict) -> None:
        """Write checkpoint `step` (all processes call this together)."""
        meta = dict(meta, step=int(step), format_version=FORMAT_VERSION, fingerprint=fingerprint(params),
                    param_shapes=param_shapes(params), saved_at=time.time())
        items = {"params": ocp.args.StandardSave(params), "meta": ocp.args.JsonSave(meta)}
        if opt_state is not None:
            items["opt_state"] = ocp.args.StandardSave(opt_state)
        if step in self.all_steps():
            return
        self._manager.save(int(step), args=ocp.args.Composite(**items), force=True)
        self._manager.wait_until_finished()

    def read_meta(self, step: int) -> dict:
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def restore(self, step: int, *, abstract_params: Any, abstract_opt_state: Any | None = None) -> Restored:
        """Restore one step into the shapes/shardings of the abstract trees
        (ShapeDtypeStructs with `.sharding`). Raises CheckpointError on a
        different architecture; other exceptions mean the step is damaged."""
        meta = self.read_meta(step)
        check_architecture(expected=param_shapes(abstract_params), found=meta.get("param_shapes", {}),
                           where=f"{self.directory}/{step}")
        items = {"params": ocp.args.StandardRestore(abstract_params)}
        if abstract_opt_state is not None:
            items["opt_state"] = ocp.args.StandardRestore(abstract_opt_state)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        params = restored["params"]
        sizes = [leaf.size for leaf in jax.tree_util.tree_leaves(params)]
        if "fingerprint" in meta and not fingerprints_match(fingerprint(params), meta["fingerprint"], sizes=sizes):
            raise ValueError(f"parameters of step {step} do not match the fingerprint saved with them")
        return Restored(step=step, params=params, opt_state=restored.get("opt_state"), meta=meta)

    def restore_latest(self, *, abstract_params: Any, abstract_opt_state: Any | None = None,
                       step: int | None = None) -> Restored | None:
        """Restore `step` (default: the newest readable one). A damaged newest
        step is moved aside (or skipped when read-only) with a warning and the
        one before it is tried. None when there is no checkpoint."""
        steps = self.all_steps()
        if step is not None:
            if step not in steps:
                raise CheckpointError(f"no checkpoint for step {step} in {self.directory}; "
                                      f"available: {steps or 'none'}")
            return self.restore(step, abstract_params=abstract_params, abstract_opt_state=abstract_opt_state)
        for candidate in reversed(steps):
            try:
                return self.restore(candidate, abstract_params=abstract_params,
                                    abstract_opt_state=abstract_opt_state)
            except CheckpointError:
                raise
            except Exception as err:  # damaged files surface as many different exception types
                reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
                log.warning("checkpoint %s/%d is damaged (%s); using the previous one", self.directory,
                            candidate, reason)
                self._set_aside(candidate)
        return None

    def _set_aside(self, step: int) -> None:
        if self.read_only or jax.process_index() != 0:
            return
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(self.model_dir, CORRUPT_SUBDIR, f"{step}-{int(time.time())}")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.isdir(src):
            shutil.move(src, dst)
        self._manager = self._make_manager()

    def close(self) -> None:
        self._manager.close()


# ---- vocabulary and config carried inside `meta` ---------------------------------------------

def vocabulary_meta(spm_path: str, *, extra_ids: int) -> dict:
    """The SentencePiece model file as JSON-able bytes (base64) with its checksum."""
    with open(spm_path, "rb") as f:
        data = f.read()
    return {"filename": os.path.basename(spm_path), "extra_ids": int(extra_ids),
            "sha256": hashlib.sha256(data).hexdigest(), "model_b64": base64.b64encode(data).decode("ascii")}


def write_vocabulary(vocab_meta: dict, directory: str) -> str:
    """Write the vocabulary stored in a checkpoint's meta to `directory`; returns its path."""
    data = base64.b64decode(vocab_meta["model_b64"])
    if hashlib.sha256(data).hexdigest() != vocab_meta["sha256"]:
        raise CheckpointError("vocabulary stored in the checkpoint is damaged (sha256 mismatch); "
                              "use another checkpoint step")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, vocab_meta["filename"])
    write_atomic(path, data)
    return path


def write_atomic(path: str, data: bytes | str) -> None:
    """Write a file through a temporary name and rename it into place."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)


def check_writable(model_dir: str) -> None:
    """One-line CheckpointError unless MODEL_DIR can be created and written."""
    try:
        os.makedirs(model_dir, exist_ok=True)
        probe = os.path.join(model_dir, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as err:
        raise CheckpointError(f"MODEL_DIR {model_dir} is not writable ({err.strerror}); "
                              f"pass --gin.MODEL_DIR=<a directory you can write>") from None


def read_json_meta(model_dir: str, *, step: int | None = None) -> tuple[int, dict]:
    """(step, meta) of the newest (or given) checkpoint, without restoring arrays."""
    ckpt = Checkpointer(model_dir=model_dir, read_only=True)
    steps = ckpt.all_steps()
    if not steps:
        raise CheckpointError(f"no checkpoints in {model_dir}; train one with python -m mtmoe.train")
    step = steps[-1] if step is None else step
    return step, ckpt.read_meta(step)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)
