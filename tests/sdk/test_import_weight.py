from tests.support import heavy_modules_after


def test_import_sdk_loads_no_ml_framework() -> None:
    assert heavy_modules_after("import sdk") == []


def test_tandem_cli_loads_no_ml_framework_until_a_command_needs_it() -> None:
    # `tandem --help` and the command tree must work on a device that has only the `edge` extra.
    assert heavy_modules_after("import tandem.cli") == []
