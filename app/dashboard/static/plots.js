// Small SVG plots with axes and tooltips: a histogram and a scatter plot with error bars. Each call
// redraws the whole <svg> (viewBox 0 0 480 300).
import { svgEl } from './common.js';

const WIDTH = 480;
const HEIGHT = 300;
const MARGIN = { left: 54, right: 14, top: 12, bottom: 42 };

// A round step (1, 2 or 5 × 10^k) that cuts [lo, hi] into about `count` parts.
function niceStep(lo, hi, count = 5) {
  const raw = (hi - lo) / count;
  const step = 10 ** Math.floor(Math.log10(raw));
  const ratio = raw / step;
  return step * (ratio >= 7.5 ? 10 : ratio >= 3.5 ? 5 : ratio >= 1.5 ? 2 : 1);
}

// The round values in [lo, hi], about `count` of them.
function niceTicks(lo, hi, count = 5) {
  const step = niceStep(lo, hi, count);
  const ticks = [];
  for (let t = Math.ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

// A linear map from [lo, hi] to [a, b] with its ticks.
function scale(lo, hi, a, b) {
  const map = (v) => a + ((Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo)) * (b - a); // clamped to the axis
  map.ticks = niceTicks(lo, hi);
  return map;
}

// [lo, hi] of the values (and `floor`, if given), widened to round numbers.
export function niceRange(values, floor = null) {
  const all = floor === null ? values : [...values, floor];
  if (!all.length) return [0, 1];
  const lo = Math.min(...all);
  const hi = Math.max(...all) > lo ? Math.max(...all) : lo + 1;
  const step = niceStep(lo, hi);
  return [Math.floor(lo / step) * step, Math.ceil(hi / step) * step];
}

function axes(svg, x, y, xLabel, yLabel) {
  const bottom = HEIGHT - MARGIN.bottom;
  svg.append(
    svgEl('line', { class: 'axis', x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: bottom, y2: bottom }),
    svgEl('line', { class: 'axis', x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: bottom }),
    svgEl('text', { class: 'label', x: (MARGIN.left + WIDTH - MARGIN.right) / 2, y: HEIGHT - 6, 'text-anchor': 'middle' }, xLabel),
    svgEl('text', { class: 'label', transform: `translate(14 ${(MARGIN.top + bottom) / 2}) rotate(-90)`, 'text-anchor': 'middle' }, yLabel),
  );
  for (const t of x.ticks) {
    svg.append(svgEl('line', { class: 'tick', x1: x(t), x2: x(t), y1: bottom, y2: bottom + 5 }),
      svgEl('text', { class: 'ticklabel', x: x(t), y: bottom + 17, 'text-anchor': 'middle' }, label(t)));
  }
  for (const t of y.ticks) {
    svg.append(svgEl('line', { class: 'grid', x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(t), y2: y(t) }),
      svgEl('text', { class: 'ticklabel', x: MARGIN.left - 6, y: y(t) + 4, 'text-anchor': 'end' }, label(t)));
  }
}

function label(t) {
  return Math.abs(t) >= 1000 ? t.toExponential(1) : String(Number(t.toPrecision(4)));
}

function withTooltip(node, text) {
  const tip = document.getElementById('tooltip');
  node.addEventListener('pointerenter', (event) => {
    tip.textContent = text;
    tip.hidden = false;
    moveTip(tip, event);
  });
  node.addEventListener('pointermove', (event) => moveTip(tip, event));
  node.addEventListener('pointerleave', () => { tip.hidden = true; });
  return node;
}

function moveTip(tip, event) {
  tip.style.left = `${event.pageX + 12}px`;
  tip.style.top = `${event.pageY + 12}px`;
}

// `bins` equal bins over [lo, hi]; one <rect class="bar" data-count> per bin, empty bins included.
export function histogram(svg, values, { lo, hi, bins, xLabel, digits }) {
  svg.replaceChildren();
  const counts = new Array(bins).fill(0);
  for (const v of values) counts[Math.min(bins - 1, Math.max(0, Math.floor(((v - lo) / (hi - lo)) * bins)))] += 1;
  const x = scale(lo, hi, MARGIN.left, WIDTH - MARGIN.right);
  const top = Math.max(...counts, 1);
  const y = scale(0, top, HEIGHT - MARGIN.bottom, MARGIN.top);
  y.ticks = niceTicks(0, top).filter((t) => Number.isInteger(t));
  axes(svg, x, y, xLabel, 'structures');
  counts.forEach((n, i) => {
    const a = lo + ((hi - lo) * i) / bins;
    const b = lo + ((hi - lo) * (i + 1)) / bins;
    svg.append(withTooltip(svgEl('rect', {
      class: 'bar', 'data-count': n, x: x(a) + 0.5, width: Math.max(0, x(b) - x(a) - 1),
      y: y(n), height: y(0) - y(n),
    }), `${a.toFixed(digits)}–${b.toFixed(digits)}: ${n} structure${n === 1 ? '' : 's'}`));
  });
}

// One <circle class="point"> per point {x, y, dx, dy, label, href}; dx/dy (spreads) as error bars. With
// `diagonal`, the line y = x over the common range (<line class="diagonal">), for parity plots.
export function scatter(svg, points, { xRange, yRange, xLabel, yLabel, onClick, diagonal = false }) {
  svg.replaceChildren();
  const x = scale(...xRange, MARGIN.left, WIDTH - MARGIN.right);
  const y = scale(...yRange, HEIGHT - MARGIN.bottom, MARGIN.top);
  axes(svg, x, y, xLabel, yLabel);
  if (diagonal) {
    const lo = Math.max(xRange[0], yRange[0]);
    const hi = Math.min(xRange[1], yRange[1]);
    svg.append(svgEl('line', { class: 'diagonal', x1: x(lo), y1: y(lo), x2: x(hi), y2: y(hi) }));
  }
  for (const p of points) {
    if (p.dx) svg.append(svgEl('line', { class: 'errorbar', x1: x(p.x - p.dx), x2: x(p.x + p.dx), y1: y(p.y), y2: y(p.y) }));
    if (p.dy) svg.append(svgEl('line', { class: 'errorbar', x1: x(p.x), x2: x(p.x), y1: y(p.y - p.dy), y2: y(p.y + p.dy) }));
  }
  for (const p of points) {
    const dot = svgEl('circle', { class: 'point', cx: x(p.x), cy: y(p.y), r: 4.5, 'data-id': p.id, tabindex: 0 });
    dot.addEventListener('click', () => onClick(p));
    svg.append(withTooltip(dot, p.label));
  }
}
