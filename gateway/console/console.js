// The local SageMaker's console: every endpoint from the control plane, rates and latency from /metrics
// (kept here for the last minutes), each running container's state and last lines from
// /console/containers. Everything is put on the page as text, never as markup.
"use strict";

const EVERY_MS = 3000;
const KEEP_MS = 10 * 60 * 1000;
const history = new Map(); // "endpoint|variant|container" -> {last: sample, points: [{t, rate, errors, latency}]}

async function api(operation, params) {
  const answer = await fetch("/", {
    method: "POST",
    headers: {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "SageMaker." + operation},
    body: JSON.stringify(params || {}),
  });
  const body = await answer.json();
  if (!answer.ok) throw new Error(operation + ": " + (body.message || body.Message || answer.status));
  return body;
}

async function all(operation, params, key) {
  const found = [];
  let token;
  do {
    const page = await api(operation, Object.assign({}, params, token ? {NextToken: token} : {}));
    found.push(...page[key]);
    token = page.NextToken;
  } while (token);
  return found;
}

function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[2] || "").matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    samples.push({name: match[1], labels, value: Number(match[3])});
  }
  return samples;
}

function byContainer(samples) {
  const found = new Map();
  const entry = (key) => found.get(key) || found.set(key, {inv: 0, errors: 0, latSum: 0, latCount: 0}).get(key);
  for (const s of samples) {
    const {endpoint, variant, container} = s.labels;
    if (!container) continue;
    const key = [endpoint, variant, container].join("|");
    if (s.name === "sagemaker_invocations_total" || s.name === "sagemaker_invocations") entry(key).inv = s.value;
    else if (/^sagemaker_invocation_[45]xx_errors(_total)?$/.test(s.name)) entry(key).errors += s.value;
    else if (s.name === "sagemaker_container_latency_seconds_sum") entry(key).latSum = s.value;
    else if (s.name === "sagemaker_container_latency_seconds_count") entry(key).latCount = s.value;
  }
  return found;
}

function remember(now, counters) {
  for (const [key, sample] of counters) {
    const kept = history.get(key) || history.set(key, {last: null, points: []}).get(key);
    if (kept.last) {
      const seconds = (now - kept.last.t) / 1000;
      const calls = sample.latCount - kept.last.latCount;
      kept.points.push({
        t: now,
        rate: Math.max(sample.inv - kept.last.inv, 0) / seconds,
        errors: Math.max(sample.errors - kept.last.errors, 0) / seconds,
        latency: calls > 0 ? (1000 * (sample.latSum - kept.last.latSum)) / calls : null,
      });
      while (kept.points.length && kept.points[0].t < now - KEEP_MS) kept.points.shift();
    }
    kept.last = Object.assign({t: now}, sample);
  }
}

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function chart(points) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 160 28");
  const values = points.map((p) => p.latency).filter((v) => v !== null);
  if (values.length > 1) {
    const top = Math.max(...values) || 1;
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    const step = 160 / Math.max(points.length - 1, 1);
    line.setAttribute("points", points.map((p, i) => `${(i * step).toFixed(1)},${(26 - (24 * (p.latency ?? 0)) / top).toFixed(1)}`).join(" "));
    svg.append(line);
  }
  return svg;
}

const number = (value, digits) => (value === null || value === undefined ? "-" : value.toFixed(digits));

function renderEndpoint(described, components, containers, backlog) {
  const name = described.EndpointName;
  const section = el("section", {"data-endpoint": name});
  section.append(el("h2", {}, name, el("span", {class: "status " + described.EndpointStatus, "data-status": ""}, described.EndpointStatus)));
  if (described.FailureReason) section.append(el("div", {class: "reason", "data-reason": ""}, described.FailureReason));
  const variants = described.ProductionVariants || [];
  if (variants.length) {
    const table = el("table", {}, el("tr", {}, el("th", {}, "variant"), el("th", {}, "weight"), el("th", {}, "instances")));
    for (const v of variants) table.append(el("tr", {}, el("td", {}, v.VariantName), el("td", {class: "number"}, number(v.CurrentWeight, 2)), el("td", {class: "number"}, v.CurrentInstanceCount ?? "-")));
    section.append(table);
  }
  if (components.length) {
    const list = el("table", {}, el("tr", {}, el("th", {}, "inference component"), el("th", {}, "variant"), el("th", {}, "status")));
    for (const c of components) list.append(el("tr", {}, el("td", {}, c.InferenceComponentName), el("td", {}, c.VariantName), el("td", {}, c.InferenceComponentStatus)));
    section.append(list);
  }
  if (backlog !== undefined) section.append(el("p", {"data-backlog": ""}, `asynchronous queue: ${backlog} waiting or running`));
  if (containers.length) {
    const table = el("table", {}, el("tr", {}, ...["variant", "container", "state", "req/s", "errors/s", "latency ms", "last minutes"].map((h) => el("th", {}, h))));
    for (const c of containers) {
      const key = [name, c.variant.split("/").pop(), c.container].join("|");
      const points = (history.get(key) || {points: []}).points;
      const last = points[points.length - 1] || {};
      table.append(el("tr", {"data-container": c.container}, el("td", {}, c.variant), el("td", {}, c.container),
        el("td", {"data-state": ""}, c.state + (c.detail ? ` (${c.detail})` : "")), el("td", {class: "number"}, number(last.rate, 1)),
        el("td", {class: "number"}, number(last.errors, 1)), el("td", {class: "number"}, number(last.latency, 1)), el("td", {}, chart(points))));
      const lines = el("details", {}, el("summary", {class: "muted"}, `last lines of ${c.container}`), el("pre", {class: "lines"}, c.lines.join("\n") || "(nothing yet)"));
      table.append(el("tr", {}, el("td", {colspan: "7"}, lines)));
    }
    section.append(table);
  } else if (described.EndpointStatus !== "Failed") {
    section.append(el("p", {class: "muted"}, "no container running"));
  }
  return section;
}

async function refresh() {
  const problem = document.getElementById("problem");
  try {
    const listed = await all("ListEndpoints", {SortBy: "Name", SortOrder: "Ascending"}, "Endpoints");
    const metricsAnswer = await fetch("/metrics");
    const samples = metricsAnswer.ok ? parseMetrics(await metricsAnswer.text()) : [];
    remember(Date.now(), byContainer(samples));
    const backlogs = new Map(samples.filter((s) => s.name === "sagemaker_approximate_backlog_size").map((s) => [s.labels.endpoint, s.value]));
    const sections = [];
    for (const {EndpointName: name} of listed) {
      const described = await api("DescribeEndpoint", {EndpointName: name});
      const components = await all("ListInferenceComponents", {EndpointNameEquals: name}, "InferenceComponents");
      let containers = [];
      if (described.EndpointStatus !== "Failed") {
        const answer = await fetch("/console/containers?endpoint=" + encodeURIComponent(name));
        if (answer.ok) containers = (await answer.json()).containers;
      }
      sections.push(renderEndpoint(described, components, containers, backlogs.get(name)));
    }
    document.getElementById("endpoints").replaceChildren(...sections);
    document.getElementById("summary").textContent = `${listed.length} endpoint(s); updated ${new Date().toLocaleTimeString()}`;
    problem.hidden = true;
  } catch (error) {
    problem.textContent = "Could not refresh: " + error.message;
    problem.hidden = false;
  }
  setTimeout(refresh, EVERY_MS);
}

refresh();
