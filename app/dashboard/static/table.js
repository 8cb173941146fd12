// The results table: one row per job, sortable by clicking a column header (again: reverse), filtered
// by a predicate the page sets. Empty values sort last in both directions.
import { el, fmt } from './common.js';

export const COLUMNS = [
  { key: 'name', label: 'Name', text: true },
  { key: 'status', label: 'Status', text: true },
  { key: 'reduced_formula', label: 'Formula', text: true, title: 'per formula unit (the cell’s formula is in the CSV)' },
  { key: 'spacegroup', label: 'Space group', text: true },
  { key: 'phi', label: 'φ', digits: 3, title: 'networking value' },
  { key: 'phi_star', label: 'φ*', digits: 3, title: 'molecularity index' },
  { key: 'tc_k', label: 'Tc (K)', digits: 0, title: 'Tc estimate' },
  { key: 'phi_std', label: 'σφ', digits: 3, title: 'ensemble spread of φ' },
  { key: 'tc_std_k', label: 'σTc (K)', digits: 0, title: 'ensemble spread of Tc' },
  { key: 'warnings', label: 'Warnings', value: (row) => row.warnings.length },
  {
    key: 'delta_phi', label: 'DFT', title: 'DFT verification: ✓ with Δφ = φ_DFT − φ_ML once done (sorts by |Δφ|)',
    value: (row) => (row.delta_phi === null || row.delta_phi === undefined ? null : Math.abs(row.delta_phi)),
  },
];

export class ResultsTable {
  constructor(table, structureUrl) {
    this.table = table;
    this.structureUrl = structureUrl; // job id → its page
    this.rows = [];
    this.filter = () => true;
    this.sortKey = null;
    this.descending = false;
    this.head = el('thead', {}, el('tr', {}, ...COLUMNS.map((c) => this.header(c))));
    this.body = el('tbody');
    table.append(this.head, this.body);
  }

  header(column) {
    const button = el('button', { type: 'button', title: column.title, onclick: () => this.sortBy(column.key) }, column.label);
    return el('th', { 'data-key': column.key, scope: 'col', 'aria-sort': 'none', class: column.text ? null : 'num' }, button);
  }

  sortBy(key) {
    this.descending = this.sortKey === key ? !this.descending : false;
    this.sortKey = key;
    for (const th of this.head.querySelectorAll('th')) {
      const sorted = th.dataset.key === key;
      th.setAttribute('aria-sort', sorted ? (this.descending ? 'descending' : 'ascending') : 'none');
    }
    this.render();
  }

  // Show these rows; returns the visible ones.
  setRows(rows) {
    this.rows = rows;
    return this.render();
  }

  // The rows that pass the filter, in the current order.
  visible() {
    const shown = this.rows.filter(this.filter);
    if (this.sortKey === null) return shown;
    const column = COLUMNS.find((c) => c.key === this.sortKey);
    const value = column.value || ((row) => row[column.key]);
    const sign = this.descending ? -1 : 1;
    return shown.sort((a, b) => {
      const x = value(a);
      const y = value(b);
      if (x === null || x === undefined) return y === null || y === undefined ? 0 : 1;
      if (y === null || y === undefined) return -1;
      return sign * (column.text ? String(x).localeCompare(String(y)) : x - y);
    });
  }

  render() {
    const rows = this.visible();
    this.body.replaceChildren(...rows.map((row) => this.row(row)));
    return rows;
  }

  row(row) {
    const cells = COLUMNS.map((column) => {
      if (column.key === 'name') return el('td', {}, el('a', { href: this.structureUrl(row.id) }, row.name));
      if (column.key === 'status') return el('td', {}, el('span', { class: `status s-${row.status}`, title: row.error }, row.status));
      if (column.key === 'warnings') {
        return el('td', { class: 'num', title: row.warnings.join('\n') || undefined }, row.warnings.length || '');
      }
      if (column.key === 'delta_phi') return el('td', { class: 'num' }, dftBadge(row));
      if (column.text) return el('td', {}, row[column.key] ?? '–');
      return el('td', { class: 'num' }, fmt(row[column.key], column.digits));
    });
    return el('tr', { 'data-id': row.id, 'data-status': row.status }, ...cells);
  }
}

// The DFT column: a "DFT ✓ Δφ" badge once the verification is done, its state while queued or running or when
// it failed or was cancelled, nothing when none was asked.
function dftBadge(row) {
  if (!row.verification) return '';
  if (row.verification === 'done') {
    const sign = row.delta_phi > 0 ? '+' : '';
    return el('span', {
      class: 'badge dft-done', 'data-delta-phi': row.delta_phi,
      title: `DFT φ = ${fmt(row.dft_phi, 4)}, φ* = ${fmt(row.dft_phi_star, 4)}, Tc = ${fmt(row.dft_tc_k, 0)} K`,
    }, `DFT ✓ Δφ ${sign}${fmt(row.delta_phi, 3)}`);
  }
  return el('span', { class: `badge dft-${row.verification}` }, `DFT ${row.verification}`);
}
