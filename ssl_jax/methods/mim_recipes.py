"""Config recipes shared by configs/{simmim,maskfeat,beit,semanticmim}.py.

Three sizes: "cpu" (embedded Fashion-MNIST, 32 px, patch 4, ViT-Ti with 12
heads as configs/mae.py:vit_tiny), "tiny" (16 px, width 32, 1 block, batch 8:
the every-method train / resume test) and "in1k" (ImageNet-1K ViT-B/16,
300 epochs, 003 Tab. 2).
"""
import os

from ssl_jax import config_defaults

TOKENIZER_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tokenizers")
# Fitted by `python -m ssl_jax.tokenizers.fit --out <this> --image_size 32 --patch_size 4
#   --vocab_size 256 --max_images 10000 --seed 0` (k-means over train-split patches).
CPU_TOKENIZER = os.path.abspath(os.path.join(TOKENIZER_DIR, "kmeans_fmnist32_p4_v256.npz"))

# 003 Tab. 2 (BEiT / MaskFeat columns); SemanticMIM uses the same recipe.
IN1K = {
    "beit": dict(peak_lr=1.5e-3, min_lr=1e-5, warmup=10.0, clip=3.0, drop_path=0.1,
                 crop=(0.08, 1.0)),
    "maskfeat": dict(peak_lr=1.6e-3, min_lr=1e-6, warmup=30.0, clip=0.02, drop_path=0.0,
                     crop=(0.5, 1.0)),
}
SIZES = ("cpu", "tiny", "in1k")


def mim_node(target: str, mask_kind: str, ratio: float, unit: int = 2, min_block: int = 4):
  return dict(target=target, tokenizer=CPU_TOKENIZER, hog=dict(nbins=9),
              mask=dict(kind=mask_kind, ratio=ratio, unit=unit, min_block=min_block))


def build(method: str, size: str, mim: dict, num_prefix: int = 1, in1k_recipe: str = "beit"):
  """The config of one MIM-family `method` at `size`."""
  if size not in SIZES:
    raise ValueError(f"Unknown size {size!r}. Valid: {', '.join(SIZES)}.")
  c = config_defaults.base_config()
  c.method = method
  c.mim = mim
  c.optim.b2 = 0.999                      # BEiT / MaskFeat / SimMIM AdamW betas (0.9, 0.999)
  if size == "tiny":
    c.model = dict(name="vit", variant="Ti", width=32, depth=1, num_heads=4, patch_size=4,
                   num_prefix=num_prefix, drop_path=0.0)
    return config_defaults.tiny_job(c)
  if size == "cpu":
    c.model = dict(name="vit", variant="Ti", width=192, depth=12, num_heads=12, patch_size=4,
                   num_prefix=num_prefix,
                   drop_path=0.0)
    c.eval.block = 6                      # 003 Sec. 4.2: the 7th of 12 blocks
    c.eval.feature = "cls"
    return config_defaults.cpu_job(c)
  r = IN1K[in1k_recipe]
  c.model = dict(name="vit", variant="B", patch_size=16, num_prefix=num_prefix,
                 drop_path=r["drop_path"])
  config_defaults.imagenet_job(c)
  c.data.crop_scale = r["crop"]
  c.batch_size = 2048
  c.num_epochs = 300.0
  c.optim.base_lr = r["peak_lr"] * 256 / c.batch_size   # lr = base_lr * batch / 256
  c.optim.min_lr = r["min_lr"]
  c.optim.warmup_epochs = r["warmup"]
  c.optim.clip_grad_norm = r["clip"]
  c.optim.weight_decay = 0.05
  c.eval.block = 6
  c.eval.feature = "cls"
  # Tab. 5 linear probe: 100 epochs, batch 1024 (AdamW lr 4e-3 there; SGD here).
  c.eval.linear = dict(epochs=100, base_lr=0.1, weight_decay=0.0, batch_size=1024, optimizer="sgd")
  return c
