"""The name -> object registries FORMATS, TENSOR_CORES, POLICIES, and the PRESETS they replace."""
import importlib

import ml_dtypes
import numpy as np
import pytest

import lowprec
from lowprec import FORMATS, POLICIES, TENSOR_CORES, FloatFormat, TensorCoreModel
from lowprec.cdna import MFMAModel
from lowprec.nn import PrecisionPolicy


@pytest.mark.parametrize("registry, kind", [(FORMATS, FloatFormat),
                                            (TENSOR_CORES, (TensorCoreModel, MFMAModel)),
                                            (POLICIES, PrecisionPolicy)])
def test_each_registry_maps_a_name_to_what_it_says_and_is_read_only(registry, kind):
    assert registry and all(isinstance(v, kind) and v.name == k for k, v in registry.items())
    with pytest.raises(TypeError):
        registry["mine"] = next(iter(registry.values()))


def test_formats_hold_the_ml_dtypes_values():
    # ml_dtypes' finfo is the outside reference for the formats it has
    for name, dtype in [("fp16", np.float16), ("bf16", ml_dtypes.bfloat16),
                        ("e4m3", ml_dtypes.float8_e4m3fn), ("e5m2", ml_dtypes.float8_e5m2)]:
        assert FORMATS[name].max == float(ml_dtypes.finfo(dtype).max)
        assert FORMATS[name].tiny == float(ml_dtypes.finfo(dtype).smallest_normal)


# module, its old name's replacement, how the old value looked
OLD_NAMES = [
    ("lowprec", "lowprec.FORMATS", lambda: tuple(FORMATS.values())),
    ("lowprec.formats", "lowprec.FORMATS", lambda: tuple(FORMATS.values())),
    ("lowprec.tensorcore", "lowprec.TENSOR_CORES", lambda: dict(TENSOR_CORES)),
    ("lowprec.nn", "lowprec.POLICIES", lambda: dict(POLICIES)),
    ("lowprec.nn.policy", "lowprec.POLICIES", lambda: dict(POLICIES)),
]


@pytest.mark.parametrize("module, replacement, old_value", OLD_NAMES,
                         ids=[m for m, *_ in OLD_NAMES])
def test_old_presets_names_still_work_with_a_warning_naming_the_replacement(module, replacement,
                                                                             old_value):
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{module}\.PRESETS is deprecated.*{replacement}"):
        value = mod.PRESETS
    assert value == old_value() and type(value) is type(old_value())
    with pytest.warns(DeprecationWarning):
        exec(f"from {module} import PRESETS", {})


def test_an_unknown_attribute_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'PRESET'"):
        lowprec.PRESET
    assert not hasattr(lowprec.nn, "FORMATS")
