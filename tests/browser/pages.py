"""What a person does on the page, as small async helpers over Playwright."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import PASSWORD, PageServer, Watch, unique_email

TIMEOUT_MS = 15_000


class Person:
    def __init__(self, page: Page, name: str, email: str) -> None:
        self.page = page
        self.name = name
        self.email = email

    @classmethod
    async def sign_up(
        cls, browser: Browser, server: PageServer, watch: Watch, name: str, **context: Any
    ) -> Person:
        ctx = await browser.new_context(**context)
        page = await ctx.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        watch.attach(page)
        await page.goto(server.http_url + "/")
        email = unique_email(name)
        await page.get_by_test_id("auth-mode-toggle").click()
        await page.get_by_test_id("auth-name").fill(name)
        await page.get_by_test_id("auth-email").fill(email)
        await page.get_by_test_id("auth-password").fill(PASSWORD)
        await page.get_by_test_id("auth-submit").click()
        await expect(page.get_by_test_id("me-name")).to_have_text(name)
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
        return cls(page, name, email)

    def tid(self, testid: str) -> Any:
        return self.page.get_by_test_id(testid)

    async def create_session(self, title: str) -> str:
        await self.tid("session-new-title").fill(title)
        await self.tid("session-create").click()
        await expect(self.tid("chat-title")).to_have_text(title)
        item = self.page.locator('[data-testid="session-item"].selected')
        return str(await item.get_attribute("data-session-id"))

    async def add_member(self, invitee: Person) -> None:
        """Invite by email; the invitee accepts on their page; then both are members."""
        if await self.tid("details").is_hidden():
            await self.tid("details-toggle").click()
        await self.tid("add-member-email").fill(invitee.email)
        await self.tid("add-member").click()
        await expect(self.tid("notice")).to_contain_text("Invited")
        await invitee.accept_invitation()
        await self.page.reload()
        await expect(self.tid("chat-title")).to_be_visible()
        if await self.tid("details").is_hidden():
            await self.tid("details-toggle").click()
        await expect(self.tid("session-members").locator("li")).to_have_count(2)

    async def accept_invitation(self) -> None:
        await self.page.reload()
        await self.tid("invitation-accept").click()
        await expect(self.tid("invitation")).to_have_count(0)

    async def open_session(self, session_id: str) -> None:
        await self.page.goto(f"{self.page.url.split('#')[0]}#/s/{session_id}")
        await self.page.reload()
        await expect(self.tid("chat-title")).to_be_visible()

    async def send(self, text: str) -> None:
        await self.tid("composer-input").fill(text)
        await self.tid("send").click()

    def messages(self, role: str) -> Any:
        return self.page.locator(f'[data-testid="message"][data-role="{role}"]')

    async def seqs(self) -> list[int]:
        values = await self.page.locator('[data-testid="message"]').evaluate_all(
            "els => els.map(e => Number(e.dataset.seq))"
        )
        return [int(v) for v in values]
