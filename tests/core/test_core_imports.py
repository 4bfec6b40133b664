"""llava_dymoe.core and llava_dymoe.config depend on torch (core) / the stdlib (config) only (style.md §6.2)."""
import ast
import os
import subprocess
import sys

import llava_dymoe

FORBIDDEN = ("llava", "transformers", "deepspeed", "peft")
PKG = os.path.dirname(llava_dymoe.__file__)
ROOT = os.path.dirname(PKG)


def _sources(sub):
    path = os.path.join(PKG, sub)
    if os.path.isfile(path):
        return [path]
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(".py"))


def _imported_roots(path):
    roots = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__"):
            roots.update(a.value.split(".")[0] for a in node.args if isinstance(a, ast.Constant))
    return roots


def test_core_sources_import_nothing_forbidden():
    files = _sources("core") + _sources("config.py")
    assert len(files) >= 6
    for path in files:
        bad = _imported_roots(path) & set(FORBIDDEN)
        assert not bad, f"{path} imports {sorted(bad)}"
    assert _imported_roots(os.path.join(PKG, "config.py")) <= {"__future__", "dataclasses", "json", "math", "os",
                                                                "typing"}


def test_core_imports_with_forbidden_modules_blocked():
    code = (
        "import sys\n"
        f"for name in {FORBIDDEN!r} + ('llava.model', 'transformers.modeling_utils'):\n"
        "    sys.modules[name] = None  # any import of these now raises ImportError\n"
        "import llava_dymoe.config, llava_dymoe.core\n"
        "from llava_dymoe.core import DyMoELinear, gate, rsr_schedule\n"
        "from llava_dymoe.config import DyMoEConfig\n"
        "import torch\n"
        "layer = DyMoELinear(torch.nn.Linear(4, 4), DyMoEConfig(experts_per_task=2, expert_rank=2, top_k=2))\n"
        "layer.add_task(); layer.add_task(); layer(torch.randn(3, 4)).sum().backward()\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
