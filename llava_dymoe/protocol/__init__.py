"""The continual protocol: train a suite's tasks one after another and score every task seen so far.

``python -m llava_dymoe.cli run --suite S.yaml --data-root D --method dymoe --output-dir OUT ...``
(:mod:`llava_dymoe.commands.run`) drives :func:`llava_dymoe.protocol.runner.run_sequence`.  One
module per concept:

* :mod:`~llava_dymoe.protocol.options`: the run's options, their checks and the run identity
  (``OUT/run.json``) that a resumed run must match;
* :mod:`~llava_dymoe.protocol.layout`: where every file of a run folder lives;
* :mod:`~llava_dymoe.protocol.launch`: the train / eval command lines and how they are run and logged;
* :mod:`~llava_dymoe.protocol.stage`: stage and score records (written last, atomically) and their checks;
* :mod:`~llava_dymoe.protocol.eval_batch`: internal entry running several upstream eval modules in one process;
* :mod:`~llava_dymoe.protocol.runner`: the stage loop with resume, the matrix, metrics and report.
"""
