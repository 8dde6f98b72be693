"""The CLI imports only what a subcommand needs: a CPU data-prep node pays no torch start-up per call.
(The time itself is a benchmark line, `benchmarks/cli_startup.py`, not a timed test.)"""
import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "triton", "sklearn")
PROBE = """
import json, sys
from masklab.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as e:
    rc = e.code
print(json.dumps({"rc": rc, "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def _run(args, cwd):
    r = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1]), r


def test_help_and_data_commands_do_not_import_torch_or_transformers(tmp_path):
    for args in (["--help"], ["prep", "--help"], ["verify", "--help"], ["pmi", "--help"], ["train", "--help"]):
        out, r = _run(args, tmp_path)
        assert out == {"rc": 0, "heavy": []}, (args, out, r.stderr[-1000:])
    data = tmp_path / "d"
    out, r = _run(["prep", "--corpus", "pydoc", "--out", str(data), "--max-documents", "150",
                   "--vocab-size", "800"], tmp_path)
    assert out == {"rc": 0, "heavy": []}, (out, r.stderr[-1000:])
    out, r = _run(["verify", str(data)], tmp_path)
    assert out == {"rc": 0, "heavy": []}, (out, r.stderr[-1000:])
    out, r = _run(["pmi", "--shards", str(data), "--out", str(tmp_path / "pmi.json"), "--engine", "numpy",
                   "--min-count", "1", "--size", "50"], tmp_path)
    assert out["heavy"] == [] and out["rc"] == 0, (out, r.stderr[-1000:])


def test_a_training_command_still_gets_torch(tmp_path):
    """The probe can see torch when a command needs it (so the test above cannot pass vacuously)."""
    out, r = _run(["env"], tmp_path)
    assert "torch" in out["heavy"], (out, r.stderr[-1000:])
