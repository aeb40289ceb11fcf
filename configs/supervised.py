"""Supervised training from scratch on the labels: the reference row of every
results table (configs/results/) and the supervised CKA reference of 002
Fig. 3. Same encoder as the self-supervised rows, a linear head on its pooled
feature, cross-entropy with label smoothing; exported and probed like every
method (the probes never see the training head).

Variants (`--config configs/supervised.py:<variant>`):
  vit_tiny     the default job's ViT-Tiny (002 Sec. 3.1), 32x32 Fashion-MNIST
  vit_small4   the results suite's CPU ViT (width 128, 4 blocks, 4 heads, patch 4)
  mf_tiny      the tiny Mobile-Former of the QB-Heat / MoCo v2 CPU jobs
  tiny         16 px, width 32, 1 block, batch 8: for tests only

Command:
  python -m ssl_jax.main --config configs/supervised.py:vit_small4 --workdir /tmp/sup

Expected: far above every frozen-probe number of the self-supervised rows
(it has seen the labels); README's results table holds the measured ones.

Recipe: DeiT's (Touvron et al. 2021, Tab. 9) where it fits a short CPU run:
AdamW, wd 0.05, label smoothing 0.1, warm-up + cosine, crop + flip.
Deviations (named): no RandAugment / Mixup / CutMix / repeated augmentation /
random erasing (minutes of training cannot fit through them); base lr 1e-3
per 256 (DeiT: 5e-4 per 512) for the short schedule; crop scale (0.2, 1) as
in the self-supervised CPU jobs (DeiT: 0.08) since 32x32 images are small.
"""
from ssl_jax import config_defaults

_MODELS = {
    "vit_tiny": dict(name="vit", variant="Ti", num_heads=12, patch_size=4, drop_path=0.0),
    "vit_small4": dict(name="vit", variant="Ti", width=128, depth=4, num_heads=4,
                       patch_size=4, drop_path=0.0),
    "mf_tiny": dict(name="mobile_former", variant="tiny"),
}


def get_config(arg: str = "vit_small4"):
  c = config_defaults.base_config()
  c.method = "supervised"
  c.supervised = dict(num_classes=10, feature="mean", label_smoothing=0.1)
  c.optim.weight_decay = 0.05
  if arg == "tiny":
    c.model = dict(name="vit", variant="Ti", width=32, depth=1, num_heads=2, patch_size=4)
    return config_defaults.tiny_job(c)
  if arg not in _MODELS:
    raise ValueError(f"Unknown variant {arg!r}. Valid: {', '.join(list(_MODELS) + ['tiny'])}.")
  c.model = dict(_MODELS[arg])
  c.eval.feature = "cls" if c.model["name"] == "mobile_former" else "mean"
  c.supervised.feature = "cls" if c.model["name"] == "mobile_former" else "mean"
  return config_defaults.cpu_job(c, base_lr=1e-3, warmup_epochs=0.1)
