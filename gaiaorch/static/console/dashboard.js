// Draws the operator dashboard from the feed and redraws it every two seconds.
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

  function gib(mib) {
    return (mib / 1024).toFixed(1);
  }

  function memoryBar(memory) {
    const { total_mb: total, used_mb: used, free_mb: free, baseline_mb: baseline } = memory;
    if (!total || used === null || used === undefined) return el("p", { class: "console-muted" }, "Memory not measured.");
    const percent = Math.round((100 * used) / total);
    const bar = el("div", { class: "console-bar", title: `${percent}% used` },
      el("span", { style: `width: ${percent}%` }),
      el("em", {}, `${gib(used)} / ${gib(total)} GiB (${percent}%)`));
    if (baseline) bar.append(el("i", { class: "baseline", style: `left: ${(100 * baseline) / total}%`, title: `idle baseline ${baseline} MiB` }));
    const note = `${free} MiB free` + (baseline ? `, idle baseline ${baseline} MiB` : "");
    return [bar, el("p", { class: "console-muted" }, note)];
  }

  function holder(gpu) {
    if (!gpu.owner) return el("p", {}, `Free. Next fencing token ${gpu.next_fencing_token}.`);
    return el("p", {},
      "Held by ", el("strong", {}, gpu.owner), ` — ${gpu.reason || "no reason given"}; fencing token `,
      el("strong", {}, gpu.fencing_token), `; since ${time(gpu.acquired_at)}`,
      gpu.expires_at ? `, expires ${time(gpu.expires_at)}` : "", " ",
      actionLink("revoke-lease", "Revoke…", { lease_id: gpu.lease_id }, true));
  }

  function queue(gpu) {
    if (!gpu.queue.length) return el("p", { class: "console-muted" }, "Nobody waits.");
    return el("table", {},
      el("thead", {}, el("tr", {}, ["#", "requester", "priority", "reason", "waiting for", "since", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, gpu.queue.map((entry) => el("tr", {},
        el("td", {}, entry.position), el("td", {}, entry.requester), el("td", {}, entry.priority),
        el("td", {}, entry.reason), el("td", {}, entry.waiting_for), el("td", {}, time(entry.requested_at)),
        el("td", {}, actionLink("cancel-lease", "Cancel…", { lease_id: entry.lease_id }, true))))));
  }

  function drawGpus(status) {
    const cards = status.gpus.map((gpu) => el("div", { class: "console-card", id: `console-gpu-${gpu.gpu}` },
      el("h3", {}, `GPU ${gpu.gpu}`, gpu.name ? ` — ${gpu.name}` : ""),
      memoryBar(gpu.memory), holder(gpu), queue(gpu)));
    const warning = status.telemetry_available ? null : el("p", { class: "errornote" }, `Telemetry unavailable: ${status.telemetry_reason}`);
    return [warning, cards.length ? cards : el("p", {}, "No GPUs known.")];
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
    replace("console-gpus", drawGpus(snapshot.gpu));
    replace("console-handoff", drawHandoffs(snapshot.handoffs));
    replace("console-docker", docker(snapshot.containers));
    replace("console-stacks", drawStacks(snapshot.containers));
    document.querySelector("#console-events tbody").replaceChildren(...drawEvents(snapshot.events));
    document.getElementById("console-updated").textContent = time(snapshot.generated_at);
  }

  async function poll() {
    const problem = document.getElementById("console-error");
    try {
      const response = await fetch(root.dataset.feed, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.redirected) throw new Error("logged out: reload the page to log in again");
      if (!response.ok) throw new Error(`feed answered ${response.status}`);
      draw(await response.json());
      problem.textContent = "";
    } catch (error) {
      problem.textContent = `(not updating: ${error.message})`;
    }
    setTimeout(poll, POLL_MS);
  }

  draw(JSON.parse(document.getElementById("console-snapshot").textContent));
  setTimeout(poll, POLL_MS);
})();
