"""tran-1 decoder probing (000 Sec. 5, App. B.1 Tab. 11) of an exported encoder.

One transformer block over the frozen patch tokens, global pooling, a linear
classifier; ViTs and CNNs (Mobile-Former, ResNet) alike.

1. The protocol (default variant `cpu`; the results suite runs it), section
   `eval.decoder_probe`, pre-trained vs random-init encoder. Each probe runs
   as a job of the one trainer (ssl_jax/protocol_jobs.py) in a sub-workdir
   of --workdir (decoder_probe_<weights fingerprint>/job): rerunning the same
   command resumes. Result: the eval record in <workdir>/metrics.jsonl
   (decoder_probe/top1, /top5, /final_loss).
     python -m ssl_jax.main --config configs/eval/decoder_probe.py \
         --config.encoder=/tmp/mae_tiny/export --workdir /tmp/eval_tran1
   Expected: tran-1 top-1 of the encoder and of its random-init twin.
   Measured before the protocol became a job (features cached once): on the
   default job's export (1-epoch MAE ViT-Tiny) 69.75 vs 72.30; on the 1-epoch
   QB-Heat Mobile-Former export 74.90 vs 68.95 (README). As a job, on the
   results suite's QB-Heat MF-tiny exports 0/1/2: 74.25 / 74.75 / 73.85 (loop:
   74.80 / 74.75 / 74.75), 335 s wall per run (loop: 219 s).
   Deviations (named): 32x32 Fashion-MNIST, 5k training images; a decoder of
   width 96 (3 heads) instead of 192; 10 epochs (1 warm-up) at batch 256 and
   base lr 2e-3 instead of 200 epochs (10 warm-up) at batch 4096 and 5e-4;
   no augmentation (`augment=False`: no crops, flips, RandAug or erasing).

2. As a job of the one trainer (method "decoder_probe",
   ssl_jax/methods/decoder_probe.py): the frozen encoder runs on every
   streamed, augmented batch (RandomResizedCrop + flip in tf.data, RandAugment
   and random erasing on device), the mesh and its sharding rules, Orbax
   checkpoints with exact resume (rerun the same command), NaN stop, progress
   lines; host memory bounded by the prefetch depth and `data.shuffle_buffer`.
   The eval split is scored at the end (kind "eval": decoder_probe/top1, /top5).
     python -m ssl_jax.main --config configs/eval/decoder_probe.py:<variant> \
         --config.encoder=EXPORT --workdir DIR [--config.data.manual_dir=/data/imagenet]
   :in1k_mf285m / :in1k_mf1g / :in1k_mf3.7g   000 Tab. 11 on ImageNet-1k at
              224 px (a single 224 crop scored, 000 Sec. 6): AdamW (0.9, 0.999),
              base lr 5e-4 (lr = 5e-4 x 4096 / 256 = 8e-3), weight decay 0.1,
              batch 4096, 200 epochs, 10 warm-up, cosine, RandAug(9, 0.5), label
              smoothing 0.1, dropout 0.1 / 0.2 / 0.2, random erase 0 / 0 / 0.25,
              decoder width 192 / 384 / 768 (App. B.1). Expected (000 Sec. 6.3,
              Fig. 8): QB-Heat MF-285M with the width-192 decoder 65.6 top-1
              (MoCo v2: 52.9); the other sizes are read off Fig. 8 only (the
              text gives no number). Cost: 200 epochs of frozen Mobile-Former
              forwards at 224 px (MF-3.7G: 3.7 GFLOPs per image, ~1.4e18 FLOPs
              forward in all) plus the decoder: hours on a pod slice.
              The finetune.py:in1k_mf* jobs (Tab. 12) start from this job's head
              (--config.finetune.init_head=<this job's workdir>).
   :job_cpu   the in-memory `cpu` recipe as a job (width 96, 3 heads, 10 epochs
              at batch 256, base lr 2e-3, 5k training images, 2k test images;
              no crops, flips or RandAug, as `cpu`). Measured on the results
              suite's QB-Heat MF-tiny export (seed 0): 74.25 top-1 in 5 min 20 s
              wall on the shared 2-core CPU (in-memory `cpu` on the same export:
              74.8; the suite's 3 seeds 74.77 +- 0.03).
   :tiny      16 px, batch 8, 4 steps, random erasing on (RandAugment: in
              finetune.py:tiny): the every-method train/resume test.
The job variants set `eval.protocols = ()`: the trainer's validation pass
scores them.
"""
from ssl_jax import config_defaults
from ssl_jax.evaluate import decoder_probe

_IN1K = {"in1k_mf285m": "mf285m", "in1k_mf1g": "mf1g", "in1k_mf3.7g": "mf3.7g"}
JOBS = ("job_cpu", "tiny") + tuple(_IN1K)
TINY_TEACHER_FIELD = "encoder"      # tests: where the every-method test puts an export


def _job(c, size: str, num_classes: int):
  """The trainer job: method "decoder_probe", 000 Tab. 11 for `size`."""
  r = decoder_probe.tab11(size)
  c.mode = "train"
  c.method = "decoder_probe"
  c.eval.protocols = ()
  c.eval.compare_random_init = False
  c.val_every_epochs = 0.0          # > 0: also score the eval split every N epochs
  c.decoder_probe = dict(num_classes=num_classes, width=r["width"], num_heads=r["num_heads"],
                         mlp_ratio=r["mlp_ratio"], dropout=r["dropout"], posemb=r["posemb"],
                         block=r["block"], label_smoothing=r["label_smoothing"],
                         randaug=r["randaug"], random_erase=r["random_erase"])
  c.data.crop_scale = tuple(r["crop_scale"])
  c.data.hflip = r["hflip"]
  c.optim.update(name="adamw", b1=0.9, b2=0.999, weight_decay=r["weight_decay"],
                 base_lr=r["base_lr"], min_lr=r["min_lr"], warmup_epochs=r["warmup_epochs"])
  c.batch_size = r["batch_size"]
  c.num_epochs = float(r["epochs"])
  return c


def get_config(arg: str = "cpu"):
  c = config_defaults.eval_config("decoder_probe")
  if arg == "cpu":
    c.eval.decoder_probe = decoder_probe.tab11("mf285m")
    c.eval.decoder_probe.update(width=96, num_heads=3, augment=False, epochs=10,
                                warmup_epochs=1, batch_size=256, base_lr=2e-3)
    c.eval.max_train_examples = 5_000
    c.eval.max_eval_examples = 2_000
    return c
  if arg not in JOBS:
    raise ValueError(f"Unknown variant {arg!r}. Valid: cpu, {', '.join(JOBS)}.")
  if arg in _IN1K:
    c = config_defaults.imagenet_job(_job(c, _IN1K[arg], 1000))
    c.eval_every = 0
    c.eval.max_train_examples = None
    c.val_every_epochs = 20.0
    return c
  c = _job(c, "mf285m", 10)
  if arg == "job_cpu":              # the in-memory `cpu` recipe (docstring)
    c.decoder_probe.update(width=96, num_heads=3, randaug=None, random_erase=0.0)
    c.data.crop_scale, c.data.crop_ratio, c.data.hflip = (1.0, 1.0), (1.0, 1.0), False
    c.data.max_train_examples = 5_000
    c.data.shuffle_buffer = 5_000
    c.eval.max_eval_examples = 2_000
    c.batch_size = 256
    c.num_epochs = 10.0
    c.optim.update(base_lr=2e-3, warmup_epochs=1.0)
    c.log_every = 10
    c.checkpoint_every = 50
    return c
  # RandAugment (compiled once per test run: ~15 CPU-s) is covered by finetune.py:tiny's
  # run of the same `methods/finetune.py: augment`; erasing stays on here.
  c.decoder_probe.update(width=32, num_heads=2, randaug=None, random_erase=0.25)
  c = config_defaults.tiny_job(c)
  c.eval.max_eval_examples = 64     # the validation pass: a few batches
  return c
