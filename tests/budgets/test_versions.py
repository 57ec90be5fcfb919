"""A regeneration or an edit asks the model as a new message does: over budget, it is
refused before anything is stored or any upstream request is made (issue 18)."""

from __future__ import annotations

from tests.budgets.conftest import make_admin, usage
from tests.budgets.test_budgets import LOTS, set_budget
from tests.context.answers import StartAnswers


async def test_regenerate_and_edit_over_budget_are_refused_up_front(
    start_answers: StartAnswers,
) -> None:
    async with start_answers(budget_tokens_per_period=LOTS) as answers:
        admin, ada = await make_admin(answers), await answers.user()
        session_id = await answers.session(ada)
        streamed = await answers.ask(ada, session_id, "What is the capital of Peru?")
        question_id = streamed.end["message"]["reply_to"]
        answer_id = streamed.end["message"]["id"]
        used = (await usage(answers, ada))["budget"]["tokens"]["used"]
        await set_budget(answers, admin, ada, tokens_per_period=used)
        asked = len(answers.fake.chat_requests)
        client = answers.sockets[ada.id]
        base = f"/v1/sessions/{session_id}/messages"

        ws_regenerate = await client.request(
            {"type": "regenerate", "session_id": session_id, "message_id": answer_id}
        )
        ws_edit = await client.request(
            {
                "type": "edit",
                "session_id": session_id,
                "message_id": question_id,
                "content": "And of Chile?",
            }
        )
        rest_regenerate = await answers.http.post(
            f"{base}/{answer_id}/regenerate", headers=ada.headers
        )
        rest_edit = await answers.http.patch(
            f"{base}/{question_id}", json={"content": "And of Chile?"}, headers=ada.headers
        )
        report = await usage(answers, ada)
        question_versions = await answers.http.get(
            f"{base}/{question_id}/versions", headers=ada.headers
        )
        answer_versions = await answers.http.get(
            f"{base}/{answer_id}/versions", headers=ada.headers
        )

    resets_at = report["budget"]["resets_at"]
    for refused in (ws_regenerate, ws_edit):
        assert refused["type"] == "error" and refused["code"] == "budget_exceeded", refused
        assert refused["resets_at"] == resets_at
    for response in (rest_regenerate, rest_edit):
        assert response.status_code == 429, response.text
        assert response.json()["error"]["code"] == "budget_exceeded"
        assert resets_at in response.json()["error"]["message"]
    assert len(answers.fake.chat_requests) == asked  # the model was never asked
    # Nothing stored: the question and its answer each keep their one version.
    assert len(question_versions.json()["data"]["versions"]) == 1
    assert len(answer_versions.json()["data"]["versions"]) == 1
