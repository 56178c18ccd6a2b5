from tests.support import heavy_modules_after


def test_import_edge_runtime_loads_no_ml_framework() -> None:
    assert heavy_modules_after("import edge_runtime") == []
