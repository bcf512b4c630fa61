// Draws the operator dashboard from the feed and redraws it every two seconds. The GPU cards are
// drawn on the server (leases/gpu_cards.html, as on the GPU admin page) and swapped in as HTML.
(function () {
  const root = document.getElementById("console");
  if (!root) return;
  const POLL_MS = 2000;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function actionLink(name, label, params, danger) {
    const query = new URLSearchParams(params || {}).toString();
    const href = root.dataset.action.replace("NAME", name) + (query ? `?${query}` : "");
    return el("a", { href, class: danger ? "button danger" : "button", "data-action": name }, label);
  }

  function time(iso) {
    return iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : "—";
  }

  function localizeTimes(node) {
    for (const stamp of node.querySelectorAll("time[datetime]")) stamp.textContent = time(stamp.getAttribute("datetime"));
  }

  function phases(handoff) {
    return el("ul", { class: "console-phases" }, handoff.phases.map((phase) => el("li", {},
      el("span", { class: `console-phase-${phase.outcome}` }, phase.outcome || "running"), " ",
      el("strong", {}, phase.name), ` ${time(phase.started_at)}`, phase.detail ? ` — ${phase.detail}` : "")));
  }

  function handoffCard(handoff, active) {
    return el("div", { class: "console-card", id: active ? "console-active-handoff" : "console-latest-handoff" },
      el("h3", {}, active ? "Running: " : "Last: ", handoff.handoff_type, ` on GPU ${handoff.gpu}`),
      el("p", {}, `${handoff.source} → ${handoff.destination}; phase `,
        el("strong", { class: `console-phase-${handoff.phase}` }, handoff.phase), ` (${handoff.progress_pct}%)`,
        handoff.cancel_requested ? " — cancel requested" : ""),
      active ? el("div", { class: "console-bar" }, el("span", { style: `width: ${handoff.progress_pct}%` })) : null,
      handoff.error ? el("p", { class: "errornote" }, handoff.error) : null,
      phases(handoff),
      active ? actionLink("cancel-handoff", "Cancel handoff…", { handoff_id: handoff.handoff_id }, true) : null);
  }

  function drawHandoffs(handoffs) {
    const cards = handoffs.active.map((handoff) => handoffCard(handoff, true));
    if (!cards.length) cards.push(el("p", { class: "console-muted" }, "No handoff is running."));
    if (handoffs.latest) cards.push(handoffCard(handoffs.latest, false));
    return cards;
  }

  function drawStacks(containers) {
    return ["live", "candidate"].map((stack) => {
      const rows = containers.services.filter((service) => service.stack === stack);
      return el("div", { class: "console-card", id: `console-stack-${stack}` }, el("h3", {}, `${stack} stack`),
        el("table", {},
          el("thead", {}, el("tr", {}, ["service", "role", "state", "health", "port", "GPU", ""].map((h) => el("th", {}, h)))),
          el("tbody", {}, rows.map((service) => el("tr", {},
            el("td", {}, service.service), el("td", {}, service.role),
            el("td", { class: `console-state-${service.state}` }, service.state),
            el("td", { class: service.health ? `console-state-${service.health}` : "" }, service.health || "—"),
            el("td", {}, service.port || "—"), el("td", {}, service.gpu ? "yes" : ""),
            el("td", {}, stack === "live" ? swapLinks(containers, service) : null))))));
    });
  }

  function swapLinks(containers, service) {
    const swapped = containers.swaps.some((swap) => swap.service === service.service);
    return swapped
      ? [el("em", {}, "→ candidate "), actionLink("swap", "Swap back…", { service: service.service, target: "live" }, true)]
      : actionLink("swap", "Swap…", { service: service.service, target: "candidate" }, true);
  }

  function docker(containers) {
    const operation = containers.active_operation;
    return [
      containers.docker_available ? "Docker reachable." : el("span", { class: "console-error" }, `Docker unavailable: ${containers.docker_error}`),
      operation ? ` Operation #${operation.id} (${operation.kind}) is ${operation.status}.` : " No container operation running.",
    ];
  }

  function drawEvents(events) {
    return events.map((event) => el("tr", { class: `console-severity-${event.severity}` },
      el("td", {}, event.id), el("td", {}, time(event.timestamp)), el("td", {}, event.severity),
      el("td", {}, event.notification_type), el("td", {}, event.title, event.message ? ` — ${event.message}` : ""),
      el("td", {}, event.actor)));
  }

  function replace(id, ...children) {
    document.getElementById(id).replaceChildren(...children.flat(Infinity).filter((child) => child !== null));
  }

  function draw(snapshot) {
    replace("console-handoff", drawHandoffs(snapshot.handoffs));
    replace("console-docker", docker(snapshot.containers));
    replace("console-stacks", drawStacks(snapshot.containers));
    document.querySelector("#console-events tbody").replaceChildren(...drawEvents(snapshot.events));
    document.getElementById("console-updated").textContent = time(snapshot.generated_at);
  }

  async function get(url, accept) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: accept } });
    if (response.redirected) throw new Error("logged out: reload the page to log in again");
    if (!response.ok) throw new Error(`${url} answered ${response.status}`);
    return response;
  }

  async function poll() {
    const problem = document.getElementById("console-error");
    try {
      const [snapshot, cards] = await Promise.all([get(root.dataset.feed, "application/json"), get(root.dataset.gpus, "text/html")]);
      const gpus = document.getElementById("console-gpus");
      gpus.innerHTML = await cards.text(); // rendered and escaped by the server's template
      localizeTimes(gpus);
      draw(await snapshot.json());
      problem.textContent = "";
    } catch (error) {
      problem.textContent = `(not updating: ${error.message})`;
    }
    setTimeout(poll, POLL_MS);
  }

  localizeTimes(document.getElementById("console-gpus"));
  draw(JSON.parse(document.getElementById("console-snapshot").textContent));
  setTimeout(poll, POLL_MS);
})();
