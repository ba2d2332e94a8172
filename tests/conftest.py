"""Test setup: eight forced CPU devices so sharding is exercised on one machine."""
import os

# Must happen before jax is imported anywhere in the test session.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
# Identical programs (e.g. the same train step in several tests) compile once per machine.
jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.expanduser("~"), ".cache", "jot-tests-xla"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
