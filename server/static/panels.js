// Side panels: the session's people and documents, and the assistant's memory of you.

import { del, get, post } from "./api.js";
import { clear, h } from "./dom.js";
import { ListPanel } from "./list_panel.js";

/** Members of a session (and adding one by email), plus its documents. */
export class DetailsPanel {
  constructor({ session, isOwner, notify }) {
    this.session = session;
    this.isOwner = isOwner;
    this.notify = notify;
    this.el = this.build();
  }

  async load() {
    await Promise.all([this.loadMembers(), this.loadDocuments()]);
  }

  async loadMembers() {
    try {
      const detail = await get(`/v1/sessions/${this.session.id}`);
      clear(this.membersEl);
      for (const member of detail.members || []) {
        this.membersEl.append(
          h(
            "li",
            { testid: "session-member", "data-user-id": member.user_id },
            h("span", { text: member.name }),
            h("span", { class: "muted", text: member.role }),
          ),
        );
      }
    } catch (exc) {
      this.notify(exc.message);
    }
  }

  async addMember(event) {
    event.preventDefault();
    const email = this.emailInput.value.trim();
    if (!email) return;
    try {
      // An invitation: the same answer whether or not the address has an account.
      await post(`/v1/sessions/${this.session.id}/members`, { email });
      this.emailInput.value = "";
      this.notify(`Invited ${email}: they join once they accept.`, "info");
    } catch (exc) {
      this.notify(exc.message);
    }
  }

  async loadDocuments() {
    const generation = (this.docsGeneration = (this.docsGeneration || 0) + 1);
    try {
      const data = await get(`/v1/sessions/${this.session.id}/documents`);
      if (generation !== this.docsGeneration) return;
      clear(this.docsEl);
      for (const doc of data.documents || []) this.docsEl.append(this.docItem(doc));
      if (!this.docsEl.firstChild) this.docsEl.append(h("li", { class: "muted", text: "No documents yet." }));
    } catch (exc) {
      this.docsEl.replaceChildren(h("li", { class: "muted", text: `Documents unavailable (${exc.message}).` }));
    }
  }

  docItem(doc) {
    return h(
      "li",
      { testid: "document", "data-doc-id": doc.id },
      h("span", { class: "grow", text: doc.title }),
      h("span", { class: "muted", text: `${doc.chunks ?? "?"} chunks` }),
      h("button", {
        class: "link danger",
        type: "button",
        "aria-label": `Remove ${doc.title}`,
        text: "Remove",
        onclick: async () => {
          try {
            await del(`/v1/sessions/${this.session.id}/documents/${doc.id}`);
            await this.loadDocuments();
          } catch (exc) {
            this.notify(exc.message);
          }
        },
      }),
    );
  }

  async upload(event) {
    event.preventDefault();
    const file = this.fileInput.files[0];
    if (!file) {
      this.notify("Choose a text or Markdown file first.");
      return;
    }
    const form = new FormData();
    form.append("file", file);
    this.uploadButton.disabled = true;
    try {
      const doc = await post(`/v1/sessions/${this.session.id}/documents`, form);
      this.fileInput.value = "";
      this.showChosenFile();
      this.notify(`Added “${doc.title}” (${doc.chunks} chunks).`, "info");
      await this.loadDocuments();
    } catch (exc) {
      this.notify(exc.message);
    } finally {
      this.uploadButton.disabled = false;
    }
  }

  showChosenFile() {
    const file = this.fileInput.files[0];
    this.fileNameEl.textContent = file ? file.name : "No file chosen · .txt or .md";
    this.filePicker.classList.toggle("chosen", Boolean(file));
  }

  build() {
    this.membersEl = h("ul", { class: "plain-list", testid: "session-members" });
    this.emailInput = h("input", { type: "email", testid: "add-member-email", placeholder: "colleague@example.com", "aria-label": "Email of the person to invite", required: true });
    this.docsEl = h("ul", { class: "plain-list", testid: "documents" });
    this.fileInput = h("input", { type: "file", testid: "doc-file", accept: ".txt,.md,.markdown,text/plain,text/markdown", "aria-label": "Attach a document", onchange: () => this.showChosenFile() });
    // The browser's own "Choose File / No file chosen" is unreadable in a narrow panel;
    // the input stays (keyboard and tests use it) inside a label that says what it does.
    this.fileNameEl = h("span", { class: "file-name", testid: "doc-file-name" });
    this.filePicker = h("label", { class: "file-picker", testid: "doc-file-label" }, this.fileInput, h("span", { class: "file-action", text: "Attach a document" }), this.fileNameEl);
    this.showChosenFile();
    this.uploadButton = h("button", { type: "submit", testid: "doc-upload" }, "Upload");
    return h(
      "aside",
      { class: "details", testid: "details" },
      h(
        "button",
        { type: "button", class: "link narrow-only", testid: "details-close", onclick: () => (this.el.hidden = true) },
        "‹ Back to chat",
      ),
      h("h3", { text: "Members" }),
      this.membersEl,
      this.isOwner
        ? h("form", { class: "inline-form", testid: "add-member-form", onsubmit: (e) => this.addMember(e) }, this.emailInput, h("button", { type: "submit", testid: "add-member" }, "Invite"))
        : h("p", { class: "muted", text: "Only the owner can add members." }),
      h("h3", { text: "Documents" }),
      h("p", { class: "muted", text: "The assistant draws on these when it answers in this session." }),
      this.docsEl,
      h("form", { class: "inline-form", testid: "doc-form", onsubmit: (e) => this.upload(e) }, this.filePicker, this.uploadButton),
    );
  }
}

/** What the assistant keeps about you: list, add, forget one, forget all. */
export class MemoryPanel extends ListPanel {
  constructor({ notify, onClose }) {
    super({ notify, onClose, url: "/v1/me/memory", key: "items" });
  }

  loaded(count) {
    this.clearButton.disabled = count === 0;
  }

  itemEl(item) {
    return h(
      "li",
      { testid: "memory-item", "data-item-id": item.id },
      h("span", { class: `tag ${item.kind}`, text: item.kind }),
      h("span", { class: "grow", text: item.content }),
      h("span", { class: "muted", title: item.created_at, text: item.source === "learned" ? "learned" : "added by you" }),
      this.removeButton({ url: `/v1/me/memory/${item.id}`, text: "Forget", testid: "memory-delete", label: `Forget ${item.content}` }),
    );
  }

  async add(event) {
    event.preventDefault();
    const content = this.input.value.trim();
    if (!content) return;
    try {
      await post("/v1/me/memory", { content, kind: this.kindSelect.value });
      // Keep whatever was typed meanwhile.
      if (this.input.value.trim() === content) this.input.value = "";
      await this.load();
    } catch (exc) {
      this.notify(exc.message);
    }
  }

  async forgetAll() {
    if (!this.confirming) {
      // A second click confirms: no window.confirm, which blocks the page.
      this.confirming = true;
      this.clearButton.textContent = "Click again to forget everything";
      setTimeout(() => {
        this.confirming = false;
        this.clearButton.textContent = "Forget everything";
      }, 4000);
      return;
    }
    this.confirming = false;
    this.clearButton.textContent = "Forget everything";
    try {
      const result = await del("/v1/me/memory");
      this.notify(`Forgot ${result.removed} item(s).`, "info");
      await this.load();
    } catch (exc) {
      this.notify(exc.message);
    }
  }

  build(onClose) {
    this.listEl = h("ul", { class: "plain-list memory-list", testid: "memory-list" });
    this.emptyEl = h("p", { class: "muted", text: "The assistant remembers nothing about you yet." });
    this.input = h("input", { type: "text", testid: "memory-input", placeholder: "e.g. I prefer short answers", "aria-label": "Something to remember", maxlength: "1000" });
    this.kindSelect = h("select", { testid: "memory-kind", "aria-label": "Kind" }, h("option", { value: "preference" }, "preference"), h("option", { value: "fact" }, "fact"));
    this.clearButton = h("button", { type: "button", class: "danger", testid: "memory-clear", onclick: () => this.forgetAll() }, "Forget everything");
    return h(
      "section",
      { class: "overlay-panel", testid: "memory-panel", hidden: true, role: "dialog", "aria-label": "Assistant memory" },
      h("header", {}, h("h2", { text: "What the assistant remembers" }), h("button", { type: "button", class: "link", testid: "memory-close", onclick: onClose }, "Close")),
      this.emptyEl,
      this.listEl,
      h("form", { class: "inline-form", testid: "memory-form", onsubmit: (e) => this.add(e) }, this.kindSelect, this.input, h("button", { type: "submit", testid: "memory-add" }, "Remember")),
      h("footer", {}, this.clearButton),
    );
  }
}
