// What is left of the user's token/money budget (issue 18): a small chip in the top bar,
// amber from 80 % spent and red once spent, and the words for a refused question.
//
// The budget comes from the welcome frame, the `budget` notices (sent once at 80 % and
// once when spent) and GET /v1/me/usage, which the page asks again after each of the
// user's answers ends, since between the two notices nothing else says what is left.
// A user without a budget (welcome.budget null) sees nothing of any of this.
// Events: "change" (detail: the budget, or null).

import { get } from "./api.js";
import { debounce, h, sameDay } from "./dom.js";

const WARN_AT = 0.8;
const REFRESH_AFTER_MS = 400;
const PERIOD_WORDS = { day: "today", month: "this month" };

export class BudgetMeter extends EventTarget {
  constructor() {
    super();
    this.budget = null;
    this.el = h("span", { class: "budget", testid: "budget", role: "status", hidden: true });
    // Only a user with a budget has anything to refresh (a new one comes with a welcome).
    this.refreshSoon = debounce(() => this.budget && this.refresh(), REFRESH_AFTER_MS);
  }

  /** The budget as the server sends it (welcome, `budget` frame, usage), or null. */
  update(budget) {
    // GET /v1/me/usage describes an unlimited budget too (both limits null); the
    // welcome frame says null. Either way: nothing to show.
    this.budget = budget && hasLimit(budget) ? budget : null;
    this.render();
    this.dispatchEvent(new CustomEvent("change", { detail: this.budget }));
  }

  async refresh() {
    try {
      const usage = await get("/v1/me/usage");
      this.update(usage.budget);
    } catch {
      // The chip keeps what it showed; the next welcome or notice corrects it.
    }
  }

  /** A question was refused with budget_exceeded: what is left now, from the server
   * (the refusal may be about the room owner's budget, not this user's). */
  refused() {
    this.refresh();
  }

  /** The words of the 80 % notice. */
  warningText() {
    const budget = this.budget;
    if (!budget) return "";
    const period = PERIOD_WORDS[budget.period] || "this period";
    return `Most of your assistant budget for ${period} is used: ${percentLeft(budget)}% left; it renews ${formatReset(budget.resets_at)}.`;
  }

  get level() {
    if (!this.budget) return "none";
    if (this.budget.exhausted) return "exhausted";
    return spentShare(this.budget) >= WARN_AT ? "warning" : "ok";
  }

  render() {
    const budget = this.budget;
    this.el.hidden = !budget;
    if (!budget) return;
    const level = this.level;
    this.el.dataset.level = level;
    const renews = `renews ${formatReset(budget.resets_at)}`;
    if (level === "exhausted") this.el.textContent = `Budget spent · ${renews}`;
    else if (level === "warning") this.el.textContent = `Budget: ${percentLeft(budget)}% left`;
    else this.el.textContent = leftText(budget);
    this.el.title = `${usedText(budget)} ${PERIOD_WORDS[budget.period] || "this period"}; ${renews}.`;
  }
}

function hasLimit(budget) {
  return budget.tokens?.limit != null || budget.usd?.limit != null;
}

/** The larger share spent of the two budgets, as the server counts it. */
export function spentShare(budget) {
  const shares = [0];
  for (const part of [budget.tokens, budget.usd]) {
    if (part && part.limit !== null && part.limit !== undefined) {
      shares.push(part.limit > 0 ? part.used / part.limit : 1);
    }
  }
  return Math.max(...shares);
}

function percentLeft(budget) {
  return Math.max(0, Math.floor((1 - spentShare(budget)) * 100));
}

// The tighter of the two budgets, in its own unit.
function leftText(budget) {
  const tokens = budget.tokens?.limit != null ? budget.tokens : null;
  const usd = budget.usd?.limit != null ? budget.usd : null;
  const tokenShare = tokens ? tokens.left / Math.max(tokens.limit, 1) : 2;
  const usdShare = usd ? usd.left / Math.max(usd.limit, 1e-9) : 2;
  if (usd && usdShare < tokenShare) return `$${usd.left.toFixed(2)} left`;
  return `${compact(tokens ? tokens.left : 0)} tokens left`;
}

function usedText(budget) {
  const parts = [];
  if (budget.tokens?.limit != null) parts.push(`${budget.tokens.used.toLocaleString()} of ${budget.tokens.limit.toLocaleString()} tokens`);
  if (budget.usd?.limit != null) parts.push(`$${budget.usd.used.toFixed(2)} of $${budget.usd.limit.toFixed(2)}`);
  return `Used ${parts.join(" and ")}`;
}

function compact(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)}M`;
  if (n >= 1e4) return `${Math.round(n / 1e3)}k`;
  return n.toLocaleString();
}

/** "at 01:00" today, "tomorrow at 01:00", else "on Tue 1 Dec at 01:00" (local time). */
export function formatReset(iso, now = new Date()) {
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return "soon";
  const time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (sameDay(at, now)) return `at ${time}`;
  const tomorrow = new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1);
  if (sameDay(at, tomorrow)) return `tomorrow at ${time}`;
  const day = at.toLocaleDateString([], { weekday: "short", month: "short", day: "numeric" });
  return `on ${day} at ${time}`;
}

/** "Your budget for the assistant is spent, so it can't answer now. It renews at …" */
export function spentText(resetsAt, whose = "Your budget") {
  const when = resetsAt ? ` It renews ${formatReset(resetsAt)}.` : "";
  return `${whose} for the assistant is spent, so it can't answer now.${when}`;
}

/** A failure's text with its ISO renewal time in the reader's local time. */
export function localiseRenewal(text) {
  return text.replace(/renews at (\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:\d\d))/, (_, iso) => `renews ${formatReset(iso)}`);
}

/** Whether a refusal is about the room owner's budget (BUDGET_PAYER=owner), by its words. */
export function isOwners(message) {
  return /room owner/i.test(message || "");
}

/** What a refused question says, in the chat, above the composer. */
export function refusalText(code, { message = "", resetsAt = null } = {}) {
  if (code === "too_many_answers") {
    return "You already have as many answers being written as you may at once. Wait for one to finish (or stop one), then send again — your message is still in the box.";
  }
  const whose = isOwners(message) ? "The room owner's budget" : "Your budget";
  const when = resetsAt ? ` It renews ${formatReset(resetsAt)}.` : "";
  if (code === "budget_overrun") {
    return `${whose} for the assistant has too little left to answer this question, so it was not answered.${when}`;
  }
  return `${spentText(resetsAt, whose)} Your message is still in the box.`;
}
