"""iBOT pre-training (Zhou et al. 2022): DINO + masked patch self-distillation.

Variants (`--config configs/ibot.py:<variant>`):
  tiny      the every-method train/resume test (16 px, width 32, 1 block, batch 8)
  cpu       embedded 32x32 Fashion-MNIST, same ViT / crops / budget as configs/dino.py:cpu
  vit_s16   ImageNet-1K ViT-S/16, the iBOT README recipe at DINO's 100-epoch budget

Command (CPU):
  python -m ssl_jax.main --config configs/ibot.py:cpu --workdir /tmp/ibot_cpu
ImageNet:
  python -m ssl_jax.main --config configs/ibot.py:vit_s16 --workdir gs://.../ibot_s16 \
      --config.data.manual_dir=/data/imagenet

Cost: cpu as dino:cpu plus the patch head on 2 x 64 tokens (~1.3x); ImageNet
ViT-S/16 100 epochs ~ 1.3x DINO's.
Expected: iBOT reports 77.9% linear / 75.2% k-NN for ViT-S/16 at 800 epochs
(much less at 100). cpu: the goal is kNN above the random-init twin; at the
results suite's 150 x 128 (3 seeds) it is level with it (60.3 vs 60.1), CLS
RankMe 15 of 128 like DINO's.

Recipe (iBOT README, ViT-S/16): shared head (`head_mode="shared"`), K = K' =
8192, norm_last_layer False, teacher temp 0.04 -> 0.07 over 30 epochs, patch
teacher temp the same, centre momenta 0.9, teacher momentum 0.996 -> 1, masks
block-wise on half of the global crops with ratio in [0.1, 0.5], lambda1 =
lambda2 = 1, lr 5e-4 x bs/256 (10 warm-up epochs), wd 0.04 -> 0.4, clip 3.0,
drop path 0.1, 2 global crops (0.25-1) + 10 local (0.05-0.25), batch 1024.

Deviations (named): 100 epochs instead of iBOT's 800 (a budget comparable
with configs/dino.py); iBOT's pred_ratio (0.3 +- 0.2 or 0) is read as "half
of the global crops, ratio uniform in [0.1, 0.5]"; BEiT block masks with the
exact-count fill of ssl_jax/ops/block_mask.py. cpu: as configs/dino.py:cpu.
"""
from ssl_jax.methods import dino


def _vit_s16(c):
  c.model = dict(name="vit", variant="S", patch_size=16, posemb="learn", drop_path=0.1)
  c.batch_size = 1024
  c.num_epochs = 100.0
  c.dino.update(out_dim=8192, patch_out_dim=8192, norm_last_layer=False)
  c.data.crop_scale = (0.25, 1.0)
  c.data.local_crop_scale = (0.05, 0.25)
  c.data.num_local_crops = 10


def get_config(arg: str = "cpu"):
  return dino.family_config("ibot", arg, {"vit_s16": _vit_s16}, cpu={},
                            patch_loss_weight=1.0, head_mode="shared")
