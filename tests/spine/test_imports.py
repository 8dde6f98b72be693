"""The subpackages install as masklab.*: a foreign top-level `kernels` (Hugging Face's kernel hub
ships one) must not shadow ours, and ours must not shadow it."""
import subprocess
import sys
import textwrap


def test_foreign_top_level_kernels_package_does_not_collide(tmp_path):
    foreign = tmp_path / "kernels"
    foreign.mkdir()
    (foreign / "__init__.py").write_text("FOREIGN = True\n")
    code = textwrap.dedent("""
        import kernels, masklab.kernels, masklab.pretrain, masklab.data_prep, masklab.downstream
        from masklab.pretrain.model import build_model
        from masklab import kernels as ours
        assert kernels.FOREIGN is True, kernels.__file__
        assert not hasattr(ours, "FOREIGN") and hasattr(ours, "varlen_attention"), ours.__file__
        assert masklab.pretrain.__name__ == "masklab.pretrain"
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_no_top_level_project_packages_are_importable_from_elsewhere(tmp_path):
    r = subprocess.run([sys.executable, "-c", "import importlib.util as u; "
                        "print([n for n in ('kernels', 'pretrain', 'data_prep', 'downstream') if u.find_spec(n)])"],
                       cwd=tmp_path, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
