"""sczarr installed as a user installs it: a wheel in a fresh virtual environment, used from elsewhere.

The wheel is built from this checkout and installed without dependencies into a new venv whose
only other path is this environment's site-packages (for numpy, zarr, torch...). That path is
added as a plain path, so the checkout's editable install (a ``.pth`` hook) is not active there:
every ``scdata``/``scmodel`` module must come from the wheel, and anything read at run time
(the DeepSpeed JSON configs) must be package data.
"""

import os
import subprocess
import sys
import sysconfig
import venv

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args: list[str], cwd: str, **kwargs) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[str, str]:
    """(the fresh venv's bin directory, a working directory outside the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheels = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(wheels), ROOT], cwd=str(tmp))
    (wheel,) = [str(p) for p in wheels.glob("sczarr-*.whl")]
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=str(tmp)).strip()
    with open(os.path.join(site, "zz_dependencies.pth"), "w") as f:  # plain paths only: no editable hook runs
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", wheel], cwd=str(tmp))
    work = tmp / "elsewhere"
    work.mkdir()
    return str(env_dir / "bin"), str(work)


def test_modules_come_from_the_wheel(installed):
    bin_dir, work = installed
    out = _run(
        [
            os.path.join(bin_dir, "python"),
            "-c",
            "import scdata, scmodel, scdata.store.layout, scmodel.engines.deepspeed as d; print(scdata.__file__); print(scmodel.__file__)",
        ],
        cwd=work,
    )
    assert all(ROOT not in line and "site-packages" in line for line in out.splitlines()), out


def test_commands_answer_help(installed):
    bin_dir, work = installed
    assert "ingest" in _run([os.path.join(bin_dir, "scdata"), "--help"], cwd=work)
    assert "--config" in _run([os.path.join(bin_dir, "python"), "-m", "scmodel.train", "--help"], cwd=work)


def test_deepspeed_configs_are_package_data(installed):
    bin_dir, work = installed
    out = _run(
        [
            os.path.join(bin_dir, "python"),
            "-c",
            "import importlib.resources as r, json; "
            "files = sorted(p.name for p in r.files('scmodel.configs').iterdir() if p.name.endswith('.json')); "
            "[json.loads(r.files('scmodel.configs').joinpath(n).read_text()) for n in files]; print(files)",
        ],
        cwd=work,
    )
    assert "ds_moe17b.json" in out and "ds_cpu_tiny.json" in out


def test_a_tiny_ingest_from_another_directory(installed):
    bin_dir, work = installed
    python = os.path.join(bin_dir, "python")
    _run(
        [
            os.path.join(bin_dir, "scdata"),
            "demo-bucket",
            "bucket",
            "--experiments",
            "2",
            "--genes",
            "400",
            "--min-cells",
            "100",
            "--max-cells",
            "150",
        ],
        cwd=work,
    )
    _run(
        [
            os.path.join(bin_dir, "scdata"),
            "ingest",
            "--source",
            "bucket/scbasecount/2026-01-12",
            "--store",
            "store.zarr",
            "--cell-count",
            "1000",
            "--workers",
            "1",
            "--no-progress",
        ],
        cwd=work,
    )
    out = _run(
        [
            python,
            "-c",
            "import scdata; ds = scdata.open_store('store.zarr'); "
            "print(ds.sizes['cell'], ds.sizes['gene'], int(ds.counts.sum().compute()) > 0)",
        ],
        cwd=work,
    )
    cells, genes, nonzero = out.split()
    assert int(cells) >= 200 and int(genes) == 400 and nonzero == "True"
