// A message's versions on the page: Retry on a failed answer, Regenerate, Edit (inline)
// and the ‹ 2/3 › arrows between versions. Every version lives on the server; what
// changes reaches every member as `message.version`, and the chat view redraws the
// message in place (`ChatView.addMessage` replaces a message whose version changed).

import { localiseRenewal } from "./budget.js";
import { h } from "./dom.js";

/** The ‹ 2/3 › arrows of a message with more than one version, else null. */
export function versionNav(view, message) {
  const count = message.version_count || 1;
  if (message.deleted || count < 2) return null;
  const version = message.version || 1;
  return h(
    "span",
    { class: "versions", testid: "versions" },
    h("button", { type: "button", class: "link", testid: "version-prev", title: "Previous version", disabled: version <= 1, onclick: () => select(view, message, version - 1) }, "‹"),
    h("span", { testid: "version-label", text: `${version}/${count}` }),
    h("button", { type: "button", class: "link", testid: "version-next", title: "Next version", disabled: version >= count, onclick: () => select(view, message, version + 1) }, "›"),
  );
}

/** Retry (a failed answer), Regenerate (an answer) or Edit (your own question). */
export function versionControls(view, message) {
  if (message.deleted) return [];
  const controls = [];
  if (message.role === "assistant") {
    const failed = message.status === "error";
    controls.push(
      h(
        "button",
        { type: "button", class: "link", testid: failed ? "retry" : "regenerate", title: failed ? "Try this answer again" : "Write another answer", onclick: () => regenerate(view, message) },
        failed ? "Retry" : "Regenerate",
      ),
    );
  } else if (message.role === "user" && message.user_id === view.me.id) {
    controls.push(h("button", { type: "button", class: "link", testid: "edit", title: "Edit your question and get a new answer", onclick: (event) => startEdit(view, message, event.target.closest("article")) }, "Edit"));
  }
  return controls;
}

/** What a failed answer shows in place of its text. */
export function failureNote(message) {
  if (message.status !== "error") return null;
  const why = localiseRenewal(message.error?.message || "the assistant failed");
  return h("p", { class: "failure", testid: "failure", role: "note" }, `The answer failed: ${why}.`);
}

async function request(view, frame) {
  if (!view.socket.isOpen || !(await view.untilJoined(10000))) {
    view.notify("Not connected yet — try again in a moment.");
    return null;
  }
  try {
    return await view.socket.request({ session_id: view.id, ...frame });
  } catch (exc) {
    view.notify(exc.message);
    return null;
  }
}

async function regenerate(view, message) {
  const ack = await request(view, { type: "regenerate", message_id: message.id });
  if (ack?.stream_id) view.ensureStream(ack.stream_id, null, message.reply_to || message.id);
}

async function select(view, message, version) {
  const ack = await request(view, { type: "select_version", message_id: message.id, version });
  if (ack?.message) view.addMessage(ack.message);
}

function startEdit(view, message, article) {
  if (!article || article.querySelector(".edit-form")) return;
  const body = article.querySelector("[data-testid=message-body]");
  const input = h("textarea", { class: "composer-input", testid: "edit-input", "aria-label": "Edit your message", rows: "3" });
  input.value = message.content;
  const cancel = () => {
    form.remove();
    body.hidden = false;
  };
  const form = h(
    "form",
    {
      class: "edit-form",
      testid: "edit-form",
      onsubmit: async (event) => {
        event.preventDefault();
        const content = input.value.trim();
        if (!content || content === message.content) return cancel();
        const ack = await request(view, { type: "edit", message_id: message.id, content });
        if (!ack) return;
        if (ack.message) view.addMessage(ack.message);
        if (ack.stream_id) view.ensureStream(ack.stream_id, null, message.id);
      },
    },
    input,
    h("div", { class: "edit-actions" }, h("button", { type: "submit", class: "primary", testid: "edit-save" }, "Save and ask again"), h("button", { type: "button", class: "link", testid: "edit-cancel", onclick: cancel }, "Cancel")),
  );
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") cancel();
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  body.hidden = true;
  body.after(form);
  input.focus();
}
