// The results page (/ui) and a batch's page (/ui/batches/{id}): batches with progress, the results
// table with filters, a histogram and a φ–Tc scatter plot. While any job is queued or running it polls
// every 2 s (only the batches whose counts changed are fetched again) and stops once all have finished.
import { ROOT, api, el, fmt, poll, shortId, showPermalink, when } from './common.js';
import { histogram, niceRange, scatter } from './plots.js';
import { ResultsTable } from './table.js';

const batchId = location.pathname.match(/\/ui\/batches\/([^/]+)/)?.[1] ?? null;
const structureUrl = (id) => `${ROOT}/ui/screenings/${id}`;
const table = new ResultsTable(document.getElementById('results'), structureUrl);
const rows = new Map(); // job id → result row
let counts = new Map(); // batch id → JSON of its counts, to tell which batches changed

const $ = (id) => document.getElementById(id);

// --- data -------------------------------------------------------------------------------------
async function fetchRows(batch) {
  const query = batch ? `batch_id=${encodeURIComponent(batch)}&` : '';
  for (let offset = 0; ; offset += 5000) {
    const page = await api(`/v1/results?${query}limit=5000&offset=${offset}`);
    for (const row of page.items) rows.set(row.id, row);
    if (offset + page.items.length >= page.total) return;
  }
}

async function fetchBatches() {
  if (batchId) {
    const batch = await api(`/v1/batches/${encodeURIComponent(batchId)}?limit=1`);
    return [batch];
  }
  return (await api('/v1/batches?limit=50')).items;
}

// One round: the batches, then the rows of every batch that changed. True while anything is unfinished.
async function refresh() {
  const batches = await fetchBatches();
  const changed = batches.filter((b) => counts.get(b.id) !== JSON.stringify(b.counts));
  if (counts.size === 0 && !batchId) await fetchRows(null); // first round: every job at once
  else for (const b of changed) await fetchRows(b.id);
  counts = new Map(batches.map((b) => [b.id, JSON.stringify(b.counts)]));
  showBatches(batches);
  if (changed.length || !table.rows.length) update();
  const live = batches.some((b) => !b.finished);
  $('live').hidden = !live;
  return live;
}

// --- drawing ----------------------------------------------------------------------------------
function showBatches(batches) {
  if (batchId) {
    const b = batches[0];
    $('batch-head').hidden = false;
    $('batches-panel').hidden = true;
    $('batch-id').textContent = b.id;
    $('batch-summary').textContent = `${summary(b)}, submitted ${when(b.created_at)}`;
    $('batch-progress').value = b.progress;
    showPermalink($('batch-link'), $('batch-copy'), b.links.ui);
    $('batch-csv').href = b.links.csv;
    document.title = `elfscreen — batch ${shortId(b.id)}`;
    return;
  }
  $('no-batches').hidden = batches.length > 0;
  $('batches').replaceChildren(...batches.map((b) => el('li', { 'data-id': b.id, 'data-finished': String(b.finished) },
    el('a', { href: `${ROOT}/ui/batches/${b.id}` }, shortId(b.id)),
    el('progress', { max: 1, value: b.progress }),
    el('span', {}, summary(b)),
    el('span', { class: 'muted' }, when(b.created_at)))));
}

function summary(b) {
  const c = b.counts;
  const parts = [`${c.done} of ${b.total} done`];
  if (c.failed) parts.push(`${c.failed} failed`);
  if (c.running) parts.push(`${c.running} running`);
  if (c.queued) parts.push(`${c.queued} queued`);
  return parts.join(', ');
}

function update() {
  const shown = table.setRows([...rows.values()].filter((r) => !batchId || r.batch_id === batchId));
  $('count').textContent = `${shown.length} of ${table.rows.length} structures`;
  drawPlots(shown);
}

function drawPlots(shown) {
  const variable = $('hist-var').value;
  const values = shown.map((r) => r[variable]).filter((v) => v !== null && v !== undefined);
  if (variable === 'phi') {
    histogram($('histogram'), values, { lo: 0, hi: 1, bins: 20, xLabel: 'φ (networking value)', digits: 2 });
  } else {
    const [lo, hi] = niceRange(values, 0);
    histogram($('histogram'), values, { lo, hi, bins: 20, xLabel: 'Tc (K)', digits: 0 });
  }
  const points = shown.filter((r) => r.phi !== null && r.tc_k !== null).map((r) => ({
    id: r.id, x: r.phi, y: r.tc_k, dx: r.phi_std, dy: r.tc_std_k,
    label: `${r.name} (${r.reduced_formula}, ${r.spacegroup}): φ = ${fmt(r.phi)} ± ${fmt(r.phi_std)}, Tc = ${fmt(r.tc_k, 0)} ± ${fmt(r.tc_std_k, 0)} K`,
  }));
  scatter($('scatter'), points, {
    xRange: [0, 1], yRange: niceRange(points.map((p) => p.y), 0), xLabel: 'φ (networking value)', yLabel: 'Tc (K)',
    onClick: (p) => { location.href = structureUrl(p.id); },
  });
}

// --- filters ----------------------------------------------------------------------------------
function readFilter() {
  const text = $('f-text').value.trim().toLowerCase();
  const status = $('f-status').value;
  const number = (id) => ($(id).value === '' ? null : Number($(id).value));
  const phiMin = number('f-phi-min');
  const phiMax = number('f-phi-max');
  const tcMin = number('f-tc-min');
  const warned = $('f-warnings').checked;
  table.filter = (r) => (!text || [r.name, r.reduced_formula, r.formula, r.spacegroup].some((s) => s && s.toLowerCase().includes(text)))
    && (!status || r.status === status)
    && (phiMin === null || (r.phi !== null && r.phi >= phiMin))
    && (phiMax === null || (r.phi !== null && r.phi <= phiMax))
    && (tcMin === null || (r.tc_k !== null && r.tc_k >= tcMin))
    && (!warned || r.warnings.length > 0);
  update();
}

$('filters').addEventListener('input', readFilter);
$('filters').addEventListener('submit', (event) => event.preventDefault());
$('hist-var').addEventListener('change', () => drawPlots(table.visible()));
poll(refresh);
