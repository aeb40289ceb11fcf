"""The protocols "finetune" and "decoder_probe" run as jobs of the one trainer.

`python -m ssl_jax.main --config configs/eval/finetune.py` (and
`decoder_probe.py`, the `cpu` variants the results suite runs) keep their
command, recipe section (`eval.finetune`, `eval.decoder_probe`: epochs,
batch_size, base_lr, ... as `evaluate/finetune.py: tab_s1 / tab12` and
`evaluate/decoder_probe.py: tab11` write them) and metric keys
(`finetune/top1`, `decoder_probe/top1`); there is no second training loop:
each protocol call becomes a trainer config (method "finetune" /
"decoder_probe", `methods/`) trained by `train.train` in a sub-workdir of
`eval.output_dir` (the eval workdir), so a killed evaluation resumes from its
checkpoints when the same command is rerun. The encoder (the export, or its
random-init twin) is written as an export in that sub-workdir, named by a
fingerprint of its weights, so a rerun finds its own job again.

The job reads `config.data` (streamed, as every trainer job), limited to
`eval.max_train_examples` / `eval.max_eval_examples`; the `data` arrays of the
protocol call give only the size and the classes.

Differences to the retired in-memory loops, named: Mixup / CutMix draw with
jax.random in the step (the crops stay those of the loops: of the eval view,
on device); `decoder_probe` no longer reports `train_top1` (a second pass over
the training set), and `final_loss` / `finetune/train_loss` are the mean of the
losses logged in the last epoch.
"""
import hashlib
import os
import shutil
import tempfile

import jax
import numpy as np

from ssl_jax import config_check
from ssl_jax import config_defaults
from ssl_jax import export as export_lib
from ssl_jax import metrics as metrics_lib
from ssl_jax import train


def fingerprint(variables) -> str:
  """8 hex digits of a hash over every weight: the job folder of an encoder."""
  h = hashlib.sha1()
  for path, x in jax.tree_util.tree_leaves_with_path(variables):
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.ascontiguousarray(np.asarray(x)).tobytes())
  return h.hexdigest()[:8]


def _encoder_export(encoder, job_dir: str) -> str:
  path = os.path.join(job_dir, "encoder")
  if not os.path.exists(os.path.join(path, export_lib.ENCODER_JSON)):
    export_lib.save(path, dict(encoder.model_cfg), jax.tree.map(np.asarray, encoder.variables),
                    info={"source": "protocol job input"})
  return path


def _batch(cfg, n_train: int, n_dev: int) -> int:
  """The recipe's batch, at most the training set, a multiple of the devices."""
  return max(n_dev, (min(int(cfg.batch_size), n_train) // n_dev) * n_dev)


def _job_config(config, method: str, cfg, encoder_path: str, n_train: int, n_dev: int):
  """The trainer config common to both protocols: data, mesh, schedule, optimizer."""
  c = config_defaults.base_config()
  c.mode, c.method, c.encoder = "train", method, encoder_path
  c.seed = int(config.get("seed", 0))
  # float32 compute (base_config), as the protocols always ran, whatever the pre-training's.
  for key in ("mesh", "sharding_rules", "fsdp_min_size"):
    if key in config:
      c[key] = config[key]
  if "data" in config:
    c.data.update({k: v for k, v in config.data.items() if v is not None})
  e = config.eval
  c.data.max_train_examples = e.get("max_train_examples")
  c.eval.max_eval_examples = e.get("max_eval_examples")
  c.eval.batch_size = int(e.get("batch_size", 512))
  c.eval.protocols, c.eval.compare_random_init = (), False
  c.val_every_epochs, c.eval_every = 0.0, 0
  c.batch_size = _batch(cfg, n_train, n_dev)
  c.num_epochs = float(cfg.epochs)
  c.optim.update(name="adamw", b1=float(cfg.get("b1", 0.9)), b2=float(cfg.get("b2", 0.999)),
                 weight_decay=float(cfg.weight_decay), base_lr=float(cfg.base_lr),
                 min_lr=float(cfg.get("min_lr", 0.0)), warmup_epochs=float(cfg.warmup_epochs))
  steps = max(1, n_train // c.batch_size) * int(cfg.epochs)
  c.log_every = max(1, min(50, steps // 20))
  c.checkpoint_every = max(1, min(500, steps // 4))
  c.keep_checkpoints = 1
  return c


def _crops(c, section: str, cfg, augment: bool):
  """The eval view from tf.data (no crops there); when augmenting, the crops
  + flips the protocols always took: of the batch, on device (`device_crop`,
  ops/batch_augment.py: random_resized_crop), not tf.data's torchvision-style
  crops (retries, then a centre crop; bicubic): the protocols keep their recipe."""
  c.data.crop_scale, c.data.crop_ratio, c.data.hflip = (1.0, 1.0), (1.0, 1.0), False
  c[section].device_crop = tuple(cfg.get("crop_scale", (0.08, 1.0))) if augment else None
  c[section].device_hflip = bool(cfg.get("hflip", True))


def decoder_probe_config(config, cfg, encoder_path: str, num_classes: int, n_train: int,
                         n_dev: int):
  """`eval.decoder_probe` (tab11 format) as a method "decoder_probe" job."""
  c = _job_config(config, "decoder_probe", cfg, encoder_path, n_train, n_dev)
  augment = bool(cfg.get("augment", True))
  c.decoder_probe = dict(
      num_classes=num_classes, width=int(cfg.width), num_heads=int(cfg.get("num_heads", 0)),
      mlp_ratio=float(cfg.get("mlp_ratio", 4.0)), dropout=float(cfg.dropout),
      posemb=cfg.get("posemb", "sincos2d"), block=int(cfg.get("block", -1)),
      label_smoothing=float(cfg.label_smoothing),
      randaug=tuple(cfg.randaug) if augment and cfg.get("randaug") else None,
      random_erase=float(cfg.get("random_erase", 0.0)) if augment else 0.0)
  _crops(c, "decoder_probe", cfg, augment)
  return c


def finetune_config(config, cfg, encoder_path: str, num_classes: int, n_train: int,
                    n_dev: int, init_head: str = ""):
  """`eval.finetune` (tab_s1 / tab12 format) as a method "finetune" job."""
  c = _job_config(config, "finetune", cfg, encoder_path, n_train, n_dev)
  c.finetune = dict(
      num_classes=num_classes, head=cfg.head, pool=cfg.get("pool", "gap"),
      drop_path=float(cfg.get("drop_path", 0.0)), label_smoothing=float(cfg.label_smoothing),
      mixup=float(cfg.get("mixup", 0.0)), cutmix=float(cfg.get("cutmix", 0.0)), switch_prob=0.5,
      randaug=tuple(cfg.randaug) if cfg.get("randaug") else None,
      random_erase=float(cfg.get("random_erase", 0.0)),
      tran1=dict(cfg.tran1) if cfg.get("tran1") else dict(width=192, dropout=0.1),
      init_head=init_head)
  c.optim.layer_decay = float(cfg.get("layer_decay", 1.0))
  _crops(c, "finetune", cfg, True)
  return c


def _last_epoch_loss(workdir: str) -> float:
  recs = [r for r in metrics_lib.read(workdir) if r["kind"] == "train"]
  if not recs:
    return float("nan")
  last = float(np.ceil(recs[-1]["epoch"] - 1e-9))
  tail = [r["loss"] for r in recs if r["epoch"] > last - 1 + 1e-9] or [recs[-1]["loss"]]
  return float(np.mean(tail))


class _Root:
  """`eval.output_dir` (the eval workdir: jobs resume), else a temporary folder."""

  def __init__(self, config):
    self.path = config.eval.get("output_dir")
    self.temporary = not self.path
    if self.temporary:
      self.path = tempfile.mkdtemp(prefix="ssl_jax_protocol_job_")

  def __enter__(self):
    return self.path

  def __exit__(self, *exc):
    if self.temporary:
      shutil.rmtree(self.path, ignore_errors=True)


def _check_single_process(name: str):
  if jax.process_count() > 1:
    raise config_check.ConfigError(
        f"the in-memory protocol {name!r} runs on process 0 alone; on several hosts run its "
        f"job variant instead: --config configs/eval/{name}.py:<job variant> (README).")


def _devices(mesh):
  return list(mesh.devices.flat) if mesh is not None else None


def _train(c, workdir: str, mesh):
  res = train.train(c, workdir, devices=_devices(mesh))
  return res, _last_epoch_loss(workdir)


def _n_dev(mesh) -> int:
  return mesh.devices.size if mesh is not None else jax.device_count()


def run_decoder_probe(config, encoder, data, mesh, cfg=None, root=None):
  """Protocol "decoder_probe": {"top1", "top5", "final_loss"}."""
  _check_single_process("decoder_probe")
  cfg = cfg or config.eval.decoder_probe
  with _Root(config) as tmp:
    job = os.path.join(root or tmp, f"decoder_probe_{fingerprint(encoder.variables)}")
    c = decoder_probe_config(config, cfg, _encoder_export(encoder, job), int(data.num_classes),
                             len(data.train_labels), _n_dev(mesh))
    res, loss = _train(c, os.path.join(job, "job"), mesh)
    return {"top1": res["decoder_probe/top1"], "top5": res["decoder_probe/top5"],
            "final_loss": loss}


def run_finetune(config, encoder, data, mesh):
  """Protocol "finetune": {"top1", "top5", "train_loss"} (+ "probe_top1" when
  `finetune.init_head = "probe"`: a tran-1 probe job first, whose head the
  fine-tuning starts from, 000 App. B.1)."""
  _check_single_process("finetune")
  cfg = config.eval.finetune
  init = cfg.get("init_head") or ""
  if init and cfg.head != "tran1":
    raise ValueError("finetune.init_head needs finetune.head='tran1'.")
  with _Root(config) as root:
    job = os.path.join(root, f"finetune_{fingerprint(encoder.variables)}")
    encoder_path = _encoder_export(encoder, job)
    extra = {}
    if init == "probe":
      c = decoder_probe_config(config, cfg.tran1, encoder_path, int(data.num_classes),
                               len(data.train_labels), _n_dev(mesh))
      probe_dir = os.path.join(job, "tran1_probe")
      extra["probe_top1"] = _train(c, probe_dir, mesh)[0]["decoder_probe/top1"]
      init = probe_dir
    c = finetune_config(config, cfg, encoder_path, int(data.num_classes),
                        len(data.train_labels), _n_dev(mesh), init)
    res, loss = _train(c, os.path.join(job, "job"), mesh)
    return dict(extra, top1=res["finetune/top1"], top5=res["finetune/top5"], train_loss=loss)
