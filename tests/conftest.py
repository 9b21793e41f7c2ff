"""Shared pytest set-up.

Eight fake CPU devices are requested before JAX is imported anywhere, so the
sharding tests can build (data=2, expert=4) meshes on this 2-core machine.
Everything else runs on device 0 exactly as on a one-device machine.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # seqio imports TensorFlow: keep its start-up chatter out of test logs
os.environ.setdefault("JAX_PLATFORMS", "cpu")
