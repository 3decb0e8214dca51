"""The run report page's inline stylesheet and script (see ``report_html``).

Kept apart from the builder so each reads as what it is. The script renders
from the JSON blob in ``#artpipe-data``: one page of the contact sheet at a
time, the failure groups with a filter box. It builds every node with
``textContent``, never ``innerHTML``: titles, URLs and errors come from a
manifest and from servers, and must stay text.
"""

from __future__ import annotations

PAGE_CSS = """
:root { --bg:#f6f7f9; --fg:#1c2330; --muted:#667085; --line:#d8dde6; --card:#fff;
  --saved:#1a7f37; --unchanged:#4f6d8f; --removed:#8a6d1a; --failed:#c62828;
  --skipped:#7a7a7a; --missing:#b35c00; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  background:var(--bg); color:var(--fg); }
header { padding:16px 24px 8px; background:var(--card); border-bottom:1px solid var(--line); }
h1 { margin:0; font-size:20px; } h2 { margin:0 0 12px; font-size:17px; }
h3 { font-size:14px; margin:16px 0 6px; }
.sub, .muted { color:var(--muted); margin:4px 0; }
nav a { margin-right:16px; color:#2455a4; text-decoration:none; }
main { padding:0 24px 40px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px;
  padding:16px; margin-top:16px; }
code { font:12px/1.4 ui-monospace,Menlo,Consolas,monospace; word-break:break-all; }
.stats { display:flex; flex-wrap:wrap; gap:10px; margin-bottom:12px; }
.stat { border:1px solid var(--line); border-radius:6px; padding:8px 14px; min-width:110px; }
.stat .n { display:block; font-size:22px; font-weight:600; }
.stat .k { color:var(--muted); }
.stat.st-saved .n { color:var(--saved); } .stat.st-failed .n { color:var(--failed); }
.stat.st-unchanged .n { color:var(--unchanged); } .stat.st-removed .n { color:var(--removed); }
table { border-collapse:collapse; }
.facts th { text-align:left; color:var(--muted); font-weight:normal; padding:2px 16px 2px 0; }
.hosts th, .hosts td, .fails th, .fails td { border-bottom:1px solid var(--line);
  padding:4px 10px; text-align:right; vertical-align:top; }
.hosts td:first-child, .hosts th:first-child, .fails td, .fails th { text-align:left; }
.good { color:var(--saved); font-weight:600; } .bad { color:var(--failed); font-weight:600; }
.tools { display:flex; flex-wrap:wrap; gap:10px; align-items:center; margin-bottom:12px; }
input[type=search] { padding:5px 8px; min-width:260px; border:1px solid var(--line);
  border-radius:4px; }
select, button { padding:4px 8px; }
.pager { margin-left:auto; display:flex; gap:8px; align-items:center; }
.sheet { display:grid; grid-template-columns:repeat(auto-fill,minmax(320px,1fr)); gap:12px; }
.card { border:1px solid var(--line); border-radius:6px; padding:8px; }
.card .id { color:var(--muted); font-size:11px; margin:-4px 0 6px; white-space:nowrap;
  overflow:hidden; text-overflow:ellipsis; }
.card h3 { margin:0 0 6px; font-size:13px; white-space:nowrap; overflow:hidden;
  text-overflow:ellipsis; }
.slots { display:flex; flex-wrap:wrap; gap:6px; align-items:flex-end; }
.slot { margin:0; min-width:48px; max-width:96px; text-align:center; font-size:11px;
  color:var(--muted); position:relative; }
.slot img { display:block; max-width:96px; max-height:64px; margin:0 auto;
  border-radius:2px; background:#eee; }
.slot.st-unchanged img { opacity:.9; }
.slot .ph { height:56px; width:64px; display:flex; align-items:center; justify-content:center;
  border:2px dashed var(--skipped); border-radius:4px; font-weight:600; }
.slot.st-failed .ph { border-color:var(--failed); color:var(--failed); background:#fdecea; }
.slot.st-missing .ph { border-color:var(--missing); color:var(--missing); }
.slot.st-removed .ph { border-color:var(--removed); color:var(--removed); }
.slot[data-error] { cursor:pointer; }
.slot .err { position:absolute; z-index:5; left:0; top:100%; width:280px; text-align:left;
  background:#fff; color:var(--fg); border:1px solid var(--failed); border-radius:4px;
  padding:6px; box-shadow:0 2px 8px rgba(0,0,0,.15); word-break:break-word; }
details.group { border-top:1px solid var(--line); padding:6px 0; }
details.group summary { cursor:pointer; font-weight:600; }
.fails { width:100%; margin-top:6px; font-size:12px; table-layout:fixed; }
.fails th:nth-child(1) { width:18%; } .fails th:nth-child(2) { width:9%; }
.fails th:nth-child(3) { width:25%; }
.fails td.error { word-break:break-word; } .fails td.url { word-break:break-all; }
.timeline { width:100%; max-width:900px; height:auto; display:block; }
.timeline .area { fill:#9cc3ee; stroke:#2f6db5; stroke-width:1; }
.timeline .axis { stroke:#555; } .timeline text { font-size:11px; fill:#555; }
.timeline .throttle { stroke:var(--failed); stroke-width:1.5; }
"""

PAGE_SCRIPT = r"""
"use strict";
(function () {
  var data = JSON.parse(document.getElementById("artpipe-data").textContent);
  var PAGE = 48, FAIL_ROWS = 100;
  var LABEL = { failed: "\u2715 failed", missing: "missing", removed: "removed",
                skipped: "skipped" };
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function $(id) { return document.getElementById(id); }

  // -- contact sheet: items [id, title, type, [[art, status, thumb, error], ...]] --
  var items = data.items, shown = [], page = 0;
  function hasProblem(item) {
    for (var i = 0; i < item[3].length; i++) {
      var status = item[3][i][1];
      if (status === "failed" || status === "missing" || status === "skipped") return true;
    }
    return false;
  }
  function filterSheet() {
    var q = $("sheet-filter").value.trim().toLowerCase();
    var problems = $("sheet-mode").value === "problems";
    shown = [];
    for (var i = 0; i < items.length; i++) {
      var item = items[i];
      if (problems && !hasProblem(item)) continue;
      if (q && item[1].toLowerCase().indexOf(q) < 0 &&
          item[0].toLowerCase().indexOf(q) < 0) continue;
      shown.push(i);
    }
    page = 0;
    renderSheet();
  }
  function tile(slot) {
    var fig = el("figure", "slot st-" + slot[1]);
    fig.dataset.status = slot[1];
    if (slot[2]) {
      var img = el("img");
      img.alt = slot[0];
      img.decoding = "async";
      img.src = data.thumbs + slot[2];
      fig.appendChild(img);
    } else {
      fig.appendChild(el("div", "ph", LABEL[slot[1]] || slot[1]));
    }
    fig.appendChild(el("figcaption", null, slot[0]));
    if (slot[3]) {
      fig.title = slot[3];
      fig.tabIndex = 0;
      fig.dataset.error = slot[3];
    }
    return fig;
  }
  function card(item) {
    var node = el("article", "card");
    node.dataset.item = item[0];
    var h = el("h3", null, item[1]);
    h.title = item[1];
    node.appendChild(h);
    node.appendChild(el("div", "id", (item[2] ? item[2] + " \u00b7 " : "") + item[0]));
    var row = el("div", "slots");
    for (var i = 0; i < item[3].length; i++) row.appendChild(tile(item[3][i]));
    node.appendChild(row);
    return node;
  }
  function renderSheet() {
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.min(Math.max(page, 0), pages - 1);
    var frag = document.createDocumentFragment();
    var end = Math.min(shown.length, (page + 1) * PAGE);
    for (var i = page * PAGE; i < end; i++) frag.appendChild(card(items[shown[i]]));
    $("sheet").replaceChildren(frag);
    $("sheet-page").textContent = "page " + (page + 1) + " of " + pages + " \u00b7 " +
      shown.length.toLocaleString() + " items";
    $("sheet-page").dataset.page = String(page + 1);
    $("sheet-page").dataset.pages = String(pages);
    $("sheet-prev").disabled = page === 0;
    $("sheet-next").disabled = page >= pages - 1;
  }
  function toggleError(fig) {
    var open = fig.querySelector(".err");
    if (open) { open.remove(); return; }
    fig.appendChild(el("div", "err", fig.dataset.error));
  }
  $("sheet").addEventListener("click", function (ev) {
    var fig = ev.target.closest ? ev.target.closest(".slot[data-error]") : null;
    if (fig) toggleError(fig);
  });
  $("sheet").addEventListener("keydown", function (ev) {
    if (ev.key !== "Enter" && ev.key !== " ") return;
    var fig = ev.target.closest ? ev.target.closest(".slot[data-error]") : null;
    if (fig) { ev.preventDefault(); toggleError(fig); }
  });
  $("sheet-prev").addEventListener("click", function () { page--; renderSheet(); });
  $("sheet-next").addEventListener("click", function () { page++; renderSheet(); });
  var sheetTimer = 0;
  $("sheet-filter").addEventListener("input", function () {
    clearTimeout(sheetTimer);
    sheetTimer = setTimeout(filterSheet, 120);
  });
  $("sheet-mode").addEventListener("change", filterSheet);

  // -- failures: [reason, item, art, url, error], grouped by reason --------------
  var failures = data.failures, limits = {}, openGroups = {};
  function renderFailures() {
    var q = $("failure-filter").value.trim().toLowerCase();
    var groups = {}, order = [], total = 0;
    for (var i = 0; i < failures.length; i++) {
      var f = failures[i];
      if (q && (f[1] + "\n" + f[2] + "\n" + f[3] + "\n" + f[4] + "\n" + f[0])
          .toLowerCase().indexOf(q) < 0) continue;
      if (!groups[f[0]]) { groups[f[0]] = []; order.push(f[0]); }
      groups[f[0]].push(f);
      total++;
    }
    order.sort(function (a, b) { return groups[b].length - groups[a].length; });
    var frag = document.createDocumentFragment();
    if (!failures.length) frag.appendChild(el("p", "muted", "No failures in this run."));
    else if (!total) frag.appendChild(el("p", "muted", "No failure matches the filter."));
    order.forEach(function (reason) {
      var rows = groups[reason];
      var box = el("details", "group");
      box.dataset.reason = reason;
      box.open = openGroups[reason] !== undefined ? openGroups[reason]
        : order.length <= 4 || total <= 40;
      box.addEventListener("toggle", function () { openGroups[reason] = box.open; });
      var sum = el("summary", null, reason + " \u00b7 " + rows.length.toLocaleString());
      sum.dataset.count = String(rows.length);
      box.appendChild(sum);
      var table = el("table", "fails");
      var head = el("tr");
      ["item", "art", "URL", "error"].forEach(function (t) {
        head.appendChild(el("th", null, t));
      });
      table.appendChild(head);
      var limit = limits[reason] || FAIL_ROWS;
      for (var j = 0; j < rows.length && j < limit; j++) {
        var tr = el("tr", "failure");
        tr.appendChild(el("td", null, rows[j][1]));
        tr.appendChild(el("td", null, rows[j][2]));
        tr.appendChild(el("td", "url", rows[j][3]));
        tr.appendChild(el("td", "error", rows[j][4]));
        table.appendChild(tr);
      }
      box.appendChild(table);
      if (rows.length > limit) {
        var more = el("button", null, "show " + Math.min(FAIL_ROWS * 5, rows.length - limit) +
                      " more of " + (rows.length - limit).toLocaleString());
        more.type = "button";
        more.addEventListener("click", function () {
          limits[reason] = limit + FAIL_ROWS * 5;
          openGroups[reason] = true;
          renderFailures();
        });
        box.appendChild(more);
      }
      frag.appendChild(box);
    });
    $("failures").replaceChildren(frag);
    $("failure-count").textContent = q ? total.toLocaleString() + " of " +
      failures.length.toLocaleString() + " match" : failures.length.toLocaleString() + " failed";
  }
  var failTimer = 0;
  $("failure-filter").addEventListener("input", function () {
    clearTimeout(failTimer);
    failTimer = setTimeout(renderFailures, 120);
  });

  filterSheet();
  renderFailures();
  document.documentElement.dataset.ready = "1";
  if (window.performance && performance.mark) performance.mark("artpipe-ready");
})();
"""
