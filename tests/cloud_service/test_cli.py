from tests.support import invoke


def test_describe_lists_every_rpc_of_the_wire_contract() -> None:
    result = invoke("cloud", "describe")
    assert result.exit_code == 0, result.output
    for name in ("tandem.v1.Inference", "Generate", "stream GenerateChunk", "Abort", "GetLoad", "ListModels",
                 "tandem.v1.ModelDistribution", "GetManifest", "DownloadBundle", "stream BundleChunk"):
        assert name in result.output
