"""lowprec's optimizers against torch.optim on the CPU, bit for bit, given the same gradients.

torch.optim's CPU path is the single-tensor for-loop (``_single_tensor_sgd`` in
torch/optim/sgd.py, ``_single_tensor_adam`` in torch/optim/adam.py). Parameters and gradients
spread over many binades (subnormal moments included), several steps, and a length that is no
multiple of the SIMD width, so that torch's vector loop and its scalar tail both take part.

torch's float32 ``sqrt`` on the CPU is MKL's ``vmsSqrt``, which need not be correctly rounded
(see lowprec/nn/optim.py); the Adam tests therefore run torch with ``Tensor.sqrt`` computed in
float64 and rounded to float32, which is correctly rounded (53 >= 2 * 24 + 2: Figueroa, "When
is double rounding innocuous?", SIGNUM Newsletter 30(3), 1995), and one test uses torch as it
is, comparing wherever its square root was correctly rounded.
"""
import numpy as np
import pytest

from lowprec.nn.optim import SGD, Adam, AdamW

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

N = 1000 + 13  # a scalar tail after every SIMD width (8, 16)
STEPS = 6


def spread(rng, low, high, n=N):
    """Random float32 values, signs mixed, exponents uniform in [low, high), a few exact zeros
    of both signs."""
    x = rng.standard_normal(n) * 2.0 ** rng.integers(low, high, n)
    x[rng.random(n) < 0.01] = 0.0
    x[rng.random(n) < 0.01] = -0.0
    return x.astype(np.float32)


def bits(x):
    return np.asarray(x, np.float32).view(np.int32)


def torch_run(make, w0, grads, buffers):
    """Params and named state buffers after each step of a torch optimizer (defaults: CPU)."""
    torch.set_num_threads(1)
    param = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    opt = make([param])
    out = []
    for g in grads:
        param.grad = torch.from_numpy(g.copy())
        opt.step()
        state = opt.state[param]
        out.append((param.detach().numpy().copy(),
                    {ours: state[theirs].numpy().copy() for ours, theirs in buffers.items()}))
    return out


def ours_run(opt, w0, grads):
    w, state, out = w0.copy(), opt.init_state(w0, np), []
    for step, g in enumerate(grads, start=1):
        w, _, state = opt.apply(w, g, state, step, lambda s: s)
        out.append((w, state))
    return out


def assert_same_bits(ours, theirs, buffers):
    for step, ((w, state), (w_ref, state_ref)) in enumerate(zip(ours, theirs), start=1):
        for name in buffers:
            same = bits(state[name]) == bits(state_ref[name])
            assert same.all(), f"step {step} {name}: {np.mean(same):.2%} bit-identical"
        same = bits(w) == bits(w_ref)
        assert same.all(), f"step {step} params: {np.mean(same):.2%} bit-identical"


SGD_CASES = {
    "plain": (dict(lr=0.1, momentum=0.0), {}),
    "momentum 0.9": (dict(lr=0.1, momentum=0.9), {"velocity": "momentum_buffer"}),
    "nesterov, weight decay, odd lr": (dict(lr=0.0123, momentum=0.9, nesterov=True,
                                            weight_decay=1e-3),
                                       {"velocity": "momentum_buffer"}),
    "dampening": (dict(lr=0.05, momentum=0.8, dampening=0.3), {"velocity": "momentum_buffer"}),
}


@pytest.mark.parametrize("case", SGD_CASES)
def test_sgd_matches_torch_bit_for_bit(case):
    kwargs, buffers = SGD_CASES[case]
    rng = np.random.default_rng(list(SGD_CASES).index(case))
    w0 = spread(rng, -30, 30)
    grads = [spread(rng, -40, 20) for _ in range(STEPS)]
    theirs = torch_run(lambda p: torch.optim.SGD(p, **kwargs), w0, grads, buffers)
    assert_same_bits(ours_run(SGD(**kwargs), w0, grads), theirs, buffers)


ADAM_BUFFERS = {"m": "exp_avg", "v": "exp_avg_sq"}
ADAM_CASES = {
    "adam": (Adam, lambda p: torch.optim.Adam(p), {}),
    "adam, odd hyperparameters": (Adam,
                                  lambda p: torch.optim.Adam(p, lr=3e-3, betas=(0.8, 0.99),
                                                             eps=1e-6),
                                  dict(lr=3e-3, beta1=0.8, beta2=0.99, eps=1e-6)),
    "adam, beta1 >= 0.5 (lerp's other form)": (Adam,
                                               lambda p: torch.optim.Adam(p, betas=(0.3, 0.999)),
                                               dict(beta1=0.3)),
    "adam, L2 weight decay": (Adam, lambda p: torch.optim.Adam(p, weight_decay=1e-2),
                              dict(weight_decay=1e-2)),
    "adamw": (AdamW, lambda p: torch.optim.AdamW(p), {}),
    "adamw, strong decay": (AdamW, lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.3),
                            dict(lr=1e-2, weight_decay=0.3)),
}


def correctly_rounded_sqrt(self):
    return torch.sqrt(self.double()).to(self.dtype)


@pytest.mark.parametrize("case", ADAM_CASES)
def test_adam_matches_torch_bit_for_bit(case, monkeypatch):
    ours_type, make, kwargs = ADAM_CASES[case]
    rng = np.random.default_rng(10 + list(ADAM_CASES).index(case))
    w0 = spread(rng, -30, 10)
    grads = [spread(rng, -70, 20) for _ in range(STEPS)]  # (1 - beta2) g**2 down to subnormals
    monkeypatch.setattr(torch.Tensor, "sqrt", correctly_rounded_sqrt)
    theirs = torch_run(make, w0, grads, ADAM_BUFFERS)
    assert_same_bits(ours_run(ours_type(**kwargs), w0, grads), theirs, ADAM_BUFFERS)


def test_adam_matches_unmodified_torch_wherever_its_sqrt_is_correctly_rounded():
    """Plain Adam (the weights do not feed the moments): the moments bit for bit, and every
    weight whose ``sqrt(exp_avg_sq)`` torch rounded correctly at every step."""
    rng = np.random.default_rng(20)
    w0 = spread(rng, -30, 10)
    grads = [spread(rng, -70, 20) for _ in range(STEPS)]
    theirs = torch_run(lambda p: torch.optim.Adam(p), w0, grads, ADAM_BUFFERS)
    ours = ours_run(Adam(), w0, grads)
    sqrt_ok = np.ones(N, bool)
    for step, ((w, state), (w_ref, state_ref)) in enumerate(zip(ours, theirs), start=1):
        for name in ADAM_BUFFERS:
            assert np.array_equal(bits(state[name]), bits(state_ref[name])), (step, name)
        v = torch.from_numpy(state_ref["v"])
        sqrt_ok &= bits(v.sqrt().numpy()) == bits(correctly_rounded_sqrt(v).numpy())
        assert np.array_equal(bits(w)[sqrt_ok], bits(w_ref)[sqrt_ok]), step
    print("torch's float32 sqrt correctly rounded at every step for "
          f"{np.mean(sqrt_ok):.1%} of weights")
    assert sqrt_ok.mean() > 0.25  # the comparison covers a good share
