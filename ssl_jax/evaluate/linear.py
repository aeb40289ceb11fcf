"""Linear probe (MAE App. A.2): BatchNorm without affine + a linear layer on
frozen features, LARS, linear warm-up + cosine, no weight decay.

`optimizer="lars"` is MAE's (batch 16384, base lr 0.1, 90 epochs); its trust
ratio barely moves a freshly initialised head in short, small-batch runs, so
the CPU configs use `optimizer="sgd"` (momentum 0.9), named in their docstring.

Deviation, named: features are extracted once without augmentation (MAE
applies RandomResizedCrop while probing), and the affine-free BatchNorm uses
the training set's feature mean / variance, which is what the BN running
statistics converge to, so the probe is deterministic and cheap.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax import optim
from ssl_jax.progress import Progress
from ssl_jax.registry import check_choice


def make_optimizer(optimizer: str, lr, weight_decay: float = 0.0):
  """"lars": MAE's util/lars.py (momentum 0.9, trust coefficient 0.001), whose
  weight decay and trust ratio apply only to arrays with ndim > 1 (the head's
  bias takes plain momentum SGD); "sgd": momentum 0.9."""
  check_choice("linear probe optimizer", optimizer, ("lars", "sgd"))
  if optimizer == "lars":
    return optim.lars(lr, weight_decay)
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(lr, momentum=0.9))


def linear_probe(train_f, train_y, test_f, test_y, num_classes: int, epochs: int = 90,
                 base_lr: float = 0.1, batch_size: int = 256, weight_decay: float = 0.0,
                 warmup_frac: float = 0.1, seed: int = 0, optimizer: str = "lars"):
  """Returns {"top1", "train_top1"} in percent."""
  train_f = np.asarray(train_f, np.float32).reshape(len(train_f), -1)
  test_f = np.asarray(test_f, np.float32).reshape(len(test_f), -1)
  mean, var = train_f.mean(0), train_f.var(0)
  norm = lambda x: (x - mean) / np.sqrt(var + 1e-6)        # BatchNorm1d(affine=False, eps=1e-6)
  xtr, xte = jnp.asarray(norm(train_f)), jnp.asarray(norm(test_f))
  ytr = jnp.asarray(train_y)
  n, d = xtr.shape
  batch_size = min(batch_size, n)
  steps_per_epoch = n // batch_size
  total = max(1, epochs * steps_per_epoch)
  lr = optax.warmup_cosine_decay_schedule(0.0, base_lr * batch_size / 256.0,
                                          int(warmup_frac * total), total)
  tx = make_optimizer(optimizer, lr, weight_decay)
  # MAE initialises the probe head with trunc_normal(std=0.01), zero bias.
  params = {"w": 0.01 * jax.random.truncated_normal(jax.random.PRNGKey(seed), -2, 2, (d, num_classes)),
            "b": jnp.zeros((num_classes,))}
  opt_state = tx.init(params)

  def loss_fn(p, x, y):
    logits = x @ p["w"] + p["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def epoch(carry, perm):
    def step(c, idx):
      p, s = c
      g = jax.grad(loss_fn)(p, xtr[idx], ytr[idx])
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    batches = perm[:steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)
    carry, _ = jax.lax.scan(step, carry, batches)
    return carry

  rng = np.random.default_rng(seed)
  carry = (params, opt_state)
  progress = Progress(f"linear probe ({optimizer}, {epochs} epochs)",
                      epochs * steps_per_epoch * batch_size)
  for _ in range(epochs):
    carry = epoch(carry, jnp.asarray(rng.permutation(n)))
    progress.update(steps_per_epoch * batch_size)
  params = carry[0]
  acc = lambda x, y: 100.0 * float(np.mean(np.asarray(jnp.argmax(x @ params["w"] + params["b"], 1)) == y))
  return {"top1": acc(xte, np.asarray(test_y)), "train_top1": acc(xtr, np.asarray(train_y))}
