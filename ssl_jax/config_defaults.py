"""Defaults every method config starts from; method configs override them.

Kept in the package (not in configs/) so a config file loads from any cwd.
"""
import ml_collections
from ml_collections.config_dict import placeholder


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = "pretrain"          # pretrain | knn | linear | export (ssl_jax.main)
  c.method = "mae"
  c.seed = 0
  c.compute_dtype = "float32"  # "bfloat16": bf16 activations, fp32 params and optimizer

  # Data: `name` is "fashion_mnist" (embedded), "imagenet2012", or any tfds name.
  c.data = ml_collections.ConfigDict(dict(
      name="fashion_mnist", train_split="train", eval_split="test",
      data_dir=placeholder(str), manual_dir=placeholder(str), image_size=32,
      crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), hflip=True,
      shuffle_buffer=50_000, prefetch=2, augment="mae",
      max_train_examples=placeholder(int),   # per input shard
      # Global batch = input_shards shard batches; 0: one shard per process.
      # Fix it (e.g. to the largest host count) to keep the data order when a
      # job resumes on another number of hosts (data/pipeline.py:TrainIterator).
      input_shards=0))
  c.batch_size = 256           # global batch, across all devices and hosts
  c.num_epochs = 1.0
  c.total_steps = placeholder(int)        # overrides num_epochs when set

  # AdamW + linear warm-up + cosine (MAE App. A.1); lr = base_lr * batch / 256.
  # name "sgd" (momentum, coupled weight decay) serves MoCo v2.
  c.optim = ml_collections.ConfigDict(dict(
      name="adamw", momentum=0.9, base_lr=1.5e-4, min_lr=0.0, weight_decay=0.05, b1=0.9, b2=0.95,
      warmup_epochs=40.0, warmup_steps=placeholder(int),
      clip_grad_norm=placeholder(float), grad_accum_steps=1,
      # DINO family (ssl_jax/optim.py): cosine wd schedule end, per-array
      # clipping, ((regex, epochs), ...) parameters frozen at the start.
      weight_decay_end=placeholder(float), clip_grad_mode="global", frozen=()))
  # Weight-decay mask (ssl_jax/optim.py): decay norms / biases too (MoCo v2),
  # and extra never-decayed parameter-path regexes.
  c.optim.decay_1d_params = False
  c.optim.no_decay_patterns = ()

  # Mesh axes: batch is split over every axis; parameters follow the rules.
  c.mesh = [("data", -1), ("fsdp", 1)]
  # (regex over "/"-joined parameter paths, "replicate" | "fsdp"); first match wins.
  c.sharding_rules = [(".*", "fsdp")]
  c.fsdp_min_size = 2 ** 14    # smaller arrays stay replicated

  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.eval_every = 0             # kNN during pre-training every N steps (0: end only)

  c.eval = ml_collections.ConfigDict(dict(
      protocols=("knn", "linear"), feature="cls", block=-1,
      batch_size=512, max_train_examples=placeholder(int),
      max_eval_examples=placeholder(int),
      output_dir=placeholder(str),   # probes' params, analysis figures (default: workdir)
      compare_random_init=True,
      # ks: extra k values (DINOv2: 10, 20, 100, 200); stream: train features
      # batch by batch into a running top-k, `block` train rows at a time.
      knn=dict(k=20, temperature=0.07, ks=(), stream=False, block=8192),
      linear=dict(epochs=90, base_lr=0.1, weight_decay=0.0, batch_size=16384,
                  optimizer="lars"),
      # evaluate/feature_rank.py: RankMe etc. on the first test images.
      feature_rank=dict(max_examples=2000)))
  c.encoder = placeholder(str)            # eval modes: path to a <workdir>/export
  c.debug_inject_nan_at_step = -1   # tests: poison the loss at this step
  return c


def cpu_job(c, epochs: float = 1.0, base_lr: float = 1.5e-3, warmup_epochs: float = 0.15):
  """The CPU-sized schedule every method's embedded Fashion-MNIST job shares.

  The linear probe uses SGD at batch 256: LARS at a 16k batch (MAE) barely
  moves on 10k examples.
  """
  c.batch_size = 256
  c.num_epochs = epochs
  c.optim.base_lr = base_lr
  c.optim.warmup_epochs = warmup_epochs
  c.log_every = 20
  c.checkpoint_every = 200
  c.eval.max_train_examples = 10_000
  c.eval.linear = dict(epochs=30, base_lr=0.1, weight_decay=0.0, batch_size=256,
                       optimizer="sgd")
  return c


def tiny_job(c):
  """The `tiny` variant every configs/<method>.py provides: the suite's
  train-and-resume run of each registered method (tests/test_all_methods_train_resume.py).

  16-px images, batch 8, 4 steps of 2 per epoch (so a resume crosses an epoch
  boundary), a checkpoint every 2 steps, no evaluation. The config shrinks
  its own model (width 32, 1 block) and method heads.
  """
  c.data.image_size = 16
  c.data.max_train_examples = 16
  c.data.shuffle_buffer = 16
  c.data.prefetch = 1
  c.batch_size = 8
  c.total_steps = 4
  c.optim.warmup_steps = 1
  c.optim.base_lr = 1e-3 * 256 / 8     # peak lr 1e-3 at batch 8
  c.log_every = 1
  c.checkpoint_every = 2
  c.keep_checkpoints = 2
  c.eval.protocols = ()
  c.compute_dtype = "float32"
  return c


def imagenet_job(c, image_size: int = 224):
  """ImageNet-1K from disk (README), bf16 compute, pod-scale cadence."""
  c.data.name = "imagenet2012"
  c.data.train_split, c.data.eval_split = "train", "validation"
  c.data.image_size = image_size
  c.data.shuffle_buffer = 10_000
  c.compute_dtype = "bfloat16"
  c.log_every = 100
  c.checkpoint_every = 1000
  c.eval_every = 10_000
  c.eval.max_train_examples = 100_000
  return c


def eval_config(protocol: str) -> ml_collections.ConfigDict:
  """`mode = "eval"` running one protocol on `--config.encoder` (configs/eval/)."""
  c = base_config()
  c.mode = "eval"
  c.eval.protocols = (protocol,)
  return c
