"""Coverage of an answers file: which of the benchmark's questions it answers, and how cleanly.

Every scorer and converter tallies the answer records against the benchmark's questions with a
:class:`Tally` and calls :func:`check_coverage` before it computes anything. That prints one line
with the counts (questions in the benchmark, answered, error entries, duplicates, ids unknown to
the benchmark, questions without an answer) and, by default, refuses (``ScorerInputError``: exit
code 2 with a message naming the counts and the first offending ids) a file that

* is empty, or answers none of the benchmark's questions (another benchmark's answers);
* has error entries (generation failures, see :mod:`llava.eval.runs`), duplicates, or ids the
  benchmark does not have;
* leaves questions unanswered.

With ``allow_partial=True`` (the scorers' ``--allow-partial``) the usable answers are scored
anyway: the first answer of each question counts, error entries, later duplicates and unknown ids
are left out, and the score record says ``"partial": true``. An empty file is refused always.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from llava.eval.scoring_utils import ScorerInputError

FIRST_IDS = 5  # offending ids named in messages
RECORD_IDS = 20  # offending ids kept in a score record


def is_error_entry(rec: dict) -> bool:
    """True for an error entry of the generation drivers (``"error"`` or ``metadata.error`` set)."""
    meta = rec.get("metadata")
    return bool(rec.get("error")) or (isinstance(meta, dict) and bool(meta.get("error")))


@dataclass
class Coverage:
    """Counts of one answers file against one benchmark (ids as shown to the user)."""

    num_questions: int
    num_records: int = 0
    answered: int = 0
    errors: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every question answered exactly once, no error entries, no foreign ids."""
        return self.num_records > 0 and not (self.errors or self.duplicates or self.unknown or self.missing)

    def line(self) -> str:
        return (f"coverage: {self.num_questions} questions, {self.answered} answered, "
                f"{len(self.errors)} error entries, {len(self.duplicates)} duplicates, "
                f"{len(self.unknown)} unknown ids, {len(self.missing)} without an answer")

    def problems(self) -> list[str]:
        def first(ids: list[str]) -> str:
            more = ", ..." if len(ids) > FIRST_IDS else ""
            return "first: " + ", ".join(ids[:FIRST_IDS]) + more

        out = []
        if self.missing:
            out.append(f"{len(self.missing)} of {self.num_questions} questions have no answer ({first(self.missing)})")
        if self.errors:
            out.append(f"{len(self.errors)} error entr{'y' if len(self.errors) == 1 else 'ies'} ({first(self.errors)})")
        if self.duplicates:
            out.append(f"{len(self.duplicates)} duplicate answer{'s' if len(self.duplicates) != 1 else ''} "
                       f"({first(self.duplicates)})")
        if self.unknown:
            out.append(f"{len(self.unknown)} answer{'s' if len(self.unknown) != 1 else ''} with ids unknown to "
                       f"the benchmark ({first(self.unknown)})")
        return out

    def as_record(self) -> dict[str, Any]:
        """The counts (and the first offending ids) for a score record."""
        out: dict[str, Any] = {"questions": self.num_questions, "answered": self.answered,
                               "error_entries": len(self.errors), "duplicates": len(self.duplicates),
                               "unknown_ids": len(self.unknown), "without_answer": len(self.missing)}
        for name, ids in (("first_errors", self.errors), ("first_duplicates", self.duplicates),
                          ("first_unknown", self.unknown), ("first_without_answer", self.missing)):
            if ids:
                out[name] = ids[:RECORD_IDS]
        return out


class Tally:
    """Count answer records against the expected question keys (a key may be expected n times).

    ``show`` turns a key into the id printed in messages (default ``str``).
    """

    def __init__(self, expected: Iterable[Hashable], show: Callable[[Any], str] = str):
        keys = list(expected)
        self._left = Counter(keys)
        self._order = list(dict.fromkeys(keys))
        self._show = show
        self.coverage = Coverage(num_questions=len(keys))

    def add(self, key: Hashable, *, error: bool = False, shown: str | None = None) -> bool:
        """Record one answer; True if it is the usable answer of an expected question."""
        cov = self.coverage
        cov.num_records += 1
        label = shown if shown is not None else self._show(key)
        if error:
            cov.errors.append(label)
            return False
        if key not in self._left:
            cov.unknown.append(label)
            return False
        if self._left[key] == 0:
            cov.duplicates.append(label)
            return False
        self._left[key] -= 1
        cov.answered += 1
        return True

    def finish(self) -> Coverage:
        cov = self.coverage
        cov.missing = [self._show(k) for k in self._order for _ in range(self._left[k])]
        return cov


def check_coverage(cov: Coverage, source: str, allow_partial: bool, *, verb: str = "score",
                   log: Callable[[str], Any] = print) -> None:
    """Print the counts; refuse (``ScorerInputError``) unless the file is complete or partial is allowed."""
    log(cov.line())
    if cov.num_records == 0:
        raise ScorerInputError(f"{source}: empty answers file, nothing to {verb}")
    if cov.answered == 0:
        raise ScorerInputError(f"{source}: none of its {cov.num_records} answers is a usable answer to a question "
                               f"of this benchmark ({'; '.join(cov.problems())}); nothing to {verb}")
    problems = cov.problems()
    if not problems:
        return
    if not allow_partial:
        raise ScorerInputError(
            f"refusing to {verb} {source}: {'; '.join(problems)}. Pass --allow-partial to {verb} the usable "
            f"answers anyway (the result is then marked partial).")
    log(f"warning: --allow-partial: {verb}s {cov.answered} of {cov.num_questions} questions; the result is "
        f"partial ({'; '.join(problems)})")


def usable_answers(
    records: list[dict], expected: Iterable[Hashable] | None, key: Callable[[dict], Hashable], *, source: str,
    allow_partial: bool, verb: str = "score", show: Callable[[Any], str] = str,
) -> tuple[dict[Hashable, dict], Coverage]:
    """The usable answer record of every expected question (``{key: record}``, in file order)
    and the file's coverage, checked by :func:`check_coverage`. ``key`` maps a record to its
    question key; ``expected=None`` expects the keys of the file's non-error records (a scorer
    without the benchmark's question list)."""
    keys = [key(r) for r in records]
    if expected is None:
        expected = list(dict.fromkeys(k for k, r in zip(keys, records) if not is_error_entry(r)))
    tally = Tally(expected, show=show)
    usable = {k: r for k, r in zip(keys, records) if tally.add(k, error=is_error_entry(r))}
    coverage = tally.finish()
    check_coverage(coverage, source, allow_partial, verb=verb)
    return usable, coverage
