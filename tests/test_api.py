"""The public API says each thing one way: argument order ``(x, fmt, mode)`` everywhere, a
rounding mode accepted as a RoundingMode or its string wherever one is taken, and type hints on
every public function and method."""
import importlib
import inspect
import pkgutil

import numpy as np
import pytest

import lowprec
from lowprec import RoundingMode, arith, bits, reference, scaling, tensorcore
from lowprec.nn import Cast
from lowprec.rounding import as_mode

MODULES = ["lowprec", "lowprec.formats", "lowprec.rounding", "lowprec.bits", "lowprec.arith",
           "lowprec.tensorcore", "lowprec.reference", "lowprec.scaling", "lowprec.nn",
           "lowprec.observe", "lowprec.data", "lowprec.plots"]
FORMAT_PARAMETERS = ("fmt", "format")
OPERANDS = {"x", "a", "b", "c", "value", "codes", "x32", "amax", "block_amax", "elements"}
KEYWORD_ONLY = inspect.Parameter.KEYWORD_ONLY


def public_callables():
    """(qualified name, function) for every public function, class and public method."""
    found = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        # (observe.py has no __all__ yet: its public names are those defined there)
        names = getattr(module, "__all__", None) or [
            n for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == module_name]
        for name in names:
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                found.setdefault(obj, f"{module_name}.{name}")
            elif (inspect.isclass(obj) and obj.__module__.startswith("lowprec")
                  and not issubclass(obj, Exception)):
                found.setdefault(obj, f"{module_name}.{name}")
                for method_name, method in inspect.getmembers(obj, inspect.isfunction):
                    if not method_name.startswith("_"):
                        found.setdefault(method, f"{module_name}.{name}.{method_name}")
    return [(name, f) for f, name in found.items()]


def parameters(f):
    return [p for p in inspect.signature(f).parameters.values() if p.name not in ("self", "cls")]


def test_the_walk_sees_the_public_api():
    names = {name for name, _ in public_callables()}
    assert {"lowprec.round", "lowprec.encode", "lowprec.arith.fma", "lowprec.arith.sum",
            "lowprec.reference.round_exact", "lowprec.tensorcore.dot", "lowprec.nn.Cast"} <= names


@pytest.mark.parametrize("name, f", public_callables(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_argument_order_is_x_fmt_mode(name, f):
    params = parameters(f)
    names = [p.name for p in params]
    fmt = next((i for i, n in enumerate(names) if n in FORMAT_PARAMETERS), None)
    if fmt is None:  # a mode is keyword-only, or what the function converts (as_mode)
        keyword_only = "mode" in names and params[names.index("mode")].kind is KEYWORD_ONLY
        assert "mode" not in names[1:] or keyword_only, \
            f"{name}: a positional mode without a format before it"
        return
    assert set(names[:fmt]) <= OPERANDS, f"{name}: only operands come before the format: {names}"
    if "mode" in names:
        mode = names.index("mode")
        assert mode == fmt + 1, f"{name}: mode must follow the format directly: {names}"
        assert params[mode].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, name
        assert params[mode].default == "nearest", name


# Every public callable that takes a mode, called with it: each must give the same with the
# RoundingMode as with its string. The value rounded up, 1 + 2**-12, is 1 + 2**-10 in FP16
# (NumPy's nextafter is the outside reference).
X = 1 + 2.0**-12
FP16_UP = float(np.nextafter(np.float16(1), np.float16(2)))
FP16_ACC = lowprec.FormatAccumulation("fp16")  # 1 + 2**-12 summed into FP16, rounded up


def deprecated(call):
    """``call`` of a name kept for one release: it must still work, and warn."""
    def run(mode):
        with pytest.deprecated_call():
            return call(mode)
    return run


MODE_CALLS = {
    "lowprec.round": lambda m: lowprec.round(X, "fp16", m),
    "lowprec.encode": lambda m: bits.decode(bits.encode(X, "fp16", m), "fp16"),
    "lowprec.to_ml_dtypes": lambda m: float(bits.to_ml_dtypes(X, "fp16", m)),
    "lowprec.classify": lambda m: bits.classify(2.0**-25, "fp16", m) == "subnormal" and FP16_UP,
    "lowprec.arith.add": lambda m: arith.add(1.0, 2.0**-12, "fp16", m),
    "lowprec.arith.sub": lambda m: arith.sub(1.0, -(2.0**-12), "fp16", m),
    "lowprec.arith.mul": lambda m: arith.mul(X, 1.0, "fp16", m),
    "lowprec.arith.div": lambda m: arith.div(X, 1.0, "fp16", m),
    "lowprec.arith.fma": lambda m: arith.fma(X, 1.0, 0.0, "fp16", m),
    "lowprec.arith.sqrt": lambda m: arith.sqrt(X * X, "fp16", m),
    "lowprec.arith.neg": lambda m: -arith.neg(X, "fp16", type(m)("down")),  # -(-X rounded down)
    "lowprec.arith.abs": lambda m: arith.abs(-X, "fp16", m),
    "lowprec.arith.sum": deprecated(lambda m: arith.sum(np.array([1.0, 2.0**-12]), "fp16", m)),
    "lowprec.arith.dot": deprecated(lambda m: arith.dot([1.0, 2.0**-12], [1.0, 1.0], output="fp16",
                                                        mode=m)),
    "lowprec.arith.matmul": deprecated(lambda m: arith.matmul([[X]], [[1.0]], output="fp16",
                                                              mode=m)[0, 0]),
    "lowprec.sum": lambda m: lowprec.sum(np.array([1.0, 2.0**-12]), "fp16", m),
    "lowprec.dot": lambda m: lowprec.dot([1.0, 2.0**-12], [1.0, 1.0], output="fp16", mode=m),
    "lowprec.matmul": lambda m: lowprec.matmul([[X]], [[1.0]], output="fp16", mode=m)[0, 0],
    "lowprec.FormatAccumulation.sum": lambda m: FP16_ACC.sum(np.array([1.0, 2.0**-12]), mode=m),
    "lowprec.FormatAccumulation.dot": lambda m: FP16_ACC.dot([1.0, 2.0**-12], [1.0, 1.0], mode=m),
    "lowprec.FormatAccumulation.matmul": lambda m: FP16_ACC.matmul([[X]], [[1.0]], mode=m)[0, 0],
    "lowprec.TensorCoreModel.sum": lambda m: tensorcore.H100_FP16.sum([1.0, 2.0**-11],
                                                                      output="fp16", mode=m),
    "lowprec.TensorCoreModel.dot": lambda m: tensorcore.H100_FP16.dot([1.0, 2.0**-11], [1.0, 1.0],
                                                                      output="fp16", mode=m),
    "lowprec.TensorCoreModel.matmul": lambda m: tensorcore.H100_FP16.matmul(
        [[1.0, 2.0**-11]], [[1.0], [1.0]], output="fp16", mode=m)[0, 0],
    "lowprec.reference.round_exact": lambda m: reference.round_exact(X, "fp16", m),
    "lowprec.rounding.as_mode": lambda m: as_mode(m) is RoundingMode.UP and FP16_UP,
    "lowprec.nn.Cast": lambda m: Cast("fp16", m).mode == "up" and FP16_UP,
    # 1 + 2**-4 in a block of one: X = 2**-8 (floor rule), 272 lies between E4M3's 256 and 288
    "lowprec.scaling.block_quantize": lambda m: scaling.block_quantize(
        [1 + 2**-4], "e4m3", m, block=1, scale_format="e8m0", rule="floor")[0][0] == 1.125
        and FP16_UP,
    "lowprec.scaling.block_cast": lambda m: scaling.block_cast(
        [1 + 2**-4], "e4m3", m, block=1, scale_format="e8m0", rule="floor")[0].elements[0] == 288
        and FP16_UP,
    "lowprec.TensorCoreModel": lambda m: tensorcore.TensorCoreModel(
        "t", lowprec.FP16, 4, 23, output_rounding=m).output_rounding == "up" and FP16_UP,
}


def test_every_mode_taking_callable_is_checked():
    takes_mode = {name for name, f in public_callables()
                  if {"mode", "output_rounding"} & {p.name for p in parameters(f)}}
    assert takes_mode == set(MODE_CALLS), takes_mode ^ set(MODE_CALLS)


@pytest.mark.parametrize("name", MODE_CALLS)
def test_modes_are_accepted_as_rounding_mode_or_string(name):
    call = MODE_CALLS[name]
    assert float(call("up")) == float(call(RoundingMode.UP)) == FP16_UP


def test_old_positional_axis_of_sum_is_refused_clearly():
    with pytest.raises(TypeError, match=r"third argument is the rounding mode.*axis=0"):
        lowprec.sum(np.ones((2, 2)), "fp32", 0)


# --- type hints on every public function and method ------------------------------------------
def public_modules():
    """Every module of lowprec without a leading underscore in its path, lowprec.gpu included
    (it imports without CuPy: only its functions that reach the device need it)."""
    names = ["lowprec"] + [m.name for m in pkgutil.walk_packages(lowprec.__path__, "lowprec.")
                           if not any(part.startswith("_") for part in m.name.split(".")[1:])]
    return [importlib.import_module(name) for name in names]


def defined_functions():
    """(qualified name, function) for every public function of a public module and every
    public method (and ``__init__``) of its public classes, inherited ones included, that
    lowprec itself defines; properties count by their getter."""
    found = {}
    for module in public_modules():
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                found.setdefault(obj, f"{module.__name__}.{name}")
            elif inspect.isclass(obj):
                for attr, member in inspect.getmembers(obj):
                    if attr.startswith("_") and attr != "__init__":
                        continue
                    function = member.fget if isinstance(member, property) else member
                    if (inspect.isfunction(function)
                            and function.__module__.startswith("lowprec")):
                        found.setdefault(function, f"{module.__name__}.{name}.{attr}")
    return [(name, f) for f, name in found.items()]


def missing_annotations(f) -> list:
    """The parameters of f (not self or cls) without an annotation, and "return" where f has
    no return annotation (``__init__`` returns None by definition). *args and **kwargs must be
    annotated too (with the type of each item)."""
    annotated = f.__annotations__  # strings under `from __future__ import annotations`
    missing = [p.name for p in inspect.signature(f).parameters.values()
               if p.name not in ("self", "cls") and p.name not in annotated]
    if "return" not in annotated and f.__name__ != "__init__":
        missing.append("return")
    return missing


def test_the_hint_walk_sees_every_module_and_inherited_methods():
    modules = {m.__name__ for m in public_modules()}
    assert {"lowprec.gpu", "lowprec.gpu.probe", "lowprec.nn.layers", "lowprec.lab",
            "lowprec.scaling.mx", "lowprec.accumulate"} <= modules
    assert not any("._" in name for name in modules)
    names = {name for name, _ in defined_functions()}
    # an inherited public method (FormatAccumulation.matmul comes from a private base), a
    # property, a staticmethod and a GPU-only function
    assert {"lowprec.accumulate.FormatAccumulation.matmul", "lowprec.formats.FloatFormat.max",
            "lowprec.nn.layers.ReLU.forward", "lowprec.gpu.probe.bit_agreement"} <= names


def test_missing_annotations_finds_each_gap():
    def bare(x, *values, fmt: str = "fp16", **options):
        return x

    def hinted(x: int, *values: float, **options: bool) -> int:
        return x

    assert missing_annotations(bare) == ["x", "values", "options", "return"]
    assert missing_annotations(hinted) == []


def test_every_public_function_has_type_hints():
    gaps = {name: missing for name, f in defined_functions()
            if (missing := missing_annotations(f))}
    assert not gaps, gaps
