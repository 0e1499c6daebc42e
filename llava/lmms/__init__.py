"""GlobalCom² in lmms-eval: a plug-in, no fork.

Installing this package (``make lmms``) registers its models with lmms-eval through the
``lmms_eval.models`` entry point (:mod:`llava.lmms.registry`):

- ``llava_gc2`` — our LLaVA-NeXT tree, original-format checkpoints (:mod:`llava.lmms.llava_gc2`);
- ``llava_hf_gc2``, ``llava_onevision_gc2``, ``qwen2_vl_gc2``, ``qwen2_5_vl_gc2`` — transformers'
  own classes through :mod:`llava.hf` (:mod:`llava.lmms.hf`; images, and video files for the
  last three, read as lmms-eval's own models read them: :mod:`llava.lmms.video`).

Every model takes ``compression=`` and the method options (:mod:`llava.lmms.options`), reports
each sample's visual tokens before/after compression (per image and per video, with a video's
per-frame budgets) and the resolved compression config in ``--log_samples``, and the run's kept-token ratio in the results file
(:mod:`llava.lmms.records`). Offline task configs for the paper's ten benchmarks, reading the
local files of ``scripts/v1_5/eval/``, are in ``llava/lmms/tasks`` (``--include_path``; see
:mod:`llava.lmms.tasks`).
"""

import os

#: The folder to pass to ``lmms-eval --include_path``.
TASKS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks")
