"""The INT4 size budget on the ~100M-parameter benchmark model: at most 0.36x an F16 copy of the weights."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_int4_of_the_bench_model_fits_the_size_budget(tmp_path_factory) -> None:
    from export.onnx.bench import INT4_SIZE_BUDGET, measure_int4_size

    result = measure_int4_size(tmp_path_factory.mktemp("bench-toys"), work_dir=tmp_path_factory.mktemp("bench-onnx"))

    assert result["parameters"] > 90_000_000
    assert result["ratio_files_vs_f16"] <= INT4_SIZE_BUDGET, result
    assert result["ratio_weights_vs_f16"] <= result["ratio_files_vs_f16"]
    assert result["fp32_conversion_max_logit_diff"] < 1e-3
