// The Sluice dashboard: one page, six views chosen by the URL's hash —
//   #/                 the overview: streams, views and tables, pushed once a second
//   #/streams/NAME     a stream's newest records and its errors table
//   #/views/NAME       a view's live chart (windowed) or live table (updating, stateless)
//   #/sql              the SQL editor, whose queries can be pinned to a saved dashboard
//   #/dashboards       the saved dashboards
//   #/dashboards/NAME  one of them: its panels, redrawn as the server runs them again
// Every page returns a function that stops what it started (event sources, timers, charts),
// so that moving around for hours holds no more than the page on screen. Everything shown
// that comes from the server is escaped.
"use strict";

const main = document.getElementById("main");
const connection = document.getElementById("connection");
let leave = () => {};

// ---- helpers ----------------------------------------------------------------------------

const esc = (value) =>
  String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

const number = (n, digits = 0) =>
  n == null || Number.isNaN(n) ? "" : Number(n).toLocaleString("en-US", { maximumFractionDigits: digits });

function bytes(n) {
  if (n == null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function ago(ms) {
  if (ms == null) return "";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 120000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms / 60000)} min`;
}

function sparkline(values, width = 120, height = 22) {
  if (!values || values.length < 2) return `<svg class="spark" width="${width}" height="${height}"></svg>`;
  const max = Math.max(...values, 1);
  const step = width / (values.length - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 1 - (v / max) * (height - 2)).toFixed(1)}`);
  return `<svg class="spark" width="${width}" height="${height}"><polyline fill="none" stroke="#2563eb" stroke-width="1.5" points="${points.join(" ")}"/></svg>`;
}

// A server with users asks for a token (a user's secret): asked once, kept for this tab's
// session (sessionStorage), sent as a bearer token with every request.
const TOKEN = "sluice-token";

// fetch with the token; a 401 asks for one, and the page is drawn again once it is given.
async function api(path, init = {}) {
  const token = sessionStorage.getItem(TOKEN);
  const headers = token ? { ...init.headers, authorization: `Bearer ${token}` } : init.headers;
  const response = await fetch(path, { ...init, headers });
  if (response.status === 401) {
    askForToken(token !== null);
    throw Object.assign(new Error("this server asks for a token"), { unauthorized: true });
  }
  return response;
}

function askForToken(refused) {
  if (document.getElementById("login")) return;
  leave();
  leave = () => {};
  sessionStorage.removeItem(TOKEN);
  main.innerHTML = `
    <h1>Sign in</h1>
    <form id="login" class="panel">
      <p>This server asks for a token: the secret of one of its users.</p>
      ${refused ? `<p class="error">That token was refused.</p>` : ""}
      <input type="password" id="token" autocomplete="current-password" placeholder="token" required>
      <button type="submit">Sign in</button>
    </form>`;
  const input = main.querySelector("#token");
  input.focus();
  main.querySelector("#login").onsubmit = (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN, input.value.trim());
    route();
  };
}

// A JSON request of the API; a refusal throws its message.
async function request(path, init = {}) {
  const response = await api(path, init);
  const answer = response.status === 204 ? null : await response.json();
  if (!response.ok) throw Object.assign(new Error(answer.error || response.statusText), { details: answer });
  return answer;
}

async function sql(text, maxRows = 1000) {
  const response = await api("/v1/sql", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ sql: text, max_rows: maxRows }),
  });
  const answer = await response.json();
  if (!response.ok) {
    // Errors are {"code", "error"}, with "line" and "column" when the text is at fault.
    throw Object.assign(new Error(answer.error || response.statusText), { details: answer });
  }
  return answer;
}

// Server-sent events, marked live in the header while connected. Read with fetch rather than
// EventSource, which cannot send the token; reconnects a second after a failure, as EventSource.
function live(url, handlers) {
  const controller = new AbortController();
  let closed = false;
  const dispatch = (block) => {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (data.length && handlers[event]) handlers[event](JSON.parse(data.join("\n")));
  };
  (async () => {
    while (!closed) {
      try {
        const response = await api(url, { signal: controller.signal, headers: { accept: "text/event-stream" } });
        if (!response.ok) throw new Error(response.statusText);
        connection.classList.add("live");
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          for (let end; (end = buffer.indexOf("\n\n")) >= 0; buffer = buffer.slice(end + 2)) {
            dispatch(buffer.slice(0, end));
          }
        }
      } catch (e) {
        if (e.unauthorized) return;
      }
      connection.classList.remove("live");
      if (!closed) await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  })();
  return () => { closed = true; controller.abort(); connection.classList.remove("live"); };
}

function cell(value) {
  if (value === null || value === undefined) return `<td class="muted">null</td>`;
  if (typeof value === "number") return `<td class="num">${esc(value)}</td>`;
  if (typeof value === "object") return `<td>${esc(JSON.stringify(value))}</td>`;
  return `<td>${esc(value)}</td>`;
}

// A table of `columns` ([{name}]) and `rows` ([[…]]); `sortable` makes headers clickable.
function resultTable(columns, rows, { sortable = false, sort = null, desc = false, rowAttrs = () => "" } = {}) {
  const arrow = (name) => (name === sort ? (desc ? " ▼" : " ▲") : "");
  const head = columns
    .map((c) => `<th class="${sortable ? "sortable" : ""}" data-column="${esc(c.name)}">${esc(c.name)}${arrow(c.name)}</th>`)
    .join("");
  const body = rows.map((row) => `<tr ${rowAttrs(row)}>${row.map(cell).join("")}</tr>`).join("");
  return `<table class="result"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

// ---- overview ---------------------------------------------------------------------------

// Every pipeline (a stream's raw tables, a view) has one status shape: the same columns.
const PIPELINE_HEADS = `<th class="num">input lag</th><th class="num">last commit</th>
  <th class="num">last round</th><th class="num">rows out</th><th class="num">errors</th>
  <th class="num">lost</th><th class="num">failures</th><th>last error</th>`;

function pipelineCells(p) {
  if (!p) return `<td colspan="8" class="muted">no pipeline</td>`;
  const ms = p.partition_lag_ms || {};
  const byPartition = Object.entries(p.partition_lag || {})
    .map(([k, n]) => `${k}: ${n}` + (ms[k] ? ` (${(ms[k] / 1000).toFixed(1)} s behind)` : "")).join(", ");
  return `<td class="num" title="${esc(byPartition && "per partition: " + byPartition)}">${number(p.input_lag)}</td>
    <td class="num">${p.since_commit_ms == null ? "" : ago(p.since_commit_ms) + " ago"}</td>
    <td class="num">${p.last_round_ms == null ? "" : p.last_round_ms + " ms"}</td>
    <td class="num">${number(p.rows_out)}</td><td class="num">${number(p.errors_out)}</td>
    <td class="num" title="${esc(p.last_gap || "")}">${number(p.lost)}</td>
    <td class="num">${number(p.failures)}</td><td class="error">${esc(p.last_error)}</td>`;
}

function overviewPage() {
  main.innerHTML = `
    <h1>Overview</h1>
    <h2>Streams</h2><section class="panel"><table id="streams"><thead><tr>
      <th>stream</th><th class="num">events/s</th><th>last minute</th><th class="num">records</th>
      <th class="num">size</th><th class="num">shards</th>${PIPELINE_HEADS}</tr></thead><tbody></tbody></table></section>
    <h2>Materialized views</h2><section class="panel"><table id="views"><thead><tr>
      <th>view</th><th>kind</th><th>input</th><th>watermark</th>${PIPELINE_HEADS}</tr></thead><tbody></tbody></table></section>
    <h2>Tables</h2><section class="panel"><table id="tables"><thead><tr>
      <th>table</th><th>kind</th><th class="num">rows</th><th class="num">files</th>
      <th class="num">size</th><th class="num">version</th></tr></thead><tbody></tbody></table></section>`;
  const body = (id) => main.querySelector(`#${id} tbody`);
  let drawn = false;
  return live("/v1/live/overview", {
    overview(o) {
      body("streams").innerHTML = o.streams.map((s) => `
        <tr data-stream="${esc(s.name)}">
          <td><a href="#/streams/${encodeURIComponent(s.name)}">${esc(s.name)}</a>${
            s.reads_from ? `<div class="muted">reads ${esc(s.reads_from)}</div>` : ""}</td>
          <td class="num rate">${number(s.rate)}</td><td>${sparkline(s.rates)}</td>
          <td class="num">${number(s.records)}</td><td class="num">${bytes(s.bytes)}</td>
          <td class="num">${s.shards}</td>${pipelineCells(s.pipeline)}</tr>`).join("") || `<tr><td colspan="13" class="muted">no streams</td></tr>`;
      body("views").innerHTML = o.views.map((v) => `
        <tr data-view="${esc(v.name)}">
          <td><a href="#/views/${encodeURIComponent(v.name)}">${esc(v.name)}</a></td>
          <td>${esc(v.kind)}</td><td>${esc(v.input)}</td>
          <td>${esc(v.watermark ? v.watermark.replace("T", " ").replace(".000Z", "Z") : "")}</td>
          ${pipelineCells(v)}</tr>`).join("") || `<tr><td colspan="11" class="muted">no views</td></tr>`;
      body("tables").innerHTML = o.tables.map((t) => `
        <tr data-table="${esc(t.name)}"><td>${esc(t.name)}</td><td>${esc(t.kind)}</td>
          <td class="num">${number(t.rows)}</td><td class="num">${number(t.files)}</td>
          <td class="num">${bytes(t.bytes)}</td><td class="num">${t.version ?? ""}</td>
          ${t.error ? `<td class="error">${esc(t.error)}</td>` : ""}</tr>`).join("") || `<tr><td colspan="6" class="muted">no tables</td></tr>`;
      // When the first overview was on screen, for bench/dashboard.py.
      if (!drawn) { drawn = true; performance.mark("sluice-overview"); }
    },
    failure(message) { body("streams").innerHTML = `<tr><td class="error">${esc(message)}</td></tr>`; },
  });
}

// ---- a stream ---------------------------------------------------------------------------

function streamPage(name) {
  main.innerHTML = `
    <h1>Stream ${esc(name)}</h1>
    <h2>Newest records</h2><section class="panel" id="recent"><span class="muted">loading…</span></section>
    <h2>Errors (${esc(name)}_errors)</h2><section class="panel" id="errors"><span class="muted">loading…</span></section>`;
  const errorsSql = `SELECT _shard, _seq, _ingested_at, reason, raw FROM "${name.replace(/"/g, '""')}_errors" ORDER BY _ingested_at DESC, _seq DESC LIMIT 50`;
  let stopped = false;
  async function refresh() {
    try {
      const response = await api(`/v1/streams/${encodeURIComponent(name)}/recent?limit=50`);
      const answer = await response.json();
      if (stopped) return; // the page was left meanwhile
      if (!response.ok) throw new Error(answer.error);
      main.querySelector("#recent").innerHTML = answer.records.length
        ? `<table><thead><tr><th class="num">shard</th><th class="num">seq</th><th>appended</th><th>record</th></tr></thead><tbody>${
            answer.records.map((r) => `<tr><td class="num">${r.shard}</td><td class="num">${r.seq}</td>
              <td>${esc(new Date(r.appended_ms).toISOString())}</td><td class="data">${esc(r.data)}</td></tr>`).join("")}</tbody></table>`
        : `<span class="muted">no records yet</span>`;
    } catch (e) {
      if (stopped) return;
      main.querySelector("#recent").innerHTML = `<div class="message">${esc(e.message)}</div>`;
    }
    try {
      const errors = await sql(errorsSql, 50);
      if (stopped) return;
      main.querySelector("#errors").innerHTML = errors.rows.length
        ? resultTable(errors.columns, errors.rows)
        : `<span class="muted">no errors</span>`;
    } catch (e) {
      if (stopped) return;
      main.querySelector("#errors").innerHTML = `<div class="message">${esc(e.message)}</div>`;
    }
    if (!stopped) timer = setTimeout(refresh, 2000);
  }
  let timer = setTimeout(refresh, 0);
  return () => { stopped = true; clearTimeout(timer); };
}

// ---- a view -----------------------------------------------------------------------------

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777",
  "#4b5563", "#65a30d", "#7c3aed", "#0d9488", "#b91c1c", "#1d4ed8", "#a16207", "#be185d"];

function viewPage(name) {
  main.innerHTML = `
    <h1>View ${esc(name)}</h1>
    <div class="status-line" id="status"></div>
    <div class="controls" id="controls"></div>
    <section class="panel"><div id="content"><span class="muted">waiting for the view…</span></div></section>`;
  const params = new URLSearchParams();
  let stopLive = () => {};
  let chart = null;
  let chartKeys = null; // the keys the chart draws, in its order, and its measure
  let previousRows = new Map();
  const dropChart = () => { if (chart) chart.destroy(); chart = null; chartKeys = null; };

  function connect() {
    stopLive();
    stopLive = live(`/v1/live/views/${encodeURIComponent(name)}?${params}`, {
      data: render,
      failure(message) { dropChart(); main.querySelector("#content").innerHTML = `<div class="message">${esc(message)}</div>`; },
    });
  }

  function controls(data) {
    const box = main.querySelector("#controls");
    if (box.dataset.kind === data.kind) return;
    box.dataset.kind = data.kind;
    if (data.kind !== "series") { box.innerHTML = ""; return; }
    const options = (names, chosen) => names.map((n) => `<option ${n === chosen ? "selected" : ""}>${esc(n)}</option>`).join("");
    box.innerHTML = `
      <label>lines by <select id="key">${data.keys.length ? options(data.keys, data.key) : "<option>(none)</option>"}</select></label>
      <label>measure <select id="measure">${options(data.measures, data.measure)}</select></label>
      <label>top <input id="top" type="number" min="1" max="50" value="${params.get("top") || 10}" style="width:60px"></label>
      <label>keys <input id="keys" placeholder="all (top N)" value="${esc(params.get("keys") || "")}" style="width:220px"></label>`;
    const set = (param, value) => { value ? params.set(param, value) : params.delete(param); connect(); };
    box.querySelector("#key").onchange = (e) => { params.delete("keys"); box.querySelector("#keys").value = ""; set("key", data.keys.length ? e.target.value : ""); };
    box.querySelector("#measure").onchange = (e) => set("measure", e.target.value);
    box.querySelector("#top").onchange = (e) => set("top", e.target.value);
    box.querySelector("#keys").onchange = (e) => set("keys", e.target.value.split(",").map((k) => k.trim()).filter(Boolean).join(","));
  }

  function render(data) {
    controls(data);
    const content = main.querySelector("#content");
    if (data.kind === "series") {
      if (!data.x.length) {
        dropChart();
        content.innerHTML = `<span class="muted">no window has closed yet: results come when the watermark passes a window's end</span>`;
        return;
      }
      // The same keys in another rank order keep the chart (and its legend): only new keys, or
      // another measure, draw a new one.
      const byKey = new Map(data.series.map((s) => [s.key, s.values]));
      const same = chartKeys && chartKeys.measure === data.measure && chartKeys.keys.length === byKey.size &&
        chartKeys.keys.every((k) => byKey.has(k));
      if (same) {
        chart.setData([data.x, ...chartKeys.keys.map((k) => byKey.get(k))]);
      } else {
        dropChart();
        content.innerHTML = `<div id="chart"></div>`;
        chartKeys = { measure: data.measure, keys: data.series.map((s) => s.key) };
        const values = [data.x, ...data.series.map((s) => s.values)];
        chart = new uPlot({
          width: Math.max(400, content.clientWidth - 10),
          height: 380,
          series: [{ label: "window_end" }, ...data.series.map((s, i) => ({
            label: s.key, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: true, points: { show: data.x.length < 40 },
          }))],
          axes: [{}, { label: data.measure, size: 70 }],
        }, values, content.querySelector("#chart"));
      }
      // For whoever watches the page (and its tests): how much is drawn, up to when.
      const drawn = content.querySelector("#chart").dataset;
      drawn.points = String(data.series.reduce((n, s) => n + s.values.filter((v) => v != null).length, 0));
      drawn.last = String(data.x[data.x.length - 1]);
      return;
    }
    // Rows: keyed by the view's keys (or the whole row), flashing what changed.
    dropChart();
    const keyOf = (row) => {
      const indexes = data.keys.map((k) => data.columns.findIndex((c) => c.name === k));
      return JSON.stringify(indexes.length ? indexes.map((i) => row[i]) : row);
    };
    const next = new Map(data.rows.map((row) => [keyOf(row), JSON.stringify(row)]));
    content.innerHTML = `<div class="muted">${number(data.total)} rows${data.total > data.rows.length ? `, showing ${data.rows.length}` : ""}</div>` +
      resultTable(data.columns, data.rows, {
        sortable: true, sort: data.sort, desc: data.desc,
        rowAttrs: (row) => {
          const key = keyOf(row);
          return previousRows.size && previousRows.get(key) !== next.get(key) ? `class="changed"` : "";
        },
      });
    previousRows = next;
    content.querySelectorAll("th.sortable").forEach((th) => {
      th.onclick = () => {
        const column = th.dataset.column;
        params.set("desc", params.get("sort") === column ? String(params.get("desc") !== "true") : "true");
        params.set("sort", column);
        connect();
      };
    });
  }

  async function status() {
    try {
      const views = (await (await api("/v1/views")).json()).views;
      if (left) return;
      const v = views.find((x) => x.name === name);
      main.querySelector("#status").innerHTML = v
        ? `<span>kind <b>${esc(v.kind)}</b></span><span>input <b>${esc(v.input)}</b></span>
           <span>input lag <b>${number(v.input_lag)}</b></span><span>watermark <b>${esc(v.watermark || "–")}</b></span>
           <span>last commit <b>${v.since_commit_ms == null ? "–" : ago(v.since_commit_ms) + " ago"}</b></span>
           <span>rows out <b>${number(v.rows_out)}</b></span><span>errors <b>${number(v.errors_out)}</b></span>
           <span>failures <b>${number(v.failures)}</b></span>${v.last_error ? `<span class="error">${esc(v.last_error)}</span>` : ""}`
        : `<span class="error">no view ${esc(name)}</span>`;
    } catch (e) { /* the next tick tries again */ }
  }
  let left = false;
  status();
  const statusTimer = setInterval(status, 2000);
  connect();
  return () => { left = true; stopLive(); clearInterval(statusTimer); dropChart(); };
}

// ---- the SQL editor ---------------------------------------------------------------------

const HISTORY = "sluice.sql.history";

function sqlPage() {
  const history = JSON.parse(localStorage.getItem(HISTORY) || "[]");
  main.innerHTML = `
    <h1>SQL</h1>
    <div class="grid">
      <div>
        <textarea id="sql" spellcheck="false" placeholder="SELECT … (Ctrl-Enter runs)">${esc(history[0] || "SHOW TABLES")}</textarea>
        <div class="controls" style="margin-top:8px">
          <button id="run">Run</button><span class="muted" id="took"></span>
          <span style="flex:1"></span>
          <button class="tab active" data-tab="table">Table</button><button class="tab" data-tab="chart">Chart</button>
          <button class="secondary" id="copy">Copy</button>
          <button class="secondary" id="pin">Pin to a dashboard</button>
        </div>
        <form class="panel controls" id="pin-form" hidden></form>
        <section class="panel" id="result"><span class="muted">Ctrl-Enter (⌘-Enter) runs the query.</span></section>
      </div>
      <div><h2 style="margin-top:0">History</h2><ul class="history" id="history"></ul></div>
    </div>`;
  const editor = main.querySelector("#sql");
  const result = main.querySelector("#result");
  let answer = null;
  let tab = "table";
  let sortBy = null;
  let chart = null;
  let left = false;

  function showHistory() {
    main.querySelector("#history").innerHTML = history.map((q, i) => `<li data-i="${i}" title="${esc(q)}">${esc(q)}</li>`).join("");
    main.querySelectorAll("#history li").forEach((li) => { li.onclick = () => { editor.value = history[li.dataset.i]; editor.focus(); }; });
  }

  function showResult() {
    if (chart) { chart.chart.destroy(); chart = null; }
    if (!answer) return;
    if (!answer.columns.length) { result.innerHTML = `<span class="muted">OK</span>`; return; }
    const note = `<div class="muted">${answer.rows.length} rows${answer.truncated ? " (the first 1,000)" : ""}</div>`;
    if (tab === "table") {
      const rows = answer.rows.slice();
      if (sortBy) {
        const i = answer.columns.findIndex((c) => c.name === sortBy.column);
        rows.sort((a, b) => (a[i] === b[i] ? 0 : a[i] == null ? 1 : b[i] == null ? -1 : a[i] < b[i] ? -1 : 1) * (sortBy.desc ? -1 : 1));
      }
      result.innerHTML = note + resultTable(answer.columns, rows, { sortable: true, sort: sortBy?.column, desc: sortBy?.desc });
      result.querySelectorAll("th.sortable").forEach((th) => {
        th.onclick = () => {
          const column = th.dataset.column;
          sortBy = { column, desc: sortBy?.column === column ? !sortBy.desc : false };
          showResult();
        };
      });
      return;
    }
    const names = answer.columns.map((c) => c.name);
    const numeric = names.filter((_, i) => answer.rows.some((r) => typeof r[i] === "number"));
    const pick = (id, list, chosen) => `<select id="${id}">${list.map((n) => `<option ${n === chosen ? "selected" : ""}>${esc(n)}</option>`).join("")}</select>`;
    const x = result.dataset.x && names.includes(result.dataset.x) ? result.dataset.x : names[0];
    const y = result.dataset.y && numeric.includes(result.dataset.y) ? result.dataset.y : numeric.find((n) => n !== x) || numeric[0];
    const kind = result.dataset.kind || "line";
    // What is drawn is what a pin takes.
    result.dataset.x = x;
    if (y) result.dataset.y = y; else delete result.dataset.y;
    result.innerHTML = `<div class="controls"><label>x ${pick("x", names, x)}</label><label>y ${pick("y", numeric, y)}</label>
      <label>as ${pick("kind", ["line", "bar", "area"], kind)}</label></div><div id="chart"></div>`;
    for (const id of ["x", "y", "kind"]) result.querySelector(`#${id}`).onchange = (e) => { result.dataset[id] = e.target.value; showResult(); };
    if (!y) { result.querySelector("#chart").innerHTML = `<span class="muted">no numeric column to draw</span>`; return; }
    chart = plot(result.querySelector("#chart"), { chart: kind, x, y: [y], by: null }, answer, 360);
  }

  async function run() {
    const text = editor.value.trim();
    if (!text) return;
    const idx = history.indexOf(text);
    if (idx >= 0) history.splice(idx, 1);
    history.unshift(text);
    history.length = Math.min(history.length, 50);
    localStorage.setItem(HISTORY, JSON.stringify(history));
    showHistory();
    const started = performance.now();
    result.innerHTML = `<span class="muted">running…</span>`;
    try {
      const answered = await sql(text);
      if (left) return;
      answer = answered;
      sortBy = null;
      main.querySelector("#took").textContent = `${Math.round(performance.now() - started)} ms`;
      showResult();
    } catch (e) {
      if (left) return;
      answer = null;
      main.querySelector("#took").textContent = "";
      // The message says where ("at Line: L, Column: C"); the cursor goes there.
      result.innerHTML = `<div class="message" id="sql-error">${esc(e.message)}</div>`;
      if (e.details && e.details.line) {
        // Put the cursor where the error is.
        const lines = editor.value.split("\n");
        const at = lines.slice(0, e.details.line - 1).reduce((n, l) => n + l.length + 1, 0) + Math.max(0, e.details.column - 1);
        editor.focus();
        editor.setSelectionRange(at, at + 1);
      }
    }
  }

  editor.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); } });
  main.querySelector("#run").onclick = run;
  main.querySelector("#copy").onclick = () => {
    if (!answer) return;
    const tsv = [answer.columns.map((c) => c.name), ...answer.rows.map((r) => r.map((v) => (v == null ? "" : typeof v === "object" ? JSON.stringify(v) : v)))]
      .map((r) => r.join("\t")).join("\n");
    navigator.clipboard?.writeText(tsv);
  };
  main.querySelector("#pin").onclick = () => pinForm(main.querySelector("#pin-form"), editor.value.trim(),
    tab === "table" ? { chart: "table" } : { chart: result.dataset.kind || "line", x: result.dataset.x, y: result.dataset.y });
  main.querySelectorAll("button.tab").forEach((b) => {
    b.onclick = () => {
      tab = b.dataset.tab;
      main.querySelectorAll("button.tab").forEach((t) => t.classList.toggle("active", t === b));
      showResult();
    };
  });
  showHistory();
  editor.focus();
  return () => { left = true; if (chart) chart.chart.destroy(); };
}

// ---- saved dashboards -------------------------------------------------------------------

const CHARTS = ["line", "bar", "area", "number", "table"];
const dashboardUrl = (name) => `/v1/dashboards/${encodeURIComponent(name)}`;

// Stores `dashboard` (`{name, title, refresh_seconds, panels}`): created if `etag` is null
// (and refused if it exists), else only over the version it tags (refused if it changed since).
function saveDashboard(dashboard, etag) {
  const condition = etag == null ? { "if-none-match": "*" } : { "if-match": etag };
  return request(dashboardUrl(dashboard.name), {
    method: "PUT",
    headers: { "content-type": "application/json", ...condition },
    body: JSON.stringify(dashboard),
  });
}

// A copy to edit: what is on screen stays as stored until the server takes the change.
const definition = (stored) => structuredClone(stored.dashboard);

// The pin form under the SQL editor: the query as a panel of a dashboard, new or not.
async function pinForm(form, text, drawn) {
  form.hidden = false;
  form.innerHTML = `<span class="muted">loading the dashboards…</span>`;
  let list;
  try { list = await request("/v1/dashboards"); } catch (e) { form.innerHTML = `<div class="message">${esc(e.message)}</div>`; return; }
  const editable = list.dashboards.filter((d) => d.editable);
  const title = text.replace(/\s+/g, " ").slice(0, 60);
  form.innerHTML = `
    <label>dashboard <select id="pin-to">${editable.map((d) => `<option value="${esc(d.name)}">${esc(d.title || d.name)}</option>`).join("")}
      <option value="">a new one…</option></select></label>
    <label id="pin-new-label">new dashboard <input id="pin-new" placeholder="name" pattern="[A-Za-z0-9_][A-Za-z0-9_.\\-]*" style="width:160px"></label>
    <label>panel <input id="pin-title" value="${esc(title)}" style="width:240px"></label>
    <label>as <select id="pin-chart">${CHARTS.map((c) => `<option ${c === drawn.chart ? "selected" : ""}>${c}</option>`).join("")}</select></label>
    <button type="submit">Pin</button><span id="pin-outcome"></span>`;
  const to = form.querySelector("#pin-to");
  const showNew = () => { form.querySelector("#pin-new-label").hidden = to.value !== ""; };
  to.onchange = showNew;
  showNew();
  if (!list.may_create) form.querySelector("#pin-outcome").innerHTML = `<span class="error">this user is read-only: it may open dashboards, not change them</span>`;
  form.onsubmit = async (e) => {
    e.preventDefault();
    const outcome = form.querySelector("#pin-outcome");
    const panel = { title: form.querySelector("#pin-title").value.trim() || title, sql: text, chart: form.querySelector("#pin-chart").value };
    if (panel.chart !== "table" && drawn.x) panel.x = drawn.x;
    if (panel.chart !== "table" && drawn.y) panel.y = [drawn.y];
    const name = to.value || form.querySelector("#pin-new").value.trim();
    try {
      if (to.value) {
        const stored = await request(dashboardUrl(name));
        const dashboard = definition(stored);
        await saveDashboard({ ...dashboard, panels: [...dashboard.panels, panel] }, stored.etag);
      } else {
        await saveDashboard({ name, title: name, panels: [panel] }, null);
      }
      outcome.innerHTML = `pinned to <a id="pinned" href="#/dashboards/${encodeURIComponent(name)}">${esc(name)}</a>`;
    } catch (error) {
      outcome.innerHTML = `<span class="error" id="pin-error">${esc(error.message)}</span>`;
    }
  };
}

function dashboardsPage() {
  main.innerHTML = `
    <h1>Dashboards</h1>
    <section class="panel"><table id="dashboards"><thead><tr><th>dashboard</th><th class="num">panels</th>
      <th></th><th>changed</th><th>by</th></tr></thead><tbody><tr><td class="muted">loading…</td></tr></tbody></table></section>
    <form class="panel controls" id="new-dashboard" hidden>
      <label>name <input id="new-name" required pattern="[A-Za-z0-9_][A-Za-z0-9_.\\-]*" style="width:180px"></label>
      <label>title <input id="new-title" style="width:260px"></label>
      <button type="submit">New dashboard</button><span id="new-outcome"></span>
    </form>`;
  let left = false;
  (async () => {
    try {
      const list = await request("/v1/dashboards");
      if (left) return;
      main.querySelector("#dashboards tbody").innerHTML = list.dashboards.map((d) => `
        <tr data-dashboard="${esc(d.name)}"><td><a href="#/dashboards/${encodeURIComponent(d.name)}">${esc(d.title || d.name)}</a>
          <span class="muted">${esc(d.name)}</span></td><td class="num">${d.panels}</td>
          <td>${d.declared ? `<span class="badge">config file</span>` : ""}</td>
          <td>${esc(new Date(d.updated_ms).toLocaleString())}</td><td>${esc(d.updated_by)}</td></tr>`).join("")
        || `<tr><td colspan="5" class="muted">no dashboards yet: pin a query from the SQL page, or make one below</td></tr>`;
      const form = main.querySelector("#new-dashboard");
      form.hidden = !list.may_create;
      form.onsubmit = async (e) => {
        e.preventDefault();
        const name = form.querySelector("#new-name").value.trim();
        try {
          await saveDashboard({ name, title: form.querySelector("#new-title").value.trim(), panels: [] }, null);
          location.hash = `#/dashboards/${encodeURIComponent(name)}`;
        } catch (error) {
          form.querySelector("#new-outcome").innerHTML = `<span class="error">${esc(error.message)}</span>`;
        }
      };
    } catch (e) {
      if (!left) main.querySelector("#dashboards tbody").innerHTML = `<tr><td class="error">${esc(e.message)}</td></tr>`;
    }
  })();
  return () => { left = true; };
}

// How a panel's answer is drawn: x (time, numbers or categories), and its series — one per
// y, or one per value of `by` (of the first y), at most 20, the largest first. A panel without
// `by` and a time x has a line per value of its first text column; `by: null` means none.
function panelSeries(panel, answer) {
  const names = answer.columns.map((c) => c.name);
  const rows = answer.rows;
  const isNumber = (i) => rows.length > 0 && rows.every((r) => r[i] == null || typeof r[i] === "number");
  const isTime = (i) => rows.length > 0 && rows.every((r) => typeof r[i] === "string" && /^\d{4}-\d\d-\d\d[T ]\d/.test(r[i]));
  const x = panel.x && names.includes(panel.x) ? panel.x : names[names.findIndex((_, i) => isTime(i))] ?? names[0];
  const xi = names.indexOf(x);
  const times = isTime(xi);
  let by = panel.by && names.includes(panel.by) ? panel.by : null;
  if (panel.by === undefined && times) by = names.find((n, i) => i !== xi && !isNumber(i) && !isTime(i)) ?? null;
  const bi = by ? names.indexOf(by) : -1;
  const ys = panel.y && panel.y.length ? panel.y.filter((y) => names.includes(y))
    : names.filter((n, i) => i !== xi && i !== bi && isNumber(i));
  const xOf = (r) => (times ? Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(r[xi]) ? r[xi] : r[xi] + "Z") / 1000 : r[xi]);
  const numbers = times || isNumber(xi);
  const xs = numbers ? [...new Set(rows.map(xOf))].sort((a, b) => a - b) : [...new Set(rows.map((r) => String(r[xi])))];
  const at = new Map(xs.map((v, i) => [v, i]));
  const slot = (r) => at.get(numbers ? xOf(r) : String(r[xi]));
  let series;
  if (by && ys.length) {
    const yi = names.indexOf(ys[0]);
    const groups = new Map();
    for (const r of rows) {
      const key = String(r[bi]);
      if (!groups.has(key)) groups.set(key, { label: key, values: new Array(xs.length).fill(null), total: 0 });
      const g = groups.get(key);
      g.values[slot(r)] = r[yi];
      g.total += Math.abs(r[yi] || 0);
    }
    series = [...groups.values()].sort((a, b) => b.total - a.total).slice(0, 20);
  } else {
    series = ys.map((y) => {
      const yi = names.indexOf(y);
      const values = new Array(xs.length).fill(null);
      for (const r of rows) values[slot(r)] = r[yi];
      return { label: y, values };
    });
  }
  return { x, times, labels: numbers ? null : xs, xs: numbers ? xs : xs.map((_, i) => i), series, measure: by ? ys[0] : ys.join(", ") };
}

// Draws `answer` into `target` as `panel` says (a line, bar or area chart of
// [`panelSeries`]); `previous` (what an earlier call returned) is kept, given new data, when the
// same series are drawn again. Returns what is drawn, or null (saying why in `target`) when
// there is nothing to draw. The SQL editor's chart and the panels are drawn by it alike, so that
// a query pinned looks as it did.
function plot(target, panel, answer, height, previous = null) {
  const drawn = panelSeries(panel, answer);
  if (!drawn.series.length || !drawn.xs.length) {
    previous?.chart.destroy();
    target.innerHTML = `<span class="muted">nothing to draw yet</span>`;
    return null;
  }
  const key = JSON.stringify([panel.chart, drawn.x, drawn.labels, drawn.series.map((s) => s.label)]);
  const data = [drawn.xs, ...drawn.series.map((s) => s.values)];
  let chart = previous?.chart;
  if (previous && previous.key === key) {
    chart.setData(data);
  } else {
    previous?.chart.destroy();
    target.innerHTML = "";
    const fill = panel.chart === "line" ? () => undefined : (c) => `${c}55`;
    chart = new uPlot({
      width: Math.max(300, target.clientWidth - 4), height,
      // Bars and areas stand on zero; categories keep half a slot free at either end.
      scales: {
        x: drawn.labels ? { time: false, range: (_, min, max) => [min - 0.5, max + 0.5] } : { time: drawn.times },
        y: panel.chart === "line" ? {} : { range: (_, min, max) => uPlot.rangeNum(Math.min(0, min), Math.max(0, max), 0.1, true) },
      },
      series: [{ label: drawn.x }, ...drawn.series.map((s, n) => ({
        label: s.label, stroke: PALETTE[n % PALETTE.length], fill: fill(PALETTE[n % PALETTE.length]), width: 1.5, spanGaps: true,
        paths: panel.chart === "bar" ? uPlot.paths.bars({ size: [0.7 / Math.max(1, drawn.series.length), 60] }) : undefined,
        points: { show: panel.chart !== "bar" && drawn.xs.length < 40 },
      }))],
      axes: [drawn.labels ? { values: (_, ticks) => ticks.map((t) => drawn.labels[t] ?? "") } : {}, { label: drawn.measure, size: 70 }],
    }, data, target);
  }
  // For whoever watches the page (and its tests): how many points are drawn.
  target.dataset.points = String(drawn.series.reduce((n, s) => n + s.values.filter((v) => v != null).length, 0));
  return { chart, key };
}

function dashboardPage(name) {
  main.innerHTML = `
    <div class="title-line"><h1 id="dashboard-title">${esc(name)}</h1><span id="dashboard-badges"></span>
      <span style="flex:1"></span><span id="dashboard-actions" class="controls"></span></div>
    <div id="dashboard-message"></div>
    <form class="panel" id="panel-form" hidden></form>
    <div class="tiles" id="tiles"><span class="muted">loading…</span></div>`;
  let stored = null;
  let left = false;
  let marked = false;
  const charts = new Map(); // panel index → { chart, key }
  const dropCharts = () => { for (const c of charts.values()) c.chart.destroy(); charts.clear(); };
  const message = (text) => { main.querySelector("#dashboard-message").innerHTML = text ? `<div class="message">${esc(text)}</div>` : ""; };

  async function change(edit) {
    const dashboard = definition(stored);
    edit(dashboard);
    try {
      const saved = await saveDashboard(dashboard, stored.etag);
      if (left) return false; // the page was left meanwhile
      message("");
      show(saved);
      connect();
      return true;
    } catch (e) {
      if (!left) message(e.message);
      return false;
    }
  }

  function panelForm(index) {
    const form = main.querySelector("#panel-form");
    const panel = index == null ? { title: "", sql: "", chart: "table" } : stored.dashboard.panels[index];
    form.hidden = false;
    form.innerHTML = `
      <div class="controls"><label>title <input id="panel-title" value="${esc(panel.title)}" style="width:300px"></label>
        <label>as <select id="panel-chart">${CHARTS.map((c) => `<option ${c === panel.chart ? "selected" : ""}>${c}</option>`).join("")}</select></label>
        <label>x <input id="panel-x" value="${esc(panel.x || "")}" placeholder="automatic" style="width:120px"></label>
        <label>y <input id="panel-y" value="${esc((panel.y || []).join(", "))}" placeholder="automatic" style="width:160px"></label>
        <label>lines by <input id="panel-by" value="${esc(panel.by || "")}" placeholder="automatic" style="width:120px"></label></div>
      <textarea id="panel-sql" spellcheck="false" placeholder="SELECT …">${esc(panel.sql)}</textarea>
      <div class="controls"><button type="submit">${index == null ? "Add panel" : "Save panel"}</button>
        <button type="button" class="secondary" id="panel-cancel">Cancel</button></div>`;
    form.querySelector("#panel-cancel").onclick = () => { form.hidden = true; message(""); };
    form.onsubmit = async (e) => {
      e.preventDefault();
      const value = (id) => form.querySelector(id).value.trim();
      const edited = { title: value("#panel-title"), sql: value("#panel-sql"), chart: value("#panel-chart") };
      if (value("#panel-x")) edited.x = value("#panel-x");
      const ys = value("#panel-y").split(",").map((y) => y.trim()).filter(Boolean);
      if (ys.length) edited.y = ys;
      if (value("#panel-by")) edited.by = value("#panel-by");
      if (await change((d) => { if (index == null) d.panels.push(edited); else d.panels[index] = edited; })) form.hidden = true;
    };
  }

  // The heading, the actions this user may take, and an empty tile per panel.
  function show(next) {
    const same = stored && stored.etag === next.etag;
    stored = next;
    if (same) return;
    const d = stored.dashboard;
    main.querySelector("#dashboard-title").textContent = d.title || d.name;
    main.querySelector("#dashboard-badges").innerHTML =
      (stored.declared ? `<span class="badge" title="change it in the config file">config file: read-only</span>` : "") +
      (!stored.writer ? `<span class="badge">read-only user</span>` : "") +
      `<span class="muted"> every ${d.refresh_seconds} s · version ${stored.version}</span>`;
    const actions = main.querySelector("#dashboard-actions");
    actions.innerHTML = (stored.editable ? `<button id="add-panel">Add panel</button><button class="secondary" id="delete-dashboard">Delete</button>` : "") +
      (stored.writer ? `<input id="copy-name" placeholder="name of a copy" style="width:150px"><button class="secondary" id="copy-dashboard">Copy</button>` : "");
    if (stored.editable) {
      actions.querySelector("#add-panel").onclick = () => panelForm(null);
      actions.querySelector("#delete-dashboard").onclick = async () => {
        if (!confirm(`Delete dashboard ${d.name}?`)) return;
        try { await request(dashboardUrl(d.name), { method: "DELETE" }); location.hash = "#/dashboards"; } catch (e) { message(e.message); }
      };
    }
    if (stored.writer) {
      actions.querySelector("#copy-dashboard").onclick = async () => {
        const copy = actions.querySelector("#copy-name").value.trim();
        try {
          await saveDashboard({ ...definition(stored), name: copy, title: `${d.title || d.name} (copy)` }, null);
          location.hash = `#/dashboards/${encodeURIComponent(copy)}`;
        } catch (e) { message(e.message); }
      };
    }
    dropCharts();
    const tiles = main.querySelector("#tiles");
    tiles.innerHTML = d.panels.map((p, i) => `
      <section class="panel tile ${p.chart === "table" ? "wide" : ""}" data-panel="${i}" data-chart="${esc(p.chart)}" data-updates="0">
        <div class="tile-head"><b>${esc(p.title)}</b><span style="flex:1"></span>
          ${stored.editable ? `<button class="icon" data-act="up" title="move up">↑</button><button class="icon" data-act="down" title="move down">↓</button>
            <button class="icon" data-act="edit" title="edit">✎</button><button class="icon" data-act="remove" title="remove">✕</button>` : ""}</div>
        <div class="tile-body"><span class="muted">running…</span></div></section>`).join("")
      || `<span class="muted">no panels yet${stored.editable ? ": add one, or pin a query from the SQL page" : ""}</span>`;
    tiles.querySelectorAll("button[data-act]").forEach((b) => {
      const i = Number(b.closest(".tile").dataset.panel);
      b.onclick = () => {
        const act = b.dataset.act;
        if (act === "edit") return panelForm(i);
        change((dashboard) => {
          const [panel] = dashboard.panels.splice(i, 1);
          if (act === "up") dashboard.panels.splice(Math.max(0, i - 1), 0, panel);
          if (act === "down") dashboard.panels.splice(i + 1, 0, panel);
        });
      };
    });
  }

  function draw(answer) {
    if (!stored || answer.etag !== stored.etag) return; // an answer for another version
    const i = answer.panel;
    const panel = stored.dashboard.panels[i];
    const tile = main.querySelector(`.tile[data-panel="${i}"]`);
    if (!tile || !panel) return;
    tile.dataset.updates = String(Number(tile.dataset.updates) + 1);
    // When every panel had its first answer, for bench/dashboard.py.
    if (!marked && [...main.querySelectorAll(".tile")].every((t) => t.dataset.updates !== "0")) {
      marked = true;
      performance.mark("sluice-dashboard");
    }
    const body = tile.querySelector(".tile-body");
    const drop = () => { if (charts.has(i)) { charts.get(i).chart.destroy(); charts.delete(i); } };
    if (answer.error) { drop(); body.innerHTML = `<div class="message">${esc(answer.error)}</div>`; return; }
    const note = answer.truncated ? `<div class="muted note">the first ${answer.rows.length} rows</div>` : "";
    if (panel.chart === "table") {
      drop();
      body.innerHTML = resultTable(answer.columns, answer.rows) + note;
      return;
    }
    if (panel.chart === "number") {
      drop();
      const names = answer.columns.map((c) => c.name);
      const column = (panel.y && panel.y[0]) || names.find((_, c) => typeof answer.rows[0]?.[c] === "number") || names[0];
      const value = answer.rows[0]?.[names.indexOf(column)];
      body.innerHTML = `<div class="number" data-value="${esc(value ?? "")}">${typeof value === "number" ? number(value, 2) : esc(value ?? "–")}</div>
        <div class="muted">${esc(column ?? "")}</div>`;
      return;
    }
    let target = body.querySelector(".chart");
    if (!target) {
      drop();
      body.innerHTML = `<div class="chart"></div>`;
      target = body.querySelector(".chart");
    }
    body.querySelectorAll(".note").forEach((n) => n.remove());
    const drawn = plot(target, panel, answer, 260, charts.get(i));
    if (drawn) charts.set(i, drawn); else charts.delete(i);
    if (note) target.insertAdjacentHTML("afterend", note);
  }

  // Connected again after a change made here, so that its panels run at once.
  let stopLive = () => {};
  const connect = () => {
    stopLive();
    stopLive = live(`/v1/live/dashboards/${encodeURIComponent(name)}`, {
      dashboard: show,
      panel: draw,
      failure(text) { stored = null; dropCharts(); main.querySelector("#tiles").innerHTML = ""; message(text); },
    });
  };
  connect();
  return () => { left = true; stopLive(); dropCharts(); };
}

// ---- routing ----------------------------------------------------------------------------

function route() {
  leave();
  const [, page, name] = location.hash.match(/^#\/(\w+)?\/?(.*)$/) || [];
  const section = page === "sql" || page === "dashboards" ? page : "overview";
  document.querySelectorAll("header nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === section));
  let decoded = "";
  try { decoded = name ? decodeURIComponent(name) : ""; } catch { /* a malformed hash: the overview */ }
  if (page === "sql") leave = sqlPage();
  else if (page === "streams" && decoded) leave = streamPage(decoded);
  else if (page === "views" && decoded) leave = viewPage(decoded);
  else if (page === "dashboards") leave = decoded ? dashboardPage(decoded) : dashboardsPage();
  else leave = overviewPage();
}

window.addEventListener("hashchange", route);
// A page left (or kept in the back/forward cache) closes its live feeds: browsers allow six
// connections to a server, and a feed kept open by a page no one sees holds one of them.
window.addEventListener("pagehide", () => { leave(); leave = () => {}; });
window.addEventListener("pageshow", (e) => { if (e.persisted) route(); });
route();
