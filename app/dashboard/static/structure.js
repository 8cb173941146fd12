// A structure's page (/ui/screenings/{id}): its result, the crystal with an ELF isosurface (level φ by
// default) and the critical points, an ELF slice through the bottleneck, and downloads; once the job is
// verified by DFT, the model's numbers next to DFT's and the ML and DFT ELF on the same plane. While the job
// or its verification is queued or running the page polls every 2 s and draws each part once it is done.
import { api, downloadLink, el, fmt, poll, showPermalink, when } from './common.js';
import { drawSlice } from './slice.js';
import { CrystalView } from './viewer.js';

const jobId = location.pathname.match(/\/ui\/screenings\/([^/]+)/)[1];
const path = `/v1/screenings/${encodeURIComponent(jobId)}`;
const $ = (id) => document.getElementById(id);
const view = new CrystalView($('view3d'), $('view3d-marks'));

let resultShown = false;
let dftShown = false;
poll(async () => {
  const job = await api(path);
  showHeader(job);
  if (job.status === 'queued' || job.status === 'running') return true;
  showVerification(job); // first: its state shows while the ML views below load
  if (job.status === 'done' && !resultShown) {
    resultShown = true;
    await showResult(job);
  }
  const v = job.verification;
  return Boolean(v && (v.status === 'queued' || v.status === 'running'));
});

function showHeader(job) {
  const r = job.result;
  $('title').textContent = r ? `${job.name} — ${r.reduced_formula}, ${r.spacegroup}` : job.name;
  document.title = `elfscreen — ${job.name}`;
  const parts = [`${job.status}`, `submitted ${when(job.created_at)}`];
  if (job.finished_at) parts.push(`finished ${when(job.finished_at)}`);
  if (job.cached) parts.push('answered from the cache');
  if (job.error) parts.push(`error: ${job.error.message}`);
  $('status-line').textContent = parts.join(' · ');
  $('status-line').dataset.status = job.status;
  showPermalink($('permalink'), $('copy'), job.links.ui);
  $('batch-nav').href = job.links.batch_ui;
}

async function showResult(job) {
  const r = job.result;
  $('downloads').hidden = false;
  downloadLink($('dl-json'), `${path}/result.json`, `${job.name}.json`);
  downloadLink($('dl-csv'), `${path}/result.csv`, `${job.name}.csv`);
  // a grid not kept with the job is predicted again by the server (same model and options)
  downloadLink($('dl-cube'), `${path}/elf.cube${job.grid_available ? '' : '?recompute=true'}`, `${job.name}.elf.cube`);
  $('result').hidden = false;
  showValues(r);
  showCriticalPoints(r.critical_points);

  const level = r.phi ?? 0.5;
  setupLevel(level);
  // the three views load side by side; the slice and surface need the grid, which may be unavailable
  await Promise.all([
    api(`${path}/scene`).then((scene) => view.setScene(scene)),
    api(`${path}/slice`).then(showSlice, (error) => { $('slice-caption').textContent = error.message; }),
    loadSurface(level),
  ]);
}

function showSlice(slice) {
  drawSlice($('slice'), slice);
  const plane = slice.plane === 'bond'
    ? 'the plane through the bottleneck along the bond (positive curvature) and the softer of its two cross directions'
    : `the cell's ab plane through ${slice.bottleneck ? 'the bottleneck' : 'the cell centre (φ has no bottleneck)'}`;
  $('slice-caption').textContent = `ELF on ${plane}, ±${slice.half_width_a} Å around it${slice.bottleneck ? ' (×)' : ''}. White line: ELF = φ = ${fmt(slice.level)}; `
    + 'dots: atoms within 0.5 Å of the plane.';
}

function showValues(r) {
  const spread = r.uncertainty || {};
  const pm = (value, sd, digits) => (sd === undefined ? fmt(value, digits) : `${fmt(value, digits)} ± ${fmt(sd, digits)}`);
  const entries = [
    ['φ (networking value)', pm(r.phi, spread.phi_std, 4)],
    ['φ* (molecularity index)', fmt(r.phi_star, 4)],
    ['φ 1D / 2D', `${fmt(r.phi_1d, 4)} / ${fmt(r.phi_2d, 4)}`],
    ['H fraction, H DOS', `${fmt(r.h_fraction, 3)}, ${fmt(r.h_dos.value, 3)}${r.h_dos.assumed ? ' (assumed)' : ''}`],
    ['φ_DOS', fmt(r.phi_dos, 4)],
    ['Tc', `${pm(r.tc.value_k, spread.tc_std_k, 0)} K (${r.tc.model}: ${r.tc.formula})`],
    ['atoms, volume', `${r.n_atoms} (${r.n_h} H), ${fmt(r.volume_per_atom_a3, 2)} Å³/atom`],
    ['grid', `${r.grid.shape.join(' × ')}, spacing ${r.grid.spacing_a.map((s) => fmt(s, 3)).join(', ')} Å`],
    ['model', `${r.provenance.model_version ?? 'none (DFT grid)'} · elfscreen ${r.provenance.elfscreen_version}`],
  ];
  if (r.bottleneck) {
    const near = r.bottleneck.nearest_atoms.map((a) => `${a.species}${a.index} ${fmt(a.distance_a, 2)} Å`).join(', ');
    entries.push(['bottleneck at φ', `frac (${r.bottleneck.frac.map((x) => fmt(x, 3)).join(', ')}), nearest ${near}`]);
  }
  $('values').replaceChildren(...entries.flatMap(([term, value]) => [el('dt', {}, term), el('dd', {}, value)]));
  $('warnings').replaceChildren(...r.warnings.map((w) => el('li', {}, w)));
}

function showCriticalPoints(cps) {
  $('cp-counts').textContent = `${cps.counts.max} maxima and ${cps.counts.bond_saddle} bond saddles of persistence ≥ `
    + `${cps.min_persistence}; the ${cps.listed} most persistent are listed.`;
  const head = el('thead', {}, el('tr', {}, ...['kind', 'fractional position', 'ELF', 'persistence'].map((h) => el('th', {}, h))));
  const body = el('tbody', {}, ...cps.points.map((p) => el('tr', {},
    el('td', {}, p.kind === 'max' ? 'maximum' : 'bond saddle'),
    el('td', {}, p.frac.map((x) => fmt(x, 3)).join(', ')),
    el('td', { class: 'num' }, fmt(p.elf, 4)),
    el('td', { class: 'num' }, p.persistence === null ? 'essential' : fmt(p.persistence, 4)))));
  $('critical-points').replaceChildren(head, body);
}

let surfaceRequests = 0;

// Fetch and show the isosurface at `level`; a failure is written under the view.
async function loadSurface(level) {
  $('level-out').textContent = fmt(level, 3);
  const request = ++surfaceRequests;
  try {
    const mesh = await api(`${path}/isosurface?level=${level}`);
    if (request === surfaceRequests) view.setMesh(mesh); // a later level may have been asked meanwhile
    $('view-note').textContent = '';
  } catch (error) {
    $('view-note').textContent = error.message;
  }
}

function setupLevel(phi) {
  const slider = $('level');
  slider.value = phi;
  slider.addEventListener('input', () => { $('level-out').textContent = fmt(Number(slider.value), 3); });
  slider.addEventListener('change', () => loadSurface(Number(slider.value)));
  $('level-reset').addEventListener('click', () => {
    slider.value = phi;
    loadSurface(phi);
  });
  for (const [box, part] of [['show-surface', 'surface'], ['show-atoms', 'atoms'], ['show-points', 'points']]) {
    $(box).addEventListener('change', () => {
      view.show[part] = $(box).checked;
      view.request();
    });
  }
}

// The DFT verification: its state, and once done the numbers side by side and the two slices (drawn once).
function showVerification(job) {
  const v = job.verification;
  $('dft-panel').hidden = !v;
  if (!v) return;
  const parts = [`DFT verification ${v.status}`];
  if (v.attempts > 1) parts.push(`${v.attempts} attempts`);
  if (v.finished_at) parts.push(`finished ${when(v.finished_at)}`);
  if (v.error) parts.push(`error: ${v.error.message}`);
  $('dft-status').textContent = parts.join(' · ');
  $('dft-status').dataset.status = v.status;
  if (v.status !== 'done' || dftShown || !job.result.dft) return;
  dftShown = true;
  $('dft-compare').hidden = false;
  showComparison(job.result);
  downloadLink($('dl-dft-cube'), `${path}/dft.cube`, `${job.name}.dft.cube`);
  api(`${path}/slice-pair`).then(showSlicePair, (error) => { $('pair-caption').textContent = error.message; });
}

function showComparison(r) {
  const d = r.dft;
  const spread = r.uncertainty || {};
  const diff = (a, b, digits) => (a === null || b === null || a === undefined || b === undefined ? '–'
    : `${b - a > 0 ? '+' : ''}${fmt(b - a, digits)}`);
  const pm = (value, sd, digits) => (sd === undefined || sd === null ? fmt(value, digits) : `${fmt(value, digits)} ± ${fmt(sd, digits)}`);
  const rows = [
    ['φ (networking value)', pm(r.phi, spread.phi_std, 4), fmt(d.phi, 4), diff(r.phi, d.phi, 4), 'phi'],
    ['φ*', pm(r.phi_star, spread.phi_star_std, 4), fmt(d.phi_star, 4), diff(r.phi_star, d.phi_star, 4), 'phi_star'],
    ['φ 1D', fmt(r.phi_1d, 4), fmt(d.phi_1d, 4), diff(r.phi_1d, d.phi_1d, 4), 'phi_1d'],
    ['φ 2D', fmt(r.phi_2d, 4), fmt(d.phi_2d, 4), diff(r.phi_2d, d.phi_2d, 4), 'phi_2d'],
    ['H DOS', `${fmt(r.h_dos.value, 3)}${r.h_dos.assumed ? ' (assumed)' : ''}`, fmt(d.h_dos, 3), diff(r.h_dos.value, d.h_dos, 3), 'h_dos'],
    ['Tc (K)', pm(r.tc.value_k, spread.tc_std_k, 0), fmt(d.tc && d.tc.value_k, 0), diff(r.tc.value_k, d.tc && d.tc.value_k, 0), 'tc'],
  ];
  const head = el('thead', {}, el('tr', {}, ...['', 'model (ML)', 'DFT', 'DFT − ML'].map((h) => el('th', {}, h))));
  const body = el('tbody', {}, ...rows.map(([label, ml, dft, delta, key]) => el('tr', { 'data-key': key },
    el('td', {}, label), el('td', { class: 'ml' }, ml), el('td', { class: 'dft' }, dft), el('td', { class: 'delta' }, delta))));
  $('compare').replaceChildren(head, body);
  const sigma = spread.phi_std;
  if (r.delta_phi !== null && sigma) {
    const z = Math.abs(r.delta_phi) / sigma;
    $('dft-note').textContent = `|Δφ| = ${fmt(Math.abs(r.delta_phi), 4)} is ${fmt(z, 1)} σ of the model's σφ = ${fmt(sigma, 4)}`
      + ` (${z <= 2 ? 'within' : 'outside'} the 2σ error bar).`;
  }
  const s = d.settings;
  $('dft-settings').textContent = `DFT: ${s.name} settings (PBE, ${s.potentials} potentials, ecutwfc ${s.ecutwfc} Ry, `
    + `ecutrho ${s.ecutrho} Ry, k-spacing ≤ ${s.kspacing} Å⁻¹), QE ${d.code_version.qe}, elfscreen ${d.code_version.elfscreen}; `
    + `${fmt(d.cpu_seconds, 1)} CPU s, ${fmt(d.wall_seconds, 1)} s wall.`;
}

function showSlicePair(pair) {
  drawSlice($('slice-ml'), { ...pair, values: pair.ml.values, level: pair.ml.level });
  drawSlice($('slice-dft'), { ...pair, values: pair.dft.values, level: pair.dft.level });
  $('pair-caption').textContent = `Both on the same plane: ${pair.plane === 'bond' ? 'through the model\'s bottleneck along the bond'
    : 'the cell\'s ab plane'}, ±${pair.half_width_a} Å (× the model's bottleneck). White lines: ELF = φ of each `
    + `(ML ${fmt(pair.ml.level)}, DFT ${fmt(pair.dft.level)}).`;
}
