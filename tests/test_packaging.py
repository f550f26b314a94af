"""Packaging: pyproject.toml is the one source of requirements and says what the code imports.

requirements.txt and environment.yml are generated from it (scripts/sync_requirements.py, `--check`
here and in CI); every third-party module that ``vidseg_nb/`` imports is declared; ``dev`` composes the
other extras; the setuptools floor reads PEP 639's SPDX ``license``; the Space's torch pin, CI's CPU
wheel and this environment satisfy the declared ranges.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "sync_requirements.py"
sys.path.insert(0, str(SCRIPT.parent))
import sync_requirements as sync  # noqa: E402

PYPROJECT = sync.load(ROOT)  # tomllib (tomli on Python 3.10)
CI_TORCH = "2.13.0"  # .ci/run installs this CPU wheel before `pip install -e ".[dev,cluster]"`

# import name -> distribution name, where they differ
IMPORT_TO_DIST = {
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "cv2": "opencv-python-headless",
    "yaml": "pyyaml",
    "imageio_ffmpeg": "imageio-ffmpeg",
    "huggingface_hub": "huggingface-hub",
    "gradio_client": "gradio-client",
}
# distributions that an extra of another one brings: imageio[ffmpeg] -> imageio-ffmpeg
PROVIDED_BY_EXTRA = {"imageio-ffmpeg": ("imageio", "ffmpeg")}
# modules the library imports only behind a guard (a clear error when absent), and the extra declaring them
OPTIONAL_IMPORTS = {"ray": "cluster", "cv2": "authors"}
# runtime dependencies the library does not import itself, and who uses them
INDIRECT = {
    "accelerate": "diffusers' low-memory loading (from_pretrained / from_single_file)",
    "safetensors": "the weight format diffusers and transformers read",
}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def _third_party_imports(folder: Path) -> dict[str, list[str]]:
    """Top-level names of the non-stdlib, non-relative modules imported anywhere under ``folder``."""
    found: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in (
                    "vidseg_nb",
                    "demo",
                    "__future__",
                ):  # own packages
                    found.setdefault(top, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def _declared(reqs: list[str]) -> dict[str, tuple[list[str], str]]:
    """normalized name -> (extras, specifier) of a requirement list."""
    out = {}
    for r in reqs:
        name, extras, spec = sync.parse(r)
        out[sync.normalize(name)] = (extras, spec)
    return out


def _satisfied(dist: str, declared: dict[str, tuple[list[str], str]]) -> bool:
    if dist in declared:
        return True
    if dist in PROVIDED_BY_EXTRA:
        base, extra = PROVIDED_BY_EXTRA[dist]
        return base in declared and extra in declared[base][0]
    return False


def _dist(module: str) -> str:
    return sync.normalize(IMPORT_TO_DIST.get(module, module))


def test_generated_files_match_pyproject():
    res = _run("--check")
    assert res.returncode == 0, f"stale: run `python scripts/sync_requirements.py`\n{res.stdout}{res.stderr}"


def test_check_mode_reports_a_stale_file_with_a_diff(tmp_path):
    for name in ("pyproject.toml", "requirements.txt", "environment.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    assert _run("--check", "--root", str(tmp_path)).returncode == 0
    text = (tmp_path / "pyproject.toml").read_text()
    assert '"tqdm>=4.66,<5"' in text
    (tmp_path / "pyproject.toml").write_text(text.replace('"tqdm>=4.66,<5"', '"tqdm>=4.67,<5"'))
    before = (tmp_path / "requirements.txt").read_text()
    res = _run("--check", "--root", str(tmp_path))
    assert res.returncode == 1
    assert "-tqdm>=4.66,<5" in res.stdout and "+tqdm>=4.67,<5" in res.stdout
    assert "+  - tqdm>=4.67,<5" in res.stdout  # environment.yml too
    assert (tmp_path / "requirements.txt").read_text() == before  # --check writes nothing
    assert _run("--root", str(tmp_path)).returncode == 0
    assert _run("--check", "--root", str(tmp_path)).returncode == 0
    assert "tqdm>=4.67,<5" in (tmp_path / "requirements.txt").read_text()


def test_every_library_import_is_declared():
    deps = _declared(PYPROJECT["project"]["dependencies"])
    imports = _third_party_imports(ROOT / "vidseg_nb")
    assert {"torch", "diffusers", "huggingface_hub"} <= set(imports)  # the walk sees lazy imports too
    missing = {}
    for module, where in imports.items():
        if module in OPTIONAL_IMPORTS:
            extra = _declared(sync.expand_extras(PYPROJECT, [OPTIONAL_IMPORTS[module]]))
            if not _satisfied(_dist(module), extra):
                missing[module] = where
        elif not _satisfied(_dist(module), deps):
            missing[module] = where
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_every_runtime_dependency_is_used_by_the_library():
    """A runtime dependency is imported by vidseg_nb/ or named in INDIRECT (scipy, used by tests and
    benchmarks only, belongs to the `test` extra)."""
    imported = {_dist(m) for m in _third_party_imports(ROOT / "vidseg_nb")}
    imported |= {PROVIDED_BY_EXTRA[d][0] for d in imported if d in PROVIDED_BY_EXTRA}
    unused = set(_declared(PYPROJECT["project"]["dependencies"])) - imported - set(INDIRECT)
    assert not unused, f"runtime dependencies vidseg_nb/ never imports: {sorted(unused)}"
    assert "scipy" in _declared(sync.expand_extras(PYPROJECT, ["test"]))


def test_demo_imports_are_declared_for_the_space():
    space = PYPROJECT["tool"]["vidseg"]["space"]
    declared = _declared(sync.space_requirements(PYPROJECT))
    missing = {
        m: w for m, w in _third_party_imports(ROOT / "demo").items() if not _satisfied(_dist(m), declared)
    }
    assert not missing, f"demo/ imports these, requirements.txt lacks them: {missing}"
    assert "spaces" in space["extra"]


def test_dev_composes_the_other_extras():
    extras = PYPROJECT["project"]["optional-dependencies"]
    dev = set(_declared(sync.expand_extras(PYPROJECT, ["dev"])))
    for name in ("demo", "notebooks", "cluster", "authors", "test"):
        assert name in extras
        part = set(_declared(sync.expand_extras(PYPROJECT, [name])))
        assert part and part <= dev, f"dev lacks {sorted(part - dev)} of [{name}]"
    assert dev == set(
        _declared(sync.expand_extras(PYPROJECT, ["demo", "notebooks", "cluster", "authors", "test"]))
    )


def test_setuptools_floor_reads_an_spdx_license():
    assert isinstance(PYPROJECT["project"]["license"], str)  # PEP 639 expression: setuptools >= 77
    (req,) = [
        r for r in PYPROJECT["build-system"]["requires"] if sync.normalize(sync.parse(r)[0]) == "setuptools"
    ]
    spec = sync.parse(req)[2]
    assert spec.startswith(">="), spec
    floor = tuple(int(x) for x in spec[2:].split(",")[0].split("."))
    assert floor >= (77,), f"setuptools {spec}: PEP 639 `license` strings need 77 or newer"


def test_major_versions_are_bounded():
    reqs = PYPROJECT["project"]["dependencies"] + sync.expand_extras(PYPROJECT, ["dev"])
    # an exact pin (``==``, the authors' OpenCV build) is bounded too
    unbounded = [r for r in reqs if "<" not in sync.parse(r)[2] and not sync.parse(r)[2].startswith("==")]
    assert not unbounded, f"no upper bound: {unbounded}"


def test_space_pin_ci_wheel_and_this_environment_satisfy_the_ranges():
    pytest.importorskip("packaging")
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    deps = _declared(PYPROJECT["project"]["dependencies"])
    for pin in PYPROJECT["tool"]["vidseg"]["space"]["pins"]:
        name, _, spec = sync.parse(pin)
        assert spec.startswith("=="), pin
        assert Version(spec[2:]) in SpecifierSet(deps[sync.normalize(name)][1]), f"{pin} outside pyproject"
    assert Version(CI_TORCH) in SpecifierSet(deps["torch"][1])
    txt = (ROOT / "requirements.txt").read_text().splitlines()
    assert not [line for line in txt if line.startswith("-")], "requirements.txt installs no local path"
    space = [line for line in txt if line and not line.startswith("#")]
    assert set(PYPROJECT["tool"]["vidseg"]["space"]["pins"]) <= set(space)
    outside = {}
    for name, (_, spec) in {**deps, **_declared(sync.expand_extras(PYPROJECT, ["dev"]))}.items():
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if Version(version) not in SpecifierSet(spec, prereleases=True):
            outside[name] = (version, spec)
    assert not outside, f"installed versions outside the declared ranges: {outside}"


def test_readme_names_the_space_pins():
    readme = (ROOT / "README.md").read_text()
    for pin in PYPROJECT["tool"]["vidseg"]["space"]["pins"]:
        assert f"`{pin}`" in readme, f"README's 'Installing' should name the Space's {pin}"


def test_the_wheel_holds_every_package_of_the_library():
    """setuptools' finder (pyproject's ``packages.find``) sees each folder of vidseg_nb/ with an
    ``__init__.py``, the ``video`` package among them, so none is missing from a built wheel."""
    from setuptools import find_packages

    found = set(
        find_packages(where=str(ROOT), include=PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"])
    )
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "vidseg_nb").rglob("__init__.py")}
    assert "vidseg_nb.video" in folders
    assert folders <= found
