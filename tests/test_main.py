"""Quick end-to-end checks of the public surface (details live in the other test modules)."""
import lowprec


def test_public_names():
    for name in ["FP32", "TF32", "FP16", "BF16", "E4M3", "E5M2", "FloatFormat", "round",
                 "encode", "decode"]:
        assert hasattr(lowprec, name)


def test_double_rounding_trap_bf16():
    # float32 turns it into an exact bf16 tie (1 + 2**-8); rounded once it is 1 + 2**-7
    x = 1 + 2.0**-8 + 2.0**-30
    assert lowprec.round(x, "bf16") == 1.0078125


def test_formats_command_prints_every_preset(capsys):
    from lowprec.__main__ import main

    assert main(["formats"]) == 0
    out = capsys.readouterr().out
    for fmt in lowprec.FORMATS.values():
        assert fmt.name in out
    assert "448" in out and "57344" in out and "65504" in out
