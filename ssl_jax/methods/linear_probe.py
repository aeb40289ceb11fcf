"""Linear probing as a job of the one trainer (method "linear"; MAE App. A.1
"Linear probing", Tab. 10).

The frozen encoder `config.encoder` (an export folder or a timm / MAE / DINO
checkpoint, `interop.load_encoder`) is a method constant: never trained,
never checkpointed, re-read on resume. On its feature (`eval.feature`,
`eval.block`, as the in-memory protocol reads them) sit BatchNorm without
affine (eps 1e-6: MAE's `BatchNorm1d(affine=False, eps=1e-6)`, which
normalises the pre-trained features, MAE App. A.1) and a linear layer
(MAE: `trunc_normal_(std=0.01)`, zero bias); only the layer trains, with
cross-entropy on the streamed, augmented `single_crop` view (MAE:
RandomResizedCrop + flip while probing, `data.crop_scale` (0.08, 1)).
The BatchNorm running statistics (torch momentum 0.1 = flax 0.9) are the
method state, checkpointed and used by `predict`, the validation pass.

Recipe (configs/eval/linear.py:mae_in1k, MAE Tab. 10): LARS
(`optim.name="lars"`), base lr 0.1 (lr = 0.1 x batch / 256), weight decay 0,
batch 16384, 90 epochs, 10 warm-up epochs, cosine, CLS token.

Deviations, named: the BatchNorm statistics are those of the global batch
(every device's rows: SyncBN), where MAE's DDP normalises per GPU; flax's
truncated normal cuts at 2 std (timm's `trunc_normal_(std=0.01)` at +-2,
i.e. not at all).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ssl_jax import config_check
from ssl_jax import interop
from ssl_jax.evaluate import features
from ssl_jax.methods import METHODS
from ssl_jax.methods.base import Method, MethodVars, fixed_view, scalar_metrics


class ProbeHead(nn.Module):
  """BatchNorm without affine + linear (MAE main_linprobe.py's head)."""
  num_classes: int

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    x = nn.BatchNorm(use_running_average=not train, use_bias=False, use_scale=False,
                     momentum=0.9, epsilon=1e-6, name="bn")(x)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.truncated_normal(0.01),
                    name="linear")(x)


def frozen_encoder(config):
  """The export `config.encoder`, read from disk once per process."""
  if not config.get("encoder"):
    raise config_check.ConfigError(
        f"method {config.method!r} needs --config.encoder=<pre-training workdir>/export "
        "(or a .safetensors / .pth checkpoint).")
  return interop.load_teacher(str(config.encoder), config.get("compute_dtype", "float32"),
                              config.data.image_size)


def encoder_features(config, encoder_vars, images):
  """The probed feature of the frozen encoder, float32, no gradient."""
  e = config.eval
  fn = features.apply_fn(frozen_encoder(config), e.feature, e.block)
  return jax.lax.stop_gradient(fn(jax.lax.stop_gradient(encoder_vars), images))


def _head(config):
  return ProbeHead(int(config.linear.num_classes))


def init(rng, batch, config):
  enc = frozen_encoder(config)
  feats = jax.eval_shape(lambda v, x: encoder_features(config, v, x), enc.variables,
                         batch["image"])
  variables = dict(_head(config).init(rng, jnp.zeros(feats.shape, jnp.float32)))
  params = {"head": variables.pop("params")}
  return MethodVars(params=params, state=variables, constants={"encoder": enc.variables})


def loss(params, state, constants, batch, rng, step, config):
  del rng, step
  feats = encoder_features(config, constants["encoder"], batch["image"])
  logits, new_state = _head(config).apply({"params": params["head"], **state}, feats,
                                          train=True, mutable=["batch_stats"])
  labels = batch["label"].astype(jnp.int32)
  l = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  acc = jnp.mean(jnp.argmax(logits, -1) == labels)
  return l, (scalar_metrics(ce_loss=l, train_top1=100.0 * acc), dict(new_state))


def predict(params, state, constants, batch, config):
  feats = encoder_features(config, constants["encoder"], batch["image"])
  return _head(config).apply({"params": params["head"], **state}, feats, train=False)


METHODS.register("linear", Method(views=fixed_view("single_crop"), init=init, loss=loss,
                                  encoder=None, predict=predict))
