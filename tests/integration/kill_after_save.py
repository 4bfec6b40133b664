"""``python kill_after_save.py <llava_dymoe.train argv>``: the DyMoE training entry, killed without any clean-up
(``os._exit(137)``, as SIGKILL would) right after the ``checkpoint-N`` of step ``$KILL_AFTER_SAVE`` is in place.

A helper of the resume tests (not a test module): a kill at a known step, without timing races."""
import os

import transformers
from transformers import TrainerCallback


class _KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == int(os.environ["KILL_AFTER_SAVE"]):
            os._exit(137)


_init = transformers.Trainer.__init__


def _init_with_kill(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.add_callback(_KillAfterSave())


transformers.Trainer.__init__ = _init_with_kill

if __name__ == "__main__":
    from llava_dymoe.errors import run_refusing
    from llava_dymoe.train import main

    run_refusing(main)
