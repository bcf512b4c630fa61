// Follows /ws/notifications with the operator's admin session and lists the newest events.
(function () {
  const KEEP = 20;
  const panel = document.getElementById("live-events");
  if (!panel) return;
  const list = document.getElementById("live-events-list");
  const state = document.getElementById("live-events-state");
  let lastId = null;

  function show(event) {
    const item = document.createElement("li");
    const when = new Date(event.timestamp).toLocaleTimeString();
    item.textContent = `#${event.id} ${when} [${event.severity}] ${event.notification_type}: ${event.title}`;
    list.prepend(item);
    while (list.children.length > KEEP) list.lastChild.remove();
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const after = lastId === null ? "" : `?after=${lastId}`;
    const socket = new WebSocket(`${scheme}://${location.host}${panel.dataset.path}${after}`);
    socket.onopen = () => { state.textContent = "(connected)"; };
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.id === undefined) return;
      lastId = event.id;
      show(event);
    };
    socket.onclose = () => {
      state.textContent = "(reconnecting…)";
      setTimeout(connect, 2000);
    };
  }
  connect();
})();
