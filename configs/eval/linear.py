"""Linear evaluation of an exported encoder (frozen): BN without affine + linear.

Two ways to run it, same `--config.encoder`, results in <workdir>/metrics.jsonl:

1. In memory (default variant, no `:arg`; the default job and the results
   suite use it): features of the whole train split are extracted once, then
   the probe trains on them, pre-trained vs random init.
     python -m ssl_jax.main --config configs/eval/linear.py \
         --config.encoder=/tmp/mae_tiny/export --workdir /tmp/eval_linear

2. As a job of the one trainer (method "linear", ssl_jax/methods/linear_probe.py):
   streaming tfds input with per-batch augmentation, the device mesh and its
   sharding rules, Orbax checkpoints with exact resume (rerun the same command),
   NaN stop, progress lines; host memory bounded by the prefetch depth and
   `data.shuffle_buffer`, not by the dataset. The eval split is scored at the
   end (and every `val_every_epochs`): kind "eval" record with linear/top1,
   linear/top5.
     python -m ssl_jax.main --config configs/eval/linear.py:<variant> \
         --config.encoder=EXPORT --workdir DIR
   Variants:
   :mae_in1k  MAE App. A.1 "Linear probing" / Tab. 10 (ViT-B/16, IN-1k, 224 px):
              LARS, base lr 0.1 (lr 0.1 x 16384 / 256 = 6.4), weight decay 0,
              batch 16384, 90 epochs, 10 warm-up, cosine, RandomResizedCrop
              (0.08, 1) + flip, CLS token. Add --config.data.manual_dir=/data/imagenet.
              Expected: 68.0 top-1 for MAE's ViT-B/16 (its FINETUNE.md: paper
              68.0, PyTorch repo 67.8; ViT-L 75.8). Cost: 90 epochs of frozen
              ViT-B forwards (MAE: ~2 h 20 min on 32 V100s).
   :in1k_mf   000 Tab. 10 (Mobile-Former, any size; linear probing "follows
              MAE", App. B.1): SGD momentum 0.9, base lr 0.1 (lr 0.1 x 4096 / 256
              = 1.6), weight decay 0, batch 4096, 90 epochs, 10 warm-up, cosine,
              RandomResizedCrop (0.08, 1) + flip, BN without affine; feature
              "cls" = the Mobile-Former's "pool concat" (Tab. 8). Expected:
              QB-Heat MF-3.7G 65.1 top-1 (000 Tab. 2, default row); the other
              sizes and MoCo v2 only in Fig. 8 ("on par"). Cost: 90 epochs of
              frozen Mobile-Former forwards at 224 px (MF-3.7G: ~0.4e18 FLOPs).
   :semanticmim_block7   003 Tab. 1 / Tab. 5, linear probe at the 7th of 12
              blocks (eval.block=6) of a ViT-B/16 (BEiT / MaskFeat +- SemanticMIM
              exports): AdamW (0.9, 0.999), peak lr 4e-3 at batch 1024 (base lr
              1e-3), weight decay 1e-4, 100 epochs, no warm-up, cosine to 0,
              crop (0.08, 1), flip 0.5; feature "cls" (Tab. 1 "CLS"; the "Patch"
              column: --config.eval.feature=mean). Expected top-1 (Tab. 1,
              CLS / Patch): BEiT 31.5 / 38.7, BEiT + SemanticMIM 49.2 / 48.2,
              MaskFeat 23.4 / 33.5, MaskFeat + SemanticMIM 52.0 / 59.7. With
              SemanticMIM exports (K proxy tokens) "cls" is prefix token 0. 003
              names no normalisation before the classifier: this job keeps the
              method's BN without affine (MAE). Cost: 100 epochs of 7 ViT-B
              blocks forward at 224 px.
   :job_cpu   the embedded Fashion-MNIST (10k train images, the 10k test split),
              the in-memory CPU probe's optimizer (SGD momentum 0.9, batch 256,
              base lr 0.1, 10% warm-up) for 10 epochs, flips but no crops.
              Measured on the results suite's MAE ViT-S4 export (seed 0,
              --config.eval.feature=mean): 74.30 top-1, in-memory probe at the
              same 10 epochs 75.80 (30 epochs: 77.57); 4.4 CPU-min (15 min wall
              on the shared 2-core machine). With crops of scale (0.5, 1) (MAE:
              (0.08, 1)) the job scored 65.84: a 1-epoch encoder's features on
              32-px images shift under crops, and the test images are not cropped.
   :tiny      16 px, batch 8, 4 steps: the every-method train/resume test.

Deviations of the job from MAE (named): the BatchNorm normalises with the
global batch's statistics (SyncBN), MAE's DDP per GPU; the head's truncated
normal cuts at 2 std. The job variants set `eval.protocols = ()`: the
trainer's validation pass, not the in-memory protocols, scores them.
"""
from ssl_jax import config_defaults

VARIANTS = ("", "mae_in1k", "in1k_mf", "semanticmim_block7", "job_cpu", "tiny")
TINY_TEACHER_FIELD = "encoder"      # tests: where the every-method test puts an export


def _job(c, num_classes: int):
  """The trainer job: method "linear" on `--config.encoder`."""
  c.mode = "train"
  c.method = "linear"
  c.linear = dict(num_classes=num_classes)
  c.eval.protocols = ()
  c.eval.compare_random_init = False
  c.val_every_epochs = 0.0          # > 0: also score the eval split every N epochs
  c.data.crop_scale = (0.08, 1.0)   # torchvision RandomResizedCrop default (MAE probe)
  c.optim.weight_decay = 0.0
  return c


def get_config(arg: str = ""):
  if arg not in VARIANTS:
    raise ValueError(f"Unknown variant {arg!r}. Valid: {', '.join(repr(v) for v in VARIANTS)}.")
  c = config_defaults.eval_config("linear")
  c.eval.max_train_examples = 10_000
  if not arg:
    return c                        # the in-memory protocol, as the results suite runs it
  if arg == "mae_in1k":
    c = config_defaults.imagenet_job(_job(c, 1000))
    c.eval_every = 0
    c.eval.max_train_examples = None
    c.eval.feature = "cls"
    c.batch_size = 16384
    c.num_epochs = 90.0
    c.optim.name = "lars"
    c.optim.base_lr = 0.1
    c.optim.warmup_epochs = 10.0
    c.val_every_epochs = 10.0
    return c
  if arg == "in1k_mf":                # 000 Tab. 10
    c = config_defaults.imagenet_job(_job(c, 1000))
    c.eval_every = 0
    c.eval.max_train_examples = None
    c.eval.feature = "cls"          # Mobile-Former: Tab. 8's "pool concat"
    c.batch_size = 4096
    c.num_epochs = 90.0
    c.optim.update(name="sgd", momentum=0.9, base_lr=0.1, warmup_epochs=10.0, min_lr=0.0)
    c.val_every_epochs = 10.0
    return c
  if arg == "semanticmim_block7":     # 003 Tab. 1 / Tab. 5
    c = config_defaults.imagenet_job(_job(c, 1000))
    c.eval_every = 0
    c.eval.max_train_examples = None
    c.eval.feature, c.eval.block = "cls", 6          # the 7th of 12 blocks
    c.batch_size = 1024
    c.num_epochs = 100.0
    c.optim.update(name="adamw", b1=0.9, b2=0.999, base_lr=4e-3 * 256 / 1024,
                   weight_decay=1e-4, warmup_epochs=0.0, min_lr=0.0)
    c.val_every_epochs = 10.0
    return c
  c = _job(c, 10)
  c.optim.name = "sgd"
  if arg == "job_cpu":
    c.data.max_train_examples = 10_000
    c.data.crop_scale, c.data.crop_ratio = (1.0, 1.0), (1.0, 1.0)   # no crops (docstring)
    c.data.shuffle_buffer = 10_000
    c.batch_size = 256
    c.num_epochs = 10.0
    c.optim.base_lr = 0.1
    c.optim.warmup_epochs = 1.0
    c.log_every = 20
    c.checkpoint_every = 200
    c.val_every_epochs = 5.0
    return c
  c.optim.base_lr = 0.1 * 256 / 8         # peak lr 0.1 at batch 8
  c = config_defaults.tiny_job(c)
  c.eval.max_eval_examples = 64     # the validation pass: a few batches
  return c
