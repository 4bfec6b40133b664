"""`make demo` (foundation smoke) in a reduced mode: every stage runs and the outputs are real."""
import json


def test_demo_smoke_end_to_end(tmp_path, capsys):
    from llava_dymoe.demo import main

    assert main(["--output-dir", str(tmp_path / "demo"), "--steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "[4/4]" in out and "exact match" in out and "continual demo" in out
    answers = [json.loads(l) for l in open(tmp_path / "demo" / "answers.jsonl")]
    assert len(answers) == 8 and all(isinstance(a["text"], str) for a in answers)
    state = json.load(open(tmp_path / "demo/checkpoints/llava-tiny-lora/trainer_state.json"))
    assert state["global_step"] == 4
