"""The training step and loop.

One step, as PyTorch AMP (autocast + GradScaler) runs it:

1. round the weights for compute (from the master copy, or the pure low-precision weights);
2. forward, rounding at every cast point (FP8 points scaled by the policy's recipe, one
   recipe state per tensor); the loss in FP32;
3. backward from ``scale * loss`` (the seed d(scale * loss)/d(loss) = ``scaler.scale``);
   every gradient rounded at its cast point;
4. ``grads, found_inf = unscale_and_check(grads, scaler)``: times float32(1 / scale), and
   ``found_inf`` looks at the *scaled* gradients, as GradScaler.unscale_ does; on found_inf
   (or a non-finite loss) the first cast in execution order whose result held an inf or NaN
   is named: the culprit (layer, cast point, kind);
5. ``record = scaler.update(found_inf, source=culprit)``: the framework's rule decides whether
   the step is skipped and the next scale;
6. unless skipped, the optimizer updates the stored weights (see :mod:`lowprec.nn.optim`).

Without a loss scaler (``loss_scale=None``) nothing is unscaled or skipped: like plain PyTorch
without a GradScaler, a non-finite gradient reaches the weights (and is recorded).

DeepSpeed's rule stops a run that overflows with the scale at its minimum
(:class:`~lowprec.scaling.LossScaleAtMinimumError`, as DeepSpeed raises); the training loop
lets that error through, naming the culprit, with the History so far attached as
``error.history``. Pass ``DeepSpeedConfig(raise_at_min_scale=False)`` to keep going instead.
"""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from types import ModuleType
from typing import Protocol

import numpy as np

from ..data import Dataset
from ..observe import History, Observer
from ..scaling import (LossScaleAtMinimumError, LossScaler, StaticLossScaler, make_loss_scaler,
                       unscale_and_check)
from .cast import Caster
from .checkpoint import (check_like, device_copy, fingerprint_differences, host_copy,
                         load_checkpoint, save_checkpoint)
from .model import MLP, MLPConfig
from .optim import SGD, Adam, kahan_update
from .policy import CAST_POINTS, PrecisionPolicy, get_policy
from .progress import Progress


@dataclass(frozen=True)
class TrainConfig:
    """How long and how to train."""

    steps: int = 600  # optimizer steps (skipped steps count too)
    batch_size: int = 256  # examples per step; each epoch walks a fresh permutation
    optimizer: SGD | Adam = field(default_factory=SGD)  # SGD(lr, momentum) or Adam(lr, ...)
    seed: int = 0  # seeds the initial weights, the batch order and stochastic rounding
    eval_every: int = 100  # evaluate every n steps and after the last (0: only after the last)
    observe_every: int = 0  # record cast-point statistics every n steps (0: observation off)
    checkpoint_every: int = 0  # with a checkpoint path: save every n steps and after the last

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "observe_every",
                     "checkpoint_every", "seed"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not isinstance(self.optimizer, (SGD, Adam)):
            raise TypeError(f"optimizer must be lowprec.nn.SGD or Adam, got {self.optimizer!r}")


def make_scaler(policy: PrecisionPolicy) -> LossScaler | None:
    """The policy's loss scaler (lowprec.scaling), or None when it scales nothing."""
    if policy.loss_scale is None:
        return None
    return make_loss_scaler(policy.loss_scale)


class ScalerLike(Protocol):
    """What a loss scaler passed as ``scaler=`` must offer (lowprec.scaling's LossScalers do,
    and also return a StepRecord from ``update`` and take the culprit)."""

    scale: float

    def update(self, found_inf: bool) -> object: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: Mapping) -> None: ...


# Four hidden layers with torch.nn.Linear's initialisation: every layer shrinks the backward
# signal by about 0.4, so early-layer gradients sit a few binades below the loss gradient.
DEFAULT_HIDDEN = (64, 64, 64, 64)

STATE_KEYS = ("identity", "steps_done", "updates_done", "stored", "optimizer", "kahan", "scaler",
              "fp8", "rounding_rng")  # the entries of Trainer.state_dict()


class Trainer:
    """The state of one run -- stored weights, optimizer state, loss scaler, RNG -- and its step.

    ``scaler`` replaces the policy's loss scaler (see :func:`train`). ``caster`` says how the
    step rounds: a :class:`~lowprec.nn.cast.Caster` class (Caster by default, or a subclass) or
    any callable ``(policy, *, rng, xp) -> Caster``, e.g. ``functools.partial(DeviceCaster,
    ops=ops)``; the trainer calls it once with its own stochastic-rounding generator and keeps
    the result as ``trainer.caster``. :meth:`state_dict` and :meth:`load_state_dict` save and
    restore everything a step depends on.
    """

    def __init__(self, policy: PrecisionPolicy | str, model: MLPConfig = MLPConfig(),
                 optimizer: SGD | Adam = SGD(), *, seed: int = 0, scaler: ScalerLike | None = None,
                 caster: Callable[..., Caster] = Caster, xp: ModuleType = np) -> None:
        self.policy = get_policy(policy)
        self.model = MLP(model, xp)
        self.optimizer = optimizer
        self.xp = xp
        self.scaler = scaler if scaler is not None else make_scaler(self.policy)
        self.rounding_rng = np.random.default_rng([seed, 2])  # stochastic rounding only
        self.observer = Observer(self.model.layers, CAST_POINTS, xp)
        # the caster holds the FP8 states
        self.caster = _make_caster(caster, self.policy, self.rounding_rng, xp)
        self.caster.layers = self.model.layers  # a block recipe's high-precision layers need it
        self.steps_done = 0  # steps taken, skipped ones included
        self.updates_done = 0  # optimizer steps applied (Adam's bias correction counts these)
        params = self.model.init_params(np.random.default_rng([seed, 0]))
        point, spec = self.policy.stored_point, self.policy.stored_cast
        self.stored = [{k: self.caster.apply(v, spec, point, l) for k, v in p.items()}
                       for l, p in enumerate(params)]  # master copy, or the pure weights
        self.opt_state = [{k: optimizer.init_state(v, xp) for k, v in p.items()}
                          for p in self.stored]
        self.compensation = ([{k: xp.zeros_like(v) for k, v in p.items()} for p in self.stored]
                             if self.policy.uses_kahan else None)

    # --- one step ---------------------------------------------------------------------------
    def compute_weights(self, cast: Caster) -> list:
        """The weights as used in compute: the stored weights rounded at the ``weight`` point
        (the bias by ``policy.bias_cast``: FP8 holds GEMM operands only)."""
        held = self.policy.weight_already
        return [{k: cast(v, "weight", l, already=held, bias=k == "bias") for k, v in p.items()}
                for l, p in enumerate(self.stored)]

    @property
    def fp8_states(self) -> dict:
        """(layer, point) -> the FP8 recipe state of that tensor (empty without a recipe)."""
        return self.caster.fp8_states

    @np.errstate(over="ignore", invalid="ignore", divide="ignore")  # inf/NaN are recorded instead
    def step(self, x: np.ndarray, y: np.ndarray, observe: bool = False) -> dict:
        """One training step on the batch (x, y); returns this step's record: the History's
        step fields with ``culprit`` (the :class:`~lowprec.scaling.NonFiniteSource` of the
        step's first non-finite cast, or None) for the three culprit columns, and ``fp8`` (this
        step's FP8 cast statistics, or None without a recipe)."""
        xp, cast = self.xp, self.caster
        cast.begin_step(self.observer if observe else None)
        try:
            weights = self.compute_weights(cast)
            output, cache = self.model.forward(weights, x, cast)
            scale = float(self.scaler.scale) if self.scaler is not None else 1.0
            loss, grad_output = self.model.loss(output, xp.asarray(y), scale)
            grads = self.model.backward(weights, cache, grad_output, cast)
            grads, found_inf = self._unscale(grads)
            culprit = cast.culprit() if found_inf or not np.isfinite(loss) else None
            scaler_record = self._update_scaler(found_inf, culprit)
            skipped = bool(getattr(scaler_record, "skipped", found_inf and self.scaler is not None))
            if not skipped:
                self._apply(grads, cast)
            fp8 = cast.fp8_step_stats(self.model.layers)
        finally:
            cast.end_step()
        self.steps_done += 1

        def counter(name):
            value = getattr(scaler_record, name, None)
            return -1 if value is None else int(value)
        new_scale = float(self.scaler.scale) if self.scaler is not None else float("nan")
        return {"step": self.steps_done, "loss": loss, "scale": scale, "new_scale": new_scale,
                "found_inf": found_inf, "skipped": skipped,
                "growth_tracker": counter("growth_tracker"), "hysteresis": counter("hysteresis"),
                "culprit": culprit, "fp8": fp8}

    def _unscale(self, grads):
        """(unscaled grads, found_inf), found_inf judged on the scaled gradients (GradScaler)."""
        if self.scaler is None:
            return grads, not all(bool(self.xp.isfinite(g).all())
                                  for p in grads for g in p.values())
        scaler = self.scaler
        if not isinstance(scaler, LossScaler):  # a foreign scaler: only its .scale is needed here
            scaler = StaticLossScaler(scaler.scale)
        return unscale_and_check(grads, scaler)

    def _update_scaler(self, found_inf: bool, culprit):
        """scaler.update(found_inf); lowprec's own scalers also get the culprit and return a
        StepRecord. None without a scaler."""
        if self.scaler is None:
            return None
        if not isinstance(self.scaler, LossScaler):
            return self.scaler.update(found_inf)
        try:
            return self.scaler.update(found_inf, source=culprit)
        except LossScaleAtMinimumError as err:
            raise LossScaleAtMinimumError(
                f"{err}. First non-finite value of this step (step {self.steps_done + 1}): "
                f"{culprit or 'none found at a cast point'}") from err

    def _apply(self, grads, cast):
        """Optimizer step on the stored weights (master or pure)."""
        self.updates_done += 1
        policy, observer, t = self.policy, cast.observer, self.updates_done
        pure_rounding = policy.pure_update_cast
        for l, layer_grads in enumerate(grads):
            for name, grad in layer_grads.items():
                w = self.stored[l][name]
                new, u, self.opt_state[l][name] = self.optimizer.apply(
                    w, grad, self.opt_state[l][name], t,
                    lambda s, l=l: cast(s, "optimizer_state", l))
                if policy.keeps_master_weights:
                    new = cast(new, "master_weights", l)
                elif policy.uses_kahan:
                    new, self.compensation[l][name] = kahan_update(
                        w, u, self.compensation[l][name],
                        lambda v, l=l: cast.apply(v, pure_rounding, "weight", l))
                else:
                    new = cast.apply(new, pure_rounding, "weight", l)
                if observer is not None:
                    observer.record_update(l, w, new, u)
                self.stored[l][name] = new

    # --- saving and restoring ----------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything the next step depends on, to resume this run bit for bit (the pattern of
        the loss scalers' and recipe states' ``state_dict``): host NumPy copies of the arrays
        and plain values, under STATE_KEYS --

        ``identity`` (the policy, model and optimizer: :meth:`load_state_dict` refuses a state
        of another), ``steps_done``, ``updates_done``, ``stored`` (master or pure weights, per
        layer), ``optimizer`` (its buffers, per layer and parameter), ``kahan`` (compensation
        buffers, or None), ``scaler`` (its ``state_dict()``, or None), ``fp8`` (``[layer, point,
        state_dict]`` of every FP8 recipe state) and ``rounding_rng`` (the stochastic-rounding
        generator's state).
        """
        return {
            "identity": self._identity(), "steps_done": self.steps_done,
            "updates_done": self.updates_done, "stored": host_copy(self.stored),
            "optimizer": host_copy(self.opt_state), "kahan": host_copy(self.compensation),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "fp8": [[l, point, state.state_dict()]
                    for (l, point), state in self.fp8_states.items()],
            "rounding_rng": self.rounding_rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Continue from ``state``, a :meth:`state_dict` of a trainer with the same policy, model
        and optimizer. Raises ValueError (TypeError for a non-mapping) naming what does not fit,
        before anything is changed."""
        self._check_state(state)
        xp = self.xp
        self.stored = device_copy(state["stored"], xp)
        self.opt_state = device_copy(state["optimizer"], xp)
        self.compensation = device_copy(state["kahan"], xp)
        self.steps_done, self.updates_done = int(state["steps_done"]), int(state["updates_done"])
        self.rounding_rng.bit_generator.state = state["rounding_rng"]  # the caster's generator too
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.fp8_states.clear()  # a tensor not in the state starts afresh, as it did then
        for layer, point, recipe_state in state["fp8"]:
            self.caster.recipes.state(point, int(layer)).load_state_dict(recipe_state)

    def _identity(self) -> dict:
        """What a state must come from: the policy, the model and the optimizer (plain JSON
        values)."""
        return json.loads(json.dumps(_plain({"policy": self.policy.fingerprint(),
                                             "model": asdict(self.model.config),
                                             "optimizer": _optimizer_fingerprint(self.optimizer)})))

    def _check_state(self, state) -> None:
        """Raise if ``state`` cannot be loaded here; changes nothing (the scaler's and the recipe
        states' own checks run on copies)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"a Trainer state is a mapping (from Trainer.state_dict()), got "
                            f"{type(state).__name__}")
        missing, unknown = set(STATE_KEYS) - set(state), set(state) - set(STATE_KEYS)
        if missing or unknown:
            raise ValueError(f"not a Trainer state_dict: missing {sorted(missing)}, "
                             f"unknown {sorted(unknown)}")
        diffs = fingerprint_differences(state["identity"], self._identity())
        if diffs:
            raise ValueError("this state comes from a trainer with another policy, model or "
                             "optimizer; loading it would not continue that run:\n  "
                             + "\n  ".join(diffs))
        steps, updates = state["steps_done"], state["updates_done"]
        counts = all(isinstance(n, (int, np.integer)) and not isinstance(n, bool)
                     for n in (steps, updates))
        if not counts or not 0 <= updates <= steps:
            raise ValueError(f"steps_done {steps!r} and updates_done {updates!r} must be ints with "
                             "0 <= updates_done <= steps_done")
        check_like(state["stored"], self.stored, "stored")
        check_like(state["optimizer"], self.opt_state, "optimizer")
        check_like(state["kahan"], self.compensation, "kahan")
        if (state["scaler"] is None) != (self.scaler is None):
            saved_with = "without" if state["scaler"] is None else "with"
            raise ValueError(f"the state was saved {saved_with} "
                             "a loss scaler, but this trainer is the opposite")
        if self.scaler is not None:
            copy.deepcopy(self.scaler).load_state_dict(state["scaler"])
        probe = Caster(self.policy)  # fresh recipe states to try the saved ones on
        for layer, point, recipe_state in state["fp8"]:
            scaled = self.policy.fp8_recipe is not None and point in self.policy.fp8_points
            if not scaled or not 0 <= int(layer) < self.model.layers:
                raise ValueError(f"the state holds an FP8 recipe state for layer {layer}, point "
                                 f"{point!r}, which this trainer does not scale")
            probe.recipes.state(point, int(layer)).load_state_dict(recipe_state)
        type(self.rounding_rng.bit_generator)().state = state["rounding_rng"]

    # --- evaluation -----------------------------------------------------------------------
    @np.errstate(over="ignore", invalid="ignore", divide="ignore")
    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> tuple[float, float]:
        """(mean loss, accuracy or NaN for regression) of the current weights on (x, y)."""
        xp = self.xp
        rng = np.random.default_rng([self.steps_done, 3])  # only stochastic forward casts use it
        cast = self.caster.frozen_copy(rng)  # FP8 recipes: today's scales, left unchanged
        cast.layers = self.caster.layers
        weights = self.compute_weights(cast)
        total_loss, correct, n = 0.0, 0, len(x)
        for start in range(0, n, batch_size):
            xb = xp.asarray(x[start:start + batch_size])
            yb = xp.asarray(y[start:start + batch_size])
            cast.trace = []
            out, _ = self.model.forward(weights, xb, cast)
            loss, _ = self.model.loss(out, yb)
            total_loss += loss * len(xb)
            if self.model.config.loss == "cross_entropy":
                correct += int((out.argmax(axis=1) == yb).sum())
        accuracy = correct / n if self.model.config.loss == "cross_entropy" else float("nan")
        return total_loss / n, accuracy


def _make_caster(factory: Callable[..., Caster], policy: PrecisionPolicy, rng, xp) -> Caster:
    """The trainer's Caster, made by ``factory`` with the trainer's own generator."""
    if isinstance(factory, Caster) or not callable(factory):
        raise TypeError("caster takes a Caster class or a callable (policy, *, rng, xp) -> "
                        f"Caster, got {factory!r}; the trainer makes the Caster itself, with its "
                        "own stochastic-rounding generator (pass the class, or functools.partial "
                        "of it)")
    caster = factory(policy, rng=rng, xp=xp)
    if not isinstance(caster, Caster):
        raise TypeError(f"caster={factory!r} made a {type(caster).__name__}, "
                        "not a lowprec.nn.Caster")
    return caster


def _optimizer_fingerprint(optimizer) -> list:
    """[class name, hyperparameters] of an optimizer."""
    return [type(optimizer).__name__,
            asdict(optimizer) if is_dataclass(optimizer) else repr(optimizer)]


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Example indices of batch ``step`` (from 0): consecutive slices of per-epoch permutations.

    A pure function of its arguments, so a resumed run draws the same batches.
    """
    per_epoch = max(n // batch_size, 1)
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, 1, epoch]).permutation(n)
    return order[k * batch_size:(k + 1) * batch_size]


def run_fingerprint(policy: PrecisionPolicy, model: MLPConfig, config: TrainConfig,
                    data: Dataset) -> dict:
    """What a checkpoint must match to be resumed: everything that shapes the run, as plain
    Python values (the History's meta and the checkpoint store it as JSON)."""
    return _plain({"policy": policy.fingerprint(), "model": asdict(model),
                   "train": {**asdict(config),
                             "optimizer": _optimizer_fingerprint(config.optimizer)},
                   "data": data.fingerprint()})


def _plain(value):
    """``value`` with every NumPy scalar replaced by the Python number of the same value
    (np.int64(4) -> 4, np.float32(0.1) -> 0.10000000149011612): the configs accept NumPy
    scalars, which json cannot store."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value.item() if isinstance(value, np.generic) else value


def train(policy: PrecisionPolicy | str, data: Dataset, model: MLPConfig | None = None,
          config: TrainConfig = TrainConfig(), *, scaler: ScalerLike | None = None,
          checkpoint: str | os.PathLike | None = None, resume: str | os.PathLike | None = None,
          stop_after: int | None = None, progress: bool | None = None,
          caster: Callable[..., Caster] = Caster, xp: ModuleType = np) -> History:
    """Train an MLP on ``data`` under ``policy``; returns the :class:`~lowprec.observe.History`.

    policy: a PrecisionPolicy or a preset name ("fp32", "fp16_pure", "fp16_mixed",
        "fp16_mixed_unscaled", "bf16_mixed", "fp8_hybrid", "fp8_hybrid_unscaled"); its
        ``loss_scale`` and ``fp8_recipe`` say how the run scales.
    data: a :class:`lowprec.data.Dataset`.
    model: the MLPConfig; by default DEFAULT_HIDDEN hidden layers, sized to the data. With
        the defaults, pure FP16 visibly flushes early-layer activation gradients within seconds.
    scaler: a loss scaler that replaces the policy's ``loss_scale``: a lowprec.scaling
        LossScaler (its StepRecords, culprit included, go into the History), or any object with
        ``.scale``, ``.update(found_inf)``, ``state_dict()`` and ``load_state_dict()``.
    checkpoint: path to save checkpoints to (every ``config.checkpoint_every`` steps and at the
        end).
    resume: path of a checkpoint to continue from; it must come from the same run (policy,
        model, config, data), or a CheckpointError says what differs.
    stop_after: stop after this many steps in total, as if interrupted (the schedule stays
        ``config.steps``).
    progress: True shows progress, False never; None (the default) shows it when the run looks
        to take more than about 5 s (estimated from its first steps) and someone watches: stderr
        is a terminal or this is a Jupyter kernel. With tqdm installed (``pip install
        lowprec[lab]``) it is a tqdm.auto bar (a widget in Jupyter); without, a text bar on a
        terminal, or a line every few seconds in a notebook. Display only: the History is the same.
    caster: how the steps round: a Caster class or factory, as :class:`Trainer` takes it (e.g.
        the GPU backend's); ``xp`` the array namespace it works in (NumPy, or CuPy).
    Same arguments, same seed: the same History, bit for bit.

    Raises LossScaleAtMinimumError where DeepSpeed's rule stops the run; the History up to
    then is attached to the error as ``error.history``.
    """
    policy = get_policy(policy)
    if model is None:
        model = MLPConfig(sizes=(data.n_features, *DEFAULT_HIDDEN, data.n_outputs),
                          loss="cross_entropy" if data.task == "classification" else "mse")
    if model.sizes[0] != data.n_features or model.sizes[-1] != data.n_outputs:
        raise ValueError(f"model sizes {model.sizes} do not fit the data: {data.n_features} "
                         f"features in, {data.n_outputs} outputs")
    fingerprint = run_fingerprint(policy, model, config, data)
    trainer = Trainer(policy, model, config.optimizer, seed=config.seed, scaler=scaler,
                      caster=caster, xp=xp)
    history = History(trainer.model.layers, CAST_POINTS, meta=json.loads(json.dumps(fingerprint)))
    if resume is not None:
        history = load_checkpoint(resume, trainer, fingerprint)
    end = config.steps if stop_after is None else min(stop_after, config.steps)
    bar = Progress(end, progress, start=trainer.steps_done)
    try:
        _loop(trainer, history, data, config, end, fingerprint, checkpoint, bar)
    finally:
        bar.close()  # also on an error: a tqdm widget left open would keep counting
    return history


def _loop(trainer, history, data, config, end, fingerprint, checkpoint, bar):
    """train()'s steps from ``trainer.steps_done`` to ``end``, recorded into ``history``."""
    x_train, y_train = data.x_train, data.y_train
    while trainer.steps_done < end:
        s = trainer.steps_done
        idx = batch_indices(len(x_train), config.batch_size, config.seed, s)
        observe = config.observe_every > 0 and s % config.observe_every == 0
        try:
            record = trainer.step(x_train[idx], y_train[idx], observe=observe)
        except LossScaleAtMinimumError as err:  # DeepSpeed stops here; keep what was learnt
            err.history = history
            raise
        fp8 = record.pop("fp8")
        history.record_step(**record)
        if fp8 is not None:
            history.record_fp8(record["step"], fp8)
        if observe:
            history.record_observation(record["step"], trainer.observer)
        step = trainer.steps_done
        if (config.eval_every and step % config.eval_every == 0) or step == config.steps:
            train_loss, train_acc = trainer.evaluate(x_train[:2048], y_train[:2048])
            test_loss, test_acc = trainer.evaluate(data.x_test, data.y_test)
            history.record_eval(eval_step=step, train_loss=train_loss, train_accuracy=train_acc,
                                test_loss=test_loss, test_accuracy=test_acc)
        every = config.checkpoint_every
        if checkpoint is not None and ((every and step % every == 0) or step == end):
            save_checkpoint(checkpoint, trainer, history, fingerprint)
        bar.show(step, record["loss"])
