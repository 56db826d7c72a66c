"""PNG plots of a run's metrics.jsonl (loss curves), for a person to open."""
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rstar_jax.train.metrics import read_metrics


def plot_losses(workdir: str, out_name: str = "loss.png") -> str:
  """Plots every `loss/*` and `eval/loss*` series against the step; returns the PNG path."""
  rows = read_metrics(workdir)
  names = sorted({k for row in rows for k in row if k.startswith(("loss/", "eval/loss"))})
  fig = Figure(figsize=(7, 4))
  FigureCanvasAgg(fig)
  ax = fig.subplots()
  for name in names:
    points = [(row["step"], row[name]) for row in rows if isinstance(row.get(name), (int, float))]
    ax.plot(*zip(*points), marker="." if len(points) < 50 else None, label=name)
  ax.set_xlabel("step")
  ax.set_ylabel("loss")
  ax.set_title(os.path.basename(os.path.abspath(workdir)))
  ax.grid(alpha=0.3)
  ax.legend()
  path = os.path.join(workdir, out_name)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  return path
