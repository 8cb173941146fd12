// The parity page (/ui/parity): every DFT-verified structure as ML φ (x, ± the model's σφ) against DFT φ (y), the
// line y = x, the model's error over them (GET /v1/verified) and a table of the structures.
import { ROOT, api, el, fmt, poll } from './common.js';
import { scatter } from './plots.js';

const $ = (id) => document.getElementById(id);
const structureUrl = (id) => `${ROOT}/ui/screenings/${id}`;

poll(async () => {
  const data = await api('/v1/verified');
  showSummary(data);
  const points = data.items.filter((p) => p.phi_ml !== null && p.phi_dft !== null);
  scatter($('parity'), points.map((p) => ({
    id: p.id, x: p.phi_ml, y: p.phi_dft, dx: p.phi_std,
    label: `${p.name} (${p.reduced_formula}): φ_ML = ${fmt(p.phi_ml)} ± ${fmt(p.phi_std)}, φ_DFT = ${fmt(p.phi_dft)}`,
  })), {
    xRange: [0, 1], yRange: [0, 1], xLabel: 'φ model (ML)', yLabel: 'φ DFT', diagonal: true,
    onClick: (p) => { location.href = structureUrl(p.id); },
  });
  showTable(data.items);
  return false;
});

function showSummary(data) {
  const s = data.summary;
  $('no-verified').hidden = data.total > 0;
  const cov = s.coverage || {};
  const pct = (v) => (v === undefined ? '–' : `${Math.round(100 * v)} %`);
  const entries = [
    ['verified structures', `${data.total}${data.items.length < data.total ? ` (${data.items.length} shown)` : ''}`],
    ['φ MAE', fmt(s.phi_mae, 4)], ['φ RMSE', fmt(s.phi_rmse, 4)], ['φ bias (ML − DFT)', fmt(s.phi_bias, 4)],
    ['within 1σ', pct(cov.within_1sigma)], ['within 2σ', pct(cov.within_2sigma)], ['median σφ', fmt(cov.median_sigma, 4)],
    ['models', s.model_versions.join(', ') || '–'],
  ];
  $('summary').replaceChildren(...entries.map(([term, value]) => el('div', { 'data-key': term },
    el('dt', {}, term), el('dd', {}, value))));
}

function showTable(items) {
  const head = el('thead', {}, el('tr', {}, ...['Name', 'Formula', 'φ ML ± σ', 'φ DFT', 'Δφ', '|Δφ|/σ', 'φ* ML', 'φ* DFT',
    'Tc ML (K)', 'Tc DFT (K)', 'model', 'DFT settings'].map((h) => el('th', {}, h))));
  const num = (v, d) => el('td', { class: 'num' }, fmt(v, d));
  const body = el('tbody', {}, ...items.map((p) => el('tr', { 'data-id': p.id },
    el('td', {}, el('a', { href: structureUrl(p.id) }, p.name)),
    el('td', {}, p.reduced_formula ?? '–'),
    el('td', { class: 'num' }, `${fmt(p.phi_ml, 3)} ± ${fmt(p.phi_std, 3)}`),
    num(p.phi_dft, 3), num(p.delta_phi, 3),
    num(p.phi_std ? Math.abs(p.delta_phi) / p.phi_std : null, 1),
    num(p.phi_star_ml, 3), num(p.phi_star_dft, 3), num(p.tc_ml_k, 0), num(p.tc_dft_k, 0),
    el('td', {}, p.model_version ?? '–'), el('td', {}, p.dft_settings ?? '–'))));
  $('verified').replaceChildren(head, body);
}
