"""A fork on the 1.2 line whose train() keeps the 1.1 signature (MCITlib's SEFE at 2956dfd: its code imports
transformers.cache_utils, its train() takes no attn_implementation; its eval scripts are in llava/eval/CoIN/).  The fork matrix of issue 28 found that
``python -m llava_dymoe.train`` called it with ``attn_implementation=`` (the line's upstream signature) and
died with a TypeError while the fork trained without the plugin; the fork's own signature decides now."""
import inspect
import subprocess
import sys

import pytest

from fork_fixtures import fork_env, make_fork
from llava_dymoe import autopatch
from llava_dymoe.patches import lines

pytestmark = pytest.mark.skipif(
    "attn_implementation" not in inspect.signature(__import__("llava.train.train", fromlist=["train"]).train).parameters,
    reason="needs the 1.2 line (the fork is made from its llava)")


def _fork(tmp_path):
    return make_fork(tmp_path, setup_call=False, builder_extra=False, train_without_attn=True, eval_moved=True)


def test_the_line_is_12_by_capability_and_the_call_follows_the_forks_signature(tmp_path):
    fork = _fork(tmp_path)
    report = lines.scan(str(fork / "llava"), train_file=str(fork / "llava" / "train" / "train_MOE.py"))
    assert report.nearest_line is lines.LINE_12 and report.train_takes_attn is False
    assert lines.train_call_kwargs(lines.LINE_12, None, report.train_takes_attn) == {}
    with pytest.raises(lines.UpstreamMismatch, match=r"sdpa needs train\(attn_implementation=\.\.\.\), which this "
                                                     r"fork's train\(\) does not have"):
        lines.train_call_kwargs(lines.LINE_12, "sdpa", report.train_takes_attn)
    # upstream's own train() still gets the keyword
    assert lines.train_call_kwargs(lines.LINE_12, "sdpa") == {"attn_implementation": "sdpa"}


def test_the_plugins_entry_reaches_the_forks_parser(tmp_path):
    # before the fix: TypeError: train() got an unexpected keyword argument 'attn_implementation'
    fork = _fork(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "llava_dymoe.train", "--train_module", "llava.train.train_MOE",
                           "--help"], env=fork_env(fork), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--model_name_or_path" in proc.stdout and "flags of llava_dymoe.train itself" in proc.stdout


@pytest.mark.slow
def test_smoke_passes_on_a_12_fork_with_a_11_train_signature_and_its_eval_script_elsewhere(tmp_path, capsys):
    fork = _fork(tmp_path)
    code = autopatch.main(["check", "--llava-dir", str(fork), "--smoke", "--smoke-dir", str(tmp_path / "smoke")])
    out = capsys.readouterr().out
    assert "nearest supported line: the 1.2 line" in out and code == 0, out
    assert out.splitlines()[-1].startswith("smoke: PASS: task 1 with the plugin through llava.train.train_MOE")
    assert out.splitlines()[-1].endswith("1 question answered by 2_b_llava_dymoe through llava.eval.sub.model_sub")
