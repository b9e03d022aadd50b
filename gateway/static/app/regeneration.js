// The operator's regeneration page: runs waiting for approval with their diff, report, tests and cost.
// Everything comes from the authenticated JSON API; every POST carries the session's CSRF token.
// Text is only ever set with textContent (a diff is data, never markup).

const els = {
  who: document.getElementById("who"),
  status: document.getElementById("regen-status"),
  error: document.getElementById("regen-error"),
  waiting: document.getElementById("waiting"),
  waitingEmpty: document.getElementById("waiting-empty"),
  rows: document.getElementById("run-rows"),
  form: document.getElementById("start-form"),
  mad: document.getElementById("start-mad"),
  model: document.getElementById("start-model"),
  modelId: document.getElementById("start-model-id"),
  calls: document.getElementById("start-calls"),
  cost: document.getElementById("start-cost"),
  tests: document.getElementById("start-tests"),
};
const POLL_MS = 2000; // while a run is running, the list is asked again (it finishes in minutes)
let shownWaiting = "";
let polling = null;
let session = null;
const FILE_STATUS = { A: "added", M: "modified", D: "deleted", R: "renamed" };

async function api(path, options = {}) {
  const headers = {};
  if (options.body) headers["Content-Type"] = "application/json";
  const method = (options.method || "GET").toUpperCase();
  if (method !== "GET" && session && session.csrf_token) headers["X-CSRF-Token"] = session.csrf_token;
  const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
  if (response.status === 401) {
    location.assign("/login");
    throw new Error("signed out");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = body && body.error ? body.error : { message: `HTTP ${response.status}` };
    throw Object.assign(new Error(error.message), { info: error, status: response.status });
  }
  return body;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function showError(message) {
  els.error.textContent = message || "";
  els.error.hidden = !message;
}

function money(value) {
  return `$${Number(value || 0).toFixed(4)}`;
}

function facts(pairs) {
  const dl = el("dl", null, "facts");
  for (const [name, value] of pairs) {
    dl.append(el("dt", name), el("dd", value));
  }
  return dl;
}

function list(items, empty) {
  if (!items.length) return el("p", empty, "muted small");
  const ul = el("ul");
  for (const item of items) ul.append(el("li", item));
  return ul;
}

function reportSection(report) {
  const section = el("section");
  section.append(el("h4", "Architectural report"));
  if (!report) {
    section.append(el("p", "No report.", "muted small"));
    return section;
  }
  section.append(el("p", "Files touched", "small"));
  section.append(list(report.files.map((f) => `${FILE_STATUS[f.status] || f.status} ${f.path}`), "none"));
  const tools = report.tools || { added: [], removed: [], changed: {} };
  const changed = Object.keys(tools.changed || {});
  section.append(el("p", "Tools", "small"));
  section.append(
    list(
      [
        ...tools.added.map((t) => `added: ${t}`),
        ...tools.removed.map((t) => `removed: ${t}`),
        ...changed.map((t) => `schema changed: ${t} (${tools.changed[t].map((c) => `${c.kind} ${c.pointer}`).join(", ")})`),
      ],
      "no tool added, removed or changed",
    ),
  );
  const imports = Object.entries(report.imports_added || {}).map(([path, names]) => `${path}: ${names.join(", ")}`);
  section.append(el("p", "Imports added", "small"), list(imports, "none"));
  const broken = (report.violations || []).map((v) => `${v.rule} ${v.path}: ${v.detail}`);
  section.append(el("p", "Principles broken", "small"), list(broken, "none"));
  return section;
}

function testsSection(title, result) {
  const section = el("section", null, "tests");
  const heading = el("h4", `${title}: `);
  if (!result) {
    heading.append(el("span", "not run", "muted"));
    section.append(heading);
    return section;
  }
  const passed = result.returncode === 0 && !result.timed_out;
  heading.append(el("span", passed ? "passed" : "failed", passed ? "ok" : "bad"));
  section.append(heading);
  section.append(el("p", `confined: ${(result.paths || []).join(" ")} (exit ${result.returncode})`, "muted small"));
  const pre = el("pre", result.output || "", "output");
  pre.tabIndex = 0;
  section.append(pre);
  return section;
}

function diffSection(diff) {
  const section = el("section");
  section.append(el("h4", "Diff"));
  const pre = el("pre", null, "diff");
  pre.tabIndex = 0;
  pre.setAttribute("aria-label", "Diff of the change");
  for (const line of (diff || "").split("\n")) {
    let kind = "";
    if (line.startsWith("+") && !line.startsWith("+++")) kind = "add";
    else if (line.startsWith("-") && !line.startsWith("---")) kind = "del";
    else if (line.startsWith("@@")) kind = "hunk";
    pre.append(el("span", `${line}\n`, kind));
  }
  section.append(pre);
  return section;
}

async function decide(run, action, reason, buttons) {
  showError("");
  for (const b of buttons) b.disabled = true;
  els.status.textContent = action === "approve" ? `Approving ${run.run_id}…` : `Rejecting ${run.run_id}…`;
  try {
    const body = action === "reject" ? JSON.stringify({ reason }) : JSON.stringify({});
    const done = await api(`/api/regeneration/runs/${encodeURIComponent(run.run_id)}/${action}`, {
      method: "POST",
      body,
    });
    if (done.decision === "approved") {
      const reloaded = done.reloaded.length ? `; reloaded ${done.reloaded.join(", ")}` : "";
      els.status.textContent = `Approved ${run.mad} (${run.run_id}): merged ${done.merged.slice(0, 12)}${reloaded}.`;
    } else {
      els.status.textContent = `Rejected ${run.mad} (${run.run_id}): nothing was changed.`;
    }
    await refresh(false);
  } catch (error) {
    for (const b of buttons) b.disabled = false;
    els.status.textContent = "";
    showError(`Could not ${action} ${run.run_id}: ${error.message}`);
  }
}

function runCard(run) {
  const card = el("article", null, "run-card");
  card.dataset.run = run.run_id;
  card.setAttribute("aria-labelledby", `run-${run.run_id}`);
  const title = el("h3", `${run.mad} — run ${run.run_id}`);
  title.id = `run-${run.run_id}`;
  card.append(title);
  const model = run.model || {};
  card.append(
    facts([
      ["Started by", run.started_by],
      ["Model", `${model.name} = ${model.model_id} (temperature ${model.temperature})`],
      ["Cost", `${money(run.cost_usd)} in ${run.llm_calls} LLM call${run.llm_calls === 1 ? "" : "s"}`],
      ["Attempts", run.attempts.map((a) => (a.ok ? "green" : "refused")).join(", ") || "none"],
      ["Diff SHA-256", run.diff_hash || "—"],
    ]),
  );
  card.append(reportSection(run.report));
  card.append(testsSection("Architecture tests", run.architecture_tests));
  card.append(testsSection("The MAD's tests", run.tests));
  card.append(diffSection(run.diff));

  const form = el("form", null, "decide");
  const label = el("label", "Reason (kept with a rejection)");
  const reason = el("input");
  reason.type = "text";
  reason.maxLength = 2000;
  reason.name = "reason";
  label.append(reason);
  const approve = el("button", "Approve and reload", "button primary");
  approve.type = "button";
  const reject = el("button", "Reject", "button danger");
  reject.type = "button";
  const buttons = [approve, reject];
  approve.addEventListener("click", () => decide(run, "approve", "", buttons));
  reject.addEventListener("click", () => decide(run, "reject", reason.value, buttons));
  form.addEventListener("submit", (event) => event.preventDefault());
  form.append(label, approve, reject);
  card.append(form);
  return card;
}

function row(brief) {
  const tr = el("tr");
  tr.dataset.run = brief.run_id;
  const id = el("td");
  id.append(el("code", brief.run_id));
  tr.append(
    id,
    el("td", brief.mad),
    el("td", brief.started_by),
    el("td", brief.decision ? brief.status : `${brief.status} · ${brief.state.replaceAll("_", " ")}`),
    el("td", brief.decision || (brief.awaiting_approval ? "waiting" : "—")),
    el("td", brief.llm_calls),
    el("td", money(brief.cost_usd)),
  );
  return tr;
}

async function refresh(clearStatus = true) {
  if (clearStatus) els.status.textContent = "";
  const { runs } = await api("/api/regeneration/runs");
  els.rows.replaceChildren(...runs.map(row));
  const waiting = runs.filter((r) => r.awaiting_approval);
  const ids = waiting.map((r) => r.run_id).join(" ");
  if (ids !== shownWaiting) {
    // Cards are redrawn only when the set waiting changes, so a reason being typed is not lost.
    const details = await Promise.all(
      waiting.map((r) => api(`/api/regeneration/runs/${encodeURIComponent(r.run_id)}`)),
    );
    els.waiting.replaceChildren(...details.map(runCard));
    shownWaiting = ids;
  }
  els.waitingEmpty.hidden = waiting.length > 0;
  clearTimeout(polling);
  if (runs.some((r) => r.status === "running")) {
    polling = setTimeout(() => refresh(false).catch((error) => showError(error.message)), POLL_MS);
  }
}

async function loadMads() {
  const { mads } = await api("/api/mads");
  const names = [...new Set(mads.map((m) => m.name))].sort();
  els.mad.replaceChildren(...names.map((name) => Object.assign(el("option", name), { value: name })));
}

async function start(event) {
  event.preventDefault();
  showError("");
  const body = { mad: els.mad.value, model: els.model.value.trim(), model_id: els.modelId.value.trim() };
  if (els.calls.value) body.max_calls = Number(els.calls.value);
  if (els.cost.value) body.max_cost_usd = Number(els.cost.value);
  const tests = els.tests.value.trim().split(/\s+/).filter(Boolean);
  if (tests.length) body.tests = tests;
  const button = els.form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const started = await api("/api/regeneration/runs", { method: "POST", body: JSON.stringify(body) });
    els.status.textContent = `Started run ${started.run_id} for ${started.mad}: the change is written, checked and `
      + "tested confined; it appears below when it waits for approval.";
    await refresh(false);
  } catch (error) {
    const fields = error.info && error.info.fields ? error.info.fields.map((f) => `${f.field}: ${f.reason}`) : [];
    showError(`Could not start: ${fields.length ? fields.join("; ") : error.message}`);
  } finally {
    button.disabled = false;
  }
}

async function main() {
  try {
    session = await api("/api/session");
    els.who.textContent = `Signed in as ${session.principal} (${session.role})`;
    if (session.role !== "operator") {
      showError("Regeneration is for operators.");
      els.waitingEmpty.hidden = true;
      els.form.hidden = true;
      return;
    }
    els.form.addEventListener("submit", start);
    await Promise.all([loadMads(), refresh()]);
  } catch (error) {
    if (error.message !== "signed out") showError(error.message);
  }
}

main();
