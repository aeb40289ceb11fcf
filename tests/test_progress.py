"""Every long evaluation phase prints progress lines (phase, done/total, rate, ETA)."""
import numpy as np

from ssl_jax.evaluate import knn, linear
from ssl_jax.progress import Progress


def test_progress_line_counts_rate_and_eta(capsys):
  p = Progress("phase x", total=100, every_s=1e9)
  p.update(40)
  assert capsys.readouterr().out == ""          # rate-limited: nothing before the end
  p.update(60)
  line = capsys.readouterr().out.strip()
  assert line.startswith("[ssl_jax] phase x: 100/100 img,") and "img/s" in line
  assert line.endswith("eta 0.0 min")


def test_knn_and_linear_probe_report_their_last_line(capsys):
  rng = np.random.default_rng(0)
  f, y = rng.normal(size=(64, 8)).astype(np.float32), rng.integers(0, 3, 64)
  knn.knn_accuracy(f, y, f[:20], y[:20], 3, k=5)
  linear.linear_probe(f, y, f[:20], y[:20], 3, epochs=3, batch_size=16, optimizer="sgd")
  out = capsys.readouterr().out
  assert "kNN (k=5, 64 train): 20/20 queries" in out
  assert "linear probe (sgd, 3 epochs): 192/192 img" in out
