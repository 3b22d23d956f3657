"""lowprec.cdna against MMA-Sim's own AMD simulator (microsoft/MMA-Sim, mmasim/simulator/amd.py,
arXiv:2511.10909), run as published on random and adversarial 16 x 16 MFMA operands.

Optional: needs torch and a checkout of MMA-Sim (not part of lowprec); point the environment
variable LOWPREC_MMASIM at the directory that holds its ``mmasim`` package, e.g.
``git clone https://github.com/microsoft/MMA-Sim /tmp/mmasim; LOWPREC_MMASIM=/tmp/mmasim``.
MMA-Sim's CDNA1/2 path (``pairwise_dot``) asserts float32 operands while ``mfma`` passes it
FP16/BF16 slices, so those presets are compared in a ``python -O`` subprocess (assertions off).
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_cdna import operands, same_bits, with_specials

from lowprec import cdna

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.torch, pytest.mark.exhaustive]  # about 5 s each
MMASIM = os.environ.get("LOWPREC_MMASIM")
if not (MMASIM and os.path.isdir(os.path.join(MMASIM, "mmasim"))):
    pytest.skip("set LOWPREC_MMASIM to a checkout of microsoft/MMA-Sim", allow_module_level=True)

# preset -> (architecture, MFMA qualifier, its K) in MMA-Sim (mmasim/isa/amd.py)
INSTRUCTIONS = {
    "CDNA1_FP16": ("CDNA1", "f32_16x16x16f16", 16), "CDNA1_BF16": ("CDNA1", "f32_16x16x8bf16", 8),
    "CDNA2_FP16": ("CDNA2", "f32_16x16x16f16", 16),
    "CDNA2_BF16": ("CDNA2", "f32_16x16x16bf16_1k", 16),
    "CDNA3_FP16": ("CDNA3", "f32_16x16x16_f16", 16),
    "CDNA3_BF16": ("CDNA3", "f32_16x16x16_bf16", 16),
    "CDNA3_XF32": ("CDNA3", "f32_16x16x8_xf32", 8),
    "CDNA3_FP8": ("CDNA3", "f32_16x16x32_fp8_fp8", 32),
    "CDNA3_BF8": ("CDNA3", "f32_16x16x32_bf8_bf8", 32),
    "CDNA3_FP8_BF8": ("CDNA3", "f32_16x16x32_fp8_bf8", 32),
    "CDNA3_BF8_FP8": ("CDNA3", "f32_16x16x32_bf8_fp8", 32),
}
KINDS = ["narrow", "wide", "full", "subnormal", "tiny", "huge", "cancel", "specials"]

# Runs one MFMA per saved case in MMA-Sim: a, b, c (float64) in, d out.
RUN = textwrap.dedent("""
    import sys, numpy as np, torch
    sys.path.insert(0, sys.argv[1])
    from mmasim.simulator.amd import mfma
    op = mfma(sys.argv[2], sys.argv[3])
    cases = np.load(sys.argv[4])
    out = [op(torch.tensor(a).to(op.a_type), torch.tensor(b).to(op.b_type),
              torch.tensor(c, dtype=torch.float32)).double().numpy()
           for a, b, c in zip(cases["a"], cases["b"], cases["c"])]
    np.save(sys.argv[5], np.stack(out))
""")


def cases(model, k):
    rng = np.random.default_rng([17, len(model.name), model.group])
    a, b, c = [], [], []
    for kind in KINDS:
        x, y, z = operands(rng, model, "narrow" if kind == "specials" else kind, 16, k, 16)
        if kind == "specials":
            x, y, z = with_specials(rng, x, y, z, model)
        a.append(x), b.append(y), c.append(z)
    return np.stack(a), np.stack(b), np.stack(c)


@pytest.mark.parametrize("name", INSTRUCTIONS)
def test_matches_mmasim(name, tmp_path):
    model = getattr(cdna, name)
    arch, qualifier, k = INSTRUCTIONS[name]
    a, b, c = cases(model, k)
    np.savez(tmp_path / "cases.npz", a=a, b=b, c=c)
    flags = ["-O"] if arch != "CDNA3" else []  # pairwise_dot's float32 assertion (docstring)
    subprocess.run([sys.executable, *flags, "-c", RUN, MMASIM, arch, qualifier,
                    str(tmp_path / "cases.npz"), str(tmp_path / "d.npy")], check=True)
    want = np.load(tmp_path / "d.npy")
    for i in range(len(KINDS)):
        got = cdna.matmul(a[i], b[i], model, c=c[i])
        assert same_bits(got, want[i]), (name, KINDS[i])
