"""DINOv2 (Oquab et al. 2024) on ImageNet-1K scale: iBOT's two losses with
DINOv2's choices, plus the KoLeo regulariser.

  L = L_DINO + L_iBOT + lambda_KoLeo L_KoLeo                     (001 Eq. 3)

- KoLeo (Sablayrolles et al. 2019; DINOv2 Sec. 4): -mean log of each
  L2-normalised student CLS token's distance to its nearest neighbour in the
  batch, summed over the 2 global crops, weight `dino.koleo_weight` (0.1).
- Separate DINO and iBOT heads (`dino.head_mode = "separate"`).
- Teacher targets by Sinkhorn-Knopp (3 iterations, SwAV) instead of centring:
  `dino.centering = "sinkhorn_knopp"` (DINOv2's default); "centering" keeps
  DINO's EMA centre. For patches, Sinkhorn-Knopp runs over the masked tokens.
- Masks: block-wise, half of the global crops, ratio in [0.1, 0.5] (iBOT's
  draw, methods/ibot.py).
The engine is methods/dino.py; this file only names the recipe.
"""
import math

from ssl_jax.methods import METHODS, dino, ibot
from ssl_jax.methods.base import Method, fixed_view


def tab6_001(c, variant: str):
  """The ImageNet-1K recipe of 001 Tab. 6 (its DINOv2-dagger and its own
  method; configs/dinov2.py and configs/posfield.py): ViT-`variant`/16."""
  c.model = dict(name="vit", variant=variant, patch_size=16, posemb="learn", drop_path=0.1)
  c.batch_size = 512
  c.num_epochs = 100.0
  # "Base lr 2e-3" under DINOv2's sqrt(batch / 1024) rule, in our x batch/256 form.
  c.optim.base_lr = 2e-3 * math.sqrt(512 / 1024) * 256 / 512
  c.optim.clip_grad_mode = "global"                       # DINOv2 clip_grad_norm_
  c.dino.update(teacher_temp=0.04, warmup_teacher_temp_epochs=0.0, momentum_teacher=0.992,
                out_dim=65536, patch_out_dim=65536, head_mode="separate", norm_last_layer=True)
  c.data.crop_scale = (0.32, 1.0)                         # DINOv2 global / local crop scales
  c.data.local_crop_scale = (0.05, 0.32)
  c.data.num_local_crops = 8

METHODS.register("dinov2", Method(views=fixed_view("multi_crop"), init=dino.init,
                                  loss=dino.make_loss(draw_masks=ibot.draw_masks),
                                  encoder=dino.encoder, update=dino.update))
