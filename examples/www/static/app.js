// The demo dashboard: subscribes to "orders" and "visits" through edge's hub
// and keeps a table of orders per country. No framework, no build step.
(function () {
  "use strict";
  var status = document.getElementById("status");
  var log = document.getElementById("log");
  var tbody = document.querySelector("#countries tbody");
  var byCountry = {};

  function show(text) {
    var li = document.createElement("li");
    li.textContent = text;
    log.insertBefore(li, log.firstChild);
    while (log.children.length > 50) log.removeChild(log.lastChild);
  }

  function render() {
    tbody.textContent = "";
    Object.keys(byCountry).sort(function (a, b) { return byCountry[b].n - byCountry[a].n; })
      .forEach(function (c) {
        var tr = document.createElement("tr");
        [c, byCountry[c].n, byCountry[c].total.toFixed(2)].forEach(function (v) {
          var td = document.createElement("td");
          td.textContent = v;
          tr.appendChild(td);
        });
        tbody.appendChild(tr);
      });
  }

  var hub = new EdgeHub("/socket/", { channels: ["orders", "visits"] });
  hub.on("open", function () { status.textContent = "live"; status.className = "status open"; });
  hub.on("close", function (e) { status.textContent = "reconnecting (" + e.code + ")"; status.className = "status"; });
  hub.on("gap", function (g) { show("gap on " + g.channel + ": some messages were missed"); });
  hub.on("message", function (m) {
    show(m.channel + " #" + m.seq + " " + JSON.stringify(m.data));
    if (m.channel === "orders" && m.data && typeof m.data === "object" && m.data.country) {
      var c = byCountry[m.data.country] || (byCountry[m.data.country] = { n: 0, total: 0 });
      c.n++;
      c.total += Number(m.data.total) || 0;
      render();
    }
  });
})();
