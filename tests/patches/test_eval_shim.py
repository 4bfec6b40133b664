"""The eval shim (E3) and the autopatch (E4).

In-process: the shim's mechanics with a probe module placed in ``llava.eval``'s search path.
End to end (subprocesses, real upstream modules, CPU): a LoRA checkpoint trained by upstream
``train()`` is answered by ``python -m llava_dymoe.eval llava.eval.model_vqa_loader`` and
``... model_vqa_science`` (and by plain ``llava.eval.model_vqa_loader`` under LLAVA_DYMOE=1),
one upstream answer line per question.
"""
import json
import os
import sys

import pytest

import llava.eval
import llava.model.builder as builder
from llava_dymoe import autopatch
from llava_dymoe.eval import shim
from llava_dymoe.integration.llava_args import UPSTREAM_TRAIN, llava_train_argv, run_python
from llava_dymoe.patches import cpu_remap
from llava_dymoe.patches._base import applied_patch_sets

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: One thread per subprocess: for a model this small, OpenMP threads only add overhead, and on a
#: busy 2-core machine two spinning threads made 1024-token generation ~4x slower.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
ANSWER_FIELDS = {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
PROBE = '''
import json, sys, torch
from llava.model.builder import load_pretrained_model
from llava_dymoe.patches.cpu_remap import is_active
json.dump({"name": __name__, "argv": sys.argv[1:], "loader_patched": hasattr(load_pretrained_model,
           "__llava_dymoe_patched__"), "remap": is_active()}, open(sys.argv[1], "w"))
if len(sys.argv) > 2:
    raise SystemExit(int(sys.argv[2]))
'''


@pytest.fixture
def probe(tmp_path, monkeypatch):
    (tmp_path / "shim_probe.py").write_text(PROBE)
    monkeypatch.setattr(llava.eval, "__path__", list(llava.eval.__path__) + [str(tmp_path)])
    yield "llava.eval.shim_probe", str(tmp_path / "probe.json")
    sys.modules.pop("llava.eval.shim_probe", None)


def test_shim_runs_target_as_main_with_patches_then_reverts(probe):
    name, out = probe
    original, argv = builder.load_pretrained_model, list(sys.argv)
    shim.run_upstream(name, [out])
    seen = json.load(open(out))
    assert seen == {"name": "__main__", "argv": [out], "loader_patched": True,
                    "remap": not cpu_remap.cuda_available()}
    assert builder.load_pretrained_model is original and sys.argv == argv and not applied_patch_sets()
    assert "llava.eval.shim_probe" not in sys.modules  # run, never imported


def test_shim_reverts_when_the_target_exits(probe):
    name, out = probe
    with pytest.raises(SystemExit) as exc:
        shim.run_upstream(name, [out, "3"])
    assert exc.value.code == 3 and not applied_patch_sets() and not cpu_remap.is_active()


@pytest.mark.parametrize("target, message", [
    ("os.path", "not an upstream LLaVA module"),
    ("llava.eval.no_such_module", "no module named 'llava.eval.no_such_module'"),
    ("--model-path", "missing the upstream module"),
])
def test_shim_rejects_bad_targets(target, message, capsys):
    assert shim.main([target, "--x"]) == 2
    err = capsys.readouterr().err
    assert message in err and "llava.eval.model_vqa_loader" in err and not applied_patch_sets()


def test_shim_usage(capsys):
    assert shim.main([]) == 2 and "usage: python -m llava_dymoe.eval MODULE" in capsys.readouterr().err
    assert shim.main(["--help"]) == 0 and "llava.eval.model_vqa_science" in capsys.readouterr().out


def test_autopatch_pth_install_uninstall_status(tmp_path, capsys):
    with open(os.path.join(REPO, "patches", autopatch.PTH_NAME)) as f:
        assert f.read() == autopatch.PTH_LINE  # the shipped file and the installed line agree
    site = str(tmp_path / "site")
    assert autopatch.main(["status", "--site-dir", site]) == 0 and "not installed" in capsys.readouterr().out
    autopatch.main(["install", "--site-dir", site])
    assert open(os.path.join(site, autopatch.PTH_NAME)).read() == autopatch.PTH_LINE
    autopatch.main(["status", "--site-dir", site])
    assert ": installed;" in capsys.readouterr().out
    autopatch.main(["uninstall", "--site-dir", site])
    assert not os.path.exists(os.path.join(site, autopatch.PTH_NAME))


# -- end to end on the real upstream modules ---------------------------------------------------
@pytest.fixture(scope="module")
def lora_ckpt(tiny, smoke_data, tmp_path_factory):
    """A regular LoRA checkpoint from upstream train(); the name makes the builder take its LoRA branch."""
    out = str(tmp_path_factory.mktemp("ckpts") / "llava-tiny-lora")
    argv = llava_train_argv(tiny.llm, tiny.clip, smoke_data.train_json, smoke_data.image_folder, out,
                            max_steps=2)
    run_python(UPSTREAM_TRAIN, argv, log_path=out + ".log", env=ONE_THREAD, timeout=300)
    return out


def _check_answers(path, qids, prompt_suffix=""):
    rows = [json.loads(line) for line in open(path)]
    assert [r["question_id"] for r in rows] == qids
    for r in rows:
        assert set(r) == ANSWER_FIELDS and r["model_id"] == "llava-tiny-lora" and r["metadata"] == {}
        assert isinstance(r["text"], str) and r["prompt"].endswith(prompt_suffix)


def _questions(smoke_data):
    return [json.loads(line) for line in open(smoke_data.questions)]


def test_shim_model_vqa_loader_end_to_end(lora_ckpt, tiny, smoke_data, tmp_path):
    answers = tmp_path / "answers" / "loader.jsonl"
    proc = run_python("llava_dymoe.eval", [
        "llava.eval.model_vqa_loader", "--model-path", lora_ckpt, "--model-base", tiny.llm,
        "--question-file", smoke_data.questions, "--image-folder", smoke_data.image_folder,
        "--answers-file", str(answers), "--temperature", "0", "--conv-mode", "vicuna_v1",
        "--max_new_tokens", "8"], module=True, env=ONE_THREAD, timeout=300)
    qs = _questions(smoke_data)
    _check_answers(answers, [q["question_id"] for q in qs], qs[0]["text"])
    log = proc.stdout
    assert "Merging LoRA weights" in log  # upstream's own LoRA branch did the loading
    if not cpu_remap.cuda_available():
        assert "with device='cpu', device_map='cpu' (no CUDA)" in log and "reverted patch set 'cpu-remap'" in log
    assert "reverted patch set 'eval'" in log


def _subset(smoke_data, tmp_path, module):
    """The first two questions in ``module``'s input format (both modules hard-code 1024 new tokens)."""
    qs = _questions(smoke_data)[:2]
    if module == "llava.eval.model_vqa":  # the loader's JSONL, question_id/image/text
        path = tmp_path / "questions.jsonl"
        path.write_text("".join(json.dumps(q) + "\n" for q in qs))
        return path, qs, [], qs[0]["text"]
    path = tmp_path / "sqa_test.json"  # model_vqa_science: a JSON list with id/image/conversations
    path.write_text(json.dumps([{"id": q["question_id"], "image": q["image"], "conversations": [
        {"from": "human", "value": "<image>\n" + q["text"]}, {"from": "gpt", "value": "A"}]} for q in qs]))
    return path, qs, ["--single-pred-prompt"], "from the given choices directly."


@pytest.mark.parametrize("module", ["llava.eval.model_vqa_science", "llava.eval.model_vqa"])
def test_shim_other_upstream_modules_end_to_end(module, lora_ckpt, tiny, smoke_data, tmp_path):
    questions, qs, extra, suffix = _subset(smoke_data, tmp_path, module)
    answers = tmp_path / "out.jsonl"  # given without a folder part (upstream: FileNotFoundError: '')
    run_python("llava_dymoe.eval", [
        module, "--model-path", lora_ckpt, "--model-base", tiny.llm, "--question-file", str(questions),
        "--image-folder", smoke_data.image_folder, "--answers-file", "out.jsonl", *extra,
        "--temperature", "0", "--conv-mode", "vicuna_v1"], module=True, env=ONE_THREAD, timeout=300,
        cwd=str(tmp_path))
    _check_answers(answers, [q["question_id"] for q in qs], suffix)


def test_autopatch_runs_upstream_module_unchanged(lora_ckpt, tiny, smoke_data, tmp_path):
    site = str(tmp_path / "site")
    autopatch.main(["install", "--site-dir", site])
    answers = tmp_path / "answers" / "auto.jsonl"
    # what `LLAVA_DYMOE=1 python -m llava.eval.model_vqa_loader ...` does with the .pth in site-packages
    code = (f"import site, sys, runpy; site.addsitedir({site!r}); "
            "assert 'llava.model.builder' not in sys.modules; "
            "runpy.run_module('llava.eval.model_vqa_loader', run_name='__main__', alter_sys=True); "
            "from llava.model.builder import load_pretrained_model as l; "
            "assert l.__llava_dymoe_patched__; print('AUTOPATCHED')")
    argv = ["--model-path", lora_ckpt, "--model-base", tiny.llm, "--question-file", smoke_data.questions,
            "--image-folder", smoke_data.image_folder, "--answers-file", str(answers),
            "--temperature", "0", "--conv-mode", "vicuna_v1", "--max_new_tokens", "4"]
    proc = run_python(code, argv, env={"LLAVA_DYMOE": "1", **ONE_THREAD}, timeout=300)
    assert "AUTOPATCHED" in proc.stdout
    _check_answers(answers, [q["question_id"] for q in _questions(smoke_data)])
    # without the variable the .pth imports nothing
    off = run_python(f"import site, sys; site.addsitedir({site!r}); "
                     "print('llava_dymoe.autopatch' in sys.modules)", [], env={"LLAVA_DYMOE": "0"})
    assert off.stdout.strip().endswith("False")
