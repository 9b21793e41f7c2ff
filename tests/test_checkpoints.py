"""Checkpoints: damaged steps fall back with a warning, other architectures are refused, vocab round-trips."""

import glob
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtmoe import checkpoints


def _abstract(tree):
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)


def _params(scale):
    return {"encoder": {"kernel": jnp.full((3, 5), scale, jnp.float32)}, "bias": jnp.arange(7.0) * scale}


@pytest.fixture()
def three_steps(tmp_path):
    ckpt = checkpoints.Checkpointer(model_dir=str(tmp_path), keep=3)
    for step in (1, 2, 3):
        ckpt.save(step=step, params=_params(step), opt_state={"mu": jnp.zeros((3, 5))},
                  meta={"data": {"batches_consumed": step}})
    ckpt.close()
    return tmp_path


def test_keeps_last_n_and_restores_newest(three_steps):
    ckpt = checkpoints.Checkpointer(model_dir=str(three_steps), keep=2)
    ckpt.save(step=4, params=_params(4), opt_state={"mu": jnp.zeros((3, 5))}, meta={})
    assert ckpt.all_steps() == [3, 4]
    restored = ckpt.restore_latest(abstract_params=_abstract(_params(0)),
                                   abstract_opt_state=_abstract({"mu": jnp.zeros((3, 5))}))
    assert restored.step == 4
    np.testing.assert_array_equal(restored.params["bias"], np.arange(7.0) * 4)


def test_damaged_latest_falls_back_with_a_warning(three_steps, caplog):
    for path in glob.glob(str(three_steps / "checkpoints" / "3" / "params" / "**" / "d" / "*"), recursive=True):
        with open(path, "r+b") as f:  # overwrite the array data in place
            f.write(b"\0" * 16)
    ckpt = checkpoints.Checkpointer(model_dir=str(three_steps))
    with caplog.at_level(logging.WARNING, logger="mtmoe.checkpoints"):
        restored = ckpt.restore_latest(abstract_params=_abstract(_params(0)))
    assert restored.step == 2 and restored.meta["data"]["batches_consumed"] == 2
    np.testing.assert_array_equal(restored.params["bias"], np.arange(7.0) * 2)
    assert "checkpoint" in caplog.text and "damaged" in caplog.text and "using the previous one" in caplog.text
    assert ckpt.all_steps() == [1, 2]  # moved aside, not deleted:
    assert os.listdir(three_steps / checkpoints.CORRUPT_SUBDIR)[0].startswith("3-")


def test_half_written_step_is_not_a_checkpoint(three_steps):
    # A save killed midway leaves Orbax's temporary directory, never a step directory.
    partial = three_steps / "checkpoints" / "4.orbax-checkpoint-tmp-123"
    shutil.copytree(three_steps / "checkpoints" / "3", partial)
    ckpt = checkpoints.Checkpointer(model_dir=str(three_steps))
    assert ckpt.all_steps() == [1, 2, 3]


def test_altered_values_fail_the_fingerprint(three_steps):
    meta_path = three_steps / "checkpoints" / "3" / "meta" / "metadata"
    text = meta_path.read_text()
    ckpt = checkpoints.Checkpointer(model_dir=str(three_steps))
    meta = ckpt.read_meta(3)
    meta["fingerprint"][0][0] += 1.0  # as if the stored arrays no longer summed to what was saved
    import json

    meta_path.write_text(json.dumps(meta))
    assert text != meta_path.read_text()
    restored = ckpt.restore_latest(abstract_params=_abstract(_params(0)))
    assert restored.step == 2


def test_other_architecture_is_one_line(three_steps):
    ckpt = checkpoints.Checkpointer(model_dir=str(three_steps))
    other = {"encoder": {"kernel": jnp.zeros((3, 6))}, "bias": jnp.zeros(7)}
    with pytest.raises(checkpoints.CheckpointError, match=r"different architecture \(encoder/kernel is \(3, 5\) "
                                                          r"there but \(3, 6\) in this model\)") as err:
        ckpt.restore_latest(abstract_params=_abstract(other))
    assert "\n" not in str(err.value)
    assert ckpt.all_steps() == [1, 2, 3]  # a mismatch is not damage: nothing moved


def test_vocabulary_round_trip(tmp_path):
    source = tmp_path / "v.model"
    source.write_bytes(b"sentencepiece bytes \x00\x01")
    meta = checkpoints.vocabulary_meta(str(source), extra_ids=100)
    path = checkpoints.write_vocabulary(meta, str(tmp_path / "out"))
    assert open(path, "rb").read() == source.read_bytes() and meta["extra_ids"] == 100
    meta["sha256"] = "0" * 64
    with pytest.raises(checkpoints.CheckpointError, match="damaged"):
        checkpoints.write_vocabulary(meta, str(tmp_path / "out2"))


def test_unwritable_model_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(checkpoints.CheckpointError, match="is not writable"):
        checkpoints.check_writable(str(blocker / "model"))


def test_fingerprint_is_per_leaf_sum_and_sum_of_squares():
    params = {"b": jnp.arange(7.0), "a": np.full((2, 3), -2.0, np.float32)}  # leaves in key order: a, b
    assert checkpoints.fingerprint(params) == [[-12.0, 24.0], [21.0, 91.0]]  # 0+1+...+6, 0+1+4+...+36


def _centered(shape, seed):
    # a leaf whose sum nearly cancels: float32 and float64 summation then disagree far beyond rtol * |sum|
    x = np.random.default_rng(seed).normal(0.0, 0.05, shape).astype(np.float32)
    return x - x.mean(dtype=np.float64).astype(np.float32)


def test_host_and_device_fingerprints_verify_each_other():
    params = {"centered": _centered((509, 1031), 0), "kernel": np.random.default_rng(1).normal(size=(3, 5, 7))
              .astype(np.float32), "scale": np.ones(2, np.float32)}
    sizes = [x.size for x in jax.tree.leaves(params)]
    sharded = jax.device_put(params["centered"], jax.sharding.NamedSharding(
        jax.sharding.Mesh(np.array(jax.devices()), ("d",)), jax.sharding.PartitionSpec(None, None)))
    on_host = checkpoints.fingerprint(params)  # NumPy arrays: summed on the host in float64, nothing compiled
    assert checkpoints.fingerprint(jax.tree.map(jnp.asarray, params)) == on_host  # CPU jax arrays alike
    assert checkpoints.fingerprint(dict(params, centered=sharded)) == on_host  # and replicated over 8 devices
    on_device = np.asarray(checkpoints._device_leaf_sums(params)).tolist()  # how an accelerator run sums (float32)
    assert on_device[0][0] != on_host[0][0]  # the rounding the wider test absorbs is real
    assert checkpoints.fingerprints_match(on_host, on_device, sizes=sizes)
    assert checkpoints.fingerprints_match(on_device, on_host, sizes=sizes)


def test_wider_sum_test_still_catches_damage():
    x = _centered((509, 1031), 2)
    stored = checkpoints.fingerprint([x])
    damaged = x.copy()
    damaged.ravel()[:64] = 1.0  # 64 of 524,779 values replaced: the sum of squares moves by 1e-3 of itself
    assert not checkpoints.fingerprints_match(checkpoints.fingerprint([damaged]), stored, sizes=[x.size])
    assert not checkpoints.fingerprints_match(checkpoints.fingerprint([x[:-1]]), stored, sizes=[x.size])  # shapes
    assert not checkpoints.fingerprints_match(stored, stored, sizes=[x.size, 1])  # leaf counts
    nan = x.copy()
    nan[0, 0] = np.nan
    assert not checkpoints.fingerprints_match(checkpoints.fingerprint([nan]), stored, sizes=[x.size])


def test_abstract_params_inverts_param_shapes():
    params = {"encoder": {"layers_0": {"kernel": jnp.zeros((3, 5))}, "layers_10": {"kernel": jnp.zeros((5, 7))}},
              "bias": jnp.zeros(7)}
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = checkpoints.abstract_params(checkpoints.param_shapes(params), dtype=jnp.bfloat16, sharding=device)
    assert jax.tree.structure(abstract) == jax.tree.structure(params)
    assert jax.tree.leaves(abstract) == [jax.ShapeDtypeStruct(s, jnp.bfloat16, sharding=device)
                                         for s in ((7,), (3, 5), (5, 7))]


def test_release_model_verifies_against_its_stored_fingerprint():
    # Saved before fingerprints were summed on the host: its float32 sums must still verify.
    release = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "models",
                           "mswitch-release")
    step, meta = checkpoints.read_json_meta(release)
    ckpt = checkpoints.Checkpointer(model_dir=release, read_only=True)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    restored = ckpt.restore(step, abstract_params=checkpoints.abstract_params(
        meta["param_shapes"], dtype=jnp.float32, sharding=device))
    sizes = [x.size for x in jax.tree.leaves(restored.params)]
    assert checkpoints.fingerprints_match(checkpoints.fingerprint(restored.params), meta["fingerprint"], sizes=sizes)
    assert checkpoints.fingerprints_match(checkpoints.fingerprint(restored.params), meta["fingerprint"])  # plain too
