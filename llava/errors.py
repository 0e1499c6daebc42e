"""Exceptions shared by the model and its callers (the eval drivers turn them into error
entries or one-line messages)."""

from __future__ import annotations


class PromptTooLongError(ValueError):
    """A prompt whose spliced sequence (text + visual tokens) is longer than the model's
    context (``tokenizer_model_max_length``). The original tree silently cut such sequences,
    dropping the question; we refuse instead.

    ``index`` is the prompt's position in the batch, ``length`` its spliced length and
    ``limit`` the context size.
    """

    def __init__(self, index: int, length: int, limit: int):
        self.index, self.length, self.limit = index, length, limit
        super().__init__(
            f"prompt {index} is {length} tokens long with its visual tokens, more than the "
            f"model's context of {limit}"
        )
