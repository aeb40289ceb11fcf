"""bench/gemm_bound.py reads every matmul of a step from its jaxpr: the count,
the FLOPs and the einsum it times in PyTorch must be right."""
import collections

import jax
import jax.numpy as jnp
import numpy as np

from bench import gemm_bound


def test_dots_of_a_gradient_step_and_their_flops():
  def loss(params, x):
    h = jax.nn.gelu(jnp.einsum("bnd,df->bnf", x, params["w1"]))
    return jnp.sum(jnp.einsum("bnf,fd->bnd", h, params["w2"]) ** 2)

  params = {"w1": jnp.ones((8, 16)), "w2": jnp.ones((16, 8))}
  x = jnp.ones((2, 3, 8))
  dots = gemm_bound._dots(jax.make_jaxpr(jax.grad(loss))(params, x).jaxpr, 1,
                          collections.Counter())
  # forward: 2 dots; backward w.r.t. the weights only: dW1, dW2 and dh (not dx).
  assert sum(dots.values()) == 5
  fwd = 2 * 2 * 3 * 8 * 16
  assert sum(n * gemm_bound.flops(k) for k, n in dots.items()) == 5 * fwd
  # A scan body is counted `length` times.
  scanned = lambda p, xs: jax.lax.scan(lambda c, xi: (c, loss(p, xi)), 0.0, xs)[1].sum()
  dots4 = gemm_bound._dots(jax.make_jaxpr(jax.grad(scanned))(params, jnp.ones((4,) + x.shape)).jaxpr,
                           1, collections.Counter())
  assert sum(dots4.values()) == 4 * 5


def test_einsum_spec_matches_dot_general():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(2, 5, 3, 4)), rng.normal(size=(2, 3, 4, 6))
  dnums = (((3,), (2,)), ((0, 2), (0, 1)))     # batch (b, h), contract d
  key = (x.shape, y.shape, dnums[0], dnums[1])
  want = np.asarray(jax.lax.dot_general(jnp.asarray(x), jnp.asarray(y), dnums))
  np.testing.assert_allclose(np.einsum(gemm_bound._einsum_spec(key), x, y), want, rtol=1e-5)
  assert gemm_bound.flops(key) == 2 * 2 * 3 * 4 * 5 * 6
