// The coordination file's chat: live messages (Server-Sent Events), sending, read receipts.
// Every text is inserted with textContent: what a member writes is shown as text.
(function () {
  "use strict";
  var section = document.getElementById("discussion");
  if (!section) { return; }
  var team = section.dataset.team, me = section.dataset.me;
  var list = document.getElementById("messages");
  var state = document.getElementById("etat");
  var form = document.getElementById("ecrire");
  var error = document.getElementById("erreur");
  var lastRead = null;

  function when(iso) {
    return new Date(iso).toLocaleString("fr-FR", { dateStyle: "short", timeStyle: "short" });
  }
  function show(m) {
    if (list.querySelector('li[data-id="' + m.id + '"]')) { return; }
    var li = document.createElement("li");
    li.dataset.id = m.id;
    li.className = m.sender === me ? "moi" : "autre";
    var who = document.createElement("span"); who.className = "qui"; who.textContent = m.sender_name;
    var at = document.createElement("span"); at.className = "quand"; at.textContent = when(m.sent);
    var topic = document.createElement("span"); topic.className = "fil"; topic.textContent = m.topic;
    var text = document.createElement("p"); text.className = "texte"; text.textContent = m.text;
    li.append(who, at, topic, text);
    list.appendChild(li);
    li.scrollIntoView({ block: "nearest" });
  }
  function markRead() {
    var last = list.lastElementChild;
    if (!last || last.dataset.id === lastRead || document.hidden) { return; }
    lastRead = last.dataset.id;
    fetch("/api/coordination/read", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ team: team, message: lastRead })
    });
  }
  list.querySelectorAll(".quand[data-sent]").forEach(function (el) { el.textContent = when(el.dataset.sent); });

  var source = new EventSource("/api/coordination/stream?after=" + encodeURIComponent(section.dataset.cursor));
  source.onopen = function () { state.textContent = "En direct"; };
  source.onerror = function () { state.textContent = "Reconnexion…"; };
  source.addEventListener("message", function (e) {
    var m = JSON.parse(e.data);
    if (m.team !== team) { return; }
    show(m);
    markRead();
  });
  document.addEventListener("visibilitychange", markRead);
  markRead();

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var box = document.getElementById("texte");
    var body = {
      resourceType: "Communication",
      about: [{ reference: "CareTeam/" + team }],
      payload: [{ contentString: box.value }]
    };
    error.hidden = true;
    fetch("/fhir/Communication", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/fhir+json", "Accept": "application/fhir+json" },
      body: JSON.stringify(body)
    }).then(function (r) {
      if (r.ok) { box.value = ""; return; }
      return r.json().then(function (o) {
        error.textContent = "Message non envoyé : " + ((o.issue && o.issue[0].diagnostics) || r.status);
        error.hidden = false;
      });
    }).catch(function () {
      error.textContent = "Message non envoyé : le serveur ne répond pas.";
      error.hidden = false;
    });
  });
})();
