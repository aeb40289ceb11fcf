"""MoCo v2 (Chen, Fan, Girshick, He 2020): the contrastive baseline of
../shared/papers/000 Tab. 1, 4, 5, on the same CNN encoders.

A query encoder + 2-layer MLP head (MoCo v2 "mlp") is trained with InfoNCE
against one positive key from a momentum key encoder and a queue of K
negatives (MoCo Eq. 1 and Algorithm 1): logits = [q.k+, q.queue] / tau.
The key encoder is an EMA of the query encoder's parameters (MoCo Eq. 2; its
BatchNorm statistics are its own, as in the reference, which EMAs only
`parameters()`). Shuffling BN (MoCo Sec. 3.3): BatchNorm is computed per
group of the batch (MoCo's per-GPU BN) and keys are encoded in a shuffled
order, so a query and its key never share batch statistics.

State: query `batch_stats`, `key` (params + batch_stats), `queue` [K, dim]
of L2-normalised keys, `queue_ptr`.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ssl_jax import models
from ssl_jax.methods import METHODS
from ssl_jax.methods.base import EncoderSpec, Method, MethodVars, fixed_view, scalar_metrics
from ssl_jax.ops import ema


class MLPHead(nn.Module):
  """MoCo v2 head: fc(hidden) -> ReLU -> fc(dim); hidden defaults to the
  input width (`dim_mlp` of the reference)."""
  dim: int = 128
  hidden: int = 0
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x):
    hidden = self.hidden or x.shape[-1]
    x = nn.relu(nn.Dense(hidden, dtype=self.dtype, name="fc1")(x))
    return nn.Dense(self.dim, dtype=self.dtype, name="fc2")(x)


def representation(out):
  """Mobile-Former: the pooled map + token 0 (`cls`); other CNNs: average pool."""
  return out["cls"] if "cls" in out else out["patch"].mean(axis=1)


def build_modules(config, train: bool = True):
  dtype = config.get("compute_dtype", "float32")
  model_cfg = dict(config.model)
  if train:
    model_cfg["bn_groups"] = config.mocov2.bn_groups
  head = MLPHead(config.mocov2.dim, config.mocov2.mlp_hidden, dtype=models.DTYPES[dtype])
  return models.build(model_cfg, dtype), head


def _l2n(x):
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _embed(enc, head, params, batch_stats, images, train):
  variables = {"params": params["encoder"], "batch_stats": batch_stats}
  if train:
    out, upd = enc.apply(variables, images, train=True, mutable=["batch_stats"])
    batch_stats = upd["batch_stats"]
  else:
    out = enc.apply(variables, images)
  z = head.apply({"params": params["head"]}, representation(out))
  return _l2n(z), batch_stats


def _check_queue(queue_size: int, batch: int):
  if queue_size % batch:
    raise ValueError(f"mocov2.queue_size {queue_size} must be a multiple of the per-step "
                     f"batch {batch} (MoCo enqueues whole batches).")


def init(rng, batch, config):
  m = config.mocov2
  images = batch["view_a"]
  # The trainer initialises on a tiny batch; check the batch the loss will see.
  accum = int(config.optim.get("grad_accum_steps", 1) or 1)
  _check_queue(m.queue_size, config.batch_size // accum)
  enc, head = build_modules(config, train=False)
  r_enc, r_head, r_queue = jax.random.split(rng, 3)
  enc_vars = enc.init(r_enc, images)
  rep_shape = jax.eval_shape(lambda v, x: representation(enc.apply(v, x)), enc_vars, images)
  rep = jnp.zeros(rep_shape.shape, rep_shape.dtype)       # the head init needs shapes only
  params = {"encoder": enc_vars["params"], "head": head.init(r_head, rep)["params"]}
  # The reference initialises the queue with random unit vectors.
  queue = _l2n(jax.random.normal(r_queue, (m.queue_size, m.dim)))
  state = {"batch_stats": enc_vars["batch_stats"],
           "key": {"params": jax.tree.map(jnp.copy, params),
                   "batch_stats": jax.tree.map(jnp.copy, enc_vars["batch_stats"])},
           "queue": queue, "queue_ptr": jnp.zeros((), jnp.int32)}
  return MethodVars(params=params, state=state, constants={})


def enqueue(queue, ptr, keys):
  """Replaces the oldest len(keys) entries (MoCo `_dequeue_and_enqueue`)."""
  queue = jax.lax.dynamic_update_slice(queue, keys.astype(queue.dtype), (ptr, 0))
  return queue, (ptr + keys.shape[0]) % queue.shape[0]


def infonce(q, k, queue, temperature):
  """MoCo Eq. 1: cross-entropy with the positive at index 0."""
  l_pos = jnp.sum(q * k, axis=-1, keepdims=True)
  l_neg = q @ queue.T
  logits = jnp.concatenate([l_pos, l_neg], axis=1) / temperature
  loss = optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.zeros((q.shape[0],), jnp.int32)).mean()
  acc = jnp.mean(jnp.argmax(logits, axis=1) == 0)
  return loss, acc


def loss(params, state, constants, batch, rng, step, config):
  del constants, step
  m = config.mocov2
  _check_queue(state["queue"].shape[0], batch["view_a"].shape[0])
  enc, head = build_modules(config, train=True)
  q, q_stats = _embed(enc, head, params, state["batch_stats"], batch["view_a"], True)
  # Shuffling BN: encode keys in a random order, then undo it.
  perm = jax.random.permutation(rng, batch["view_b"].shape[0])
  k, k_stats = _embed(enc, head, state["key"]["params"], state["key"]["batch_stats"],
                      batch["view_b"][perm], True)
  k = jax.lax.stop_gradient(jnp.zeros_like(k).at[perm].set(k))
  l, acc = infonce(q, k, jax.lax.stop_gradient(state["queue"]), m.temperature)
  queue, ptr = enqueue(state["queue"], state["queue_ptr"], k)
  new_state = {"batch_stats": q_stats,
               "key": {"params": state["key"]["params"], "batch_stats": k_stats},
               "queue": queue, "queue_ptr": ptr}
  return l, (scalar_metrics(contrastive_loss=l, contrastive_acc=acc), new_state)


def update(state, params, step, config):
  """Momentum update of the key encoder and head (MoCo Eq. 2)."""
  del step
  key = dict(state["key"], params=ema.ema_update(state["key"]["params"], params,
                                                  config.mocov2.momentum))
  return dict(state, key=key)


def encoder(config):
  return EncoderSpec(model=dict(config.model),
                     variables=lambda params, state: {"params": params["encoder"],
                                                      "batch_stats": state["batch_stats"]})



METHODS.register("mocov2", Method(views=fixed_view("two_crops"), init=init, loss=loss,
                                encoder=encoder, update=update))
