"""Import name = path: every project module lives under masklab/, so no folder at the checkout root can
shadow an installed distribution (transformers >= 5.25 imports Hugging Face's `kernels`, which a
top-level kernels/ folder used to shadow whenever the checkout root was on sys.path)."""
import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_PACKAGES = {"masklab", "tests", "benchmarks"}


def _importable_names(root: Path) -> set[str]:
    """What `import NAME` could find at the root: any folder (a namespace package needs no __init__) or module."""
    return {p.stem for p in root.iterdir()
            if not p.name.startswith(".") and (p.is_dir() or p.suffix == ".py") and p.stem.isidentifier()}


def test_no_root_folder_is_a_package_other_than_ours():
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages <= ALLOWED_PACKAGES, f"package folders at the checkout root: {sorted(packages - ALLOWED_PACKAGES)}"


def test_no_root_name_shadows_an_installed_distribution():
    owners = importlib.metadata.packages_distributions()
    clashes = {name: owners[name] for name in _importable_names(ROOT)
               if name in owners and set(owners[name]) != {"masklab"}}
    assert not clashes, f"root names that shadow installed distributions (name -> distributions): {clashes}"


def test_import_line_from_the_checkout_root():
    """The README's promise: transformers' BERT (which imports Hugging Face `kernels` from 5.25 on) and
    our kernels import together with cwd = the checkout root, which `python -m` puts on sys.path."""
    code = textwrap.dedent("""
        import sys, transformers.models.bert.modeling_bert, masklab.kernels
        import masklab.pretrain, masklab.data_prep, masklab.downstream
        ours = sys.modules["masklab.kernels"]
        assert hasattr(ours, "varlen_attention"), ours.__file__
        foreign = sys.modules.get("kernels")
        assert foreign is None or not foreign.__file__.startswith(sys.argv[1]), foreign.__file__
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "masklab")], cwd=ROOT, capture_output=True,
                       text=True, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_a_foreign_top_level_kernels_package_does_not_collide(tmp_path):
    foreign = tmp_path / "kernels"
    foreign.mkdir()
    (foreign / "__init__.py").write_text("FOREIGN = True\n")
    code = textwrap.dedent("""
        import kernels, masklab.kernels, masklab.pretrain, masklab.data_prep, masklab.downstream
        from masklab.pretrain.model import build_model
        from masklab import kernels as ours
        assert kernels.FOREIGN is True, kernels.__file__
        assert not hasattr(ours, "FOREIGN") and hasattr(ours, "varlen_attention"), ours.__file__
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
