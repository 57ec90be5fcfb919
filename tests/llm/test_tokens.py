"""Token counts are remembered, long texts included."""

from __future__ import annotations

import pytest

from llm import tokens


def test_a_long_answer_is_encoded_once_however_many_turns_send_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoded: list[int] = []
    real_count = tokens._count

    def counting(text: str) -> int:
        encoded.append(len(text))
        return real_count(text)

    monkeypatch.setattr(tokens, "_count", counting)
    answer = "A long answer, sentence after sentence. " * 500  # 20,000 characters

    counts = {tokens.count_text(answer) for _ in range(5)}

    assert encoded == [len(answer)]
    assert counts == {real_count(answer)}
    assert counts.pop() > 2000
