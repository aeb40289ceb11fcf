"""layers.Attention's two paths agree with a numpy softmax attention.

Without `return_attn` (training) the softmax is normalised after the AV
product (bench/README.md: 13% faster unmasked ViT step on CPU); with it the
probabilities are formed first. Both must equal softmax(q k^T / sqrt(d)) v
(Vaswani et al. Eq. 1) followed by the output projection, and give the same
gradients. Breaks caught: a missing normalisation, a sum over the wrong
axis, the scale applied twice or not at all, a max-shift that is not a
constant under differentiation.
"""
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.models import layers


def _numpy_attention(params, x, heads):
  def proj(name):
    p = params[name]
    return np.einsum("bnd,dhe->bnhe", x, p["kernel"]) + p["bias"]
  q, k, v = proj("query"), proj("key"), proj("value")          # [B, N, H, Dh]
  logits = np.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(q.shape[-1])
  logits = logits - logits.max(-1, keepdims=True)
  attn = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  out = np.einsum("bhqk,bkhe->bqhe", attn, v).reshape(x.shape[0], x.shape[1], -1)
  return out @ params["out"]["kernel"] + params["out"]["bias"], attn


def test_both_paths_match_numpy_and_each_other():
  heads = 4
  x = np.random.default_rng(0).normal(size=(2, 7, 32)).astype(np.float32) * 3.0
  module = layers.Attention(num_heads=heads)
  params = module.init(jax.random.PRNGKey(0), x)["params"]
  # Non-zero biases, so the test sees them.
  params = jax.tree.map(lambda p: p + 0.1 * jnp.sin(jnp.arange(p.size).reshape(p.shape)), params)
  fast, none = module.apply({"params": params}, x)
  slow, attn = module.apply({"params": params}, x, return_attn=True)
  ref, ref_attn = _numpy_attention(jax.tree.map(np.asarray, params), x, heads)
  assert none is None
  np.testing.assert_allclose(np.asarray(attn), ref_attn, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(fast), ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(slow), ref, rtol=1e-5, atol=1e-5)

  def loss(p, return_attn):
    out, _ = module.apply({"params": p}, x, return_attn=return_attn)
    return jnp.sum(jnp.tanh(out))
  g_fast = jax.grad(loss)(params, False)
  g_slow = jax.grad(loss)(params, True)
  # float32 rounding relative to the largest gradient (~100 here; the key
  # bias's is 0 in exact arithmetic: a per-row constant shift of the logits).
  scale = max(float(np.abs(np.asarray(g)).max()) for g in jax.tree.leaves(g_slow))
  for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_slow)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5 * scale)
