// API keys for the OpenAI-compatible front door (/v1/chat/completions): create one
// (its secret is shown this once), see when each was last used, revoke one.

import { post } from "./api.js";
import { formatTime, h } from "./dom.js";
import { ListPanel } from "./list_panel.js";

export class ApiKeysPanel extends ListPanel {
  constructor({ notify, onClose }) {
    super({ notify, onClose, url: "/v1/me/api-keys", key: "api_keys" });
  }

  itemEl(key) {
    const used = key.last_used_at ? `used ${formatTime(key.last_used_at)}` : "never used";
    return h(
      "li",
      { testid: "api-key", "data-key-id": key.id },
      h("code", { text: `${key.prefix}…` }),
      h("span", { class: "grow", text: key.name }),
      h("span", { class: "muted", title: key.created_at, text: used }),
      this.removeButton({ url: `/v1/me/api-keys/${key.id}`, text: "Revoke", testid: "api-key-revoke", label: `Revoke ${key.name}` }),
    );
  }

  async create(event) {
    event.preventDefault();
    const name = this.nameInput.value.trim();
    if (!name) return;
    try {
      const key = await post("/v1/me/api-keys", { name });
      this.nameInput.value = "";
      // Shown once: the server keeps only its hash.
      this.secretEl.textContent = key.key;
      this.secretBox.hidden = false;
      await this.load();
    } catch (exc) {
      this.notify(exc.message);
    }
  }

  build(onClose) {
    this.listEl = h("ul", { class: "plain-list", testid: "api-key-list" });
    this.emptyEl = h("p", { class: "muted", text: "No API keys yet." });
    this.nameInput = h("input", { type: "text", testid: "api-key-name", placeholder: "e.g. VS Code on my laptop", "aria-label": "Name of the new key", maxlength: "100" });
    this.secretEl = h("code", { testid: "api-key-secret", class: "secret" });
    this.secretBox = h(
      "div",
      { class: "secret-box", testid: "api-key-created", hidden: true },
      h("p", { text: "Copy this key now: it is not shown again." }),
      this.secretEl,
    );
    return h(
      "section",
      { class: "overlay-panel", testid: "api-keys-panel", hidden: true, role: "dialog", "aria-label": "API keys" },
      h("header", {}, h("h2", { text: "API keys" }), h("button", { type: "button", class: "link", testid: "api-keys-close", onclick: onClose }, "Close")),
      h("p", { class: "muted", text: "For editors and tools that speak the OpenAI API: base URL " + location.origin + "/v1, this key as the API key. Each request is a turn in a session (the X-Parley-Session header)." }),
      this.secretBox,
      this.emptyEl,
      this.listEl,
      h("form", { class: "inline-form", testid: "api-key-form", onsubmit: (e) => this.create(e) }, this.nameInput, h("button", { type: "submit", testid: "api-key-create" }, "Create key")),
    );
  }
}
