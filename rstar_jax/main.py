"""Runs an experiment: `python -m rstar_jax.main --config experiments/NAME.py[:arg] --workdir DIR`.

The only place that defines flags. Overrides: `--config.section.field=value`.
"""
from rstar_jax import host_malloc

if __name__ == "__main__":  # first, before JAX loads and its threads start (host_malloc's docstring)
  host_malloc.reexec_with_kept_memory()

import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from rstar_jax.train import distributed
from rstar_jax.train import run as run_lib
from rstar_jax.train.config_lib import ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and outputs.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(std_logging.Filter):
  """Drops INFO lines of orbax (several per checkpoint); its warnings and errors pass."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  try:
    if not _CONFIG.value.get("dry_run"):  # a dry run plans the mesh without joining any process
      distributed.initialize(_CONFIG.value.get("distributed"))
  except ConfigError as error:
    sys.exit(f"config error: {error}")
  logging.info("JAX %s: %d process(es), %d local / %d global devices (%s)", jax.__version__,
               jax.process_count(), jax.local_device_count(), jax.device_count(), jax.devices()[0].platform)
  try:
    run_lib.run(_CONFIG.value, _WORKDIR.value, origin=config_flags.get_config_filename(flags.FLAGS["config"]))
  except ConfigError as error:  # one line naming key, value and origin; no traceback
    sys.exit(f"config error: {error}")


if __name__ == "__main__":
  app.run(main)
