"""`mode = "eval"`: run `config.eval.protocols` on an exported encoder.

  python -m ssl_jax.main --config configs/eval/knn.py \
      --config.encoder=<pretrain workdir>/export --workdir DIR
"""
import jax

from ssl_jax import distributed
from ssl_jax import evaluate as eval_lib
from ssl_jax import interop
from ssl_jax import metrics as metrics_lib
from ssl_jax import sharding


def run(config, workdir: str):
  if not config.encoder:
    raise ValueError("eval mode needs --config.encoder=<pre-training workdir>/export.")
  if not config.eval.output_dir:
    config.eval.output_dir = workdir      # analysis figures land here
  # An export folder, or a timm safetensors / official MAE, DINO or DINOv2
  # .pth file (its position table resampled to the evaluation image size).
  encoder = interop.load_encoder(config.encoder, image_size=config.data.image_size)
  # Multi-host: process 0 evaluates on its own devices, as after pre-training.
  mesh = sharding.process_mesh(sharding.make_mesh(config.mesh))
  if jax.process_index() != 0:
    distributed.barrier("ssl_jax evaluation")
    return {}
  results = eval_lib.evaluate(config, encoder, mesh)
  metrics_lib.MetricsWriter(workdir).write(
      int(encoder.info.get("step", 0)), "eval", encoder=config.encoder, **results)
  print(eval_lib.format_table(results), flush=True)
  distributed.barrier("ssl_jax evaluation")
  return results
