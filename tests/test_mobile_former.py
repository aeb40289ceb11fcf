"""Mobile-Former / ResNet encoders: output contract, Tab. 8 sizes, BatchNorm."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import models
from ssl_jax.models import resnet


def _shapes(model_cfg, size=64):
  """(output shapes, parameter count) by tracing only: no compute."""
  module = models.build(model_cfg)
  out, variables = jax.eval_shape(module.init_with_output, jax.random.PRNGKey(0),
                                  jnp.zeros((2, size, size, 3)))
  return out, variables, sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


def test_mf285m_output_contract_and_size():
  """Tab. 8: 256x256 -> 16x16 map (last stage kept at 1/16), 720 channels,
  6 global tokens of width 192, pool-concat 912. Size: 4.9M backbone (Tab. 5),
  5.8M with the 1000-way linear classifier on pool-concat (Tab. 1)."""
  out, variables, n = _shapes(dict(name="mobile_former", variant="285M"), 256)
  assert out["feature_map"].shape == (2, 16, 16, 720)
  assert out["patch"].shape == (2, 256, 720)
  assert out["tokens"].shape == (2, 6, 192)
  assert out["cls"].shape == (2, 912)
  assert set(variables) == {"params", "batch_stats"}
  assert abs(n / 1e6 - 4.9) / 4.9 < 0.05, n                        # measured 5.02M
  assert abs((n + 912 * 1000 + 1000) / 1e6 - 5.8) / 5.8 < 0.05      # measured 5.94M


@pytest.mark.parametrize("variant,backbone_m,pool_dim",
                         [("1.0G", 11.7, 1696), ("3.7G", 25.0, 3136)])
def test_larger_variants_close_to_paper(variant, backbone_m, pool_dim):
  out, _, n = _shapes(dict(name="mobile_former", variant=variant))
  assert abs(n / 1e6 - backbone_m) / backbone_m < 0.05, n           # measured 11.99M, 25.48M
  assert out["cls"].shape == (2, pool_dim)
  if variant == "1.0G":                                             # Tab. 1: 13.5M with classifier
    assert abs((n + pool_dim * 1000 + 1000) / 1e6 - 13.5) / 13.5 < 0.05


def test_tiny_variant_shapes():
  # Trained end to end (jitted value_and_grad) in tests/test_qbheat.py.
  out, variables, _ = _shapes(dict(name="mobile_former", variant="tiny"), 32)
  assert out["feature_map"].shape == (2, 8, 8, 192) and out["tokens"].shape == (2, 6, 64)
  assert out["cls"].shape == (2, 192 + 64)
  assert "block4" in variables["params"] and "block5" not in variables["params"]


def test_batchnorm_groups_normalise_each_slice():
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 3, 3, 4)) * 3.0
  x = x + jnp.arange(8.0)[:, None, None, None]            # groups see different statistics
  variables = resnet.BatchNorm().init(jax.random.PRNGKey(0), x, train=False)
  train = lambda groups: jax.jit(lambda v, x: resnet.BatchNorm(groups).apply(
      v, x, train=True, mutable=["batch_stats"]))
  y, upd = train(2)(variables, x)
  y = np.asarray(y).reshape(2, 4 * 9, 4)
  np.testing.assert_allclose(y.mean(axis=1), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.std(axis=1), 1.0, atol=1e-3)
  # Running mean: momentum 0.9 towards the average of the group means.
  want = 0.1 * np.asarray(x).reshape(-1, 4).mean(0)
  np.testing.assert_allclose(np.asarray(upd["batch_stats"]["mean"]), want, rtol=1e-5)
  # groups=1 is plain BatchNorm over the whole batch.
  y1 = train(1)(variables, x)[0]
  xf = np.asarray(x).reshape(-1, 4)
  np.testing.assert_allclose(np.asarray(y1).reshape(-1, 4),
                             (xf - xf.mean(0)) / np.sqrt(xf.var(0) + 1e-5), atol=1e-4)
  with pytest.raises(ValueError, match="not divisible"):
    train(3)(variables, x)


def test_resnet_sizes_and_unknown_variant():
  out, _, n = _shapes(dict(name="resnet", variant="50"), 224)
  assert n == 23_508_032                                  # torchvision ResNet-50 without fc
  assert out["feature_map"].shape == (2, 7, 7, 2048)
  with pytest.raises(ValueError, match="Valid choices"):
    _shapes(dict(name="mobile_former", variant="300M"))


@pytest.mark.parametrize("variant,total", [("18", 11_176_512), ("50", 23_508_032)])
def test_resnet_param_count_equals_torchvision(variant, total):
  """Exact: torchvision resnet18 / resnet50 (11,689,512 / 25,557,032
  parameters) less the 1000-way fc (513,000 / 2,049,000). BatchNorm running
  statistics are `batch_stats`, not parameters, as in torch. A missing
  downsample BN or bias-carrying conv fails."""
  _, variables, n = _shapes(dict(name="resnet", variant=variant), 64)
  assert n == total, (n, total)
  assert "batch_stats" in variables
