"""Shared pytest set-up.

Eight fake CPU devices are requested before JAX is imported anywhere, so the
sharding tests can build (data=2, expert=4) meshes on this 2-core machine.
Everything else runs on device 0 exactly as on a one-device machine.
"""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # seqio imports TensorFlow: keep its start-up chatter out of test logs
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The app and the harness keep compiled programs in $XDG_CACHE_HOME/mtmoe/jax by default: the
# tests (and the commands they start) write theirs into a folder of their own, not the user's.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="mtmoe-tests-cache-")


# ---- trainer fixtures (owner: trainer helper) ------------------------------------------------

import pytest  # noqa: E402

TINY_TRAIN_STEPS = 6  # checkpoints at steps 2, 4, 6 (tests/fixtures/train/tiny.gin saves every 2)


def _enable_compilation_cache(directory: str) -> None:
    """Share compiled train steps between this process and the trainer subprocesses tests start."""
    import jax

    os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """MODEL_DIR of a tiny mSwitch (2+2 layers, d_model 16, 4 experts) trained
    TINY_TRAIN_STEPS steps on one device by the real trainer on the fixture
    corpus (tests/fixtures/train/tiny.gin, en<->de/fr/pt-BR/zh-Hans): checkpoints
    at steps 2, 4, 6 and metrics.jsonl with every step's loss. Read-only: copy
    it (shutil.copytree) before changing anything."""
    from mtmoe import train

    _enable_compilation_cache(str(tmp_path_factory.mktemp("jax_cache")))
    model_dir = tmp_path_factory.mktemp("tiny_checkpoint") / "model"
    status = train.main(["--gin_file=tests/fixtures/train/tiny.gin", f"--gin.MODEL_DIR='{model_dir}'",
                         "--gin.DATA_PARALLELISM=1", f"--gin.TRAIN_STEPS={TINY_TRAIN_STEPS}"])
    assert status == 0, "the trainer failed on the tiny fixture run; run it by hand to see why"
    return str(model_dir)
