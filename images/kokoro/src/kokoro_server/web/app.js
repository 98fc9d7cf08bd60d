// Kokoro web player: plain JS, no framework, no build step. It talks only to the
// server's public API, relative to this page (so it also works behind a path prefix).
"use strict";

(() => {
  const KEY_STORE = "kokoro.apiKey"; // sessionStorage: gone when the tab closes
  const VOICES_URL = new URL("../v1/audio/voices", document.baseURI);
  const SPEECH_URL = new URL("../v1/audio/speech", document.baseURI);
  const MIME = { mp3: "audio/mpeg", opus: "audio/ogg", aac: "audio/aac",
                 flac: "audio/flac", wav: "audio/wav" };

  const $ = (id) => document.getElementById(id);
  const el = {
    keyBox: $("key-box"), keyForm: $("key-form"), key: $("api-key"), keyClear: $("key-clear"),
    form: $("speak-form"), voice: $("voice"), text: $("text"), count: $("char-count"),
    speed: $("speed"), speedValue: $("speed-value"), format: $("format"),
    speak: $("speak"), stop: $("stop"), player: $("player"), download: $("download"),
    meta: $("meta"), status: $("status"),
  };

  let inflight = null; // AbortController of the running speech request
  let audioUrl = null; // the blob: URL the player and the download link share

  function storedKey() {
    try { return sessionStorage.getItem(KEY_STORE) || ""; } catch { return ""; }
  }

  function storeKey(value) {
    try {
      if (value) sessionStorage.setItem(KEY_STORE, value);
      else sessionStorage.removeItem(KEY_STORE);
    } catch { /* storage disabled: the key lives only in the field */ }
  }

  function authHeaders() {
    const key = el.key.value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  function say(message, kind = "info") {
    el.status.textContent = message;
    el.status.dataset.kind = kind;
  }

  async function errorText(resp) {
    try {
      const body = await resp.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch { /* not JSON */ }
    return `HTTP ${resp.status} ${resp.statusText}`.trim();
  }

  function askForKey(message) {
    el.keyBox.open = true;
    el.key.setAttribute("aria-invalid", "true");
    say(message, "error");
    el.key.focus();
  }

  function prettyName(id) {
    const name = id.includes("_") ? id.slice(id.indexOf("_") + 1) : id;
    return name.charAt(0).toUpperCase() + name.slice(1);
  }

  function fillVoices(voices) {
    const previous = el.voice.value;
    const groups = new Map();
    const sorted = [...voices].sort((a, b) =>
      a.lang_code.localeCompare(b.lang_code) || a.id.localeCompare(b.id));
    for (const v of sorted) {
      const label = v.language || v.lang_code;
      if (!groups.has(label)) {
        const group = document.createElement("optgroup");
        group.label = label;
        groups.set(label, group);
      }
      const option = document.createElement("option");
      option.value = v.id;
      option.textContent = `${prettyName(v.id)} (${v.gender}, ${v.id})`;
      option.dataset.lang = v.lang_code;
      if (v.available === false) {  // a language this image was built without
        option.disabled = true;
        option.textContent += " — not in this image";
      }
      groups.get(label).append(option);
    }
    el.voice.replaceChildren(...groups.values());
    const ids = sorted.map((v) => v.id);
    const usable = sorted.filter((v) => v.available !== false).map((v) => v.id);
    el.voice.value = usable.includes(previous) ? previous
      : usable.includes("af_heart") ? "af_heart" : (usable[0] || "");
    el.voice.disabled = ids.length === 0;
    el.speak.disabled = ids.length === 0;
    el.voice.dataset.loaded = String(ids.length);
  }

  async function loadVoices() {
    el.voice.disabled = true;
    el.speak.disabled = true;
    say("Loading voices…");
    let resp;
    try {
      resp = await fetch(VOICES_URL, { headers: authHeaders(), cache: "no-store" });
    } catch (err) {
      say(`Cannot reach the server: ${err.message}`, "error");
      return;
    }
    if (resp.status === 401) {
      const msg = await errorText(resp);
      askForKey(`This server needs an API key (${msg}). Enter it above.`);
      return;
    }
    if (!resp.ok) {
      say(`Could not list the voices: ${await errorText(resp)}`, "error");
      return;
    }
    const body = await resp.json();
    const voices = Array.isArray(body.voices) ? body.voices : [];
    fillVoices(voices);
    el.key.removeAttribute("aria-invalid");
    say(voices.length ? `${voices.length} voices ready.` : "The server has no voices.",
        voices.length ? "info" : "error");
  }

  function setBusy(busy) {
    el.speak.disabled = busy || el.voice.disabled;
    el.form.setAttribute("aria-busy", String(busy));
    updateStop();
  }

  function updateStop() {
    el.stop.disabled = !inflight && el.player.paused;
  }

  function setAudio(blob, voice, format) {
    if (audioUrl) URL.revokeObjectURL(audioUrl);
    audioUrl = URL.createObjectURL(blob);
    el.player.src = audioUrl;
    const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
    el.download.href = audioUrl;
    el.download.download = `kokoro-${voice.replace(/[^A-Za-z0-9_-]+/g, "_")}-${stamp}.${format}`;
    el.download.removeAttribute("aria-disabled");
  }

  async function speak() {
    const input = el.text.value;
    if (!input.trim()) {
      say("Type some text first.", "error");
      el.text.focus();
      return;
    }
    if (inflight) inflight.abort();
    const controller = new AbortController();
    inflight = controller;
    const voice = el.voice.value;
    const format = el.format.value;
    const speed = Number(el.speed.value);
    setBusy(true);
    say("Synthesizing…");
    const started = performance.now();
    try {
      const resp = await fetch(SPEECH_URL, {
        method: "POST",
        headers: { "Content-Type": "application/json", ...authHeaders() },
        body: JSON.stringify({ model: "kokoro", input, voice, speed,
                               response_format: format, stream: false }),
        signal: controller.signal,
      });
      if (resp.status === 401) {
        askForKey(`This server needs an API key (${await errorText(resp)}).`);
        return;
      }
      if (!resp.ok) {
        say(`Speech failed: ${await errorText(resp)}`, "error");
        return;
      }
      const data = await resp.blob();
      const blob = data.type ? data : new Blob([data], { type: MIME[format] });
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      setAudio(blob, voice, format);
      el.meta.textContent = `${format.toUpperCase()}, ${(blob.size / 1024).toFixed(0)} KiB`;
      if (!el.player.canPlayType(blob.type || MIME[format])) {
        say(`Done in ${seconds} s. This browser cannot play ${format}; download it instead.`);
        return;
      }
      say(`Done in ${seconds} s.`);
      el.player.play().catch(() => say(`Done in ${seconds} s. Press play to listen.`));
    } catch (err) {
      if (err.name === "AbortError") say("Stopped.");
      else say(`Speech failed: ${err.message}`, "error");
    } finally {
      if (inflight === controller) inflight = null;
      setBusy(false);
    }
  }

  function init() {
    el.key.value = storedKey();
    el.keyForm.addEventListener("submit", (event) => {
      event.preventDefault();
      storeKey(el.key.value.trim());
      loadVoices();
    });
    el.keyClear.addEventListener("click", () => {
      storeKey("");
      el.key.value = "";
      loadVoices();
    });
    el.form.addEventListener("submit", (event) => {
      event.preventDefault();
      speak();
    });
    el.text.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !el.speak.disabled) {
        event.preventDefault();
        el.form.requestSubmit();
      }
    });
    const showCount = () => { el.count.textContent = `${el.text.value.length} characters.`; };
    el.text.addEventListener("input", showCount);
    showCount();
    const showSpeed = () => {
      const value = Number(el.speed.value).toFixed(2);
      el.speedValue.textContent = `${value}×`;
      el.speed.setAttribute("aria-valuetext", `${value} times normal speed`);
    };
    el.speed.addEventListener("input", showSpeed);
    showSpeed();
    el.stop.addEventListener("click", () => {
      if (inflight) inflight.abort();
      el.player.pause();
      updateStop();
    });
    for (const name of ["play", "pause", "ended", "emptied"]) {
      el.player.addEventListener(name, updateStop);
    }
    el.download.addEventListener("click", (event) => {
      if (!el.download.href) event.preventDefault();
    });
    loadVoices();
  }

  init();
})();
