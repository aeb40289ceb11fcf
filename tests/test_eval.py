"""kNN and linear probe against hand-checkable cases."""
import numpy as np

from ssl_jax.evaluate import knn, linear


def test_knn_weighted_vote_hand_case():
  # Two training points per class on the unit circle; test points near class 1.
  train_f = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
  train_y = np.array([0, 0, 1, 1])
  test_f = np.array([[0.2, 1.0], [1.0, 0.05]], np.float32)
  res = knn.knn_accuracy(train_f, train_y, test_f, np.array([1, 0]), 2, k=3, temperature=0.07)
  assert res["top1"] == 100.0
  res = knn.knn_accuracy(train_f, train_y, test_f, np.array([0, 1]), 2, k=3, temperature=0.07)
  assert res["top1"] == 0.0


def test_linear_probe_learns_separable_and_not_random_labels():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(600, 16)).astype(np.float32)
  w = rng.normal(size=(16, 3))
  y = (x @ w).argmax(1)
  res = linear.linear_probe(x[:500], y[:500], x[500:], y[500:], 3, epochs=30, batch_size=100, optimizer="sgd")
  assert res["top1"] > 90.0
  shuffled = rng.permutation(y)
  res = linear.linear_probe(x[:500], shuffled[:500], x[500:], shuffled[500:], 3, epochs=30, batch_size=100, optimizer="sgd")
  assert res["top1"] < 60.0
