// The record browser: search, paging and a word-level diff of first answer → final answer.
// Every text is inserted with textContent, never as HTML, so model output can't run as script.
(function () {
  "use strict";
  var rows = JSON.parse(document.getElementById("data").textContent);
  var PAGE = 20, page = 0, shown = rows;
  var box = document.getElementById("rows"), label = document.getElementById("page");
  var search = document.getElementById("search");

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function diff(a, b) {  // word-level LCS diff: [[op, word], ...] with op in "=", "-", "+"
    var x = a.split(/\s+/).filter(Boolean), y = b.split(/\s+/).filter(Boolean);
    if (x.length * y.length > 250000) return [["-", a], ["+", b]];
    var n = x.length, m = y.length, t = [];
    for (var i = 0; i <= n; i++) { t.push(new Int32Array(m + 1)); }
    for (i = n - 1; i >= 0; i--) for (var j = m - 1; j >= 0; j--)
      t[i][j] = x[i] === y[j] ? t[i + 1][j + 1] + 1 : Math.max(t[i + 1][j], t[i][j + 1]);
    var out = []; i = 0; j = 0;
    while (i < n && j < m) {
      if (x[i] === y[j]) { out.push(["=", x[i]]); i++; j++; }
      else if (t[i + 1][j] >= t[i][j + 1]) { out.push(["-", x[i]]); i++; }
      else { out.push(["+", y[j]]); j++; }
    }
    for (; i < n; i++) out.push(["-", x[i]]);
    for (; j < m; j++) out.push(["+", y[j]]);
    return out;
  }

  function card(r) {
    var c = el("article", "record");
    var head = el("div", "head");
    head.appendChild(el("code", null, r[0]));
    if (r[5]) head.appendChild(el("span", "tag", r[5]));
    head.appendChild(el("span", r[6] === "kept" ? "kept" : "dropped", r[6]));
    c.appendChild(head);
    (r[7] || []).forEach(function (turn) {  // the conversation's earlier turns, oldest first
      var t = el("div", "turn " + turn[0]);
      t.appendChild(el("b", null, turn[0] + ": "));
      t.appendChild(document.createTextNode(turn[1]));
      c.appendChild(t);
    });
    c.appendChild(el("div", "prompt", r[1]));
    var cols = el("div", "cols");
    var first = el("div", "col"); first.appendChild(el("h4", null, "first answer")); first.appendChild(el("p", null, r[2]));
    var last = el("div", "col"); last.appendChild(el("h4", null, "final answer (diff)"));
    var p = el("p");
    if (r[2] && r[3] && r[2] !== r[3]) {
      diff(r[2], r[3]).forEach(function (part) {
        var span = el(part[0] === "=" ? "span" : part[0] === "-" ? "del" : "ins", null, part[1]);
        p.appendChild(span); p.appendChild(document.createTextNode(" "));
      });
    } else { p.textContent = r[3]; }
    last.appendChild(p);
    if (r[8]) {  // a reasoning teacher's thinking behind the final answer, folded
      var thinking = el("details", "thinking");
      thinking.appendChild(el("summary", null, "thinking"));
      thinking.appendChild(el("p", null, r[8]));
      last.appendChild(thinking);
    }
    cols.appendChild(first); cols.appendChild(last);
    c.appendChild(cols);
    if (r[4]) { c.appendChild(el("h4", null, "critique")); c.appendChild(el("p", "critique", r[4])); }
    return c;
  }

  function render() {
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.min(page, pages - 1);
    box.textContent = "";
    shown.slice(page * PAGE, (page + 1) * PAGE).forEach(function (r) { box.appendChild(card(r)); });
    label.textContent = " page " + (page + 1) + " of " + pages + " · " + shown.length + " records ";
  }

  search.addEventListener("input", function () {
    var q = search.value.toLowerCase();
    shown = q ? rows.filter(function (r) {
      var earlier = (r[7] || []).map(function (turn) { return turn[1]; }).join("\n");
      return (earlier + "\n" + r[1] + "\n" + r[2] + "\n" + r[3] + "\n" + r[4] + "\n" + r[6]).toLowerCase().indexOf(q) >= 0;
    }) : rows;
    page = 0; render();
  });
  document.getElementById("prev").addEventListener("click", function () { if (page > 0) { page--; render(); } });
  document.getElementById("next").addEventListener("click", function () { page++; render(); });
  render();
})();
