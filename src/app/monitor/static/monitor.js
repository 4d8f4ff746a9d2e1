// The monitor's own script (no framework, no build step). One EventSource per tab: the
// jobs page follows GET /api/v1/events, a job's page GET /api/v1/jobs/{id}/events.
"use strict";

(function () {
  const ICONS = { queued: "◷", running: "▶", complete: "✓", failed: "✗", aborted: "⊘" };
  const FINAL = new Set(["complete", "failed", "aborted"]);
  const MAX_PENDING = 200;
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  async function post(url, body) {
    const answer = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "x-csrf-token": csrf() },
      body: JSON.stringify(body || {}),
    });
    let data = null;
    try { data = await answer.json(); } catch (e) { data = null; }
    if (!answer.ok) {
      throw new Error((data && data.detail) || `${answer.status} ${answer.statusText}`);
    }
    return data;
  }

  function setStatus(element, status) {
    if (!element) return;
    element.className = element.className.replace(/status-\w+/, `status-${status}`);
    const icon = element.querySelector(".icon");
    const text = element.querySelector(".status-text");
    if (icon) icon.textContent = ICONS[status] || "?";
    if (text) text.textContent = status;
  }

  // Removes empty fields so that the URL carries only the filters in use.
  function tidyFilterForm() {
    const form = document.getElementById("filters");
    if (!form) return;
    form.addEventListener("submit", () => {
      for (const field of form.querySelectorAll("input, select")) {
        if (field.type !== "checkbox" && !field.value) field.disabled = true;
      }
      const limit = form.querySelector('select[name="limit"]');
      if (limit && limit.value === "50") limit.disabled = true;
    });
  }

  function jobsPage() {
    const live = document.getElementById("live");
    const rows = document.getElementById("rows");
    if (!live || !rows) return;
    const state = document.getElementById("live-state");
    const refresh = document.getElementById("refresh");
    const query = new URLSearchParams(live.dataset.query);
    const firstPage = live.dataset.firstPage === "true";
    const limit = parseInt(live.dataset.limit, 10) || 50;
    const pending = new Set();
    let overflow = false;
    let timer = null;
    refresh.value = localStorage.getItem("monitor.refresh") || "live";

    const say = (text) => { state.textContent = text; };
    const mode = () => refresh.value;
    const active = () => mode() !== "paused" && !document.hidden;

    // The stream takes only the filters it knows; the server checks the others per row.
    const streamQuery = new URLSearchParams();
    for (const name of ["task_name", "queue", "user_id", "project_id"]) {
      if (query.has(name)) streamQuery.set(name, query.get(name));
    }
    const source = new EventSource(`/api/v1/events?${streamQuery}`);
    let caughtUp = false;
    source.onopen = () => {
      say(active() ? "● live" : "❚❚ paused");
      if (caughtUp) return;  // a reconnect resumes from its last event (Last-Event-ID)
      caughtUp = true;
      // The stream starts now: the drawn rows that may have moved since are read again...
      for (const tr of rows.querySelectorAll("tr[data-job-id]")) {
        if (!FINAL.has(tr.dataset.status)) pending.add(tr.dataset.jobId);
      }
      flush();
      // ...and jobs made between the page's drawing and now come from here.
      if (firstPage) {
        const top = rows.querySelector("tr[data-cursor]");
        const params = new URLSearchParams(query);
        params.set("before", top ? top.dataset.cursor : live.dataset.drawnAt);
        params.set("limit", String(limit));
        apply(`/monitor/rows?${params}`);
      }
    };
    source.onerror = () => say("○ reconnecting…");

    function onEvent(message) {
      const event = JSON.parse(message.data);
      const row = document.getElementById(`job-${event.job_id}`);
      if (!row && !firstPage) return;
      if (pending.size >= MAX_PENDING) { overflow = true; return; }
      pending.add(event.job_id);
      if (row && active() && mode() === "live") {
        row.dataset.status = event.status;
        setStatus(row.querySelector(".status"), event.status);
      }
      if (mode() === "live") schedule(1000);  // at most one rows request a second
    }
    source.addEventListener("status", onEvent);
    source.addEventListener("progress", onEvent);

    function schedule(delay) {
      if (timer === null) timer = setTimeout(flush, delay);
    }

    async function flush() {
      timer = null;
      if (!active() || pending.size === 0) return;
      const ids = [...pending];
      pending.clear();
      const params = new URLSearchParams(query);
      params.set("ids", ids.join(","));
      await apply(`/monitor/rows?${params}`);
    }

    // Puts the rows a /monitor/rows answer holds in the table: changed ones in place, new
    // ones on top (the first page only), the table kept to its page size.
    async function apply(url) {
      const answer = await fetch(url, { credentials: "same-origin" });
      if (!answer.ok) { say(`○ update failed (${answer.status})`); return; }
      const template = document.createElement("template");
      template.innerHTML = await answer.text();
      const fresh = [...template.content.querySelectorAll("tr")];
      for (const row of fresh.reverse()) {
        const old = document.getElementById(row.id);
        if (old) {
          const picked = old.querySelector(".pick-row");
          if (picked && picked.checked) row.querySelector(".pick-row").checked = true;
          old.replaceWith(row);
        } else if (firstPage) {
          insertInOrder(row);
        }
      }
      while (rows.children.length > limit) rows.lastElementChild.remove();
      const empty = document.getElementById("empty");
      if (empty && rows.children.length) empty.remove();
      say(overflow ? "● live (some changes skipped: reload for all)" : "● live");
    }

    // Newest first, as the server orders the list (an old job that changed goes to its place).
    function insertInOrder(row) {
      const created = (tr) => Date.parse(tr.querySelector("time").getAttribute("datetime"));
      const at = created(row);
      const after = [...rows.children].find((other) => created(other) < at);
      if (after) rows.insertBefore(row, after);
      else if (rows.children.length < limit) rows.append(row);
    }

    // "every 5 s" and "every 30 s" apply what the stream said since, at that pace.
    let lastFlush = Date.now();
    setInterval(() => {
      const seconds = parseInt(mode(), 10);
      if (seconds && Date.now() - lastFlush >= seconds * 1000) {
        lastFlush = Date.now();
        flush();
      }
    }, 1000);
    refresh.addEventListener("change", () => {
      localStorage.setItem("monitor.refresh", mode());
      say(active() ? "● live" : "❚❚ paused");
      if (active()) flush();
    });
    document.addEventListener("visibilitychange", () => {
      say(active() ? "● live" : "❚❚ paused");
      if (active()) flush();
    });
    bulkActions(query);
  }

  function bulkActions(query) {
    const bar = document.getElementById("bulk");
    if (!bar) return;
    const result = document.getElementById("bulk-result");
    const dialog = document.getElementById("confirm");
    const all = document.getElementById("pick-all");
    if (all) {
      all.addEventListener("change", () => {
        for (const box of document.querySelectorAll(".pick-row")) box.checked = all.checked;
      });
    }
    const confirmWith = (text) => new Promise((resolve) => {
      document.getElementById("confirm-text").textContent = text;
      dialog.returnValue = "";
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
    });
    const report = (done) => {
      result.textContent = `${done.action}: ${done.acted_on} done, ${done.skipped} skipped` +
        (done.more_remain ? ", more remain (run it again)" : "");
    };
    bar.addEventListener("click", async (click) => {
      const button = click.target.closest("button[data-action]");
      if (!button) return;
      const action = button.dataset.action;
      try {
        if (button.dataset.scope === "selected") {
          const ids = [...document.querySelectorAll(".pick-row:checked")].map((box) => box.value);
          if (!ids.length) { result.textContent = "Select jobs first."; return; }
          if (!(await confirmWith(`${action} ${ids.length} selected job(s)?`))) return;
          report(await post(`/api/v1/jobs/bulk/${action}`, { job_ids: ids }));
        } else {
          const params = new URLSearchParams(query);
          params.set("action", action);
          const answer = await fetch(`/monitor/count?${params}`, { credentials: "same-origin" });
          const counted = await answer.json();
          if (!answer.ok) { result.textContent = counted.detail; return; }
          if (!counted.count) { result.textContent = `No job to ${action} matches this filter.`; return; }
          const more = counted.more ? ` (more than ${counted.cap} match: this does the first ${counted.cap})` : "";
          if (!(await confirmWith(`${action} ${counted.count} job(s) matching this filter${more}?`))) return;
          report(await post(`/api/v1/jobs/bulk/${action}`, { filter: counted.filter }));
        }
      } catch (error) {
        result.textContent = `✗ ${error.message}`;
      }
    });
  }

  function jobPage() {
    const panel = document.getElementById("job-panel");
    if (!panel) return;
    const jobId = panel.dataset.jobId;
    let source = null;
    let timer = null;

    async function reload() {
      timer = null;
      const answer = await fetch(`/monitor/jobs/${jobId}?part=panel`, { credentials: "same-origin" });
      if (answer.ok) panel.innerHTML = await answer.text();
    }
    const soon = () => { if (timer === null) timer = setTimeout(reload, 250); };

    function follow() {
      if (source) source.close();
      source = new EventSource(`/api/v1/jobs/${jobId}/events`);
      // `job`: the job as it is when the stream opens, which may be after it ended.
      const onEvent = (message) => {
        const event = JSON.parse(message.data);
        setStatus(document.getElementById("job-status"), event.status);
        if (message.type !== "progress" && FINAL.has(event.status)) { source.close(); source = null; }
        soon();
      };
      source.addEventListener("job", onEvent);
      source.addEventListener("status", onEvent);
      source.addEventListener("progress", onEvent);
    }
    if (panel.dataset.final !== "true") follow();

    panel.addEventListener("click", async (click) => {
      const button = click.target.closest("button[data-job-action]");
      if (!button) return;
      const action = button.dataset.jobAction;
      const result = document.getElementById("job-action-result");
      button.disabled = true;
      try {
        await post(`/api/v1/jobs/${jobId}/${action}`);
        result.textContent = action === "retry" ? "Queued again." : "Cancel requested.";
        follow();
        soon();
      } catch (error) {
        result.textContent = `✗ ${error.message}`;
        button.disabled = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    tidyFilterForm();
    const page = document.body.dataset.page;
    if (page === "jobs") jobsPage();
    if (page === "job") jobPage();
  });
})();
