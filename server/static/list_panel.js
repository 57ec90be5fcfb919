// An overlay panel that shows one list from the REST side and can remove an item: the
// shape the memory panel and the API keys panel share.

import { del, get } from "./api.js";
import { clear, h } from "./dom.js";

export class ListPanel {
  /** `url` lists the items under `key` in its JSON; subclasses give `build(onClose)`
   * (setting `listEl` and `emptyEl`) and `itemEl(item)`. */
  constructor({ notify, onClose, url, key }) {
    this.notify = notify;
    this.url = url;
    this.key = key;
    this.el = this.build(onClose);
  }

  async load() {
    // Two quick changes start two loads; only the newest may draw the list.
    const generation = (this.generation = (this.generation || 0) + 1);
    try {
      const data = await get(this.url);
      if (generation !== this.generation) return;
      clear(this.listEl);
      for (const item of data[this.key] || []) this.listEl.append(this.itemEl(item));
      this.emptyEl.hidden = this.listEl.childElementCount > 0;
      this.loaded(this.listEl.childElementCount);
    } catch (exc) {
      this.notify(exc.message);
    }
  }

  /** After each drawn load, with how many items are shown. */
  loaded(_count) {}

  /** A button that deletes `url` and reloads the list. */
  removeButton({ url, text, testid, label }) {
    return h("button", {
      class: "link danger",
      type: "button",
      testid,
      "aria-label": label,
      text,
      onclick: async () => {
        try {
          await del(url);
          await this.load();
        } catch (exc) {
          this.notify(exc.message);
        }
      },
    });
  }
}
