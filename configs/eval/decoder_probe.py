"""tran-1 decoder probing (000 Sec. 5, App. B.1 Tab. 11) of an exported encoder.

One transformer block over the frozen patch tokens, global pooling, a linear
classifier; ViTs and CNNs (Mobile-Former, ResNet) alike. Pre-trained vs
random-init encoder.

Command (CPU default, embedded Fashion-MNIST):
  python -m ssl_jax.main --config configs/eval/decoder_probe.py \
      --config.encoder=/tmp/mae_tiny/export --workdir /tmp/eval_tran1
Paper recipe (ImageNet, decoder width 192 / 384 / 768 for MF-285M / 1.0G / 3.7G):
  ... --config configs/eval/decoder_probe.py:in1k_mf285m --config.data.manual_dir=/data/imagenet

Expected (CPU default): tran-1 top-1 of the encoder and of its random-init
twin. On the default job's export (1-epoch MAE ViT-Tiny) one run printed 69.75
vs 72.30; on the 1-epoch QB-Heat Mobile-Former export 74.90 vs 68.95 (README).

Deviations of the CPU variant (named): 32x32 Fashion-MNIST with 5k training
images instead of ImageNet; a decoder of width 96 (3 heads) instead of 192;
10 epochs (1 warm-up) with batch 256 instead of 200 epochs (10 warm-up) with
batch 4096; base lr 2e-3 instead of 5e-4 for the short schedule; features
are computed once without augmentation (no RandAug / random crops), so the
decoder trains on cached tokens.
"""
from ssl_jax import config_defaults
from ssl_jax.evaluate import decoder_probe

_IN1K = {"in1k_mf285m": "mf285m", "in1k_mf1g": "mf1g", "in1k_mf3.7g": "mf3.7g"}


def get_config(arg: str = "cpu"):
  c = config_defaults.eval_config("decoder_probe")
  if arg == "cpu":
    c.eval.decoder_probe = decoder_probe.tab11("mf285m")
    c.eval.decoder_probe.update(width=96, num_heads=3, augment=False, epochs=10,
                                warmup_epochs=1, batch_size=256, base_lr=2e-3)
    c.eval.max_train_examples = 5_000
    c.eval.max_eval_examples = 2_000
    return c
  if arg not in _IN1K:
    raise ValueError(f"Unknown variant {arg!r}. Valid: cpu, {', '.join(_IN1K)}.")
  c.eval.decoder_probe = decoder_probe.tab11(_IN1K[arg])
  c.data.name = "imagenet2012"
  c.data.train_split, c.data.eval_split = "train", "validation"
  c.data.image_size = 224
  c.eval.compare_random_init = False
  return c
