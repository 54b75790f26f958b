"""What `pip install .` puts into site-packages: one namespace, ``loopline``, with its
manifests and migrations as package data, and no generic top-level names."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    [built] = out.glob("loopline-*.whl")
    return built


def test_the_wheel_holds_one_namespace_and_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "loopline",
        f"{wheel.name.split('-py')[0]}.dist-info",
    }
    assert "loopline/infra/k8s/base/kustomization.yaml" in names
    assert "loopline/infra/k8s/base/prefect/base-job-template.json" in names
    assert "loopline/storage/migrations/versions/0001_platform_state.py" in names
    assert not any(n.startswith("loopline/infra/docker") for n in names)


def test_installed_alone_it_finds_its_data_and_nothing_generic(wheel, tmp_path):
    """A fresh venv with the wheel and nothing else: the package data resolves through
    importlib.resources, and `import components` fails as it should."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-I", "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    probe = (
        "from loopline.core.package import data, installed_root\n"
        "assert (data('infra', 'k8s', 'overlays') / 'production' / 'kustomization.yaml').is_file()\n"
        "assert (data('storage', 'migrations') / 'env.py').is_file()\n"
        "assert 'site-packages' in str(installed_root())\n"
        "import importlib.util\n"
        "print([m for m in ('components', 'pipelines', 'serving', 'monitoring') "
        "if importlib.util.find_spec(m)])\n"
    )
    found = subprocess.run(  # -I: no PYTHONPATH and no checkout on the path
        [str(python), "-I", "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"
