// The ELF on a plane (GET …/slice) drawn on a canvas: viridis colours over ELF 0…1, the contour at φ
// (marching squares), the atoms near the plane, the bottleneck, axes in Å and a colour bar.

// matplotlib's viridis at ELF 0, 0.1, …, 1 (perceptually uniform), interpolated linearly between
const VIRIDIS = ['#440154', '#482475', '#414487', '#355f8d', '#2a788e', '#21918c', '#22a884', '#44bf70',
  '#7ad151', '#bddf26', '#fde725'].map((hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)));

export function viridis(t) {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  return VIRIDIS[i].map((c, k) => Math.round(c + f * (VIRIDIS[i + 1][k] - c)));
}

const MARGIN = { left: 46, right: 70, top: 12, bottom: 40 };

export function drawSlice(canvas, data) {
  const ctx = canvas.getContext('2d');
  const { values, n, half_width_a: half, level } = data;
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const size = Math.min(canvas.width - MARGIN.left - MARGIN.right, canvas.height - MARGIN.top - MARGIN.bottom);
  const [x0, y0] = [MARGIN.left, MARGIN.top];
  // plane coordinates (Å, y up) → canvas pixels
  const px = (x) => x0 + ((x + half) / (2 * half)) * size;
  const py = (y) => y0 + size - ((y + half) / (2 * half)) * size;

  // the field: one pixel per sample on a scratch canvas, scaled up with smoothing (row 0 is the lowest y)
  const image = new ImageData(n, n);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) {
      const [red, green, blue] = viridis(values[r][c]);
      const o = 4 * ((n - 1 - r) * n + c);
      image.data.set([red, green, blue, 255], o);
    }
  }
  const scratch = document.createElement('canvas');
  scratch.width = scratch.height = n;
  scratch.getContext('2d').putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(scratch, x0, y0, size, size);

  if (level !== null) {
    ctx.strokeStyle = '#fff';
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    const step = (2 * half) / (n - 1);
    for (const [[ax, ay], [bx, by]] of contour(values, level)) {
      ctx.moveTo(px(-half + ax * step), py(-half + ay * step));
      ctx.lineTo(px(-half + bx * step), py(-half + by * step));
    }
    ctx.stroke();
  }

  ctx.font = '11px sans-serif';
  for (const atom of data.atoms) {
    ctx.beginPath();
    ctx.arc(px(atom.x), py(atom.y), 4, 0, 2 * Math.PI);
    ctx.fillStyle = '#fff';
    ctx.fill();
    ctx.strokeStyle = '#000';
    ctx.lineWidth = 1;
    ctx.stroke();
    ctx.strokeStyle = '#fff';
    ctx.lineWidth = 3;
    ctx.strokeText(atom.species, px(atom.x) + 6, py(atom.y) - 6);
    ctx.fillStyle = '#000';
    ctx.fillText(atom.species, px(atom.x) + 6, py(atom.y) - 6);
  }
  if (data.bottleneck) {
    const [x, y] = [px(data.bottleneck.x), py(data.bottleneck.y)];
    ctx.strokeStyle = '#ff4081';
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(x - 6, y - 6);
    ctx.lineTo(x + 6, y + 6);
    ctx.moveTo(x - 6, y + 6);
    ctx.lineTo(x + 6, y - 6);
    ctx.stroke();
  }
  axes(ctx, px, py, half, size);
  colourBar(ctx, x0 + size + 18, y0, size, level);
  canvas.dataset.ready = 'true';
}

function axes(ctx, px, py, half, size) {
  ctx.fillStyle = '#333';
  ctx.strokeStyle = '#333';
  ctx.lineWidth = 1;
  ctx.font = '11px sans-serif';
  ctx.textAlign = 'center';
  for (const t of [-half, 0, half]) {
    ctx.fillText(t.toFixed(1), px(t), py(-half) + 14);
    ctx.textAlign = 'right';
    ctx.fillText(t.toFixed(1), px(-half) - 4, py(t) + 4);
    ctx.textAlign = 'center';
  }
  ctx.fillText('u (Å)', px(0), py(-half) + 30);
  ctx.save();
  ctx.translate(px(-half) - 32, py(0));
  ctx.rotate(-Math.PI / 2);
  ctx.fillText('v (Å)', 0, 0);
  ctx.restore();
  ctx.strokeRect(px(-half), py(half), size, size);
  ctx.textAlign = 'start';
}

function colourBar(ctx, x, y, height, level) {
  const width = 14;
  for (let i = 0; i < height; i++) {
    ctx.fillStyle = `rgb(${viridis(1 - i / (height - 1)).join(',')})`;
    ctx.fillRect(x, y + i, width, 1);
  }
  ctx.strokeStyle = '#333';
  ctx.strokeRect(x, y, width, height);
  ctx.fillStyle = '#333';
  ctx.font = '11px sans-serif';
  for (const t of [0, 0.5, 1]) ctx.fillText(t.toFixed(1), x + width + 4, y + (1 - t) * height + 4);
  ctx.fillText('ELF', x - 2, y + height + 16);
  if (level !== null) {
    const ly = y + (1 - level) * height;
    ctx.strokeStyle = '#000';
    ctx.beginPath();
    ctx.moveTo(x - 4, ly);
    ctx.lineTo(x + width + 4, ly);
    ctx.stroke();
    ctx.fillText('φ', x + width + 4, ly + 12);
  }
}

// Line segments [[col, row], [col, row]] (fractional sample indices) of the level line of a 2D array.
export function contour(values, level) {
  const segments = [];
  const rows = values.length;
  const cols = values[0].length;
  const cross = (a, b, va, vb) => {
    const t = (level - va) / (vb - va);
    return [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])];
  };
  for (let r = 0; r < rows - 1; r++) {
    for (let c = 0; c < cols - 1; c++) {
      const corners = [[c, r], [c + 1, r], [c + 1, r + 1], [c, r + 1]];
      const v = corners.map(([x, y]) => values[y][x]);
      const points = [];
      for (let e = 0; e < 4; e++) {
        const [a, b] = [e, (e + 1) % 4];
        if ((v[a] >= level) !== (v[b] >= level)) points.push(cross(corners[a], corners[b], v[a], v[b]));
      }
      if (points.length === 2) segments.push(points);
      else if (points.length === 4) segments.push([points[0], points[1]], [points[2], points[3]]);
    }
  }
  return segments;
}
