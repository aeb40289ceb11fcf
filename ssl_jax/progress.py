"""Progress lines for every long phase (feature extraction, kNN, probes, fine-tuning).

Pre-training prints "[ssl_jax] step i/N ... img/s eta"; evaluation phases print
the same shape of line so a user never watches a silent process:

  [ssl_jax] features train: 5120/10000 img, 812 img/s, eta 0.1 min

Lines are rate-limited (`every_s`) and the last one is always printed.
"""
import time


class Progress:
  """`p = Progress("linear probe", total=epochs * n); ...; p.update(n)` per batch."""

  def __init__(self, phase: str, total: int, unit: str = "img", every_s: float = 10.0,
               enabled: bool = True):
    self.phase, self.total, self.unit = phase, max(int(total), 0), unit
    self.every_s, self.enabled = every_s, enabled
    self.done = 0
    self._t0 = self._last = time.time()

  def update(self, n: int = 1):
    self.done += int(n)
    now = time.time()
    if self.enabled and (now - self._last >= self.every_s or self.done >= self.total):
      self._last = now
      print(self.line(now), flush=True)

  def line(self, now: float = None) -> str:
    elapsed = max((now or time.time()) - self._t0, 1e-9)
    rate = self.done / elapsed
    eta = (self.total - self.done) / rate if rate > 0 else float("nan")
    return (f"[ssl_jax] {self.phase}: {self.done}/{self.total} {self.unit}, "
            f"{rate:.0f} {self.unit}/s, eta {eta / 60:.1f} min")
