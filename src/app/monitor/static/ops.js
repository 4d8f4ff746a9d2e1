// The cron and workers pages' script: a redraw of the page's body every few seconds while the
// tab is visible (one small request, nothing when hidden), and, for operators, the Pause and
// Resume buttons of a schedule and (overview) of a queue, which call the API with the session's
// CSRF token.
"use strict";

(function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
  let busy = false;  // no redraw while an action is on its way

  async function redraw(body, state) {
    if (busy || document.hidden) return;
    const answer = await fetch(body.dataset.url, { credentials: "same-origin" });
    if (!answer.ok) { state.textContent = `○ update failed (${answer.status})`; return; }
    body.innerHTML = await answer.text();
    const at = new Date().toISOString().slice(11, 19);
    state.textContent = `● live, redrawn at ${at} UTC`;
  }

  function live() {
    const body = document.getElementById("live-body");
    const state = document.getElementById("live-state");
    if (!body || !state) return null;
    const every = (parseInt(body.dataset.every, 10) || 10) * 1000;
    const tick = () => redraw(body, state).catch(() => { state.textContent = "○ reconnecting…"; });
    setInterval(tick, every);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); });
    return tick;
  }

  // One listener on the body: its buttons are redrawn with it.
  function scheduleActions(redrawNow) {
    const body = document.getElementById("live-body");
    if (!body) return;
    body.addEventListener("click", async (event) => {
      const button = event.target.closest("button[data-schedule-action]");
      if (!button) return;
      const action = button.dataset.scheduleAction;
      const name = button.dataset.schedule;
      const say = (text) => {
        const section = document.getElementById(`schedule-${name}`);
        const result = section && section.querySelector(".schedule-result");
        if (result) result.textContent = text;
      };
      let message;
      button.disabled = true;
      busy = true;
      try {
        const answer = await fetch(`/api/v1/schedules/${encodeURIComponent(name)}/${action}`, {
          method: "POST",
          credentials: "same-origin",
          headers: { "x-csrf-token": csrf() },
        });
        const data = await answer.json().catch(() => null);
        if (!answer.ok) throw new Error((data && data.detail) || `${answer.status}`);
        message = data.paused ? `✓ paused by ${data.paused_by}` : "✓ resumed";
      } catch (error) {
        say(`✗ ${error.message}`);
        button.disabled = false;
        return;
      } finally {
        busy = false;
      }
      if (redrawNow) await redrawNow();  // the new state, and the other button
      say(message);
    });
  }

  // The overview's Pause… / Resume… of a queue: confirmed in a dialog, then the API's call.
  function queueActions() {
    const dialog = document.getElementById("confirm");
    if (!dialog) return;
    const confirmWith = (text) => new Promise((resolve) => {
      document.getElementById("confirm-text").textContent = text;
      dialog.returnValue = "";
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
    });
    document.addEventListener("click", async (event) => {
      const button = event.target.closest("button[data-queue-action]");
      if (!button) return;
      const action = button.dataset.queueAction;
      const name = button.dataset.queue;
      const result = button.parentElement.querySelector(".queue-result");
      const question = action === "pause"
        ? `Pause queue ${name}? Its workers take no new job (running jobs finish); triggers are still accepted.`
        : `Resume queue ${name}? Its workers take its jobs again at once.`;
      if (!(await confirmWith(question))) return;
      button.disabled = true;
      try {
        const answer = await fetch(`/api/v1/queues/${encodeURIComponent(name)}/${action}`, {
          method: "POST",
          credentials: "same-origin",
          headers: { "x-csrf-token": csrf() },
        });
        const data = await answer.json().catch(() => null);
        if (!answer.ok) throw new Error((data && data.detail) || `${answer.status}`);
        window.location.reload();  // the new state, and the other button
      } catch (error) {
        if (result) result.textContent = `✗ ${error.message}`;
        button.disabled = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    if (page === "overview") queueActions();
    if (page !== "cron" && page !== "workers") return;
    const tick = live();
    if (page === "cron") scheduleActions(tick);
  });
})();
