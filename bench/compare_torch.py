"""The same MAE training step in ssl_jax and in PyTorch, alternated in one
process (not a test; needs requirements-bench.txt).

  pip install -r requirements-bench.txt
  python -m bench.compare_torch                       # ViT-Ti/16, batch 64, 224 px, fp32
  python -m bench.compare_torch --repeats 7 --steps 3 --threads 2
  python -m bench.compare_torch --task full      # the unmasked (supervised) ViT-Ti/16 step
  python -m bench.compare_torch --task dino --batch 8   # DINO multi-crop, ViT-Ti/16
  XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m bench.compare_torch --devices 2

The step: MAE ViT-Tiny/16 (width 192, 12 blocks, 12 heads; 002 Sec. 3.1),
per-sample shuffle masking at ratio 0.75, a 1-block 96-wide decoder
(3 heads), normalised-pixel MSE on the masked patches, AdamW (no decay on
biases / norms / tokens). ssl_jax: the trainer's own compiled step
(`bench/common.py`, configs as bench/bench_mae_step.py). PyTorch: the
official MAE model (facebookresearch/mae `models_mae.py`) written here with
timm's `VisionTransformer` block layout (pre-norm, one fused qkv Linear,
`F.scaled_dot_product_attention`, exact-GELU MLP 4x, LayerNorm eps 1e-6):
timm itself imports torchvision at import time, and no torchvision wheel
imports beside torch 2.13 CPU here, so `Block` is re-written to its exact
layout rather than imported.

Each repeat times `--steps` steps of one framework, then of the other
(alternating which goes first); the process is pinned to `--threads`
cores (XLA sizes its thread pool by them) and torch uses as many threads.
On a loaded machine torch's OpenMP team
stalls whenever one of its threads is descheduled (measured here at load ~6
on 2 cores: 2 threads 0.7-8.9 s/step where 1 thread took 0.1 s), so compare
at idle, or with `--threads 1` under load. Printed: median
ms/step and img/s of each, the ratio, and each one's MFU = XLA's FLOP count
of the step (the same model for both) / step time / the measured fp32
matmul rate (2048^2, the faster of jax's and torch's).
"""
import argparse
import copy
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench import common, twin_configs
from ssl_jax import sharding
from ssl_jax.ops import posemb


# ---------------------------------------------------------------- PyTorch MAE
class Block(nn.Module):
  """timm.models.vision_transformer.Block (qkv_bias, no LayerScale / drop path)."""

  def __init__(self, dim, num_heads, mlp_ratio=4.0):
    super().__init__()
    self.num_heads = num_heads
    self.norm1 = nn.LayerNorm(dim, eps=1e-6)
    self.qkv = nn.Linear(dim, dim * 3)
    self.proj = nn.Linear(dim, dim)
    self.norm2 = nn.LayerNorm(dim, eps=1e-6)
    self.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
    self.fc2 = nn.Linear(int(dim * mlp_ratio), dim)

  def forward(self, x):
    b, n, c = x.shape
    qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.num_heads, c // self.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    a = F.scaled_dot_product_attention(q, k, v)
    x = x + self.proj(a.transpose(1, 2).reshape(b, n, c))
    return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def _sincos(grid: int, dim: int) -> torch.Tensor:
  """The fixed 2-D sin-cos table ssl_jax uses (ops/posemb.py), [1, N, dim]."""
  table = posemb.sincos_2d(jnp.asarray(posemb.grid_coords(grid, grid)), dim)
  return torch.from_numpy(np.array(table, np.float32)).reshape(1, grid * grid, dim)


class TorchMAE(nn.Module):
  """facebookresearch/mae models_mae.MaskedAutoencoderViT, forward + loss."""

  def __init__(self, img=224, patch=16, dim=192, depth=12, heads=12, ddim=96, ddepth=1,
               dheads=3, norm_pix_loss=True):
    super().__init__()
    self.patch, self.norm_pix_loss = patch, norm_pix_loss
    grid = img // patch
    self.patch_embed = nn.Conv2d(3, dim, patch, patch)
    self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
    self.register_buffer("pos_embed", _sincos(grid, dim))
    self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
    self.norm = nn.LayerNorm(dim, eps=1e-6)
    self.decoder_embed = nn.Linear(dim, ddim)
    self.mask_token = nn.Parameter(torch.zeros(1, 1, ddim))
    self.register_buffer("decoder_pos_embed", _sincos(grid, ddim))
    self.decoder_blocks = nn.ModuleList([Block(ddim, dheads) for _ in range(ddepth)])
    self.decoder_norm = nn.LayerNorm(ddim, eps=1e-6)
    self.decoder_pred = nn.Linear(ddim, patch * patch * 3)
    for m in self.modules():           # MAE / timm init: xavier-uniform linears, zero biases
      if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
    nn.init.normal_(self.cls_token, std=0.02)
    nn.init.normal_(self.mask_token, std=0.02)

  def forward(self, imgs, mask_ratio=0.75):
    x = self.patch_embed(imgs).flatten(2).transpose(1, 2) + self.pos_embed
    b, n, d = x.shape
    keep = int(n * (1 - mask_ratio))
    ids_shuffle = torch.argsort(torch.rand(b, n), dim=1)      # per-sample shuffle (MAE Sec. 3)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    x = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
    mask = torch.ones(b, n)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    x = torch.cat([self.cls_token.expand(b, -1, -1), x], 1)
    for blk in self.blocks:
      x = blk(x)
    x = self.decoder_embed(self.norm(x))
    dd = x.shape[-1]
    x_ = torch.cat([x[:, 1:], self.mask_token.expand(b, n - keep, -1)], 1)
    x_ = torch.gather(x_, 1, ids_restore[..., None].expand(-1, -1, dd)) + self.decoder_pos_embed
    x = torch.cat([x[:, :1], x_], 1)
    for blk in self.decoder_blocks:
      x = blk(x)
    pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
    p, side = self.patch, imgs.shape[2] // self.patch
    target = imgs.reshape(b, 3, side, p, side, p)
    target = target.permute(0, 2, 4, 3, 5, 1).reshape(b, n, p * p * 3)
    if self.norm_pix_loss:                                     # MAE Sec. 3 "normalized pixels"
      mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
      target = (target - mean) / (var + 1e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(-1)
    return (loss * mask).sum() / mask.sum()


class TorchSupervised(nn.Module):
  """The unmasked step (`--task full`): ViT-Ti/16 on all tokens, mean-pooled
  patch tokens after the final norm, linear head, label-smoothed cross-entropy
  (ssl_jax's `supervised` method, configs/supervised.py)."""

  def __init__(self, img=224, patch=16, dim=192, depth=12, heads=12, classes=10):
    super().__init__()
    self.patch_embed = nn.Conv2d(3, dim, patch, patch)
    self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
    self.register_buffer("pos_embed", _sincos(img // patch, dim))
    self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
    self.norm = nn.LayerNorm(dim, eps=1e-6)
    self.head = nn.Linear(dim, classes)

  def forward(self, imgs, labels):
    x = self.patch_embed(imgs).flatten(2).transpose(1, 2) + self.pos_embed
    x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
    for blk in self.blocks:
      x = blk(x)
    logits = self.head(self.norm(x)[:, 1:].mean(1))
    return F.cross_entropy(logits, labels, label_smoothing=0.1)


class TorchDINOViT(nn.Module):
  """DINO's vision_transformer.py ViT (learned position table resized per
  crop size, CLS output after the final norm), blocks as above."""

  def __init__(self, img=224, patch=16, dim=192, depth=12, heads=3):
    super().__init__()
    self.grid = img // patch
    self.patch_embed = nn.Conv2d(3, dim, patch, patch)
    self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
    self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.grid ** 2, dim) * 0.02)
    self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
    self.norm = nn.LayerNorm(dim, eps=1e-6)

  def forward(self, imgs):
    x = self.patch_embed(imgs).flatten(2).transpose(1, 2)
    g, d = int(round(x.shape[1] ** 0.5)), x.shape[-1]
    pos = self.pos_embed[:, 1:]
    if g != self.grid:                  # interpolate_pos_encoding (bicubic)
      pos = pos.reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
      pos = F.interpolate(pos, size=(g, g), mode="bicubic", align_corners=False)
      pos = pos.permute(0, 2, 3, 1).reshape(1, g * g, d)
    x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1) + self.pos_embed[:, :1], x + pos], 1)
    for blk in self.blocks:
      x = blk(x)
    return self.norm(x)[:, 0]


class TorchDINOHead(nn.Module):
  """DINOHead: 3-layer GELU MLP (2048) -> 256 -> L2 norm -> weight-normalised
  linear to K prototypes with the norm fixed at 1 (norm_last_layer)."""

  def __init__(self, dim, out_dim=65536, hidden=2048, bottleneck=256):
    super().__init__()
    self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                             nn.GELU(), nn.Linear(hidden, bottleneck))
    self.v = nn.Parameter(torch.randn(out_dim, bottleneck) * bottleneck ** -0.5)

  def forward(self, x):
    x = F.normalize(self.mlp(x), dim=-1)
    return F.linear(x, self.v / self.v.norm(dim=1, keepdim=True))


class TorchDINO(nn.Module):
  """main_dino.py's step: student on 2 global + N local crops (one backbone
  call per crop size, one head call), EMA teacher on the globals, DINOLoss
  (centred, sharpened teacher; cross-entropy over every pair of different
  crops), centre EMA."""

  def __init__(self, img=224, out_dim=65536):
    super().__init__()
    self.student = nn.ModuleDict(dict(backbone=TorchDINOViT(img), head=TorchDINOHead(192, out_dim)))
    self.teacher = copy.deepcopy(self.student).requires_grad_(False)
    self.register_buffer("center", torch.zeros(1, out_dim))

  def forward(self, global_crops, local_crops, student_temp=0.1, teacher_temp=0.04):
    n_global = 2
    s_cls = torch.cat([self.student.backbone(global_crops), self.student.backbone(local_crops)])
    s_out = (self.student.head(s_cls) / student_temp).chunk(n_global + local_crops.shape[0]
                                                            // (global_crops.shape[0] // n_global))
    with torch.no_grad():
      t_out = self.teacher.head(self.teacher.backbone(global_crops))
      t_probs = F.softmax((t_out - self.center) / teacher_temp, dim=-1).chunk(n_global)
    total, terms = 0.0, 0
    for iq, q in enumerate(t_probs):
      for v, s in enumerate(s_out):
        if v != iq:
          total = total + torch.sum(-q * F.log_softmax(s, dim=-1), dim=-1).mean()
          terms += 1
    with torch.no_grad():
      self.center.mul_(0.9).add_(t_out.mean(0, keepdim=True), alpha=0.1)
    return total / terms

  @torch.no_grad()
  def ema(self, m=0.996):
    for ps, pt in zip(self.student.parameters(), self.teacher.parameters()):
      pt.mul_(m).add_(ps.detach(), alpha=1 - m)


def torch_step_fn(batch: int, image_size: int, lr: float, task: str = "mae"):
  model = {"mae": TorchMAE, "full": TorchSupervised, "dino": TorchDINO}[task](img=image_size)
  named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
  decay = [p for n, p in named if p.ndim > 1 and "token" not in n]
  no_decay = [p for n, p in named if not (p.ndim > 1 and "token" not in n)]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                           {"params": no_decay, "weight_decay": 0.0}], lr=lr,
                          betas=(0.9, 0.999) if task == "dino" else (0.9, 0.95))
  imgs = torch.randn(batch, 3, image_size, image_size)
  inputs = {"mae": lambda: (imgs,),
            "full": lambda: (imgs, torch.randint(0, 10, (batch,))),
            # crop-major like MultiCropWrapper: [2B, ...] globals, [8B, ...] locals
            "dino": lambda: (torch.randn(2 * batch, 3, image_size, image_size),
                             torch.randn(8 * batch, 3, 96, 96))}[task]()

  def step():
    opt.zero_grad(set_to_none=True)
    loss = model(*inputs)
    loss.backward()
    if task == "dino":       # main_dino.py clip_gradients: each parameter's norm to 3.0
      for p in model.parameters():
        if p.grad is not None:
          p.grad.mul_(torch.clamp(3.0 / (p.grad.norm() + 1e-6), max=1.0))
    opt.step()
    if task == "dino":
      model.ema()
    return float(loss.detach())
  return step


def torch_matmul_rate(n=2048, iters=10):
  a = torch.ones(n, n)
  for _ in range(2):
    a @ a
  ts = []
  for _ in range(iters):
    t = time.perf_counter()
    a @ a
    ts.append(time.perf_counter() - t)
  return 2 * n ** 3 / float(np.median(ts))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--steps", type=int, default=3, help="timed steps per repeat and framework")
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--devices", type=int, default=1,
                 help="ssl_jax's data-parallel CPU devices (needs XLA_FLAGS, see --help)")
  p.add_argument("--task", default="mae", choices=twin_configs.TASKS,
                 help="full: the unmasked supervised ViT-Ti/16 step; dino: DINO multi-crop")
  a = p.parse_args()
  if a.threads:
    common.pin_threads(a.threads)
  torch.set_num_threads(a.threads)
  torch.manual_seed(0)
  if a.devices > len(jax.devices()):
    raise ValueError(f"--devices {a.devices}: jax sees {len(jax.devices())}; run with "
                     f"XLA_FLAGS=--xla_force_host_platform_device_count={a.devices}.")
  # --devices 2: ssl_jax's step data-parallel over 2 virtual CPU devices, one per core
  # (each runs its own program: XLA:CPU's batched attention dots use one thread).
  mesh = sharding.make_mesh([("data", a.devices)], jax.devices()[:a.devices])
  run = common.StepRunner(common.setup(twin_configs.config(a.task, a.batch, a.image_size), mesh))
  flops = common.flops_of(run.compiled) * a.devices    # XLA counts one device's program
  tstep = torch_step_fn(a.batch, a.image_size, lr=1.5e-4 * a.batch / 256, task=a.task)
  for _ in range(2):                                  # warm-up both
    jax.block_until_ready(run())
    tstep()
  jax_rate = common.matmul_peak(jnp.float32)
  torch_rate = torch_matmul_rate()
  times = {"ssl_jax": [], "torch": []}

  def time_jax():
    for _ in range(a.steps):
      t = time.perf_counter()
      jax.block_until_ready(run())
      times["ssl_jax"].append(time.perf_counter() - t)

  def time_torch():
    for _ in range(a.steps):
      t = time.perf_counter()
      tstep()
      times["torch"].append(time.perf_counter() - t)

  load_before = common.load_average()
  for r in range(a.repeats):
    for fn in ((time_jax, time_torch) if r % 2 == 0 else (time_torch, time_jax)):
      fn()
  med = {k: float(np.median(v)) for k, v in times.items()}
  print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), jax {jax.__version__}; load before "
        f"{load_before}, after {common.load_average()}")
  what = {"mae": "MAE ViT-Ti/16 (12 heads), decoder 1 x 96, mask 0.75, norm-pix, AdamW",
          "full": "supervised ViT-Ti/16 (12 heads), all tokens, mean pool, CE + smoothing, AdamW",
          "dino": "DINO ViT-Ti/16 (3 heads), head 2048-256-65536, 2 x 224 + 8 x 96 crops, "
                  "EMA teacher, AdamW + per-param clip"}[a.task]
  print(f"{what}; ssl_jax on {a.devices} CPU device(s); batch "
        f"{a.batch}, {a.image_size} px, fp32; {a.repeats} alternated repeats x {a.steps} steps; "
        f"XLA FLOPs/step {flops / 1e9:.1f} G; fp32 matmul rate jax {jax_rate / 1e9:.1f}, "
        f"torch {torch_rate / 1e9:.1f} GFLOP/s")
  peak = max(jax_rate, torch_rate)      # the machine's rate: the faster library's
  print("| framework | ms/step (median) | img/s | MFU % (vs the faster matmul rate) |\n"
        "|---|---|---|---|")
  for k in ("ssl_jax", "torch"):
    print(f"| {k} | {1e3 * med[k]:.0f} | {a.batch / med[k]:.1f} | "
          f"{100 * flops / med[k] / peak:.1f} |")
  print(f"ssl_jax / torch img/s: {med['torch'] / med['ssl_jax']:.2f}x")


if __name__ == "__main__":
  main()
