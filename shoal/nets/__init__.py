"""Network pieces: torsos (MLP, Nature-CNN) and heads (categorical, Gaussian, value)."""

from shoal.nets.heads import Categorical, CategoricalHead, DiagGaussian, GaussianHead, ValueHead, layer_init
from shoal.nets.torsos import MLP, NatureCNN, make_torso

__all__ = ["MLP", "NatureCNN", "make_torso", "Categorical", "CategoricalHead", "DiagGaussian",
           "GaussianHead", "ValueHead", "layer_init"]
