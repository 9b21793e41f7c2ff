"""One CPU device per core for the trainer: the XLA flag it sets, when it stays out, and the mesh it trains on."""

import os
import subprocess
import sys

import pytest

from mtmoe import cpu_devices, models, train
from mtmoe.command_line import UsageError
from mtmoe.train_config import CheckpointConfig, DatasetConfig, MeshConfig
from tests.test_partitioning import CONFIG

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAG = "--xla_force_host_platform_device_count"


def test_requested_devices_reads_the_environment():
    assert cpu_devices.requested_devices({}, num_cores=2) == 2  # one per core
    assert cpu_devices.requested_devices({"MTMOE_CPU_DEVICES": "3"}, num_cores=2) == 3
    assert cpu_devices.requested_devices({"MTMOE_CPU_DEVICES": " 1 "}, num_cores=16) == 1
    # The user's own XLA flag wins over both.
    assert cpu_devices.requested_devices({"XLA_FLAGS": f"{FLAG}=8", "MTMOE_CPU_DEVICES": "2"}, num_cores=2) is None
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(ValueError, match=f"MTMOE_CPU_DEVICES='{bad}' is not a device count") as info:
            cpu_devices.requested_devices({"MTMOE_CPU_DEVICES": bad}, num_cores=2)
        assert "\n" not in str(info.value)


def test_split_cores_adds_the_flag_to_the_users_flags_and_stays_out_once_jax_has_started(monkeypatch):
    monkeypatch.setattr(cpu_devices, "_jax_started", lambda: False)
    environ = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false", "MTMOE_CPU_DEVICES": "3"}
    assert cpu_devices.split_cores(environ) == 3
    assert environ["XLA_FLAGS"] == f"--xla_cpu_enable_fast_math=false {FLAG}=3"
    environ = {"MTMOE_CPU_DEVICES": "1"}  # JAX's default: nothing to set
    assert cpu_devices.split_cores(environ) is None and "XLA_FLAGS" not in environ

    monkeypatch.setattr(cpu_devices, "_jax_started", lambda: True)
    environ = {"MTMOE_CPU_DEVICES": "3"}
    assert cpu_devices.split_cores(environ) is None and environ == {"MTMOE_CPU_DEVICES": "3"}


def test_jax_started_is_true_in_a_process_that_used_jax():
    import jax

    jax.devices()
    assert cpu_devices._jax_started()


def _mesh_for(batch_size: int, **mesh_fields):
    dataset_cfg = DatasetConfig(mixture_or_task_name="unused", task_feature_lengths={"inputs": 6, "targets": 6},
                                batch_size=batch_size)
    return train._checked_mesh(model=models.EncoderDecoderModel(config=CONFIG), dataset_cfg=dataset_cfg,
                               mesh_cfg=MeshConfig(**mesh_fields), train_steps=1, checkpoint_cfg=CheckpointConfig())


def test_the_default_cpu_mesh_takes_as_many_devices_as_the_batch_splits_over():
    # The suite runs on 8 CPU devices (tests/conftest.py).
    assert dict(_mesh_for(16).shape) == {"data": 8, "expert": 1, "model": 1}
    assert dict(_mesh_for(12).shape) == {"data": 6, "expert": 1, "model": 1}  # the largest count <= 8 dividing 12
    assert dict(_mesh_for(7).shape) == {"data": 7, "expert": 1, "model": 1}
    assert dict(_mesh_for(12, expert_parallelism=2).shape) == {"data": 3, "expert": 2, "model": 1}  # 12 = 3 x 2 x 2
    assert dict(_mesh_for(12, num_microbatches=2).shape) == {"data": 6, "expert": 1, "model": 1}  # 6 rows a microbatch
    # A mesh the user chose is checked as it is.
    with pytest.raises(UsageError, match="BATCH_SIZE=12 does not divide over the mesh"):
        _mesh_for(12, data_parallelism=8)


@pytest.mark.slow
def test_the_trainer_command_trains_on_one_device_per_core_by_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3", MTMOE_CPU_DEVICES="2")  # as on a 2-core machine
    command = [sys.executable, "-m", "mtmoe.train", "--gin_file=tests/fixtures/train/tiny.gin",
               f"--gin.MODEL_DIR='{tmp_path / 'model'}'", "--gin.TRAIN_STEPS=1", "--gin.BLEU_PAIRS=0"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("mesh {'data': 2, 'expert': 1, 'model': 1} on 2 CPU devices (MTMOE_CPU_DEVICES=1 for one)"
            in done.stdout), done.stdout[-2000:]

    env["MTMOE_CPU_DEVICES"] = "none"
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: MTMOE_CPU_DEVICES='none' is not a device count; set a positive integer (1: one CPU device) or "
        "unset it for one device per core"]
