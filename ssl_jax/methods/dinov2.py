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
from ssl_jax.methods import METHODS, dino, ibot
from ssl_jax.methods.base import Method, fixed_view

METHODS.register("dinov2", Method(views=fixed_view("multi_crop"), init=dino.init,
                                  loss=dino.make_loss(draw_masks=ibot.draw_masks),
                                  encoder=dino.encoder, update=dino.update))
