// The coordination file's chat: live messages (Server-Sent Events), sending, read receipts.
// Every text is inserted with textContent: what a member writes is shown as text. A file
// attached to a message is sent in the message (base64) and shown as a link to the document
// it was filed as in the patient's record (its name and type), never inline.
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
    if (m.attachment) { li.appendChild(attachment(m.attachment)); }
    list.appendChild(li);
    li.scrollIntoView({ block: "nearest" });
  }
  function attachment(a) {
    var p = document.createElement("p"); p.className = "piece-jointe";
    var kind = document.createElement("span"); kind.className = "small";
    if (section.dataset.documents !== "1") {  // a social worker: the document is not theirs to open
      kind.textContent = "(" + a.label + ", document de santé réservé aux professionnels de santé)";
      p.append(a.title, " ", kind);
      return p;
    }
    var link = document.createElement("a");
    link.href = "/dossiers/" + encodeURIComponent(section.dataset.rri) + "/documents/" + encodeURIComponent(a.document);
    link.textContent = a.title;
    kind.textContent = "(" + a.label + ")";
    p.append(link, " ", kind);
    return p;
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

  function failed(text) {
    error.textContent = "Message non envoyé : " + text;
    error.hidden = false;
  }
  function base64Of(file) {
    return new Promise(function (resolve, reject) {
      var reader = new FileReader();
      reader.onload = function () { resolve(String(reader.result).split(",")[1] || ""); };
      reader.onerror = function () { reject(reader.error); };
      reader.readAsDataURL(file);
    });
  }
  function send(body) {
    return fetch("/fhir/Communication", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/fhir+json", "Accept": "application/fhir+json" },
      body: JSON.stringify(body)
    });
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var box = document.getElementById("texte");
    var input = document.getElementById("fichier");
    var file = input && input.files && input.files[0];
    var payload = [];
    error.hidden = true;
    if (box.value.trim()) { payload.push({ contentString: box.value }); }
    if (!payload.length && !file) { failed("écrivez un message ou joignez un fichier."); return; }
    if (file && file.size > Number(section.dataset.max)) {
      failed("le fichier dépasse " + Math.floor(Number(section.dataset.max) / 1048576 * 10) / 10 + " Mo.");
      return;
    }
    var ready = file ? base64Of(file) : Promise.resolve(null);
    ready.then(function (data) {
      if (file) { payload.push({ contentAttachment: { contentType: file.type, title: file.name, size: file.size, data: data } }); }
      return send({
        resourceType: "Communication",
        about: [{ reference: "CareTeam/" + team }],
        payload: payload
      });
    }).then(function (r) {
      if (r.ok) { box.value = ""; if (input) { input.value = ""; } return; }
      return r.json().then(function (o) {
        failed((o.issue && o.issue[0].diagnostics) || String(r.status));
      }, function () { failed(String(r.status)); });
    }).catch(function () {
      failed("le serveur ne répond pas.");
    });
  });
})();
