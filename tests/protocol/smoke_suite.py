"""A 2-task suite YAML over the smoke dataset, shared by the protocol tests (not a test module)."""


SMOKE_SUITE = """name: {name}
defaults:
  image_root: images
  generator: llava.eval.model_vqa_loader
  scorer: contains
  max_new_tokens: {max_new_tokens}
{training}tasks:
  - name: {a}
    train_json: train.json
    question_file: questions.jsonl
    annotation_file: questions.jsonl
    reference_file: answers_ref.jsonl
  - name: {b}
    train_json: train.json
    question_file: questions.jsonl
    annotation_file: questions.jsonl
    reference_file: answers_ref.jsonl
"""


def write_smoke_suite(path, name, tasks=("A", "B"), max_new_tokens=6, learning_rate=None) -> str:
    """A 2-task suite YAML over the smoke dataset (both tasks train and test on it); returns the path."""
    training = f"training:\n  learning_rate: {learning_rate}\n" if learning_rate is not None else ""
    path.write_text(SMOKE_SUITE.format(name=name, a=tasks[0], b=tasks[1], max_new_tokens=max_new_tokens,
                                       training=training))
    return str(path)
