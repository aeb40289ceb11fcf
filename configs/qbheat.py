"""QB-Heat pre-training (../shared/papers/000) of Mobile-Former encoders.

Variants (`--config configs/qbheat.py:<variant>`):
  mf_tiny                        CPU job: tiny Mobile-Former, embedded 32x32 Fashion-MNIST
  mf_285m, mf_1.0g, mf_3.7g      ImageNet-1K, the encoders of Tab. 8

Command (the CPU job):
  python -m ssl_jax.main --config configs/qbheat.py:mf_tiny --workdir /tmp/qbheat_tiny
ImageNet:
  python -m ssl_jax.main --config configs/qbheat.py:mf_285m --workdir gs://.../qbheat_285m \
      --config.data.manual_dir=/data/imagenet
Learned A, B spectra and E(A)/E(B) (Sec. 6.2, Fig. 7, Tab. 3): see
ssl_jax/analysis/qbheat_spectra.py (`spectra(params)`, `plot_spectra(params, path)`).

Expected: the run prints kNN / linear-probe top-1 of the pre-trained and of a
random-init encoder (probed feature: `cls`, i.e. Tab. 8's "pool concat"). On
ImageNet the paper reports linear probing 65.1% (MF-3.7G, Tab. 2) and, for
MF-285M, parity with MoCo-v2 (51.6%, Tab. 1; Fig. 8); at CPU scale expect only
pre-trained > random init.

Paper recipe kept as defaults (Tab. 9, Sec. 4.1-4.2, App. B.1): AdamW, base lr
1.5e-4 (lr = base_lr * batch / 256), weight decay 0.1, batch 1024, cosine decay,
10 warm-up epochs, image 256 (a 16x16 map, multiple of 4), RandomResizedCrop;
one visible quarter, corner and centre mixed half-and-half in every batch
(Tab. 2a), 2 explicit linear models per scale (Tab. 2b: "good enough"),
predictor width 512, decoder of 6 transformer blocks of width 512.

Not given by the paper, taken from MAE (named, not hidden): AdamW betas
(0.9, 0.95), crop scale (0.2, 1.0), normalised-pixel targets with the loss on
the masked quarters, 16 decoder heads, sin-cos decoder position embeddings.
Weight decay (0.1, Tab. 9) follows MAE's optimizer rule, which QB-Heat
inherits: every matrix is decayed, norms / biases / learned tokens are not.
So the linear models A, B (1x1 convs, Fig. 3) are decayed like any weight
(the paper names no exception; decay pulls I + dx A toward the identity, a
copy of the visible quarter); Mobile-Former's global tokens are not (ViT's
cls_token rule, ssl_jax/optim.py). To exempt A, B:
--config.optim.no_decay_patterns='("head/linear_",)'.
The epoch count is not in Tab. 9; 1600 is assumed (Fig. 6 / Tab. 3 span
100-2400 epochs). Linear models are initialised N(0, 0.02^2) (not stated).

Deviations of the `mf_tiny` CPU job: Mobile-Former "tiny" (token width 64,
5 blocks, output stride 4, not in Tab. 8) so that a 16x16 quarter of a 32x32
image gives a 4x4 map; predictor / decoder width 96, 1 decoder block of 3
heads (the MAE-lite decoder of configs/mae.py:vit_tiny); batch 256, 1 epoch,
base lr 1.5e-3, 15% warm-up (configs/mae.py:vit_tiny's CPU schedule); the
linear probe uses SGD at batch 256 for 30 epochs (Tab. 10: batch 4096, 90).
"""
from ssl_jax import config_defaults

# name -> Mobile-Former variant (Tab. 8)
_IN1K = {"mf_285m": "285M", "mf_1.0g": "1.0G", "mf_3.7g": "3.7G"}


def get_config(arg: str = "mf_tiny"):
  c = config_defaults.base_config()
  c.method = "qbheat"
  c.qbheat = dict(
      position="mixed",        # corner | centre | mixed (Fig. 4, Tab. 2a)
      num_explicit=2,          # 2 | 4 | 8 explicit linear models (Fig. 5, Tab. 2b)
      predictor_dim=512,       # Sec. 4.2
      decoder=dict(depth=6, num_heads=16),
      norm_pix_loss=True)
  c.optim.base_lr = 1.5e-4
  c.optim.weight_decay = 0.1
  c.optim.warmup_epochs = 10.0
  c.eval.feature = "cls"
  if arg == "mf_tiny":
    c.model = dict(name="mobile_former", variant="tiny")
    c.qbheat.predictor_dim = 96
    c.qbheat.decoder = dict(depth=1, num_heads=3)
    return config_defaults.cpu_job(c)
  if arg == "tiny":     # the test suite's train-and-resume run (config_defaults.tiny_job)
    # A 2-stage ResNet (stride 2: an 8x8 quarter gives a 4x4 map) compiles
    # several times faster than Mobile-Former (tests/test_mobile_former.py).
    c.model = dict(name="resnet", variant="tiny", num_stages=2)
    c.qbheat.predictor_dim = 32
    c.qbheat.decoder = dict(depth=1, num_heads=2)
    return config_defaults.tiny_job(c)
  if arg not in _IN1K:
    raise ValueError(f"Unknown variant {arg!r}. Valid: mf_tiny, tiny, {', '.join(_IN1K)}.")
  c.model = dict(name="mobile_former", variant=_IN1K[arg])
  config_defaults.imagenet_job(c, image_size=256)   # App. B.1: 16x16 output map
  c.batch_size = 1024              # Tab. 9
  c.num_epochs = 1600.0
  # Linear probing, Tab. 10: SGD, base lr 0.1, wd 0, batch 4096, 90 epochs.
  c.eval.linear = dict(epochs=90, base_lr=0.1, weight_decay=0.0, batch_size=4096,
                       optimizer="sgd")
  return c
