"""Offline lmms-eval tasks for the paper's ten benchmarks: ``lmms-eval --include_path llava/lmms/tasks``.

Each ``<bench>_local.yaml`` reads the same local files as ``scripts/v1_5/eval/<bench>.sh`` (data
root ``$LLAVA_EVAL_DATA``, default ``./playground/data/eval``), asks the same prompts with the same
generation settings (:mod:`llava.lmms.tasks.docs`) and scores with the same scorer
(:mod:`llava.lmms.tasks.scoring`). The tag ``globalcom2_paper`` runs all ten.
"""
