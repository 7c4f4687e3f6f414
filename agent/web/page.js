// The operator's page: cameras, a day's timeline, the player with its wall clock, export.
// Plain JavaScript against the agent's own HTTP API; nothing is loaded from another host.
"use strict";

(() => {
  const settings = JSON.parse(document.getElementById("settings").textContent);
  const $ = (id) => document.getElementById(id);
  const video = $("video");
  const TOKEN_KEY = "nvr-playback-agent.token";
  const HLS = "application/vnd.apple.mpegurl";
  const native = Boolean(video.canPlayType(HLS));

  const state = {
    cameras: new Map(), // id -> the camera as /api/cameras describes it
    camera: null,
    day: null, // "YYYY-MM-DD" in the box's zone
    month: null, // the calendar's: {camera, month: "YYYY-MM", spans}
    drawn: null, // the last month the calendar drew, as `month`
    spans: [],
    zoom: 0, // the timeline's length in ms; 0 for the whole day
    viewFrom: null, // where a zoomed timeline starts (ms)
    session: null, // the answer of POST /api/playback being played
    shared: null, // the id of a session whose link was handed out: not deleted when left
    entries: [], // the playlist: [{media, duration, wall}] (seconds, seconds, ms)
    pending: null, // the wall-clock time to seek to once the video is loaded
    wall: null, // the wall-clock time of the frame on screen (ms)
    addressAt: 0,
  };

  // -- time in the box's display zone (recordings.timezone) -------------------------------

  const zone = settings.timezone;
  const partsFormat = new Intl.DateTimeFormat("en-CA", {
    timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
  const clockFormat = new Intl.DateTimeFormat(undefined, {
    timeZone: zone, hourCycle: "h23", year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
  const clockFormatMs = new Intl.DateTimeFormat(undefined, { // paused: to the frame
    timeZone: zone, hourCycle: "h23", year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3,
  });
  const timeFormat = new Intl.DateTimeFormat(undefined, {
    timeZone: zone, hourCycle: "h23", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });

  const monthFormat = new Intl.DateTimeFormat(undefined, {
    timeZone: zone, year: "numeric", month: "long",
  });
  const zoneNames = new Intl.DateTimeFormat(undefined, { timeZone: zone, timeZoneName: "short" });
  const zoneName = (ms) =>
    zoneNames.formatToParts(new Date(ms)).find((part) => part.type === "timeZoneName")?.value ?? "";
  // In the autumn's repeated hour the wall clock shows each time twice: it is said with
  // its zone's name then (02:30 CEST, then 02:30 CET).
  const repeated = (ms) => offset(ms + 3600e3) < offset(ms) || offset(ms - 3600e3) > offset(ms);
  const withZone = (ms, text) => (repeated(ms) ? `${text} ${zoneName(ms)}` : text);

  function parts(ms) {
    const found = {};
    for (const part of partsFormat.formatToParts(new Date(ms))) found[part.type] = part.value;
    return found;
  }

  function offset(ms) { // how far the zone's wall clock is ahead of UTC at `ms`
    const p = parts(ms);
    const wall = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second);
    return wall - Math.floor(ms / 1000) * 1000;
  }

  function zoned(year, month, day, hour = 0, minute = 0, second = 0) { // wall time -> ms
    const naive = Date.UTC(year, month - 1, day, hour, minute, second);
    const first = naive - offset(naive);
    const guess = naive - offset(first);
    if (guess + offset(guess) === naive) return guess;
    // A wall time the zone skips (its clocks went forward, at midnight in Chile): read
    // with the offset from before the change, as the clocks show it after (02:30 in
    // Paris's gap is 03:30; a midnight skipped is the day's first instant).
    return Math.max(first, guess);
  }

  const dayOf = (ms) => { const p = parts(ms); return `${p.year}-${p.month}-${p.day}`; };
  const dayStart = (day) => { const [y, m, d] = day.split("-").map(Number); return zoned(y, m, d); };
  const shiftDay = (day, n) => {
    const [y, m, d] = day.split("-").map(Number);
    return new Date(Date.UTC(y, m - 1, d + n)).toISOString().slice(0, 10);
  };
  const iso = (ms) => new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(".000Z", "Z");
  const isoMs = (ms) => new Date(Math.floor(ms)).toISOString().replace(".000Z", "Z");
  const inputValue = (ms) => {
    const p = parts(ms);
    return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}:${p.second}`;
  };
  const fromInput = (value) => {
    const m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d))?/.exec(value);
    return m ? zoned(+m[1], +m[2], +m[3], +m[4], +m[5], +(m[6] || 0)) : NaN;
  };

  // -- messages and the API ----------------------------------------------------------------

  class NeedToken extends Error {}

  function say(text, isError = false) {
    const status = $("status");
    status.textContent = text;
    status.classList.toggle("error", isError);
  }

  function report(error) {
    if (!(error instanceof NeedToken)) say(error.message, true);
  }

  async function api(path, options = {}) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    let body;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    const response = await fetch(path, { method: options.method || "GET", headers, body });
    let data = null;
    if (response.status !== 204) {
      try { data = await response.json(); } catch { data = null; }
    }
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      askToken(token ? "The box did not accept that token." : "");
      throw new NeedToken();
    }
    if (!response.ok) {
      const error = new Error((data && data.error) || `The box answered ${response.status}.`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function askToken(reason) {
    $("main").hidden = true;
    $("token-form").hidden = false;
    $("token-error").textContent = reason;
    $("token").focus();
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    $("token-form").hidden = true;
    $("main").hidden = false;
    start();
  });

  // -- cameras and the day's timeline ------------------------------------------------------

  async function loadCameras() {
    const { cameras } = await api("/api/cameras");
    state.cameras = new Map(cameras.map((camera) => [camera.id, camera]));
    const list = $("cameras");
    list.replaceChildren();
    for (const camera of cameras) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.camera = camera.id;
      button.setAttribute("aria-pressed", String(camera.id === state.camera));
      const last = document.createElement("time");
      last.dateTime = camera.last_end;
      last.textContent = clockFormat.format(Date.parse(camera.last_end));
      const line = document.createElement("span");
      line.className = "last";
      line.append("last recorded ", last);
      button.append(camera.id, line);
      button.addEventListener("click", () => selectCamera(camera.id, null).catch(report));
      const item = document.createElement("li");
      item.append(button);
      list.append(item);
    }
    if (!cameras.length) say("No recordings are indexed yet.");
    const together = $("together-list");
    together.replaceChildren();
    for (const camera of cameras) {
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = camera.id;
      const label = document.createElement("label");
      label.append(box, ` ${camera.id}`);
      together.append(label);
    }
    $("together").hidden = !native || cameras.length < 2;
  }

  async function selectCamera(id, when) {
    if (id !== state.camera) leaveSession();
    state.camera = id;
    $("camera-name").textContent = id;
    for (const button of $("cameras").querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.camera === id));
    }
    const camera = state.cameras.get(id);
    await showDay(dayOf(when ?? (camera ? Date.parse(camera.last_end) - 1 : Date.now())));
  }

  async function showDay(day) {
    if (!state.camera || !/^\d{4}-\d\d-\d\d$/.test(day)) return;
    state.day = day;
    $("day").value = day;
    const from = dayStart(day);
    const to = dayStart(shiftDay(day, 1));
    const query = `from=${encodeURIComponent(iso(from))}&to=${encodeURIComponent(iso(to))}`;
    const camera = encodeURIComponent(state.camera);
    showMonth(day.slice(0, 7)).catch(report); // the calendar, asked for meanwhile
    const { spans } = await api(`/api/cameras/${camera}/recordings?${query}`);
    if (state.day !== day) return; // another day was asked for meanwhile
    state.spans = spans;
    state.viewFrom = null;
    drawTimeline();
  }

  // -- the calendar: a month's days with recordings, from one query ------------------------

  const MONTH_FRESH = 60e3; // a month's days asked for again after this long (ms)
  const monthStart = (month) => { const [y, m] = month.split("-").map(Number); return zoned(y, m, 1); };
  const shiftMonth = (month, n) => {
    const [y, m] = month.split("-").map(Number);
    const next = new Date(Date.UTC(y, m - 1 + n, 1));
    return `${next.getUTCFullYear()}-${String(next.getUTCMonth() + 1).padStart(2, "0")}`;
  };

  async function showMonth(month) {
    const camera = state.camera;
    if (!camera || !/^\d{4}-\d\d$/.test(month)) return;
    const shown = state.month;
    if (shown && shown.camera === camera && shown.month === month && Date.now() - shown.at < MONTH_FRESH) {
      drawMonth();
      return;
    }
    // A month is at most 31 days and the hours a daylight-saving change adds: one query.
    const from = monthStart(month);
    const to = monthStart(shiftMonth(month, 1));
    const query = `from=${encodeURIComponent(iso(from))}&to=${encodeURIComponent(iso(to))}`;
    const asked = { camera, month, at: Date.now(), spans: shown?.camera === camera && shown?.month === month ? shown.spans : null };
    state.month = asked;
    let spans;
    try {
      ({ spans } = await api(`/api/cameras/${encodeURIComponent(camera)}/recordings?${query}`));
    } catch (error) {
      if (state.month === asked) {
        // The month drawn last stays, its arrows working, and is asked again next time.
        const drawn = state.drawn;
        state.month = drawn?.camera === camera ? { ...drawn, at: 0 } : null;
        if (!state.month) $("calendar").hidden = true;
      }
      throw error;
    }
    if (state.month !== asked) return; // another month or camera was asked for meanwhile
    asked.spans = spans.map((s) => [Date.parse(s.from), Date.parse(s.to)]);
    state.drawn = asked;
    drawMonth();
  }

  function drawMonth() {
    const shown = state.month;
    if (!shown || !shown.spans) return;
    $("calendar").hidden = false;
    $("month-name").textContent = monthFormat.format(new Date(monthStart(shown.month) + 12 * 3600e3));
    const [y, m] = shown.month.split("-").map(Number);
    const days = new Date(Date.UTC(y, m, 0)).getUTCDate();
    const grid = $("month-days");
    grid.replaceChildren();
    for (const name of ["Mo", "Tu", "We", "Th", "Fr", "Sa", "Su"]) {
      const head = document.createElement("span");
      head.className = "weekday";
      head.setAttribute("aria-hidden", "true");
      head.textContent = name;
      grid.append(head);
    }
    for (let d = 1; d <= days; d++) {
      const day = `${shown.month}-${String(d).padStart(2, "0")}`;
      const from = zoned(y, m, d);
      const to = dayStart(shiftDay(day, 1));
      let recorded = 0;
      for (const [a, b] of shown.spans) recorded += Math.max(0, Math.min(b, to) - Math.max(a, from));
      const share = recorded / (to - from);
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.day = day;
      button.textContent = String(d);
      if (d === 1) button.style.gridColumnStart = String(((new Date(Date.UTC(y, m - 1, 1)).getUTCDay() + 6) % 7) + 1);
      if (recorded > 0) {
        button.className = "has";
        button.style.setProperty("--share", String(Math.max(share, 0.04)));
        const percent = share >= 0.995 ? "all day" : `${Math.max(1, Math.round(share * 100))} % of it`;
        button.setAttribute("aria-label", `${day}: recorded ${percent}`);
        button.title = `Recorded ${percent}`;
        button.addEventListener("click", () => showDay(day).catch(report));
      } else {
        button.setAttribute("aria-label", `${day}: no recordings`);
        button.setAttribute("aria-disabled", "true");
      }
      if (day === state.day) button.setAttribute("aria-current", "date");
      grid.append(button);
    }
  }

  function view() { // [from, to) of the timeline: the day, or a part of it around the cursor
    const dayFrom = dayStart(state.day);
    const dayTo = dayStart(shiftDay(state.day, 1));
    if (!state.zoom) return [dayFrom, dayTo];
    const on = state.wall !== null && dayOf(state.wall) === state.day;
    const last = state.spans.length ? Date.parse(state.spans[state.spans.length - 1].to) : dayFrom;
    const centre = on ? state.wall : last;
    if (state.viewFrom === null || centre < state.viewFrom || centre >= state.viewFrom + state.zoom) {
      state.viewFrom = Math.min(Math.max(centre - state.zoom / 2, dayFrom), dayTo - state.zoom);
    }
    return [state.viewFrom, state.viewFrom + state.zoom];
  }

  const TICKS = { 0: 3 * 3600e3, 3600000: 600e3, 600000: 60e3 };

  function drawTimeline() {
    if (state.day === null) return;
    const day = state.day;
    const [from, to] = view();
    const place = (ms) => `${((ms - from) / (to - from)) * 100}%`;
    const box = $("spans");
    box.replaceChildren();
    for (const span of state.spans) {
      const start = Math.max(Date.parse(span.from), from);
      const end = Math.min(Date.parse(span.to), to);
      if (end <= start) continue;
      const bar = document.createElement("div");
      bar.className = "span";
      bar.dataset.from = span.from;
      bar.dataset.to = span.to;
      bar.style.left = place(start);
      bar.style.width = `${((end - start) / (to - from)) * 100}%`;
      bar.title = `${withZone(start, timeFormat.format(start))} to ${withZone(end, timeFormat.format(end))}`;
      box.append(bar);
    }
    const hours = $("hours");
    hours.replaceChildren();
    // A tick at each wall-clock time the clock on the wall shows, where it shows it: on
    // the day of a change (23 or 25 hours) the labels skip or repeat, as that clock does.
    const tick = TICKS[state.zoom];
    const offsets = [...new Set([offset(from), offset(to - 1)])];
    const instants = new Set();
    for (let wall = Math.ceil((from + Math.min(...offsets)) / tick) * tick;
      wall < to + Math.max(...offsets); wall += tick) {
      for (const shift of offsets) {
        const t = wall - shift;
        if (t > from && t < to && offset(t) === shift) instants.add(t);
      }
    }
    for (const t of [...instants].sort((a, b) => a - b)) {
      const mark = document.createElement("span");
      mark.className = "tick";
      mark.style.left = place(t);
      const p = parts(t);
      mark.textContent = withZone(t, `${p.hour}:${p.minute}`);
      hours.append(mark);
    }
    const count = state.spans.length;
    $("timeline").setAttribute("aria-label",
      `${state.camera}, ${day}: ${count} recorded span${count === 1 ? "" : "s"}; click to play from that time`);
    drawnFrom = state.viewFrom;
    moveCursor();
  }

  let drawnFrom = null;

  function moveCursor() {
    const cursor = $("cursor");
    if (state.wall === null || state.day === null || dayOf(state.wall) !== state.day) {
      cursor.hidden = true;
      return;
    }
    const [from, to] = view();
    if (state.viewFrom !== drawnFrom) drawTimeline(); // a zoomed timeline follows the cursor
    cursor.style.left = `${((state.wall - from) / (to - from)) * 100}%`;
    cursor.hidden = false;
  }

  $("timeline").addEventListener("click", (event) => {
    if (!state.day) return;
    const box = $("timeline").getBoundingClientRect();
    const fraction = Math.min(Math.max((event.clientX - box.left) / box.width, 0), 1);
    const [from, to] = view();
    playAt(from + fraction * (to - from)).catch(report);
  });
  // -- scrub previews: the keyframe at the time under the pointer, decoded here -----------
  // (WebCodecs; the box sends one frame's bytes and decodes nothing.) One request at a
  // time: moves meanwhile leave only the last time wanted.

  const preview = { want: null, busy: false, answers: new Map() };
  const PREVIEWS_KEPT = 120; // answers kept, by camera and second

  function bytesOf(base64) {
    const text = atob(base64);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i += 1) out[i] = text.charCodeAt(i);
    return out;
  }

  async function decodeInto(canvas, answer) {
    const config = {
      codec: answer.codec, description: bytesOf(answer.description), optimizeForLatency: true,
    };
    if (!(await VideoDecoder.isConfigSupported(config)).supported) return false;
    let frame = null;
    const decoder = new VideoDecoder({
      output: (decoded) => { if (frame) frame.close(); frame = decoded; },
      error: () => {},
    });
    try {
      decoder.configure(config);
      decoder.decode(new EncodedVideoChunk({ type: "key", timestamp: 0, data: bytesOf(answer.data) }));
      await decoder.flush();
    } finally {
      if (decoder.state !== "closed") decoder.close();
    }
    if (!frame) return false;
    canvas.height = Math.max(1, Math.round((canvas.width * frame.displayHeight) / frame.displayWidth));
    canvas.getContext("2d").drawImage(frame, 0, 0, canvas.width, canvas.height);
    frame.close();
    return true;
  }

  function previewAt(clientX) {
    if (!state.day || !state.camera) return;
    const box = $("timeline").getBoundingClientRect();
    const fraction = Math.min(Math.max((clientX - box.left) / box.width, 0), 1);
    const [from, to] = view();
    const t = Math.floor(from + fraction * (to - from));
    const tip = $("preview");
    tip.style.left = `${fraction * 100}%`;
    tip.hidden = false;
    $("preview-time").textContent = withZone(t, timeFormat.format(t));
    preview.want = { t, camera: state.camera, asked: performance.now() };
    if (!preview.busy) showPreviews().catch(() => {});
  }

  async function showPreviews() {
    preview.busy = true;
    const tip = $("preview");
    try {
      while (preview.want) {
        const { t, camera, asked } = preview.want;
        preview.want = null;
        const recorded = state.spans.some((s) => Date.parse(s.from) <= t && t < Date.parse(s.to));
        let shown = false;
        if (recorded && "VideoDecoder" in window) {
          const key = `${camera} ${Math.floor(t / 1000)}`;
          let answer = preview.answers.get(key);
          if (!answer) {
            const at = encodeURIComponent(new Date(t).toISOString());
            try {
              answer = await api(`/api/cameras/${encodeURIComponent(camera)}/keyframe?t=${at}`);
            } catch (error) {
              if (error instanceof NeedToken) throw error;
              answer = null;
            }
            if (answer) {
              preview.answers.set(key, answer);
              if (preview.answers.size > PREVIEWS_KEPT) {
                preview.answers.delete(preview.answers.keys().next().value);
              }
            }
          }
          if (preview.want && preview.want.camera === camera) continue; // moved on meanwhile
          try {
            shown = Boolean(answer) && await decodeInto($("preview-frame"), answer);
          } catch {
            shown = false; // not decoded here: no preview
          }
          if (shown) {
            tip.dataset.time = answer.time;
            tip.dataset.ms = String(Math.round(performance.now() - asked));
          }
        }
        tip.classList.toggle("none", !shown);
        const said = withZone(t, timeFormat.format(t));
        $("preview-time").textContent = shown ? said : `${said}: ${recorded ? "no preview" : "no recording"}`;
        if (!shown) delete tip.dataset.time;
      }
    } finally {
      preview.busy = false;
    }
  }

  $("timeline").addEventListener("pointermove", (event) => previewAt(event.clientX));
  $("timeline").addEventListener("pointerleave", () => {
    preview.want = null;
    $("preview").hidden = true;
  });

  for (const button of document.querySelectorAll("#zoom button")) {
    button.addEventListener("click", () => {
      state.zoom = Number(button.dataset.zoom);
      state.viewFrom = null;
      for (const other of document.querySelectorAll("#zoom button")) {
        other.setAttribute("aria-pressed", String(other === button));
      }
      drawTimeline();
    });
  }
  $("prev-month").addEventListener("click", () => state.month && showMonth(shiftMonth(state.month.month, -1)).catch(report));
  $("next-month").addEventListener("click", () => state.month && showMonth(shiftMonth(state.month.month, 1)).catch(report));
  $("prev-day").addEventListener("click", () => showDay(shiftDay(state.day, -1)).catch(report));
  $("next-day").addEventListener("click", () => showDay(shiftDay(state.day, 1)).catch(report));
  $("day").addEventListener("change", () => showDay($("day").value).catch(report));

  // -- sessions, the playlist's clock and the player ------------------------------------------

  function parsePlaylist(text) {
    const entries = [];
    let media = 0;
    let duration = 0;
    let wall = null;
    let next = null;
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (line.startsWith("#EXT-X-PROGRAM-DATE-TIME:")) wall = Date.parse(line.slice(25));
      else if (line.startsWith("#EXTINF:")) duration = parseFloat(line.slice(8));
      else if (line && !line.startsWith("#")) {
        const start = wall ?? next;
        entries.push({ media, duration, wall: start });
        media += duration;
        next = start === null ? null : start + duration * 1000;
        wall = null;
      }
    }
    return entries;
  }

  function mediaToWall(seconds) {
    let found = state.entries[0];
    for (const entry of state.entries) {
      if (entry.media > seconds + 1e-6) break;
      found = entry;
    }
    return found.wall + Math.min(Math.max(seconds - found.media, 0), found.duration) * 1000;
  }

  function wallToMedia(ms) {
    for (const entry of state.entries) {
      if (ms < entry.wall) return entry.media; // in a gap: from the footage after it
      if (ms < entry.wall + entry.duration * 1000) return entry.media + (ms - entry.wall) / 1000;
    }
    const last = state.entries[state.entries.length - 1];
    return Math.max(last.media + last.duration - 0.5, 0);
  }

  function inSession(ms) {
    const session = state.session;
    return session !== null && session.camera_id === state.camera && state.entries.length > 0
      && ms >= Date.parse(session.from) && ms < Date.parse(session.to);
  }

  function leaveSession() {
    const session = state.session;
    state.session = null;
    if (scan.timer !== null) setSpeed(1); // a scan belongs to its session
    frames.seen = [];
    frames.last = null;
    if (session && session.id !== state.shared) {
      api(`/api/playback/${session.id}`, { method: "DELETE" }).catch(() => {});
    }
  }

  async function playAt(when) {
    if (!state.camera) return;
    if (inSession(when)) {
      video.currentTime = wallToMedia(when);
      if (video.paused) video.play().catch(() => {});
      return;
    }
    const length = settings.window_seconds * 1000;
    const lead = Math.min(length / 6, 600e3); // some footage before the moment, to step back
    const from = Math.floor((when - lead) / 1000) * 1000;
    const session = await api("/api/playback", {
      method: "POST",
      json: { camera_id: state.camera, from: iso(from), to: iso(from + length) },
    });
    const answer = await fetch(session.playlist_url);
    if (!answer.ok) throw new Error(`The playlist could not be read (${answer.status}).`);
    leaveSession();
    state.session = session;
    state.entries = parsePlaylist(await answer.text());
    $("copy-vlc").disabled = false;
    $("vlc-url").hidden = true;
    $("export-from").value = inputValue(Math.max(when, state.entries[0].wall));
    $("export-to").value = inputValue(Math.max(when, state.entries[0].wall) + 60e3);
    say("");
    if (!native) {
      state.wall = Math.max(when, state.entries[0].wall);
      showClock();
      return;
    }
    state.pending = when;
    video.src = session.playlist_url;
  }

  video.addEventListener("loadedmetadata", () => {
    if (state.pending === null) return;
    const when = state.pending;
    state.pending = null;
    video.currentTime = wallToMedia(when);
    video.play().catch(() => say("Press play to start."));
  });

  function showClock() {
    const clock = $("clock");
    clock.dateTime = isoMs(state.wall); // to the millisecond: a frame step moves it
    const format = video.paused && state.session !== null ? clockFormatMs : clockFormat;
    clock.textContent = withZone(state.wall, format.format(state.wall));
    moveCursor();
    if (state.day !== null && dayOf(state.wall) !== state.day) {
      showDay(dayOf(state.wall)).catch(report);
    }
    const now = Date.now();
    if (now - state.addressAt > 1000) { // the address bar follows what is on screen
      state.addressAt = now;
      const link = `#camera=${encodeURIComponent(state.camera)}&t=${iso(state.wall)}`;
      history.replaceState(null, "", link);
    }
  }

  function tick() {
    if (state.pending !== null || !state.entries.length || state.entries[0].wall === null) return;
    state.wall = mediaToWall(video.currentTime);
    showClock();
  }

  for (const event of ["timeupdate", "seeking", "seeked"]) video.addEventListener(event, tick);

  video.addEventListener("ended", () => renew().catch(report));
  video.addEventListener("error", () => {
    if (video.error && video.getAttribute("src")) {
      say(`The video could not be played: ${video.error.message || video.error.code}`, true);
    }
  });

  async function renew() { // playback ran past the session's end: on with the next window
    const session = state.session;
    if (!session) return;
    const end = Date.parse(session.to);
    const camera = encodeURIComponent(session.camera_id);
    const { spans } = await api(`/api/cameras/${camera}/recordings?from=${encodeURIComponent(iso(end))}`);
    const next = spans.find((span) => Date.parse(span.to) > end);
    if (next) await playAt(Math.max(end, Date.parse(next.from)));
    else say("This is the end of the recordings.");
  }

  function step(seconds) { // through the footage, as a player steps; past its ends by the clock
    if (state.wall === null) return;
    if (native && state.session !== null && video.readyState > 0) {
      const target = video.currentTime + seconds;
      if (target >= 0 && target <= video.duration) {
        video.currentTime = target;
        return;
      }
    }
    playAt(state.wall + seconds * 1000).catch(report);
  }

  // -- frame steps and speeds ---------------------------------------------------------------
  // A frame's duration is learnt from the frames presented while playing (the shortest step
  // of the video's own times: a frame the screen skipped makes a longer one), 1/25 s until
  // then.

  const frames = { duration: 0.04, seen: [], last: null };

  function learnFrames(now, metadata) {
    const step = metadata.mediaTime - (frames.last ?? Infinity);
    if (step > 0.001 && step < 1) {
      frames.seen.push(step);
      if (frames.seen.length > 50) frames.seen.shift();
      frames.duration = Math.min(...frames.seen);
    }
    frames.last = metadata.mediaTime;
    video.requestVideoFrameCallback(learnFrames);
  }
  if ("requestVideoFrameCallback" in video) video.requestVideoFrameCallback(learnFrames);

  function frameStep(count) { // while paused: one frame on or back, the clock with it
    if (!native || state.session === null || video.readyState === 0) return;
    setSpeed(1);
    video.pause();
    const target = video.currentTime + count * frames.duration;
    video.currentTime = Math.min(Math.max(target, 0), video.duration);
  }
  $("frame-back").addEventListener("click", () => frameStep(-1));
  $("frame-forward").addEventListener("click", () => frameStep(1));

  // Up to 2x the browser plays every frame (Safari's limit, and smooth everywhere); faster,
  // and backwards, the page shows keyframes alone: from the session's I-frame playlist, a
  // keyframe at a time on a timer, never a decode of the frames between.
  const SMOOTH = 2;
  const SCAN_TICK = 250; // ms between keyframes shown while scanning
  const scan = {
    speed: 1, timer: null, keyframes: null, session: null, pending: 0, busy: false,
  };

  function keyframeTimes() { // media times of the session's keyframes (none: [])
    const session = state.session;
    if (scan.session !== session || scan.keyframes === null) {
      scan.session = session;
      scan.keyframes = (async () => {
        const answer = await fetch(session.playlist_url.replace(/index\.m3u8$/, "iframes.m3u8"));
        if (!answer.ok) return [];
        const times = [];
        for (const line of (await answer.text()).split("\n")) { // each keyframe's wall time
          if (line.startsWith("#EXT-X-PROGRAM-DATE-TIME:")) {
            times.push(wallToMedia(Date.parse(line.slice(25))));
          }
        }
        return times;
      })().catch(() => { scan.keyframes = null; return []; }); // asked again at the next tick
    }
    return scan.keyframes;
  }

  function stopScan() {
    if (scan.timer !== null) clearInterval(scan.timer);
    scan.timer = null;
  }

  async function scanOn() {
    if (state.session === null || video.readyState === 0 || video.seeking || scan.busy) return;
    scan.busy = true;
    let times;
    try { times = await keyframeTimes(); } finally { scan.busy = false; }
    if (scan.timer === null) return; // stopped meanwhile
    const target = video.currentTime + (scan.speed * SCAN_TICK) / 1000;
    if (target < 0 || target > video.duration) {
      setSpeed(1);
      if (target > video.duration) renew().catch(report);
      return;
    }
    // The keyframe at or before the target (after it, going back), else the target itself.
    let shown = target;
    if (times.length) {
      const near = frames.duration; // the keyframe shown is half a frame past its time
      const before = times.filter((t) => t <= target + 1e-3);
      const after = times.filter((t) => t >= target - 1e-3);
      const pick = scan.speed > 0 ? before[before.length - 1] : after[0];
      if (pick !== undefined) shown = pick;
      const moved = scan.speed > 0 ? shown > video.currentTime + 1e-3
        : shown < video.currentTime - near;
      if (!moved) { // the keyframes are further apart than a tick: wait for the next one
        scan.pending = (scan.pending || 0) + (scan.speed * SCAN_TICK) / 1000;
        const far = video.currentTime + scan.pending;
        let next = scan.speed > 0 ? times.find((t) => t > video.currentTime + 1e-3 && t <= far)
          : [...times].reverse().find((t) => t < video.currentTime - near && t >= far);
        if (next === undefined) {
          const ahead = scan.speed > 0 ? times.some((t) => t > video.currentTime + 1e-3)
            : times.some((t) => t < video.currentTime - near);
          if (ahead) return; // the next keyframe is further on: wait for it
          next = far; // none listed on that way (a recorder's fragments cut by time): the time
        }
        shown = next;
      }
    }
    scan.pending = 0;
    // Half a frame in: the keyframe's own interval, whatever the rounding of its time.
    video.currentTime = shown === target ? shown : shown + frames.duration / 2;
  }

  function setSpeed(speed) {
    scan.speed = speed;
    stopScan();
    for (const button of document.querySelectorAll("#speeds button")) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.speed) === speed));
    }
    if (speed > 0 && speed <= SMOOTH) {
      video.defaultPlaybackRate = speed; // kept when the next session is loaded
      video.playbackRate = speed;
      return;
    }
    video.defaultPlaybackRate = 1;
    video.playbackRate = 1;
    video.pause();
    scan.pending = 0;
    scan.timer = setInterval(() => scanOn().catch(report), SCAN_TICK);
  }
  for (const button of document.querySelectorAll("#speeds button")) {
    button.addEventListener("click", () => {
      setSpeed(Number(button.dataset.speed));
      if (scan.speed > 0 && scan.speed <= SMOOTH && video.paused) video.play().catch(() => {});
    });
  }
  video.addEventListener("play", () => { if (scan.timer !== null) setSpeed(1); });

  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, select, textarea") || event.altKey || event.ctrlKey
        || event.metaKey) return;
    const steps = { ArrowLeft: -10, ArrowRight: 10, ArrowDown: -60, ArrowUp: 60 };
    if (event.key in steps) {
      event.preventDefault();
      step(steps[event.key]);
    } else if (event.key === "," || event.key === ".") {
      event.preventDefault();
      frameStep(event.key === "." ? 1 : -1);
    } else if (event.key === " " && !event.target.closest("button")) {
      event.preventDefault();
      if (video.paused) video.play().catch(() => {}); else video.pause();
    }
  });

  // -- the VLC link and the export --------------------------------------------------------------

  $("copy-vlc").addEventListener("click", async () => {
    if (!state.session) return;
    const url = new URL(state.session.playlist_url, location.href).href;
    state.shared = state.session.id;
    const field = $("vlc-url");
    field.value = url;
    field.hidden = false;
    field.select();
    try {
      await navigator.clipboard.writeText(url);
      say("Link copied: in VLC, Media > Open Network Stream, then paste it.");
    } catch {
      say("Copy the selected link; in VLC, Media > Open Network Stream, then paste it.");
    }
  });

  $("export").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      if (!state.camera) throw new Error("Choose a camera first.");
      const from = fromInput($("export-from").value);
      const to = fromInput($("export-to").value);
      if (!Number.isFinite(from) || !Number.isFinite(to)) {
        throw new Error("Enter the clip's start and end times.");
      }
      const session = await api("/api/playback", {
        method: "POST", json: { camera_id: state.camera, from: iso(from), to: iso(to) },
      });
      const link = document.createElement("a");
      link.href = session.playlist_url.replace(/index\.m3u8$/, "clip.mp4");
      link.download = "";
      document.body.append(link);
      link.click();
      link.remove();
      say(`The clip of ${state.camera} from ${clockFormat.format(from)} is downloading.`);
    } catch (error) {
      report(error);
    }
  });

  // -- deep links and start ---------------------------------------------------------------------

  async function followLink() {
    const link = new URLSearchParams(location.hash.slice(1));
    const camera = link.get("camera");
    const t = link.get("t");
    const several = (link.get("cameras") || "").split(",").filter(Boolean);
    if (several.length) {
      const when = t === null ? null : Date.parse(t);
      if (several.length < 2 || several.length > 4 || (t !== null && !Number.isFinite(when))) {
        throw new Error("A link to cameras together names 2 to 4 of them and an RFC 3339 time.");
      }
      const same = grid.tiles.length && grid.tiles.map((tile) => tile.id).join(",") === several.join(",");
      const within = same && when !== null
        && grid.tiles.every((tile) => when >= tile.from && when < tile.to);
      if (within) { // a seek: the tiles follow the clock; windows made ahead are not needed
        grid.wall = when;
        grid.generation += 1;
        for (const tile of grid.tiles) {
          if (tile.next) dropTile(tile.next);
          tile.next = null;
          tile.renewing = false;
        }
      }
      else await startGrid(several, when);
      return;
    }
    stopGrid();
    if (!camera) {
      const first = state.cameras.keys().next();
      if (!first.done) await selectCamera(first.value, null);
      return;
    }
    let when = null;
    if (t !== null) {
      when = Date.parse(t);
      if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/i.test(t)
          || !Number.isFinite(when)) {
        throw new Error(`The link's time "${t}" is not an RFC 3339 time like 2026-11-20T08:00:00Z.`);
      }
    }
    await selectCamera(camera, when);
    if (when !== null) await playAt(when);
  }

  window.addEventListener("hashchange", () => {
    if (grid.ownHash === location.hash) return; // the grid's own address, following its clock
    followLink().catch(report);
  });

  // -- several cameras in step -------------------------------------------------------------
  // One wall clock for all: it runs on with the time that passes (at the grid's speed),
  // and every 100 ms each tile is brought to it: seeked when it is more than half a second
  // off, else played a little faster or slower until it is on it. A tile whose camera has
  // no recording at the clock's time says so and waits, paused, for its next footage.

  const grid = {
    tiles: [], wall: null, playing: false, timer: null, lastTick: 0, speed: 1, ownHash: null,
    addressAt: 0, generation: 0, // generation: renewals begun before a seek are dropped
  };
  const TILE_SYNC = 100; // ms
  const TILE_SEEK = 0.5; // s off: seek rather than catch up
  const TILE_GAIN = 2; // playback rate change per second off
  const RENEW_AHEAD = 10e3; // ms of play before a tile's window ends: its next is made
  const RENEW_RETRY = 5e3; // ms before a renewal that failed is tried again

  function entryAt(entries, wall) { // the tile's media time at a wall-clock time, or null
    for (const entry of entries) {
      if (wall >= entry.wall && wall < entry.wall + entry.duration * 1000) {
        return entry.media + (wall - entry.wall) / 1000;
      }
    }
    return null;
  }

  function wallOf(entries, seconds) { // a tile's media time on the wall clock (ms)
    let found = entries[0];
    for (const entry of entries) {
      if (entry.media > seconds + 1e-6) break;
      found = entry;
    }
    return found.wall + Math.min(Math.max(seconds - found.media, 0), found.duration) * 1000;
  }

  function gapWithin(entries, wall) { // whether the camera's footage stops, a gap after,
    // before the next sync or two: the tile then stops on its last frame (its playlist's
    // media run on across the gap, into the footage after it)
    const soon = 2.5 * TILE_SYNC * grid.speed;
    for (let k = 0; k < entries.length; k += 1) {
      const end = entries[k].wall + entries[k].duration * 1000;
      if (wall >= entries[k].wall && wall < end) {
        const next = entries[k + 1];
        return end - wall < soon && next !== undefined && next.wall > end + 50;
      }
    }
    return false;
  }

  async function makeTile(id, when) { // a tile of camera `id` for a window around `when`
    const tile = newTile(id, when);
    await fillTile(tile);
    return tile;
  }

  function newTile(id, when) {
    const figure = document.createElement("figure");
    const caption = document.createElement("figcaption");
    caption.textContent = id;
    const tileVideo = document.createElement("video");
    tileVideo.muted = true;
    tileVideo.playsInline = true;
    tileVideo.preload = "auto";
    tileVideo.setAttribute("aria-label", `Recorded video of ${id}`);
    const none = document.createElement("p");
    none.className = "none";
    none.textContent = "No recording";
    none.hidden = true;
    figure.append(caption, tileVideo, none);
    figure.dataset.camera = id;
    const length = settings.window_seconds * 1000;
    const from = Math.floor((when - Math.min(length / 6, 600e3)) / 1000) * 1000;
    // Its window on the wall clock, with or without footage in it: the next one is asked
    // for when the clock nears its end (a camera may have footage there).
    const tile = {
      id, video: tileVideo, none, figure, session: null, entries: [], from, to: from + length,
    };
    return tile;
  }

  async function fillTile(tile) { // the tile's session of its window, and its playlist
    const { id, from, to } = tile;
    try {
      tile.session = await api("/api/playback", {
        method: "POST", json: { camera_id: id, from: iso(from), to: iso(to) },
      });
    } catch (error) {
      if (error.status !== 404) throw error;
      return; // no footage in the window: "No recording" until the next window
    }
    try {
      const answer = await fetch(tile.session.playlist_url);
      if (!answer.ok) throw new Error(`The box answered ${answer.status}.`);
      tile.entries = parsePlaylist(await answer.text());
    } catch (error) {
      dropTile(tile);
      tile.session = null;
      throw error;
    }
    tile.video.src = tile.session.playlist_url;
  }

  function stopGrid() {
    if (grid.timer !== null) clearInterval(grid.timer);
    grid.timer = null;
    for (const tile of grid.tiles) {
      if (tile.next) dropTile(tile.next);
      dropTile(tile);
    }
    grid.tiles = [];
    $("tiles").replaceChildren();
    $("grid").hidden = true;
    $("viewer").hidden = false;
  }

  async function startGrid(ids, when) {
    stopGrid();
    leaveSession();
    video.pause();
    $("viewer").hidden = true;
    $("grid").hidden = false;
    const start = when ?? Math.min(...ids.map((id) => {
      const camera = state.cameras.get(id);
      return camera ? Date.parse(camera.last_end) - 60e3 : Date.now();
    }));
    grid.wall = start;
    grid.tiles = await Promise.all(ids.map(async (id) => {
      const tile = newTile(id, start);
      try {
        await fillTile(tile);
      } catch (error) { // a busy box: "No recording", and the tile asked for again soon
        report(error);
        tile.to = Math.min(tile.to, start + RENEW_RETRY);
      }
      return tile;
    }));
    $("tiles").replaceChildren(...grid.tiles.map((tile) => tile.figure));
    grid.playing = true;
    grid.lastTick = performance.now();
    setGridSpeed(1);
    grid.timer = setInterval(syncGrid, TILE_SYNC);
    syncGrid();
  }

  function syncGrid() {
    const now = performance.now();
    if (grid.playing) grid.wall += (now - grid.lastTick) * grid.speed;
    grid.lastTick = now;
    const clock = $("grid-clock");
    clock.dateTime = isoMs(grid.wall);
    clock.textContent = withZone(grid.wall, clockFormat.format(grid.wall));
    if (now - grid.addressAt > 1000) { // the address follows the clock, as a link to it
      grid.addressAt = now;
      const ids = grid.tiles.map((tile) => encodeURIComponent(tile.id)).join(",");
      grid.ownHash = `#cameras=${ids}&t=${iso(grid.wall)}`;
      history.replaceState(null, "", grid.ownHash);
    }
    for (const tile of grid.tiles) {
      const ahead = Math.min(RENEW_AHEAD * grid.speed, (tile.to - tile.from) / 3);
      if (!tile.renewing && grid.wall >= tile.to - ahead) {
        renewTile(tile).catch(report); // the next window of this camera, made ready unseen
      }
      syncTile(tile);
      const next = tile.next;
      if (next) {
        syncTile(next);
        if (inStep(next) || grid.wall >= tile.to - 500) swapTile(tile, next);
      }
    }
  }

  function syncTile(tile) { // brings one tile to the grid's clock
    const media = entryAt(tile.entries, grid.wall);
    tile.none.hidden = media !== null;
    const v = tile.video;
    if (media === null || v.readyState === 0 || gapWithin(tile.entries, grid.wall)) {
      if (!v.paused) v.pause(); // a tile never plays on into the footage after its gap
      return;
    }
    if (v.seeking) return;
    // How far the tile's frame is from the clock, on the wall clock: across a gap its
    // media time is close while its wall-clock time is not.
    const off = (wallOf(tile.entries, v.currentTime) - grid.wall) / 1000;
    tile.off = off;
    if (!grid.playing) {
      if (!v.paused) v.pause();
      if (Math.abs(off) > 0.02) v.currentTime = media;
      return;
    }
    if (Math.abs(off) > TILE_SEEK || (v.paused && Math.abs(off) > 0.02)) {
      // Ahead a little: the seek, and a paused tile's start, take time.
      v.currentTime = media + (TILE_SEEK / 4) * grid.speed;
      if (v.paused) v.play().catch(() => {});
      return;
    }
    v.playbackRate = grid.speed * Math.min(Math.max(1 - off * TILE_GAIN, 0.5), 1.5);
    if (v.paused) v.play().catch(() => {});
  }

  function inStep(tile) { // whether a tile made ready unseen shows the clock's frame
    const v = tile.video;
    if (grid.wall < tile.from || grid.wall >= tile.to) return false; // not its window
    if (!tile.session || entryAt(tile.entries, grid.wall) === null) return true; // nothing to wait for
    return !v.seeking && v.readyState >= 3 && (grid.playing ? !v.paused : true)
      && Math.abs(tile.off ?? 1) < 0.02;
  }

  async function renewTile(tile) { // the tile's next window, played unseen until in step
    tile.renewing = true;
    const generation = grid.generation;
    let next;
    try {
      next = await makeTile(tile.id, grid.wall);
    } catch (error) { // asked again after a while (a busy box, a network error)
      setTimeout(() => { tile.renewing = false; }, RENEW_RETRY);
      throw error;
    }
    if (!grid.tiles.includes(tile) || generation !== grid.generation) { // left, or a seek
      dropTile(next);
      return;
    }
    tile.next = next;
  }

  function swapTile(tile, next) {
    const at = grid.tiles.indexOf(tile);
    tile.next = null;
    if (at < 0) { dropTile(next); return; }
    grid.tiles[at] = next;
    tile.figure.replaceWith(next.figure);
    dropTile(tile);
  }

  function dropTile(tile) {
    tile.video.removeAttribute("src");
    tile.video.load();
    if (tile.session) api(`/api/playback/${tile.session.id}`, { method: "DELETE" }).catch(() => {});
  }

  function setGridSpeed(speed) {
    grid.speed = speed;
    for (const button of document.querySelectorAll("#grid-speeds button")) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.speed) === speed));
    }
  }
  for (const button of document.querySelectorAll("#grid-speeds button")) {
    button.addEventListener("click", () => setGridSpeed(Number(button.dataset.speed)));
  }
  $("grid-play").addEventListener("click", () => {
    grid.playing = !grid.playing;
    $("grid-play").textContent = grid.playing ? "Pause" : "Play";
  });
  $("grid-leave").addEventListener("click", () => {
    const first = grid.tiles[0];
    const when = grid.wall;
    stopGrid();
    if (first) location.hash = `#camera=${encodeURIComponent(first.id)}&t=${iso(when)}`;
  });
  $("together").addEventListener("submit", (event) => {
    event.preventDefault();
    const ids = [...$("together-list").querySelectorAll("input:checked")].map((box) => box.value);
    if (ids.length < 2 || ids.length > 4) {
      say("Choose 2 to 4 cameras to watch together.", true);
      return;
    }
    const when = state.wall ?? Math.min(...ids.map((id) => Date.parse(state.cameras.get(id).last_end) - 60e3));
    location.hash = `#cameras=${ids.map(encodeURIComponent).join(",")}&t=${iso(when)}`;
  });

  async function start() {
    if (settings.token_required && !sessionStorage.getItem(TOKEN_KEY)) {
      askToken("");
      return;
    }
    try {
      await loadCameras();
      await followLink();
    } catch (error) {
      report(error);
    }
  }

  $("zone").textContent = `Times are shown in ${zone}.`;
  $("no-hls").hidden = native;
  video.hidden = !native;
  start();
})();
