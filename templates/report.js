/* maskaudit report: ranked list, filters, detail view, cluster map clicks and triage.
 * Reads the rows from the JSON block in report.html (no fetch: the page works from file://).
 * All data reaches the DOM through textContent / attributes, never through innerHTML. */
(function () {
  "use strict";

  var DATA = JSON.parse(document.getElementById("maskaudit-data").textContent);
  var ROWS = DATA.rows;
  var CLASSES = DATA.classes;
  var COLOURS = DATA.colours;
  var PAGE_SIZE = DATA.pageSize;
  var KEY = DATA.storageKey;
  var OPACITY_KEY = "maskaudit:overlay-opacity";

  function $(id) { return document.getElementById(id); }

  /* el("div", {class: "x", text: "y", title: "z"}, child, ...) */
  function el(tag, props) {
    var node = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (k) {
        var v = props[k];
        if (v === undefined || v === null || v === false) return;
        if (k === "class") node.className = v;
        else if (k === "text") node.textContent = String(v);
        else if (k === "style") Object.keys(v).forEach(function (s) { node.style[s] = v[s]; });
        else if (k === "on") Object.keys(v).forEach(function (ev) { node.addEventListener(ev, v[ev]); });
        else node.setAttribute(k, v === true ? "" : String(v));
      });
    }
    for (var a = 2; a < arguments.length; a++) {
      var c = arguments[a];
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }

  function fmt(x, digits) {
    return (x === null || x === undefined) ? "n/a" : Number(x).toFixed(digits === undefined ? 3 : digits);
  }

  function colourOf(name) {
    var k = CLASSES.indexOf(name);
    return k < 0 ? "#999999" : COLOURS[k % COLOURS.length];
  }

  /* ------------------------------------------------------------------ decisions (localStorage) */
  var decisions = new Map(); // id -> {d: "relabel"|"ok"|"", n: "note"}

  function loadDecisions() {
    decisions = new Map();
    try {
      var raw = window.localStorage.getItem(KEY);
      var list = raw ? JSON.parse(raw) : [];
      if (Array.isArray(list)) {
        list.forEach(function (e) {
          if (Array.isArray(e) && typeof e[0] === "string" && e[1] && typeof e[1] === "object") {
            decisions.set(e[0], { d: e[1].d === "relabel" || e[1].d === "ok" ? e[1].d : "", n: String(e[1].n || "") });
          }
        });
      }
    } catch (err) {
      decisions = new Map();
    }
  }

  function saveDecisions() {
    try {
      window.localStorage.setItem(KEY, JSON.stringify(Array.from(decisions.entries())));
    } catch (err) {
      /* storage full or disabled: decisions still live in this tab and can be downloaded */
    }
  }

  function getDecision(id) { return decisions.get(id) || { d: "", n: "" }; }

  function putDecision(id, d, n) {
    if (!d && !n) decisions.delete(id);
    else decisions.set(id, { d: d, n: n });
    saveDecisions();
    updateCounts();
  }

  function toggleDecision(i, d) {
    var id = ROWS[i].id;
    var cur = getDecision(id);
    putDecision(id, cur.d === d ? "" : d, cur.n);
    refreshTriage(i);
  }

  function setNote(i, note, source) {
    var id = ROWS[i].id;
    putDecision(id, getDecision(id).d, note);
    refreshTriage(i, source);
  }

  function updateCounts() {
    var relabel = 0, ok = 0;
    decisions.forEach(function (v) { if (v.d === "relabel") relabel++; else if (v.d === "ok") ok++; });
    $("decided-count").textContent = (relabel + ok) + " decided · " + relabel + " relabel · " + ok + " ok";
  }

  function csvField(s) {
    s = String(s);
    return /[",\r\n]/.test(s) || /^\s|\s$/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function decisionsCsv() {
    var lines = ["id,decision,note"];
    ROWS.forEach(function (r) {
      var v = decisions.get(r.id);
      if (v && (v.d || v.n)) lines.push([r.id, v.d, v.n].map(csvField).join(","));
    });
    return lines.join("\r\n") + "\r\n";
  }

  function download() {
    var blob = new Blob([decisionsCsv()], { type: "text/csv;charset=utf-8" });
    var url = URL.createObjectURL(blob);
    var a = el("a", { href: url, download: "maskaudit-decisions-" + DATA.reportId + ".csv", style: { display: "none" } });
    document.body.appendChild(a);
    a.click();
    document.body.removeChild(a);
    setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
  }

  /* ------------------------------------------------------------------ filtering and paging */
  var state = { view: [], page: 0, cursor: -1, detail: -1, slice: -1 };

  function filters() {
    return {
      cls: $("f-class").value,
      issue: $("f-issue").value,
      cluster: $("f-cluster").value,
      suspect: $("f-suspect").checked,
      outlier: $("f-outlier").checked,
      undecided: $("f-undecided").checked,
      text: $("f-text").value.trim().toLowerCase(),
      sort: $("f-sort").value
    };
  }

  function matches(r, f) {
    if (f.cls && r.classes.indexOf(f.cls) < 0) return false;
    if (f.issue && r.issue !== f.issue) return false;
    if (f.cluster !== "" && String(r.cluster) !== f.cluster) return false;
    if (f.suspect && !r.suspect) return false;
    if (f.outlier && !r.outlier) return false;
    if (f.undecided && getDecision(r.id).d) return false;
    if (f.text) {
      var hay = (r.id + "\n" + r.image + "\n" + r.mask.join("\n")).toLowerCase();
      if (hay.indexOf(f.text) < 0) return false;
    }
    return true;
  }

  function scoreKey(r, desc) {
    if (r.score === null) return desc ? -Infinity : Infinity; // unknown scores last
    return r.score;
  }

  function applyFilters() {
    var f = filters();
    var view = [];
    for (var i = 0; i < ROWS.length; i++) if (matches(ROWS[i], f)) view.push(i);
    if (f.sort === "score-asc" || f.sort === "score-desc") {
      var desc = f.sort === "score-desc";
      view.sort(function (a, b) {
        var d = scoreKey(ROWS[a], desc) - scoreKey(ROWS[b], desc);
        if (desc) d = -d;
        return d || ROWS[a].rank - ROWS[b].rank;
      });
    } else {
      view.sort(function (a, b) { return ROWS[a].rank - ROWS[b].rank; });
    }
    state.view = view;
    state.cursor = view.length ? 0 : -1;
    state.page = 0;
    renderList();
    dimMap();
  }

  function pageCount() { return Math.max(1, Math.ceil(state.view.length / PAGE_SIZE)); }

  function goPage(p) {
    p = Math.max(0, Math.min(pageCount() - 1, p));
    if (p === state.page) return;
    state.page = p;
    state.cursor = Math.min(p * PAGE_SIZE, state.view.length - 1);
    renderList();
    window.scrollTo(0, 0);
  }

  /* ------------------------------------------------------------------ ranked list */
  function badges(r) {
    var box = el("div", { class: "badges" });
    if (r.suspect) box.appendChild(el("span", { class: "badge suspect", text: "suspect" }));
    box.appendChild(el("span", { class: "badge issue" + (r.issue === "ok" ? " ok" : ""), text: r.issue }));
    r.classes.forEach(function (c) {
      box.appendChild(el("span", { class: "badge cls" },
        el("span", { class: "sw", style: { background: colourOf(c) } }), c));
    });
    box.appendChild(el("span", { class: "badge cluster", title: "K-Means cluster on the feature map" },
      el("span", { class: "sw round", style: { background: clusterColour(r.cluster) } }), "cluster " + r.cluster));
    if (r.outlier) box.appendChild(el("span", { class: "badge outlier", title: "Far from every cluster on the feature map", text: "outlier" }));
    return box;
  }

  var clusterColours = {};
  Array.prototype.forEach.call(document.querySelectorAll("#scatter .pt"), function (p) {
    var r = ROWS[Number(p.getAttribute("data-i"))];
    if (r && !(r.cluster in clusterColours)) clusterColours[r.cluster] = p.getAttribute("fill");
  });
  function clusterColour(c) { return clusterColours[c] || "#888888"; }

  function thumb(src, w, h, alt, caption) {
    return el("div", { class: "thumb" },
      el("img", { src: src, width: w, height: h, alt: alt, loading: "lazy", decoding: "async" }),
      el("span", { class: "cap", text: caption }));
  }

  function noPictureText(r) {
    if (r.error) return r.error;
    return "No pictures: only the " + DATA.visualLimit + " most suspect samples get them.";
  }

  function triageControls(i, where) {
    var r = ROWS[i];
    var v = getDecision(r.id);
    var note = el("input", {
      class: "noteinput", type: "text", placeholder: "note (optional)", value: v.n,
      "aria-label": "note for " + r.id, "data-role": "note",
      on: { input: function (e) { setNote(i, e.target.value, e.target); } }
    });
    note.value = v.n;
    return el("div", { class: "triage", "data-where": where },
      el("div", { class: "buttons" },
        el("button", {
          type: "button", class: "btn relabel" + (v.d === "relabel" ? " on" : ""), "data-role": "relabel",
          title: "Mark for relabelling (r)", "aria-pressed": v.d === "relabel" ? "true" : "false",
          on: { click: function (e) { e.stopPropagation(); toggleDecision(i, "relabel"); } }
        }, "Relabel"),
        el("button", {
          type: "button", class: "btn okay" + (v.d === "ok" ? " on" : ""), "data-role": "ok",
          title: "Mask is fine (o)", "aria-pressed": v.d === "ok" ? "true" : "false",
          on: { click: function (e) { e.stopPropagation(); toggleDecision(i, "ok"); } }
        }, "OK")),
      note);
  }

  function syncTriage(box, i, source) {
    var v = getDecision(ROWS[i].id);
    var rb = box.querySelector("[data-role=relabel]");
    var ob = box.querySelector("[data-role=ok]");
    var note = box.querySelector("[data-role=note]");
    rb.classList.toggle("on", v.d === "relabel");
    rb.setAttribute("aria-pressed", v.d === "relabel" ? "true" : "false");
    ob.classList.toggle("on", v.d === "ok");
    ob.setAttribute("aria-pressed", v.d === "ok" ? "true" : "false");
    if (note !== source && note.value !== v.n) note.value = v.n;
  }

  function refreshTriage(i, source) {
    var li = rowElement(i);
    if (li) {
      syncTriage(li.querySelector(".triage"), i, source);
      var v = getDecision(ROWS[i].id);
      li.classList.toggle("decided-relabel", v.d === "relabel");
      li.classList.toggle("decided-ok", v.d === "ok");
    }
    if (state.detail === i) syncTriage($("d-triage").querySelector(".triage"), i, source);
  }

  function rowElement(i) { return $("rows").querySelector('li[data-i="' + i + '"]'); }

  function rowItem(i) {
    var r = ROWS[i];
    var v = getDecision(r.id);
    var li = el("li", {
      class: "row" + (v.d ? " decided-" + v.d : ""), "data-i": i, "data-id": r.id,
      on: {
        click: function (e) {
          if (state.view[state.cursor] !== i) setCursor(state.view.indexOf(i));
          if (e.target.closest("button, input, a")) return;
          openDetail(i);
        },
        focusin: function () { if (state.view[state.cursor] !== i) setCursor(state.view.indexOf(i)); }
      }
    });
    li.appendChild(el("div", { class: "rank", text: r.rank }));
    if (r.thumb) {
      li.appendChild(thumb(r.thumb, r.tw, r.th, "image with mask contours of " + r.id, "contours"));
      li.appendChild(thumb(r.diff, r.tw, r.th, "disagreement map of " + r.id, "disagreement"));
    } else {
      li.appendChild(el("div", { class: "thumb empty", style: { gridColumn: "span 2", width: "auto" }, text: noPictureText(r) }));
    }
    var score = el("div", { class: "scoreline" },
      el("span", { class: "score" + (r.suspect ? " suspect" : ""), title: "quality score (higher = better label)", text: fmt(r.score) }),
      el("span", { class: "meter" + (r.suspect ? " suspect" : "") },
        el("span", { style: { width: (r.score === null ? 0 : Math.max(0, Math.min(1, r.score)) * 100) + "%" } })),
      el("span", { class: "muted small", text: "Dice " + fmt(r.dice) + " · QAM " + fmt(r.qam) }));
    var dices = el("div", { class: "dices" });
    CLASSES.forEach(function (c, k) {
      dices.appendChild(el("span", {}, el("span", { class: "sw", style: { background: COLOURS[k % COLOURS.length] } }),
        c + " " + fmt(r.dpc[k], 2)));
    });
    li.appendChild(el("div", { class: "info" },
      el("div", { class: "sid", text: r.id }),
      el("div", { class: "path", text: r.image }),
      score, badges(r), dices));
    li.appendChild(triageControls(i, "row"));
    return li;
  }

  function renderList() {
    var list = $("rows");
    var start = state.page * PAGE_SIZE;
    var slice = state.view.slice(start, start + PAGE_SIZE);
    var items = slice.map(rowItem);
    if (!items.length) items = [el("li", { class: "empty-list", text: "No sample matches these filters." })];
    list.replaceChildren.apply(list, items);
    var n = state.view.length;
    $("match-count").textContent = n === ROWS.length ? n + " samples" : n + " of " + ROWS.length + " samples match";
    $("page-info").textContent = n ? "Page " + (state.page + 1) + " of " + pageCount() + " · " +
      (start + 1) + "–" + Math.min(n, start + PAGE_SIZE) + " of " + n : "";
    $("page-info-top").textContent = (state.page + 1) + " / " + pageCount();
    $("prev-page").disabled = $("prev-page-top").disabled = state.page <= 0;
    $("next-page").disabled = $("next-page-top").disabled = state.page >= pageCount() - 1;
    markCursor(false);
  }

  function markCursor(scroll) {
    var old = $("rows").querySelector(".row.cursor");
    if (old) old.classList.remove("cursor");
    if (state.cursor < 0) return;
    var li = rowElement(state.view[state.cursor]);
    if (li) {
      li.classList.add("cursor");
      if (scroll) li.scrollIntoView({ block: "nearest" });
    }
  }

  function setCursor(pos) {
    if (pos < 0 || pos >= state.view.length) return;
    state.cursor = pos;
    var p = Math.floor(pos / PAGE_SIZE);
    if (p !== state.page) { state.page = p; renderList(); }
    markCursor(true);
  }

  function currentRow() {
    if (state.detail >= 0) return state.detail;
    return state.cursor >= 0 ? state.view[state.cursor] : -1;
  }

  function move(step) {
    if (state.detail >= 0) {
      var pos = state.view.indexOf(state.detail);
      if (pos < 0) return;
      var next = pos + step;
      if (next < 0 || next >= state.view.length) return;
      setCursor(next);
      openDetail(state.view[next]);
    } else {
      setCursor(Math.max(0, Math.min(state.view.length - 1, state.cursor + step)));
    }
  }

  /* ------------------------------------------------------------------ detail view */
  function setOpacity(v) {
    v = Math.max(0, Math.min(100, Number(v)));
    $("d-opacity").value = v;
    $("d-opacity-value").textContent = v + "%";
    $("d-ov-given").style.opacity = v / 100;
    $("d-ov-pred").style.opacity = v / 100;
  }

  function joinPath(root, rel) {
    var sep = root.indexOf("\\") >= 0 && root.indexOf("/") < 0 ? "\\" : "/";
    return root.replace(/[\\/]+$/, "") + sep + rel;
  }

  function copyText(text, button) {
    function done() {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1200);
    }
    function fallback() {
      var ta = el("textarea", { style: { position: "fixed", left: "-9999px" } });
      ta.value = text;
      document.body.appendChild(ta);
      ta.select();
      try { document.execCommand("copy"); done(); } catch (err) { /* ignore */ }
      document.body.removeChild(ta);
    }
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, fallback);
    else fallback();
  }

  function pathRow(label, value) {
    var button = el("button", { type: "button", class: "btn copy", text: "Copy" });
    button.addEventListener("click", function () { copyText(value, button); });
    return el("div", { class: "pathrow" }, el("span", { class: "lbl", text: label }), el("code", { text: value }), button);
  }

  function kvRow(k, v) { return el("tr", {}, el("td", { class: "muted", text: k }), el("td", { class: "n", text: v })); }

  function openDetail(i) {
    var r = ROWS[i];
    state.detail = i;
    var modal = $("detail");
    modal.hidden = false;
    document.body.style.overflow = "hidden";
    $("d-rank").textContent = r.rank;
    $("d-title").textContent = r.id;
    var b = badges(r);
    $("d-badges").replaceChildren.apply($("d-badges"), Array.prototype.slice.call(b.childNodes));

    var slices = r.slices || [];
    $("d-slices").hidden = !slices.length;
    if (slices.length) showSlice(worstSlice(slices));
    else showPictures(r, r.id, noPictureText(r));

    var scores = [
      ["quality score", fmt(r.score)],
      ["suspect", r.suspect ? "yes (below " + fmt(DATA.threshold, 2) + ")" : "no"],
      ["issue", r.issue],
      ["issue classes", r.classes.length ? r.classes.join(", ") : "–"],
      ["QAM score", fmt(r.qam)],
      ["Dice vs prediction", fmt(r.dice)],
      ["cluster", String(r.cluster) + (r.outlier ? " (outlier)" : "")]
    ];
    if (r.ow) scores.push(["original size", r.ow + " × " + r.oh + " px"]);
    $("d-scores").replaceChildren.apply($("d-scores"), scores.map(function (s) { return kvRow(s[0], s[1]); }));

    $("d-dice").replaceChildren.apply($("d-dice"), CLASSES.map(function (c, k) {
      return el("tr", {},
        el("td", {}, el("span", { class: "sw", style: { background: COLOURS[k % COLOURS.length] } }), c),
        el("td", { class: "n", text: fmt(r.dpc[k]) }));
    }));

    var paths = [pathRow("image", r.image)];
    r.mask.forEach(function (m, k) { paths.push(pathRow(r.mask.length > 1 ? "mask " + (k + 1) : "mask", m)); });
    paths.push(pathRow("root", DATA.datasetRoot));
    paths.push(pathRow("abs. image", joinPath(DATA.datasetRoot, r.image)));
    r.mask.forEach(function (m, k) { paths.push(pathRow(r.mask.length > 1 ? "abs. mask " + (k + 1) : "abs. mask", joinPath(DATA.datasetRoot, m))); });
    $("d-paths").replaceChildren.apply($("d-paths"), paths);

    $("d-triage").replaceChildren(triageControls(i, "detail"));
    var pos = state.view.indexOf(i);
    $("d-prev").disabled = pos <= 0;
    $("d-next").disabled = pos < 0 || pos >= state.view.length - 1;
    modal.querySelector(".modal-box").focus({ preventScroll: true });
  }

  /* p: {full, given, pred, w, h} pictures of a sample or of one slice of a volume case */
  function showPictures(p, name, missing) {
    var has = !!p.full;
    $("d-figures").hidden = !has;
    $("d-noimage").hidden = has;
    if (!has) { $("d-noimage").textContent = missing; return; }
    ["given", "pred"].forEach(function (which) {
      var stack = $("d-stack-" + which);
      stack.style.aspectRatio = p.w + " / " + p.h;
      stack.style.width = "min(100%, calc(54vh * " + (p.w / p.h).toFixed(4) + "))";
      var base = $("d-img-" + which);
      base.src = p.full;
      base.alt = "image " + name;
      var ov = $("d-ov-" + which);
      ov.src = which === "given" ? p.given : p.pred;
      ov.alt = (which === "given" ? "given mask of " : "predicted mask of ") + name;
    });
  }

  function worstSlice(slices) {
    var best = 0;
    slices.forEach(function (s, j) { if (s.score !== null && (slices[best].score === null || s.score < slices[best].score)) best = j; });
    return best;
  }

  /* the detail view of a volume case: show its j-th flagged slice (slices are in slice order) */
  function showSlice(j) {
    var r = ROWS[state.detail];
    var slices = r.slices || [];
    if (!slices.length || j < 0 || j >= slices.length) return;
    state.slice = j;
    var s = slices[j];
    showPictures(s, r.id + " " + s.label, s.error || "No pictures for this slice.");
    $("d-slice-info").textContent = s.label + " · flagged slice " + (j + 1) + " of " + slices.length;
    $("d-slice-scores").textContent = "slice score " + fmt(s.score) + " · Dice " + fmt(s.dice);
    $("d-slice-prev").disabled = j <= 0;
    $("d-slice-next").disabled = j >= slices.length - 1;
  }

  function closeDetail() {
    if (state.detail < 0) return;
    state.detail = -1;
    $("detail").hidden = true;
    document.body.style.overflow = "";
    markCursor(true);
  }

  /* ------------------------------------------------------------------ views, map */
  var VIEWS = ["summary", "samples", "map"];
  var currentView = "";

  function showView(name) {
    if (VIEWS.indexOf(name) < 0) name = "summary";
    currentView = name;
    VIEWS.forEach(function (v) { $("view-" + v).hidden = v !== name; });
    Array.prototype.forEach.call(document.querySelectorAll(".tabs a"), function (a) {
      a.classList.toggle("active", a.getAttribute("data-tab") === name);
    });
    if (location.hash !== "#" + name) history.replaceState(null, "", "#" + name);
  }

  function dimMap() {
    var f = filters();
    var on = new Set(state.view);
    var any = f.cls || f.issue || f.cluster !== "" || f.suspect || f.outlier || f.undecided || f.text;
    Array.prototype.forEach.call(document.querySelectorAll("#scatter .pt"), function (p) {
      p.classList.toggle("dim", !!any && !on.has(Number(p.getAttribute("data-i"))));
    });
  }

  function resetFilters() {
    ["f-class", "f-issue", "f-cluster", "f-text"].forEach(function (id) { $(id).value = ""; });
    ["f-suspect", "f-outlier", "f-undecided"].forEach(function (id) { $(id).checked = false; });
  }

  /* ------------------------------------------------------------------ wiring */
  function isTyping(t) {
    if (!t || !t.tagName) return false;
    var tag = t.tagName.toLowerCase();
    if (tag === "textarea" || tag === "select") return true;
    return tag === "input" && ["checkbox", "radio", "range", "button"].indexOf(t.type) < 0;
  }

  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (isTyping(t)) {
      if (e.key === "Escape" || (e.key === "Enter" && t.getAttribute("data-role") === "note")) { t.blur(); e.preventDefault(); }
      return;
    }
    var detailOpen = state.detail >= 0;
    if (!detailOpen && currentView !== "samples") {
      if (e.key === "Escape") return;
      if ("jkro".indexOf(e.key) < 0) return;
      showView("samples");
    }
    var i;
    switch (e.key) {
      case "Escape":
        if (detailOpen) { closeDetail(); e.preventDefault(); }
        break;
      case "j": move(1); e.preventDefault(); break;
      case "k": move(-1); e.preventDefault(); break;
      case "Enter":
        if (!detailOpen && state.cursor >= 0 && !(t && t.closest && t.closest("button, a"))) { openDetail(state.view[state.cursor]); e.preventDefault(); }
        break;
      case "r": i = currentRow(); if (i >= 0) toggleDecision(i, "relabel"); e.preventDefault(); break;
      case "o": i = currentRow(); if (i >= 0) toggleDecision(i, "ok"); e.preventDefault(); break;
      case "n":
        i = currentRow();
        if (i >= 0) {
          var box = detailOpen ? $("d-triage") : rowElement(i);
          var input = box && box.querySelector("[data-role=note]");
          if (input) { input.focus(); e.preventDefault(); }
        }
        break;
      case "ArrowRight":
        if (detailOpen) showSlice(state.slice + 1); else goPage(state.page + 1);
        e.preventDefault();
        break;
      case "ArrowLeft":
        if (detailOpen) showSlice(state.slice - 1); else goPage(state.page - 1);
        e.preventDefault();
        break;
      default: break;
    }
  }

  function init() {
    loadDecisions();
    updateCounts();
    ["f-class", "f-issue", "f-cluster", "f-sort", "f-suspect", "f-outlier", "f-undecided"].forEach(function (id) {
      $(id).addEventListener("change", function () { applyFilters(); });
    });
    $("f-text").addEventListener("input", function () { applyFilters(); });
    $("prev-page").addEventListener("click", function () { goPage(state.page - 1); });
    $("next-page").addEventListener("click", function () { goPage(state.page + 1); });
    $("prev-page-top").addEventListener("click", function () { goPage(state.page - 1); });
    $("next-page-top").addEventListener("click", function () { goPage(state.page + 1); });
    $("download").addEventListener("click", download);
    $("d-close").addEventListener("click", closeDetail);
    $("d-prev").addEventListener("click", function () { move(-1); });
    $("d-next").addEventListener("click", function () { move(1); });
    $("d-slice-prev").addEventListener("click", function () { showSlice(state.slice - 1); });
    $("d-slice-next").addEventListener("click", function () { showSlice(state.slice + 1); });
    $("detail").addEventListener("click", function (e) { if (e.target === $("detail")) closeDetail(); });
    $("detail").querySelector(".modal-box").setAttribute("tabindex", "-1");
    $("d-opacity").addEventListener("input", function (e) {
      setOpacity(e.target.value);
      try { window.localStorage.setItem(OPACITY_KEY, String(e.target.value)); } catch (err) { /* ignore */ }
    });
    var savedOpacity = null;
    try { savedOpacity = window.localStorage.getItem(OPACITY_KEY); } catch (err) { /* ignore */ }
    setOpacity(savedOpacity === null ? 100 : savedOpacity);

    Array.prototype.forEach.call(document.querySelectorAll(".tabs a"), function (a) {
      a.addEventListener("click", function (e) { e.preventDefault(); showView(a.getAttribute("data-tab")); });
    });
    Array.prototype.forEach.call(document.querySelectorAll(".filter-link"), function (a) {
      a.addEventListener("click", function (e) {
        e.preventDefault();
        resetFilters();
        $("f-" + a.getAttribute("data-filter")).value = a.getAttribute("data-value");
        applyFilters();
        showView("samples");
        window.scrollTo(0, 0);
      });
    });
    $("scatter").addEventListener("click", function (e) {
      var p = e.target.closest ? e.target.closest(".pt") : null;
      if (!p) return;
      var i = Number(p.getAttribute("data-i"));
      var pos = state.view.indexOf(i);
      if (pos >= 0) setCursor(pos);
      openDetail(i);
    });
    window.addEventListener("hashchange", function () { showView(location.hash.slice(1)); });
    window.addEventListener("storage", function (e) {
      if (e.key === KEY) { loadDecisions(); updateCounts(); renderList(); }
    });
    document.addEventListener("keydown", onKey);

    applyFilters();
    showView(location.hash.slice(1) || "summary");
  }

  init();
})();
