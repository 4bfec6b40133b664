"""Helpers of the HF-host tests: the training command line and running it in a subprocess."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def train_args(model, data, out, task, prev=None, extra=()):
    args = ["--model_name_or_path", model, "--data_path", data.train_json, "--image_folder", data.image_folder,
            "--output_dir", str(out), "--max_steps", "3", "--per_device_train_batch_size", "2",
            "--learning_rate", "1e-3", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1",
            "--dymoe_task_id", str(task), "--dymoe_experts_per_task", "2", "--dymoe_expert_rank", "4",
            "--model_max_length", "256", "--seed", "0", *extra]
    return args + (["--dymoe_prev_ckpt", str(prev)] if prev else [])


def run_train_hf(args, env_extra=None, launcher=None, module="llava_dymoe.train_hf"):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env_extra or {})}
    cmd = (launcher or [sys.executable, "-m"]) + [module, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
