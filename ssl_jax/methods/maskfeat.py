"""MaskFeat (Wei et al. 2022) in its image form: mask tokens inside the
encoder, a linear head regressing the 108 HOG values (ops/hog.py) of each
masked patch with an l2 loss (Sec. 3, 4.1). Layout and losses: methods/mim.py."""
from ssl_jax.methods import METHODS, mim

METHODS.register("maskfeat", mim.method("maskfeat", "hog"))
