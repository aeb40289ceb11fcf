"""MoCo v2 pre-training (Chen et al. 2020), the baseline of ../shared/papers/000
(Tab. 1, 4, 5), on the same CNN encoders as QB-Heat.

Variants (`--config configs/mocov2.py:<variant>`):
  mf_tiny, resnet_tiny           CPU jobs on embedded 32x32 Fashion-MNIST
  mf_285m, mf_1.0g, mf_3.7g      ImageNet-1K, Mobile-Former encoders of 000 Tab. 8
  resnet50                       ImageNet-1K, MoCo v2's own backbone

Command (the CPU job):
  python -m ssl_jax.main --config configs/mocov2.py:mf_tiny --workdir /tmp/mocov2_tiny
ImageNet:
  python -m ssl_jax.main --config configs/mocov2.py:mf_285m --workdir gs://.../mocov2_285m \
      --config.data.manual_dir=/data/imagenet

Expected: the run prints kNN / linear-probe top-1 of the pre-trained and a
random-init encoder. 000 Tab. 1 reports MoCo-v2 linear probing of 51.6%
(MF-285M) and 60.4% (MF-1.0G); MoCo v2 itself reports 67.5% (ResNet-50, 200
epochs). At CPU scale expect only pre-trained > random init.

MoCo v2 recipe kept as defaults: 2-layer MLP head (hidden = encoder width,
output 128), temperature 0.2, queue 65536, key momentum 0.999, "aug+"
augmentation (`data.augment = "mocov2"`: crop scale 0.2-1, colour jitter
0.4/0.4/0.4/0.1 p=0.8, grayscale 0.2, blur p=0.5, flip), batch 256, 200
epochs, cosine schedule, shuffling BN over 8 groups (MoCo's 8 GPUs x 32).
The Mobile-Former representation is Tab. 8's "pool concat" (`cls`).

Optimiser: MoCo v2's SGD, lr 0.03 x batch/256, momentum 0.9, wd 1e-4, cosine,
no warm-up. Weight decay applies to every parameter, BatchNorm scales and
biases included (`optim.decay_1d_params=True`): the official main_moco.py
passes `model.parameters()` to torch.optim.SGD with one weight_decay. The
one exception is Mobile-Former's learned global `tokens`, never decayed like
a ViT's cls_token (ssl_jax/optim.py NO_DECAY; 000 gives no MoCo recipe for
Mobile-Former, and MoCo's own ResNet-50 has no such parameter).

Deviations (named, not hidden):
  - 000 does not give its MoCo-v2 schedule for Mobile-Former; MoCo v2's
    200-epoch ResNet-50 recipe is used for every encoder.
  - CPU variants: 32x32 Fashion-MNIST, tiny encoders, queue 4096, 1 epoch,
    SGD base lr 0.06; linear probe with SGD at batch 256 for 30 epochs.
"""
from ssl_jax import config_defaults

# name -> model config
_IN1K = {
    "mf_285m": dict(name="mobile_former", variant="285M"),
    "mf_1.0g": dict(name="mobile_former", variant="1.0G"),
    "mf_3.7g": dict(name="mobile_former", variant="3.7G"),
    "resnet50": dict(name="resnet", variant="50"),
}
_CPU = {
    "mf_tiny": dict(name="mobile_former", variant="tiny"),
    "resnet_tiny": dict(name="resnet", variant="tiny"),
}


def get_config(arg: str = "mf_tiny"):
  c = config_defaults.base_config()
  c.method = "mocov2"
  c.mocov2 = dict(dim=128, mlp_hidden=0, queue_size=65536, momentum=0.999,
                  temperature=0.2, bn_groups=8)
  c.data.augment = "mocov2"
  c.data.crop_scale = (0.2, 1.0)
  c.batch_size = 256
  c.optim.name = "sgd"
  c.optim.momentum = 0.9
  c.optim.base_lr = 0.03
  c.optim.weight_decay = 1e-4
  c.optim.warmup_epochs = 0.0
  c.optim.decay_1d_params = True     # official MoCo: wd on all params, BN and biases too
  if arg in _CPU:
    c.model = dict(_CPU[arg])
    c.eval.feature = "cls" if c.model["name"] == "mobile_former" else "mean"
    c.mocov2.queue_size = 4096
    return config_defaults.cpu_job(c, base_lr=0.06, warmup_epochs=0.0)
  if arg == "tiny":     # the test suite's train-and-resume run (config_defaults.tiny_job)
    # Two ResNet stages; 2 BN groups of 4 run grouped shuffling BN; a queue of
    # 4 batches wraps around within the 4 steps.
    c.model = dict(name="resnet", variant="tiny", num_stages=2)
    c.eval.feature = "mean"
    c.mocov2.update(dim=16, queue_size=32, bn_groups=2, momentum=0.9)
    return config_defaults.tiny_job(c)
  if arg not in _IN1K:
    raise ValueError(f"Unknown variant {arg!r}. Valid: tiny, "
                     f"{', '.join(list(_CPU) + list(_IN1K))}.")
  c.model = dict(_IN1K[arg])
  c.eval.feature = "cls" if c.model["name"] == "mobile_former" else "mean"
  config_defaults.imagenet_job(c)
  c.num_epochs = 200.0
  return c
