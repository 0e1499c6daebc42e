"""What the generation drivers share.

The drivers (:mod:`llava.eval.model_vqa_loader`, :mod:`llava.eval.model_vqa_science`,
:mod:`llava.eval.model_vqa_mmbench`, :mod:`llava.eval.model_vqa`) only turn their benchmark's
question file into a list of :class:`~llava.eval.runs.questions.Item` and call
:func:`llava.eval.runs.driver.run`. The pieces, one concern each:

* :mod:`.flags` — the shared command line and the checks that need no model;
* :mod:`.questions` — items, their keys, reading question files, chunking;
* :mod:`.answers_io` — crash-safe answer files;
* :mod:`.checkpoint`, :mod:`.lock`, :mod:`.run_config` — a run's identity and the checks that
  keep runs from mixing;
* :mod:`.dist` — data-parallel processes;
* :mod:`.generate` — the model and the generation loop;
* :mod:`.driver` — one run start to end; :mod:`.errors` — how a run stops.

Answer file (``--answers-file``, JSON lines, in question order)::

    {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}

``prompt`` is what the original LLaVA driver of the benchmark writes there (the question
file's ``text`` for VQA; ``<image>\\n`` + question + letter instruction for ScienceQA questions
with an image, which is how the original ScienceQA scorer tells the IMG subset; hint + question
+ options for MMBench). ``metadata`` holds ``visual_tokens`` / ``visual_tokens_uncompressed``
(after / before compression; 0 for text-only questions), ``grid``, ``thumbnail_kept``,
``crop_kept``, ``budgets`` (methods with per-crop budgets) and ``compression`` (the resolved
compressor config). MMBench answers also carry ``round_id``, ``options`` and ``option_char``. A
question whose id occurs several times in the question file (MME asks two questions per image
under one id) gets ``metadata.occurrence`` = 1, 2, ... on its repeats.

Error entries (missing / unreadable / decompression-bomb image, malformed question, prompt
longer than the context): ``{"question_id", "prompt", "text": "", "error": reason, "answer_id",
"model_id", "metadata": {"error": reason}}`` — the run goes on and its last line reports how
many failed; a run in which every question failed exits with code 1. Malformed lines without a
readable id get ``question_id: null`` and ``metadata.line`` (1-based line in the question file).

Bad flags or inputs found before any work (``--max-new-tokens 0``, an unknown ``--conv-mode``, a
non-UTF-8 question file, a score layer the vision tower does not have, ...) and refusals (see
below) print one line ``error: ...`` and exit with code 2.

Resuming: a re-run skips the questions already answered and asks the error entries again
(``--keep-errors`` keeps them). Every line is flushed and fsync'd as written; a torn last line
(a kill in mid-write) is cut off on the next start. The final file is always in question order,
so an interrupted + resumed run produces the same lines (up to ``answer_id``) as an
uninterrupted one. One run at a time per answers file (:mod:`.lock`); what may be resumed
across is in :mod:`.run_config`.

Data parallel: see :mod:`.dist`; each rank writes ``<stem>.part-<rank>-of-<N>.jsonl`` and rank 0
merges them into the answers file in question order. ``--num-chunks/--chunk-idx`` shard the
question list first (one process per chunk, as in the original scripts).
"""
