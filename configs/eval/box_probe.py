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

Cost: canvases ~5 s to draw (memoised per process); then features of 4k
canvases and the linear heads. One run (ViT width 128, 4 blocks, both probes,
encoder + twin) took 1 min 44 s of CPU time (9 min wall on a 2-core machine
shared at load ~15).

Expected: the random-init twin is the floor, and this toy is hard: a patch
of 4 px must place box edges to a pixel, so AP75 stays near 0 for frozen
linear heads, and AP50 / box_miou are the informative numbers. One run on
a 1-epoch MAE export (ViT width 128, 4 blocks, 4 heads, patch 4, 234 steps
of 256, raw-pixel targets, seed 0; /tmp config: configs/mae.py:vit_tiny with
that model) printed, pre-trained vs random init:
  box AP 6.46 vs 5.77, AP50 29.76 vs 26.86, AP75 0.36 vs 0.29,
  box_miou 56.19 vs 55.75; canvas dense probe mIoU 11.25 vs 9.00 (pixel
  accuracy 77.72 vs 77.41; background is 77% of the pixels).
One epoch of MAE barely separates from random init here; the DINO-family
numbers belong in the README.

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
