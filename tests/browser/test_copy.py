"""Copying a message or a code block, as people do with answers."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.conftest import PageServer, Watch
from tests.browser.pages import Person

pytestmark = pytest.mark.browser

SNIPPET = "print('hello')\nprint('again')"


async def test_a_message_and_a_code_block_copy_their_text(
    browser: Any, page_server: PageServer, watch: Watch
) -> None:
    ada = await Person.sign_up(
        browser, page_server, watch, "Ada", permissions=["clipboard-read", "clipboard-write"]
    )
    await ada.create_session("Snippets")
    content = f"Try this:\n\n```python\n{SNIPPET}\n```\n\nand tell me."
    await ada.tid("composer-input").fill(content)
    await ada.tid("send").click()
    mine = ada.messages("user").first
    await expect(mine.get_by_test_id("copy-code")).to_have_count(1)

    await mine.get_by_test_id("copy-code").click()
    copied_code = await ada.page.evaluate("navigator.clipboard.readText()")
    await mine.get_by_test_id("copy-message").click()
    copied_message = await ada.page.evaluate("navigator.clipboard.readText()")

    assert copied_code == SNIPPET
    assert copied_message == content
    await expect(mine.get_by_test_id("copy-message")).to_have_text("Copied")
