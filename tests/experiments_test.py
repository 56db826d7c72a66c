"""Every experiment config in experiments/ loads (each variant and sweep entry), validates, and
rejects unknown args."""
import glob
import os

import pytest

from rstar_jax.train import config_lib, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py")))
VARIANTS = {"tiny.py": [None, "smoke"], "roc_ablation.py": [None, "smoke", "roc=False,seed=2,steps=5"],
            "rstar2_qwen3_14b.py": [None, "release", "policy=ckpt/sft,data=d"],
            "qwen_small.py": [None, "model=qwen2_5_0_5b,local_servers=2", "dtype=float32"]}


def _load(path):
  return config_lib.load_module(path)


def test_there_are_configs_and_each_has_listed_variants():
  assert CONFIG_FILES
  assert {os.path.basename(p) for p in CONFIG_FILES} == set(VARIANTS)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_every_variant_loads_and_validates(path):
  module = _load(path)
  assert "python -m rstar_jax.main --config experiments/" in module.__doc__  # the launch command
  args = VARIANTS[os.path.basename(path)] + [entry["config"] for entry in getattr(module, "get_sweep", list)()]
  for arg in args:
    config = module.get_config(arg)
    validate.validate(config, f"{os.path.basename(path)}:{arg}")


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_unknown_config_argument_raises(path):
  with pytest.raises(ValueError, match="config argument 'nonsense' is unknown"):
    _load(path).get_config("nonsense=1")
