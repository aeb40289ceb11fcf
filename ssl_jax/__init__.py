"""ssl_jax: self-supervised visual pre-training in JAX/Flax."""
