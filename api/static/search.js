// Citadel's search page: everything it loads comes from the API that serves it (no CDN, no build).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { key: sessionStorage.getItem("citadel-key") || "" };

function say(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

async function call(path, body) {
  const response = await fetch(path, {
    method: body ? "POST" : "GET",
    headers: { "X-API-Key": state.key, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (answer.error && answer.error.message) || `HTTP ${response.status}`;
    throw new Error(message);
  }
  return answer;
}

async function loadCollections() {
  const select = $("collection");
  select.replaceChildren();
  try {
    const listed = await call("/api/v1/search/collections");
    for (const entry of listed.collections) {
      select.append(new Option(`${entry.name} (${entry.model})`, entry.name));
    }
    $("mode").value = listed.search_mode;
    say(listed.collections.length ? "Ready." : "No collection is indexed yet.");
  } catch (error) {
    say(error.message, true);
  }
}

// The query's words, for marking them in a passage (a word matches its longer forms too).
function queryWords(query) {
  return (query.toLowerCase().match(/[\p{L}\p{N}]{2,}/gu) || []).map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
}

function highlighted(text, words) {
  const out = document.createElement("p");
  out.className = "passage";
  if (!words.length) {
    out.textContent = text;
    return out;
  }
  const pattern = new RegExp(`(?<![\\p{L}\\p{N}])(${words.join("|")})[\\p{L}\\p{N}]*`, "giu");
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    out.append(text.slice(last, match.index));
    const mark = document.createElement("mark");
    mark.textContent = match[0];
    out.append(mark);
    last = match.index + match[0].length;
  }
  out.append(text.slice(last));
  return out;
}

function show(found, words, elapsed) {
  const list = $("results");
  list.replaceChildren();
  for (const hit of found.hits) {
    const item = document.createElement("li");
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = hit.title || (hit.document_id || "").split("/").pop() || hit.id;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    const where = document.createElement("div");
    where.className = "where";
    where.textContent = [hit.section, hit.page ? `page ${hit.page}` : null, hit.uri || hit.source].filter(Boolean).join(" · ");
    item.append(title, score, where, highlighted((hit.text || "").replace(/\s+/g, " ").slice(0, 600), words));
    list.append(item);
  }
  say(`${found.hits.length} documents, ${found.mode} search, ${found.duration_ms.toFixed(1)} ms in the API (${elapsed} ms here)`);
}

async function search(event) {
  event.preventDefault();
  const query = $("query").value;
  const started = performance.now();
  say("Searching…");
  try {
    const found = await call("/api/v1/search", {
      query, collection: $("collection").value || null, mode: $("mode").value, group_by: "document", limit: 10,
    });
    show(found, queryWords(query), Math.round(performance.now() - started));
  } catch (error) {
    $("results").replaceChildren();
    say(error.message, true);
  }
}

$("key").value = state.key;
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = $("key").value.trim();
  sessionStorage.setItem("citadel-key", state.key);
  loadCollections();
});
$("search-form").addEventListener("submit", search);
if (state.key) loadCollections();
