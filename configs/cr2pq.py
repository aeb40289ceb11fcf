"""CR2PQ pre-training (004: continuous relative rotary positional query), ViT-S/16 and ViT-B/16.

Recipe (004 Sec. 4): two BYOL-augmented crops (colour jitter, blur,
solarisation; bicubic resize), AdamW, batch 2048, lr = blr * batch / 256 with
blr 1.75e-4 (ViT-S) / 1.5e-4 (ViT-B), 40 warm-up epochs then cosine, 300
epochs (Tab. 1, 3). Loss Eq. 9 + 0.5 * Eq. 10 (Sec. 4.2); decoder g = 2
transformer blocks (Tab. 5 best); continuous 2D RoPE (Tab. 6 best).
Settings the paper leaves to its reference CAE (Sec. 4, "in line with CAE"):
AdamW betas (0.9, 0.999), weight decay 0.05, grad-norm clip 3.0, drop path 0.1.

Command (the default job: embedded Fashion-MNIST, CPU-sized):
  python -m ssl_jax.main --config configs/cr2pq.py:vit_tiny --workdir /tmp/cr2pq_tiny
ImageNet, the paper's teacher is a frozen pre-trained encoder (Tab. 4; Tab. 1's
ViT-S numbers equal Tab. 4's DINO ResNet-50 row):
  python -m ssl_jax.main --config configs/cr2pq.py:vit_small_in1k --workdir gs://.../cr2pq_s \
      --config.data.manual_dir=/data/imagenet --config.cr2pq.teacher_path=/path/to/dino_resnet50_pretrain.pth
  (the teacher: an ssl_jax export folder, a timm / MAE / DINO ViT file, or a torchvision-layout
  ResNet-50 .pth such as DINO's or a converted SimCLR one, read by ssl_jax.interop.load_encoder)
  (or --config.cr2pq.teacher=ema | pixels, the other rows of Tab. 4).
Tab. 6 ablation: --config.cr2pq.pos_encoding=rope_discrete | sincos_continuous |
learnable | sincos_discrete.

Expected: `vit_tiny` prints kNN / linear-probe top-1 (mean-pooled patch tokens,
the representation Eq. 10 trains; the CLS token gets no loss) of the
pre-trained and of a random-init encoder; README.md holds the numbers a run printed.

Choices the paper does not state (named, not hidden):
- ||.||_p^p of Eq. 9-10: p = 2, summed over channels, averaged over patches.
- Eq. 10 projects the mean of the student's encoded tokens of view A; the
  projector's hidden width (2048, SimSiam's) is not given.
- Relative coordinates anchor B's patch centres among A's patch centres
  (`coord_anchor="centre"`); Eq. 4 / Listing 1 align patch corners instead
  (`coord_anchor="corner"`). Both follow horizontal flips: a flipped crop's
  coordinates are the mirrored unflipped ones (a corner-anchored flipped
  patch is placed by its top-left corner in the original image).
- RoPE frequencies: the default `rope_freqs="axial"` spaces each axis's D/4
  frequencies as 1D RoPE over D/2 channels, base^(-2i/(D/2)) (EVA-02 /
  RoPE-Mixed axial); Sec. 3.2 writes theta_t = 10000^(-t/(D/2)),
  t = 0..D/4-1, i.e. half the spacing (`rope_freqs="cr2pq"`). The paper's
  interleaving of row / column pairs (Eq. 5) is a channel permutation the
  learned W_Q, W_K absorb, so it is not an option.
- Eq. 8 read as: Phi(rp_B) = h_mask W_Q, the shared learnable placeholder
  rotated by R_rela(rp_B), with no q^(m,n) term (B's patches have no hidden
  state in the student: B is never encoded); the position-aware
  cross-attention is a separate layer with its own W_Q, W_K, W_V (not the
  encoder's), keys / values A's final tokens rotated by R_rot(rp_A).
- Teacher features z'_B (Eq. 9; the paper names no layer or normalisation):
  a frozen ViT's last-layer patch tokens after its final LayerNorm, a frozen
  ResNet-50's last-stage map (7x7 at 224 px, after the final ReLU, no
  normalisation; torchvision / DINO / SimCLR .pth via interop.load_encoder),
  the EMA student's final-LN patch tokens, or MAE-normalised pixels.
- The loss is one-directional by default (A predicts B, Eq. 8-10 as
  written); Sec. 3.2 presents A -> B "for simplicity", so `symmetric=True`
  adds B -> A and averages both (twice the student / teacher cost).
- EMA teacher (Tab. 4 first row): momentum 0.996 -> 1 by a cosine (DINO,
  the base of the authors' PQCL); queries' decoder blocks also use RoPE.
- Crop scale (0.08, 1.0) and ratio (3/4, 4/3): BYOL's RandomResizedCrop.
- Tab. 6 "learnable": the queries add a 2-layer MLP of their coordinates as the
  paper says, but the encoder keeps the ViT's learnt table (no coordinate-MLP
  hook in the shared ViT).
- No layer-scale (CAE uses 0.1): the shared ViT has none.

Deviations for the `vit_tiny` CPU job: 32x32 Fashion-MNIST, patch 4, a
narrow ViT (width 128, 4 blocks, 4 heads), 1-block decoder; the pixel teacher
(Tab. 4 row 2: no pre-trained teacher is shipped, and it costs no teacher
forward on CPU); batch 256, 1 epoch (~8 CPU-minutes of compute), 15% warm-up,
blr 1.5e-3 (a short run at the paper's lr barely moves), projector hidden 512,
no drop path, float32. The linear probe trains with SGD (momentum 0.9, batch
256, 30 epochs) rather than LARS at batch 16384.
"""
from ml_collections.config_dict import placeholder

from ssl_jax import config_defaults

# name -> (ViT variant, base lr (Sec. 4))
_IN1K = {
    "vit_small_in1k": ("S", 1.75e-4),
    "vit_base_in1k": ("B", 1.5e-4),
}


def _cr2pq_defaults():
  return dict(
      teacher="frozen",            # ema | frozen | pixels (Tab. 4)
      teacher_path=placeholder(str),    # `export` folder for teacher="frozen"
      pos_encoding="rope_continuous",   # Tab. 6
      coord_anchor="centre",       # centre | corner (Eq. 4 literally)
      rope_freqs="axial",          # axial | cr2pq (Sec. 3.2's theta_t = 10000^(-t/(D/2)))
      symmetric=False,             # also B -> A, averaged (Sec. 3.2 shows A -> B only)
      global_weight=0.5,           # lambda, Sec. 4.2 / Fig. 3
      loss_p=2,
      # Tab. 5 "2-layer Trans"; num_heads unset: the encoder's.
      decoder=dict(depth=2, num_heads=placeholder(int), mlp_ratio=4.0),
      projector_hidden_dim=2048,
      query_grid=placeholder(int),      # unset: the teacher's token grid (Sec. 4.2)
      pixel_patch_size=placeholder(int),   # pixels teacher; unset: the student's patch size
      norm_pix=True,
      mask_ratio=0.75,             # discrete ablations of Tab. 6
      ema=dict(base=0.996, final=1.0),
  )


def get_config(arg: str = "vit_tiny"):
  c = config_defaults.base_config()
  c.method = "cr2pq"
  c.cr2pq = _cr2pq_defaults()
  c.data.augment = "byol"
  c.data.crop_scale = (0.08, 1.0)
  c.data.crop_ratio = (3 / 4, 4 / 3)
  c.data.hflip = True
  c.optim.b1, c.optim.b2 = 0.9, 0.999
  c.optim.weight_decay = 0.05
  c.optim.clip_grad_norm = 3.0
  c.eval.feature = "mean"
  if arg == "vit_tiny":
    c.model = dict(name="vit", variant="Ti", width=128, depth=4, num_heads=4, patch_size=4,
                   drop_path=0.0)
    c.cr2pq.teacher = "pixels"
    c.cr2pq.decoder.depth = 1
    c.cr2pq.projector_hidden_dim = 512
    return config_defaults.cpu_job(c)
  if arg == "tiny":     # the test suite's train-and-resume run (config_defaults.tiny_job)
    # The EMA teacher, so that resume must restore it.
    c.model = dict(name="vit", variant="Ti", width=32, depth=1, num_heads=2, patch_size=4, drop_path=0.0)
    c.cr2pq.teacher = "ema"
    c.cr2pq.decoder.depth = 1
    c.cr2pq.projector_hidden_dim = 32
    return config_defaults.tiny_job(c)
  if arg not in _IN1K:
    raise ValueError(f"Unknown variant {arg!r}. Valid: vit_tiny, tiny, {', '.join(_IN1K)}.")
  variant, blr = _IN1K[arg]
  c.model = dict(name="vit", variant=variant, patch_size=16, drop_path=0.1)
  config_defaults.imagenet_job(c)
  c.batch_size = 2048
  c.num_epochs = 300.0
  c.optim.base_lr = blr
  c.optim.warmup_epochs = 40.0
  return c
