"""Representation and attention analyses of an exported encoder, as PNG + JSON
(002 Sec. 4.2-4.3, 001 App. A.1, 000 App. D).

- layer-wise CKA (minibatch unbiased HSIC) vs each reference and a random-init
  twin: heatmaps like 002 Fig. 3;
- per-head attention distance / entropy (002 Eq. 2-4) and query-key NMI
  (001 App. A.1) per block: box plots like 002 Fig. 5;
- attention maps of CLS / extra tokens and query patches on sample photos;
- spatial correlation of output feature maps (000 App. D): histograms.

Command (CPU default, embedded Fashion-MNIST test images):
  python -m ssl_jax.main --config configs/eval/analyze.py \
      --config.encoder=/tmp/mae_tiny/export --workdir /tmp/analysis \
      --config.eval.analyze.output_dir=/tmp/analysis
Add references (export folders, timm safetensors or MAE / DINO .pth):
  --config.eval.analyze.references="{'mae_b': '/ckpt/mae_pretrain_vit_base.pth'}"

Expected: summary.json with attn_{distance,entropy,nmi}_{last,mean},
spatial_corr, cka_diag_vs_* and, on 256 Fashion-MNIST canvases at the input
size, canvas_inst_{own,other,background,contrast}_last (001 Fig. 6: own- vs
other-instance attention of patch queries) and canvas_attn_{distance,nmi}_last
(Fig. 5), and the figures next to it (27 s on CPU). On the canvases, a
1-epoch MAE ViT (width 128, 4 blocks, patch 4) printed own / other instance
attention per block of contrast 1.29, 1.35, 1.19, 0.99 (own-instance mass
per patch over other-instance mass per patch) vs 1.04, 1.02, 0.99, 1.01 for
its random-init twin (1.0 = instance-blind).
002 reports that MAE lowers attention distance and entropy relative to random
init on ImageNet. On the default job's export (1-epoch MAE ViT-Tiny, Fashion-
MNIST) one run printed: attention distance 15.90 px (last block) vs 16.53 for
random init, entropy 3.40 vs 4.15 nats (uniform: ln 64 = 4.16), spatial
correlation 0.984 vs 0.987, CKA with the random-init twin 0.69 on the diagonal.

Deviations (named): 256 test images (002 / MAE-Lite use 1024, 000 1000) on
the CPU variant; attention distance is in pixels (patch distance x patch size,
ViT's convention; MAE-Lite scales by 14).
"""
from ml_collections.config_dict import placeholder

from ssl_jax import config_defaults


def get_config(arg: str = "cpu"):
  c = config_defaults.eval_config("analyze")
  c.eval.compare_random_init = False      # the analysis adds its own random-init twin
  c.eval.max_train_examples = 256
  c.eval.analyze = dict(num_images=1024, batch_size=64, output_dir=placeholder(str), references={},
                        compare_random_init=True, map_blocks=(-1,),
                        photos=("astronaut", "chelsea", "coffee", "rocket", "grace_hopper"),
                        # 001 Fig. 5-6 on multi-object canvases (analysis/instance_attention.py)
                        canvas=dict(num_images=256, batch_size=64))
  if arg == "cpu":
    c.eval.analyze.num_images = 256
    c.eval.max_eval_examples = 256
    return c
  if arg != "in1k":
    raise ValueError(f"Unknown variant {arg!r}. Valid: cpu, in1k.")
  c.data.name = "imagenet2012"
  c.data.train_split, c.data.eval_split = "train", "validation"
  c.data.image_size = 224
  c.eval.max_eval_examples = 1024
  return c
