"""Canvas probes: the toy stand-in for 001's COCO detection and ADE20K
segmentation tables (Tab. 1, 3-5), on multi-object Fashion-MNIST canvases
(ssl_jax/evaluate/canvas_data.py: 2-3 garments of 10-18 px per 32 px image).

- box_probe: a 1x1 conv on frozen patch tokens predicting objectness and
  FCOS (l, t, r, b) distances, decoded with NMS; class-agnostic box AP
  (0.5:0.95), AP50, AP75 and mean IoU of matched boxes.
- dense_probe on dataset "fashion_mnist_canvas": 1x1 conv semantic
  segmentation (11 classes: background + garment), mIoU.
Both for the encoder and its random-init twin.

Command:
  python -m ssl_jax.main --config configs/eval/box_probe.py \
      --config.encoder=/tmp/dino_cpu/export --workdir /tmp/eval_canvas
Variants: `cpu` (both probes, default), `box` (box probe only).

Cost: canvases ~10 s to draw (memoised per process), then features of 4k
canvases and two linear heads: about a minute for a 2-block width-64 ViT on
2 CPU cores.

Expected: the random-init twin is the floor. A 2-block width-64 ViT (patch 4)
gave, random init vs random init of another seed, box AP50 ~ 20-30 and
canvas mIoU ~ 20 (README holds the trained DINO-family numbers).

Deviations (named): no COCO / ADE20K, no ViTDet fine-tuning (001 B.2): frozen
features and linear heads, so the numbers rank representations, not detectors;
class-agnostic AP (the probe predicts objectness, not the garment).
"""
from ssl_jax import config_defaults
from ssl_jax.evaluate import box_probe, dense_probe


def get_config(arg: str = "cpu"):
  if arg not in ("cpu", "box"):
    raise ValueError(f"Unknown variant {arg!r}. Valid: cpu, box.")
  c = config_defaults.eval_config("box_probe")
  c.eval.box_probe = box_probe.defaults()
  c.eval.box_probe.image_size = 32
  if arg == "cpu":
    c.eval.protocols = ("box_probe", "dense_probe")
    c.eval.dense_probe = dense_probe.tab6()
    c.eval.dense_probe.update(dataset="fashion_mnist_canvas", image_size=32, train_mask_size=32,
                              block=-1, epochs=8, drop_at=6, batch_size=120,
                              source_kwargs=dict(num_train=3000, num_test=1000))
  # The classification arrays are loaded by the eval job but unused here.
  c.eval.max_train_examples = 256
  c.eval.max_eval_examples = 256
  return c
