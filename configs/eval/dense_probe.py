"""Dense linear probe (003 Sec. 4.2, Tab. 6): a 1x1 conv on the frozen patch
features of one block, trained for semantic segmentation, scored by mIoU.

Command (CPU default: Fashion-MNIST foreground masks, 11 classes):
  python -m ssl_jax.main --config configs/eval/dense_probe.py \
      --config.encoder=/tmp/mae_tiny/export --workdir /tmp/eval_dense
Paper recipe on any tfds dataset with masks (default oxford_iiit_pet):
  ... --config configs/eval/dense_probe.py:tab6 --config.eval.dense_probe.dataset=scene_parse150

Expected (CPU default): mIoU / pixel accuracy of the encoder and of its
random-init twin. On the default job's export (1-epoch MAE ViT-Tiny) one run
printed mIoU 42.76 vs 25.59 (pixel acc. 77.10 vs 71.17) in 86 s on 2 cores.

Deviations (named): PascalVOC masks are not in tfds, so the paper variant
defaults to oxford_iiit_pet (pet / background, boundary ignored). The CPU
variant probes 32x32 Fashion-MNIST foreground masks (class = garment + 1
on non-zero pixels) at 32x32 training masks, 3k / 1k images, 8 epochs
with the step decay after 6 instead of 25 / 20.
"""
from ssl_jax import config_defaults
from ssl_jax.evaluate import dense_probe


def get_config(arg: str = "cpu"):
  c = config_defaults.eval_config("dense_probe")
  c.eval.dense_probe = dense_probe.tab6()
  if arg == "cpu":
    c.eval.dense_probe.update(dataset="fashion_mnist_fg", image_size=32, train_mask_size=32,
                              epochs=8, drop_at=6, batch_size=120,
                              source_kwargs=dict(max_train=3_000, max_test=1_000))
    # The classification arrays are loaded by the eval job but unused here.
    c.eval.max_train_examples = 256
    c.eval.max_eval_examples = 256
    return c
  if arg != "tab6":
    raise ValueError(f"Unknown variant {arg!r}. Valid: cpu, tab6.")
  c.eval.compare_random_init = False
  return c
