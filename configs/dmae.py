"""D-MAE / D²-MAE: MAE pre-training of ViT-Tiny/Small distilled from a frozen MAE
ViT teacher (../shared/papers/002 Sec. 5, App. C; recipe of Sec. 3.1).

Variants (`--config configs/dmae.py:<variant>`):
  dmae_cpu, d2mae_cpu            ViT-Tiny students on embedded 32x32 Fashion-MNIST
  teacher_cpu                    the CPU teacher: plain MAE of a ViT-S-sized model
  dmae_vit_tiny_in1k, d2mae_vit_tiny_in1k, dmae_vit_small_in1k, d2mae_vit_small_in1k

Commands (CPU chain, launch/dmae_chain.sh runs all of it):
  python -m ssl_jax.main --config configs/dmae.py:teacher_cpu --workdir /tmp/dmae/teacher
  python -m ssl_jax.main --config configs/dmae.py:d2mae_cpu --workdir /tmp/dmae/d2mae \
      --config.dmae.teacher=/tmp/dmae/teacher/export
ImageNet (teacher: the export of `configs/mae.py:vit_base_in1k`):
  python -m ssl_jax.main --config configs/dmae.py:d2mae_vit_tiny_in1k --workdir gs://.../d2mae_t \
      --config.dmae.teacher=gs://.../mae_b/export --config.data.manual_dir=/data/imagenet

Expected: each student run prints kNN / linear-probe top-1 of the pre-trained and a
random-init encoder; the chain prints MAE vs D-MAE vs D²-MAE side by side. The
paper's claim (Tab. 6) is D²-MAE >= D-MAE > MAE after fine-tuning, with the
largest gains on small downstream sets; at CPU scale expect only the ordering of
the frozen-feature probes, if that (see README for one run's numbers).

Paper recipe kept as defaults: ViT-Tiny = width 192, 12 blocks, 12 heads (Sec.
3.1, Tab. S3); ViT-Small = width 384, 12 heads (Tab. S3); decoder 1 block, width
96, 3 heads; mask ratio 0.75; normalised-pixel targets; MAE optimiser (AdamW, base
lr 1.5e-4 x batch/256, wd 0.05, betas 0.9/0.95, 40 warm-up epochs, cosine), batch
4096, 400 epochs; attention distillation of the teacher's last layer (Fig. 9),
loss weights 1 (reference `distill_attn_alpha=1.0`); D²-MAE decoder at layer 8
(Tab. 5) with the reference's extra attention-only block carrying the distillation.

Export (the reference's fine-tuning, not a paper statement): D²-MAE's final
encoder LayerNorm is trained on layer-8 tokens (the decoder input), so the
export resets it to its initial scale 1 / bias 0 before it is applied to
layer 12, as MAE / mae-lite fine-tuning drops `norm` for a fresh `fc_norm`
(ssl_jax/methods/dmae.py:export_variables). D-MAE keeps its trained norm.

Deviations (named, not hidden):
  - ViT-Small's decoder (width 192, 1 block, 6 heads) is the reference's
    `mae_vit_small_patch16`; the paper gives only the encoder (Tab. S3).
  - The paper's teacher is the official MAE ViT-B (1600 epochs): pass its
    `mae_pretrain_vit_base.pth` as --config.dmae.teacher (read without torch by
    ssl_jax/interop), or any ssl_jax export, e.g. of configs/mae.py:vit_base_in1k.
  - CPU variants: 32x32 Fashion-MNIST, patch 4 (8x8 grid) instead of 224/16; 3
    epochs, 5% warm-up, base lr 1.5e-3, raw-pixel targets and mean-pooled
    probes (as configs/mae.py:vit_tiny, whose docstring says why); the CPU
    teacher is a ViT-S-sized model (width 384, 12 blocks, 12 heads, Tab. S3) with
    the reference's ViT-S decoder rather than a ViT-B, so that it pre-trains on
    2 cores. launch/dmae_chain.sh shortens all runs further via --config.total_steps.
"""
from ml_collections import config_dict

from ssl_jax import config_defaults

# name -> (ViT variant, heads, decoder (width, depth, heads)); 002 Tab. S3 and Sec. 3.1.
_STUDENTS = {
    "vit_tiny": ("Ti", 12, (96, 1, 3)),
    "vit_small": ("S", 12, (192, 1, 6)),
}
_D2_DECODER_LAYER = 8   # 002 Tab. 5: the decoder reads the 8th of 12 layers.
# The `tiny` variant needs a frozen ViT teacher export (width 32, 1 block,
# patch 4) at this field; tests/test_all_methods_train_resume.py provides it.
TINY_TEACHER_FIELD = "dmae.teacher"


def _dmae_fields(d2: bool):
  return config_dict.ConfigDict(dict(
      teacher=config_dict.placeholder(str),     # path of an ssl_jax export
      # Student layer feeding the MAE decoder: None = last (D-MAE), 8 = D²-MAE.
      decoder_layer=_D2_DECODER_LAYER if d2 else config_dict.placeholder(int),
      # D²-MAE: distil onto an extra attention-only block above the last block.
      extra_attn_block=d2,
      # (teacher layer, student layer) pairs; None = equal relative depth at
      # these fractions of the depth. (1.0,) is D-MAE's last layer (Fig. 9).
      attn_fractions=(1.0,), attn_pairs=config_dict.placeholder(tuple),
      rep_fractions=(), rep_pairs=config_dict.placeholder(tuple),
      recon_weight=1.0, attn_weight=1.0, rep_weight=1.0))


def _mae_fields(decoder):
  width, depth, heads = decoder
  return dict(mask_ratio=0.75, norm_pix_loss=True,
              decoder=dict(width=width, depth=depth, num_heads=heads))


def _cpu_schedule(c):
  """configs/mae.py:vit_tiny's CPU job (raw-pixel targets, mean-pooled
  probes), 3 epochs, a 10-epoch probe."""
  config_defaults.cpu_job(c, epochs=3.0)
  c.mae.norm_pix_loss = False
  c.eval.feature = "mean"
  c.eval.linear.epochs = 10


def _in1k(c):
  config_defaults.imagenet_job(c)
  c.batch_size = 4096            # MAE App. A.1; reference DISTILL.md
  c.num_epochs = 400.0           # 002 Sec. 3.1 / 5.1
  c.optim.warmup_epochs = 40.0


def get_config(arg: str = "d2mae_cpu"):
  c = config_defaults.base_config()
  if arg == "teacher_cpu":
    c.method = "mae"
    c.model = dict(name="vit", variant="S", num_heads=12, patch_size=4, drop_path=0.0)
    c.mae = _mae_fields(_STUDENTS["vit_small"][2])
    _cpu_schedule(c)
    return c

  if arg == "tiny":     # the test suite's train-and-resume run (config_defaults.tiny_job)
    # D²-MAE (decoder at layer 1 of 2, extra attention block); the teacher
    # export goes in TINY_TEACHER_FIELD (the test writes a random 1-block ViT).
    c.method = "dmae"
    c.dmae = _dmae_fields(d2=True)
    c.dmae.decoder_layer = 1
    c.mae = _mae_fields((32, 1, 2))
    c.model = dict(name="vit", variant="Ti", width=32, depth=2, num_heads=2, patch_size=4,
                   drop_path=0.0)
    return config_defaults.tiny_job(c)
  valid = ["teacher_cpu", "dmae_cpu", "d2mae_cpu", "tiny"] + [
      f"{m}_{s}_in1k" for m in ("dmae", "d2mae") for s in _STUDENTS]
  method, _, rest = arg.partition("_")
  if method not in ("dmae", "d2mae") or arg not in valid:
    raise ValueError(f"Unknown variant {arg!r}. Valid: {', '.join(valid)}.")
  c.method = "dmae"
  c.dmae = _dmae_fields(d2=method == "d2mae")
  student = "vit_tiny" if rest == "cpu" else rest[:-len("_in1k")]
  variant, heads, decoder = _STUDENTS[student]
  c.mae = _mae_fields(decoder)
  if rest == "cpu":
    c.model = dict(name="vit", variant=variant, num_heads=heads, patch_size=4, drop_path=0.0)
    _cpu_schedule(c)
  else:
    c.model = dict(name="vit", variant=variant, num_heads=heads, patch_size=16, drop_path=0.0)
    _in1k(c)
  return c
