"""Bad names fail with a message that lists the valid choices."""
import pytest

from ssl_jax import methods, models
from ssl_jax.data import sources
from ssl_jax import config_defaults
from tests.conftest import config_module


def test_unknown_method_lists_valid():
  with pytest.raises(KeyError, match=r"Unknown method 'maee'. Valid methods: .*mae"):
    methods.get("maee")


def test_unknown_model_lists_valid():
  with pytest.raises(KeyError, match=r"Unknown model 'vitt'. Valid models: .*vit"):
    models.build({"name": "vitt"})


def test_unknown_dataset_lists_valid():
  c = config_defaults.base_config()
  c.data.name = "fashon_mnist"
  with pytest.raises(KeyError, match=r"Unknown dataset 'fashon_mnist'. Valid datasets: .*fashion_mnist.*imagenet2012"):
    sources.get_source(c.data, "train")


def test_unknown_split_lists_valid():
  c = config_defaults.base_config()
  with pytest.raises(ValueError, match="Valid splits: train, test"):
    sources.get_source(c.data, "validation")


def test_unknown_config_variant_lists_valid():
  mod = config_module("mae.py")
  with pytest.raises(ValueError, match="Valid: vit_tiny, tiny, vit_tiny_in1k"):
    mod.get_config("vit_huge")
