// toonface verification page: pair mode and grid mode. Plain JS, no build step, no network
// beyond this server. Every decision is acknowledged by the server (committed to SQLite) before
// the next item is shown; the next items' images are prefetched so that showing them is instant.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const mode = document.body.dataset.mode;
  // window.toonface: state for tests and the curious. timings = key press -> next item shown (ms).
  const T = (window.toonface = { timings: [], shown: 0, busy: false, item: null, queue: [], keyAt: null, shownAt: null });

  function uid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const fmt = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(3));

  async function call(method, url, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.headers["X-CSRF-Token"] = csrf;
      init.body = JSON.stringify(body);
    }
    let lastError = null;
    for (let attempt = 0; attempt < 3; attempt++) {
      let r;
      try {
        r = await fetch(url, init);  // a retry repeats the request id: the server stores it once
      } catch (e) {
        lastError = e;
        await sleep(300 * (attempt + 1));
        continue;
      }
      if (r.status === 401) {
        location.assign("/login");
        throw new Error("logged out");
      }
      const data = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(data.error || "HTTP " + r.status);
      return data;
    }
    throw lastError;
  }

  function status(text, bad) {
    const el = $("status");
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("bad", !!bad);
  }

  function showProgress(p) {
    if (!p) return;
    $("progress").textContent =
      p.decided + " / " + p.total + " decided · " + p.remaining + " left for you · " + p.yours + " by you";
  }

  // ---- images ---------------------------------------------------------------------------------
  const images = new Map();
  const cropUrl = (sha) => "/crop/" + sha;
  function prefetch(sha) {
    if (!sha || images.has(sha)) return;
    const im = new Image();
    im.decoding = "async";
    im.src = cropUrl(sha);
    images.set(sha, im);
    if (images.size > 500) images.delete(images.keys().next().value);
  }
  function prefetchItems(items) {
    for (const it of items) {
      prefetch(it.crop_sha);
      (it.refs || []).forEach(prefetch);
      (it.alternatives || []).forEach((a) => (a.refs || []).forEach(prefetch));
    }
  }
  function thumb(sha, cls, alt) {
    const im = document.createElement("img");
    im.src = cropUrl(sha);
    im.alt = alt;
    im.className = cls;
    return im;
  }
  const ready = (img) => (img.decode ? img.decode().catch(() => {}) : Promise.resolve());

  // ---- pair mode ------------------------------------------------------------------------------
  function markShown(item) {
    const now = performance.now();
    T.shownAt = now;
    if (T.keyAt !== null) {
      const ms = now - T.keyAt;
      T.timings.push(ms);
      status((T.lastAction || "saved") + " · " + ms.toFixed(0) + " ms");
      T.keyAt = null;
    }
    T.shown += 1;
    document.body.dataset.face = item ? item.face_id : "";
    document.body.dataset.shown = String(T.shown);
    T.busy = false;
  }

  async function show(item) {
    T.item = item;
    if (!item) {
      $("pair").hidden = true;
      $("empty").hidden = false;
      markShown(null);
      return;
    }
    $("pair").hidden = false;
    $("empty").hidden = true;
    $("proposed").textContent = item.proposed;
    $("score").textContent = fmt(item.score);
    $("margin").textContent = fmt(item.margin);
    const cand = $("candidate");
    cand.src = cropUrl(item.crop_sha);
    const refs = $("refs");
    refs.replaceChildren(...item.refs.map((s) => thumb(s, "ref", "reference of " + item.proposed)));
    if (!item.refs.length) refs.textContent = "(no reference images)";
    $("alternatives").replaceChildren(
      ...item.alternatives.map((a, i) => {
        const li = document.createElement("li");
        li.dataset.identity = a.identity;
        const k = document.createElement("kbd");
        k.textContent = String(i + 1);
        li.append(k);
        if (a.refs && a.refs[0]) li.append(thumb(a.refs[0], "alt-ref", ""));
        const name = document.createElement("span");
        name.textContent = a.identity;
        li.append(name);
        if (a.score !== null && a.score !== undefined) {
          const s = document.createElement("small");
          s.textContent = fmt(a.score);
          li.append(s);
        }
        return li;
      })
    );
    await Promise.all([cand, ...refs.querySelectorAll("img")].map(ready));
    if (T.item !== item) return;
    requestAnimationFrame(() => markShown(item));
  }

  async function pairAct(url, body, label) {
    T.busy = true;
    T.keyAt = performance.now();
    T.lastAction = label;
    body.time_ms = T.shownAt !== null ? Math.round(T.keyAt - T.shownAt) : null;
    body.request_id = uid();
    body.n = 8;
    try {
      const res = await call("POST", url, body);
      T.queue = res.items;
      showProgress(res.progress);
      prefetchItems(res.items.slice(1));
      await show(res.items[0] || null);
    } catch (err) {
      T.busy = false;
      T.keyAt = null;
      status(err.message, true);
    }
  }

  function pairKey(key, e) {
    if (T.busy) return;
    if (key === "u") {
      e.preventDefault();
      return pairAct("/api/undo", {}, "undone");
    }
    const item = T.item;
    if (!item) return;
    let body;
    let label;
    if (key === "y") [body, label] = [{ decision: "same" }, "same"];
    else if (key === "n") [body, label] = [{ decision: "different" }, "different"];
    else if (key === "s") [body, label] = [{ decision: "skip" }, "skipped"];
    else if (/^[1-9]$/.test(key)) {
      const alt = item.alternatives[Number(key) - 1];
      if (!alt) return;
      [body, label] = [{ decision: "relabel", identity: alt.identity }, "→ " + alt.identity];
    } else return;
    e.preventDefault();
    body.face_id = item.face_id;
    body.proposed = item.proposed;
    pairAct("/api/decide", body, label);
  }

  async function initPair() {
    T.busy = true;
    const res = await call("GET", "/api/queue?n=8");
    T.queue = res.items;
    showProgress(res.progress);
    prefetchItems(res.items.slice(1));
    await show(res.items[0] || null);
  }

  // ---- grid mode ------------------------------------------------------------------------------
  const G = (T.grid = { identity: null, items: [], shownAt: null });

  async function loadGrid() {
    T.busy = true;
    const res = await call("GET", "/api/grid");
    G.identity = res.identity;
    G.items = res.items;
    showProgress(res.progress);
    $("grid-identity").textContent = res.identity || "–";
    $("grid-refs").replaceChildren(...res.refs.map((s) => thumb(s, "ref", "reference of " + res.identity)));
    const grid = $("grid");
    grid.replaceChildren(
      ...res.items.map((it) => {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "tile";
        b.dataset.face = it.face_id;
        b.setAttribute("aria-pressed", "false");
        b.title = "click if this is NOT " + res.identity;
        b.append(thumb(it.crop_sha, "tile-img", "candidate"));
        const s = document.createElement("small");
        s.textContent = fmt(it.score);
        b.append(s);
        b.addEventListener("click", () => b.setAttribute("aria-pressed", String(b.classList.toggle("wrong"))));
        return b;
      })
    );
    $("empty").hidden = res.items.length > 0;
    $("confirm").disabled = !res.items.length;
    await Promise.all([...grid.querySelectorAll("img")].map(ready));
    requestAnimationFrame(() => {
      G.shownAt = performance.now();
      T.shown += 1;
      document.body.dataset.identity = res.identity || "";
      document.body.dataset.shown = String(T.shown);
      T.busy = false;
    });
  }

  async function confirmGrid() {
    if (T.busy || !G.items.length) return;
    T.busy = true;
    const wrong = [...document.querySelectorAll(".tile.wrong")].map((b) => b.dataset.face);
    try {
      const res = await call("POST", "/api/grid", {
        identity: G.identity,
        face_ids: G.items.map((i) => i.face_id),
        wrong,
        time_ms: Math.round(performance.now() - G.shownAt),
        request_id: uid(),
      });
      status("saved " + res.decided + " decisions (" + res.wrong + " wrong)");
    } catch (err) {
      T.busy = false;
      status(err.message, true);
      return;
    }
    await loadGrid();
  }

  async function gridUndo() {
    if (T.busy) return;
    T.busy = true;
    try {
      const res = await call("POST", "/api/undo", { request_id: uid(), n: 1 });
      status("undone: " + res.undone.length + " decisions");
    } catch (err) {
      T.busy = false;
      status(err.message, true);
      return;
    }
    await loadGrid();
  }

  function gridKey(key, e) {
    if (key === "enter") {
      e.preventDefault();  // not a click on the focused tile
      confirmGrid();
    } else if (key === "u") {
      e.preventDefault();
      gridUndo();
    }
  }

  // ---- wiring ---------------------------------------------------------------------------------
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    if (e.target && /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName)) return;
    const key = e.key.toLowerCase();
    if (mode === "pair") pairKey(key, e);
    else if (mode === "grid") gridKey(key, e);
  });
  const logout = $("logout");
  if (logout)
    logout.addEventListener("click", async () => {
      await call("POST", "/logout", {}).catch(() => {});
      location.assign("/login");
    });
  const confirmButton = $("confirm");
  if (confirmButton) confirmButton.addEventListener("click", confirmGrid);

  const start = mode === "pair" ? initPair : mode === "grid" ? loadGrid : null;
  if (start)
    start().catch((err) => {
      T.busy = false;
      status(err.message, true);
    });
})();
