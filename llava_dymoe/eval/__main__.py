"""``python -m llava_dymoe.eval llava.eval.MODULE [upstream args]``: see :mod:`llava_dymoe.eval.shim`."""
from llava_dymoe.eval.shim import main

if __name__ == "__main__":
    raise SystemExit(main())
