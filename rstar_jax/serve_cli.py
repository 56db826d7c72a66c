"""The `rstar-serve` console script. A console script imports its module before calling it, so the
host malloc re-execution (rstar_jax.host_malloc) happens here, before `rstar_jax.serve` and JAX are
imported: they load once per launch. `python -m rstar_jax.serve` does the same from its own top."""
from rstar_jax import host_malloc


def run():
  host_malloc.reexec_with_kept_memory()
  from rstar_jax import serve  # pylint: disable=import-outside-toplevel  # after the re-execution, by design
  serve.run()
