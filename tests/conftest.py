"""Session-wide test set-up: 8 forced CPU devices, set once before JAX loads.

Every test sees the same 8 host devices, so sharded (e.g. 2x2x2 mesh) and
1-device computations can be compared in one process.
"""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
