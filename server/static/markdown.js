// A small, safe Markdown subset for chat messages, written for Parley.
//
// Safety comes from construction, not from escaping strings: the text is split into
// blocks and inline spans, and every piece becomes a DOM node whose text is set with
// createTextNode. No HTML the user (or the model) writes is ever parsed. Links are
// kept only for absolute http(s) URLs and open with rel="noopener noreferrer".
//
// Blocks: paragraphs (blank-line separated, single newlines kept), fenced code
// blocks (``` with an optional language; an unterminated fence runs to the end, which
// is what a half-streamed answer looks like), bullet and numbered lists, headings
// (#, ##, ###) and block quotes. Inline: `code`, **strong**, *em* / _em_, [text](url).

import { copyButton } from "./dom.js";

const FENCE = /^\s*(```|~~~)\s*([\w+-]*)\s*$/;
const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBERED = /^\s*(\d{1,9})[.)]\s+(.*)$/;
const HEADING = /^(#{1,3})\s+(.*)$/;
const QUOTE = /^\s*>\s?(.*)$/;
const INLINE =
  /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([^\s*](?:[\s\S]*?[^\s*])?)\*\*|\*([^\s*](?:[^*]*?[^\s*])?)\*|(?<![\w])_([^\s_](?:[^_]*?[^\s_])?)_(?![\w])|\[([^\]\n]+)\]\(([^()\s]+)\)/;

/** Renders `text` into a DocumentFragment of safe nodes. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  const lines = String(text ?? "").replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === "") {
      i += 1;
      continue;
    }
    const fence = line.match(FENCE);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) {
        body.push(lines[i]);
        i += 1;
      }
      i += 1; // the closing fence, or past the end
      fragment.append(codeBlock(body.join("\n"), fence[2]));
      continue;
    }
    const heading = line.match(HEADING);
    if (heading) {
      const el = document.createElement(`h${heading[1].length + 2}`);
      appendInline(el, heading[2]);
      fragment.append(el);
      i += 1;
      continue;
    }
    if (BULLET.test(line) || NUMBERED.test(line)) {
      const ordered = !BULLET.test(line);
      const pattern = ordered ? NUMBERED : BULLET;
      const list = document.createElement(ordered ? "ol" : "ul");
      if (ordered) {
        const start = Number(line.match(NUMBERED)[1]);
        if (start !== 1) list.setAttribute("start", String(start));
      }
      while (i < lines.length && pattern.test(lines[i])) {
        const match = lines[i].match(pattern);
        const item = document.createElement("li");
        appendInline(item, ordered ? match[2] : match[1]);
        list.append(item);
        i += 1;
      }
      fragment.append(list);
      continue;
    }
    if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) {
        quoted.push(lines[i].match(QUOTE)[1]);
        i += 1;
      }
      const el = document.createElement("blockquote");
      el.append(renderMarkdown(quoted.join("\n")));
      fragment.append(el);
      continue;
    }
    const paragraph = [];
    while (i < lines.length && lines[i].trim() !== "" && !startsBlock(lines[i])) {
      paragraph.push(lines[i]);
      i += 1;
    }
    const el = document.createElement("p");
    paragraph.forEach((part, n) => {
      if (n > 0) el.append(document.createElement("br"));
      appendInline(el, part);
    });
    fragment.append(el);
  }
  return fragment;
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || BULLET.test(line) || NUMBERED.test(line) || QUOTE.test(line);
}

function codeBlock(code, language) {
  const pre = document.createElement("pre");
  const el = document.createElement("code");
  if (language) el.dataset.language = language;
  el.textContent = code;
  pre.append(el);
  const block = document.createElement("div");
  block.className = "code-block";
  block.append(copyButton(() => code, { testid: "copy-code", title: "Copy this code" }), pre);
  return block;
}

/** Appends `text` to `parent`, turning the inline syntax into nodes. */
export function appendInline(parent, text) {
  let rest = text;
  while (rest.length > 0) {
    const match = rest.match(INLINE);
    if (!match) {
      parent.append(document.createTextNode(rest));
      return;
    }
    if (match.index > 0) parent.append(document.createTextNode(rest.slice(0, match.index)));
    parent.append(inlineNode(match));
    rest = rest.slice(match.index + match[0].length);
  }
}

function inlineNode(match) {
  const [whole, , code, strong, em, underscored, label, href] = match;
  if (code !== undefined) {
    const el = document.createElement("code");
    el.textContent = code.length > 1 && code.startsWith(" ") && code.endsWith(" ") ? code.slice(1, -1) : code;
    return el;
  }
  if (strong !== undefined) return wrap("strong", strong);
  if (em !== undefined) return wrap("em", em);
  if (underscored !== undefined) return wrap("em", underscored);
  const url = safeUrl(href);
  if (!url) return document.createTextNode(whole);
  const link = document.createElement("a");
  link.href = url;
  link.target = "_blank";
  link.rel = "noopener noreferrer";
  appendInline(link, label);
  return link;
}

function wrap(tag, inner) {
  const el = document.createElement(tag);
  appendInline(el, inner);
  return el;
}

/** The URL when it is absolute http(s), else null (javascript:, data:, relative …). */
export function safeUrl(href) {
  try {
    const url = new URL(href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}
