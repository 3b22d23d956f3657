"""A multilayer perceptron written from scratch for mixed-precision training.

Every tensor a mixed-precision step holds passes through a named cast point (see
:mod:`lowprec.nn.policy`), so you can watch, layer by layer and step by step, what underflows,
what overflows and what the master copy of the weights keeps::

    import numpy as np, lowprec
    from lowprec.nn import train, TrainConfig
    data = lowprec.data.digits(np.random.default_rng(0))
    history = train("fp16_mixed", data, config=TrainConfig(steps=300, observe_every=10))
    history.summary()  # final loss, accuracy, skipped steps, final loss scale, per-layer underflow

The policy also says how the run scales: ``loss_scale`` (None, a static scale, "dynamic" =
torch.amp.GradScaler, "deepspeed", "apex") and ``fp8_recipe`` (None, "delayed", "current",
"mx" or a lowprec.scaling recipe), e.g. ``POLICIES["fp8_hybrid"].replace(fp8_recipe="mx")``.
"""
from .. import _deprecation
from .cast import Caster
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .layers import GELU, ReLU, Tanh
from .losses import accuracy, mse, softmax_cross_entropy
from .model import MLP, MLPConfig
from .optim import SGD, Adam, AdamW
from .policy import CAST_POINTS, POLICIES, Cast, PrecisionPolicy, get_policy
from .train import TrainConfig, Trainer, train

__all__ = [
    "Cast", "PrecisionPolicy", "POLICIES", "CAST_POINTS", "get_policy", "Caster", "MLP",
    "MLPConfig", "ReLU", "GELU", "Tanh", "softmax_cross_entropy", "mse", "accuracy", "SGD",
    "Adam", "AdamW",
    "TrainConfig", "Trainer", "train", "CheckpointError", "save_checkpoint", "load_checkpoint",
]


def __getattr__(name: str):
    if name == "PRESETS":
        return _deprecation.renamed("lowprec.nn.PRESETS", "lowprec.POLICIES", dict(POLICIES))
    raise _deprecation.no_attribute(__name__, name)
