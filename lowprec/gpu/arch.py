"""What each GPU generation can be checked for, chosen by its compute capability.

For every architecture the probe knows, the tensor-core preset each ``mma.sync`` variant is
expected to match (sources at the presets in :mod:`lowprec.tensorcore`), and whether the
``cvt.rs`` stochastic-rounding check and a ``tcgen05.mma`` probe can run. Presets are looked up
by name in ``lowprec.TENSOR_CORES``, so a preset this version of lowprec lacks is reported as
missing instead of failing. Every "cannot" comes with the capability needed and the one found.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from .. import tensorcore

__all__ = ["Architecture", "ARCHITECTURES", "architecture", "expected_presets",
           "cvt_rs_support", "tcgen05_support", "CVT_RS_CAPABILITIES"]

# ptxas (CUDA 13.0) accepts cvt.rs only for the arch-specific targets sm_100a and sm_103a: the
# B200/GB200 and B300/GB300 parts. Consumer Blackwell (sm_120, sm_121) has no cvt.rs at any
# feature level (NVIDIA TransformerEngine PR #3281).
CVT_RS_CAPABILITIES = (100, 103)


@dataclass(frozen=True)
class Architecture:
    """One GPU generation: which presets its mma.sync variants should match."""

    name: str  # e.g. "Ada (sm_89)"
    capabilities: tuple  # compute capabilities as integers, 89 for 8.9
    # mma.sync instruction name (lowprec.gpu.kernels.INSTRUCTIONS) -> preset expected to match
    expected: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    note: str = ""  # what the expectations rest on, or why there are none


def _presets(**by_instruction: str) -> MappingProxyType:
    return MappingProxyType({k.replace("_", "."): v for k, v in by_instruction.items()})


ARCHITECTURES = (
    Architecture("Ampere (sm_80, sm_86, sm_87)", (80, 86, 87),
                 _presets(f16_f32="A100_FP16", f16_f16="A100_FP16", bf16_f32="A100_BF16",
                          tf32_f32="A100_TF32"),
                 "Fasi et al. 2021; MMA-Sim (arXiv:2511.10909), A100"),
    Architecture("Ada (sm_89)", (89,),
                 _presets(f16_f32="A100_FP16", f16_f16="A100_FP16", bf16_f32="A100_BF16",
                          tf32_f32="A100_TF32", e4m3_f32="ADA_FP8", e5m2_f32="ADA_FP8"),
                 "FP16/BF16/TF32 as Ampere; FP8 mma.sync m16n8k32 as two halves of 16 with 13 "
                 "fraction bits (MMA-Sim, arXiv:2511.10909)"),
    Architecture("Hopper (sm_90)", (90,),
                 _presets(f16_f32="H100_FP16", f16_f16="H100_FP16", bf16_f32="H100_BF16",
                          tf32_f32="H100_TF32"),
                 "FP8 mma.sync has no model: ptxas lowers it to FP16 HMMAs plus an FADD, and "
                 "H100_FP8 models wgmma"),
    Architecture("Blackwell datacenter (sm_100, sm_103)", (100, 103),
                 _presets(f16_f32="B200_FP16", f16_f16="B200_FP16", bf16_f32="B200_BF16",
                          tf32_f32="B200_TF32", e4m3_f32="B200_FP8", e5m2_f32="B200_FP8"),
                 "the B200 presets model tcgen05.mma (MMA-Sim); that the legacy mma.sync "
                 "shares its arithmetic is an expectation the probe tests, not a published fact"),
)


def architecture(compute_capability: int) -> Architecture | None:
    """The known architecture of a compute capability (e.g. 89 for 8.9), or None."""
    _check_capability(compute_capability)
    return next((a for a in ARCHITECTURES if compute_capability in a.capabilities), None)


def expected_presets(compute_capability: int) -> dict:
    """``{instruction: preset name}`` the device should match, with ``{instruction: reason}`` in
    ``"missing"`` for presets named but absent from ``lowprec.TENSOR_CORES``."""
    arch = architecture(compute_capability)
    if arch is None:
        return {"expected": {}, "missing": {},
                "note": f"no expectations for compute capability {_show(compute_capability)}: "
                        f"known are {', '.join(a.name for a in ARCHITECTURES)}"}
    expected, missing = {}, {}
    for instr, preset in arch.expected.items():
        if tensorcore.TENSOR_CORES.get(preset) is None:
            missing[instr] = (f"preset {preset} is not in lowprec.TENSOR_CORES in this version: "
                              f"{instr} on {arch.name} is compared with the presets there are")
        else:
            expected[instr] = preset
    return {"expected": expected, "missing": missing, "note": f"{arch.name}: {arch.note}"}


def cvt_rs_support(compute_capability: int) -> tuple[bool, str]:
    """(supported, why): whether this device has PTX ``cvt.rs``."""
    _check_capability(compute_capability)
    if compute_capability in CVT_RS_CAPABILITIES:
        return True, (f"compute capability {_show(compute_capability)}: cvt.rs built for "
                      f"sm_{compute_capability}a")
    need = " or ".join(_show(c) for c in CVT_RS_CAPABILITIES)
    return False, (f"cvt.rs needs compute capability {need} (sm_100a/sm_103a: B200, B300); "
                   f"this device has {_show(compute_capability)}")


def tcgen05_support(compute_capability: int) -> tuple[bool, str]:
    """(runnable, why): the tcgen05.mma probe. Not built in this version, so never runnable;
    the reason says what it would need."""
    _check_capability(compute_capability)
    found = f"this device has compute capability {_show(compute_capability)}"
    if compute_capability not in (100, 103):
        return False, ("tcgen05.mma (the B200_* presets) needs compute capability 10.0 or 10.3 "
                       f"(sm_100a/sm_103a); {found}")
    return False, ("tcgen05.mma probe kernels (tensor memory, shared-memory descriptors) are "
                   f"not part of lowprec yet; {found}, so the B200_* presets are compared with "
                   "mma.sync only")


def _check_capability(cc) -> None:
    if isinstance(cc, bool) or not isinstance(cc, int) or not 10 <= cc < 1000:
        raise ValueError(f"compute capability must be an int such as 89 for 8.9, got {cc!r}")


def _show(cc: int) -> str:
    return f"{cc // 10}.{cc % 10}"
