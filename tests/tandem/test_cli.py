import subprocess
import sys
from pathlib import Path

from tandem import __version__
from tests.support import REPO, invoke


def test_help_lists_the_command_groups() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("export", "cloud", "demo", "version"):
        assert command in result.output


def test_version_is_the_distribution_version() -> None:
    result = invoke("version")
    assert result.stdout.strip() == __version__


def test_console_script_is_installed() -> None:
    tandem = Path(sys.executable).parent / "tandem"
    done = subprocess.run([tandem, "--help"], capture_output=True, text=True, check=True)
    assert "export" in done.stdout


def test_missing_extra_names_the_install_command(tmp_path: Path) -> None:
    # As on a device with only the `edge` extra: torch cannot be imported.
    script = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        f"sys.argv = ['tandem', 'demo', '--cache-dir', {str(tmp_path)!r}]\n"
        "from tandem.cli import main; main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2, done.stderr
    assert "pip install 'tandem-inference[export]'" in done.stderr
    assert "Traceback" not in done.stderr
