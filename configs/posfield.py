"""Position-field DINOv2 (../shared/papers/001): crop-linked position field,
position / scale augmentation, masked position prediction.

Variants (`--config configs/posfield.py:<variant>`):
  tiny                         the every-method train/resume test
  cpu                          embedded 32x32 Fashion-MNIST, as configs/dinov2.py:cpu
  vit_s16_in1k, vit_b16_in1k   001 Tab. 6
Ablations (001 Tab. 3-5) are flags: --config.posfield.field_sampling=False
(no "Pos. Enc. Sampling"), --config.dino.pos_loss_weight=0 (no L_pos),
--config.posfield.scale_dist=const|uniform (Tab. 4a), --config.posfield.field_size
(Tab. 4b), --config.posfield.content_prob=0 (Tab. 5b: position masking only).

Command (CPU):
  python -m ssl_jax.main --config configs/posfield.py:cpu --workdir /tmp/posfield_cpu
ImageNet:
  python -m ssl_jax.main --config configs/posfield.py:vit_s16_in1k --workdir gs://.../pf_s16 \
      --config.data.manual_dir=/data/imagenet

Cost: 001 App. B.1: 1.3x DINOv2's time per epoch (a third head on the global
patches). Expected: 001 Tab. 1b: 44.8 COCO AP-box (ViT-S/16) vs 41.9 for
DINOv2-dagger after ViTDet fine-tuning. cpu: kNN above the random-init twin;
the canvas box / dense probes are where 001 predicts a gain.

Recipe: 001 Tab. 6 (ssl_jax/methods/dinov2.py `tab6_001`) + field 50 x 50,
s ~ Beta(2, 5) on [0.2, 1.0], content / position masking 50 / 50 per global
crop, box-wise / cross-wise, ratio [0.1, 0.5], separate heads for image,
content and position (K = 65,536 each), lambda_KoLeo = 1 (Eq. 6), Sinkhorn-
Knopp teacher targets (DINOv2).

Deviations / readings (named): the scale augmentation formula is read as in
ssl_jax/methods/posfield.py (A encloses all crops of an image, global and
local; scaled to area s, clipped to fit, translated uniformly); cross-wise
masks are unions of 1-patch-thick "+" shapes (Fig. 4 is not in the text);
the teacher's field is the EMA of the student's; the CLS token gets no
position (ViT convention of ssl_jax). cpu: field 16 x 16 (a 32 px image has
8 x 8 patches; Tab. 4b finds the size uncritical) and as configs/dino.py:cpu.
"""
import ml_collections

from ssl_jax.methods import dino, dinov2


def _tab6(c, variant):
  dinov2.tab6_001(c, variant)
  c.model["posemb"] = "none"        # positions come from the field


def get_config(arg: str = "cpu"):
  c = dino.family_config(
      "posfield", arg, {"vit_s16_in1k": lambda c: _tab6(c, "S"),
                        "vit_b16_in1k": lambda c: _tab6(c, "B")}, cpu={},
      patch_loss_weight=1.0, pos_loss_weight=1.0, head_mode="separate", koleo_weight=1.0,
      centering="sinkhorn_knopp")
  c.model["posemb"] = "none"
  c.posfield = ml_collections.ConfigDict(dict(
      field_size=(50, 50), scale_dist="beta", scale_range=(0.2, 1.0), field_sampling=True,
      content_prob=0.5))
  if arg in ("cpu", "tiny"):
    c.posfield.field_size = (16, 16)
  return c
