// A small 3D view of a crystal: the cell, the atoms and a translucent ELF isosurface in WebGL, with the
// critical points, bottlenecks and axis names on a 2D canvas laid over it (always visible). Orthographic
// projection; drag rotates, the wheel zooms, a double-click resets. Lengths are Å, as the API sends them.

const ATOM_STYLE = { H: { color: [0.94, 0.94, 0.94, 1], radius: 0.25 } };
const OTHER_ATOM = { color: [0.35, 0.67, 0.35, 1], radius: 0.5 };
const POINT_STYLE = { max: '#d62728', bond_saddle: '#f2b705' };
const CELL_COLOR = [0.33, 0.33, 0.33, 1];
const SURFACE_COLOR = [0.16, 0.55, 0.78, 0.6];
const LIGHT = normalise([0.35, 0.55, 1]);

const VERTEX_SHADER = `
attribute vec3 position;
attribute vec3 normal;
uniform mat4 projection;   // Cartesian Å → clip space
uniform mat3 rotation;     // the view's rotation, for the normals
uniform vec3 offset;       // where this object sits (Å)
uniform float size;        // and its scale
varying vec3 viewNormal;
void main() {
  viewNormal = rotation * normal;
  gl_Position = projection * vec4(offset + size * position, 1.0);
}`;

const FRAGMENT_SHADER = `
precision mediump float;
uniform vec4 color;
uniform vec3 light;
varying vec3 viewNormal;
void main() {
  float lambert = abs(dot(normalize(viewNormal), light));  // two-sided
  gl_FragColor = vec4(color.rgb * (0.3 + 0.7 * lambert), color.a);
}`;

export class CrystalView {
  constructor(canvas, overlay) {
    this.canvas = canvas;
    this.overlay = overlay;
    const options = { antialias: true, preserveDrawingBuffer: true };
    this.gl = canvas.getContext('webgl2', options) || canvas.getContext('webgl', options);
    this.scene = null;
    this.surface = null;
    this.show = { atoms: true, surface: true, points: true };
    if (this.gl) this.setupGl();
    this.listen();
    this.reset();
  }

  setupGl() {
    const gl = this.gl;
    gl.getExtension('OES_element_index_uint'); // WebGL 1: meshes with more than 65 535 vertices
    const program = gl.createProgram();
    for (const [type, source] of [[gl.VERTEX_SHADER, VERTEX_SHADER], [gl.FRAGMENT_SHADER, FRAGMENT_SHADER]]) {
      const shader = gl.createShader(type);
      gl.shaderSource(shader, source);
      gl.compileShader(shader);
      gl.attachShader(program, shader);
    }
    gl.linkProgram(program);
    gl.useProgram(program);
    this.attribute = { position: gl.getAttribLocation(program, 'position'), normal: gl.getAttribLocation(program, 'normal') };
    this.uniform = Object.fromEntries(['projection', 'rotation', 'offset', 'size', 'color', 'light']
      .map((name) => [name, gl.getUniformLocation(program, name)]));
    this.sphere = this.upload(sphereMesh(12, 16));
  }

  // GPU buffers of a mesh {vertices, normals, triangles | lines}
  upload(mesh) {
    const gl = this.gl;
    const buffer = (target, data) => {
      const b = gl.createBuffer();
      gl.bindBuffer(target, b);
      gl.bufferData(target, data, gl.STATIC_DRAW);
      return b;
    };
    const indices = Uint32Array.from(mesh.triangles || mesh.lines);
    return {
      vertices: buffer(gl.ARRAY_BUFFER, Float32Array.from(mesh.vertices)),
      normals: mesh.normals ? buffer(gl.ARRAY_BUFFER, Float32Array.from(mesh.normals)) : null,
      indices: buffer(gl.ELEMENT_ARRAY_BUFFER, indices),
      count: indices.length,
      mode: mesh.triangles ? gl.TRIANGLES : gl.LINES,
    };
  }

  reset() {
    this.rotation = multiply(rotationX(-1.2), rotationZ(-0.6)); // oblique: c up, a and b receding
    this.zoom = 1;
    this.request();
  }

  // scene: {lattice, atoms, critical_points, bottleneck, molecular_bottleneck} (GET …/scene)
  setScene(scene) {
    this.scene = scene;
    const [a, b, c] = scene.lattice;
    const corner = (i, j, k) => [0, 1, 2].map((n) => i * a[n] + j * b[n] + k * c[n]);
    this.centre = corner(0.5, 0.5, 0.5);
    this.extent = Math.max(...[[1, 1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1]].map((d) => Math.hypot(...corner(...d)))) / 2;
    if (this.gl) {
      const corners = [0, 1].flatMap((i) => [0, 1].flatMap((j) => [0, 1].map((k) => corner(i, j, k))));
      const lines = [];
      for (let n = 0; n < 8; n++) for (const bit of [4, 2, 1]) if (!(n & bit)) lines.push(n, n | bit);
      this.cell = this.upload({ vertices: corners.flat(), lines });
    }
    this.request();
  }

  // mesh: {vertices, normals, triangles} flattened (GET …/isosurface), or null
  setMesh(mesh) {
    this.surface = mesh && this.gl ? this.upload(mesh) : null;
    this.canvas.dataset.triangles = mesh ? mesh.triangles.length / 3 : 0;
    this.request();
  }

  request() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  listen() {
    let last = null;
    this.canvas.addEventListener('pointerdown', (event) => {
      last = [event.clientX, event.clientY];
      this.canvas.setPointerCapture(event.pointerId);
    });
    this.canvas.addEventListener('pointermove', (event) => {
      if (!last) return;
      const [dx, dy] = [event.clientX - last[0], event.clientY - last[1]];
      last = [event.clientX, event.clientY];
      this.rotation = multiply(multiply(rotationY(dx * 0.01), rotationX(dy * 0.01)), this.rotation);
      this.request();
    });
    const stop = () => { last = null; };
    this.canvas.addEventListener('pointerup', stop);
    this.canvas.addEventListener('pointercancel', stop);
    this.canvas.addEventListener('wheel', (event) => {
      event.preventDefault();
      this.zoom = Math.min(8, Math.max(0.3, this.zoom * Math.exp(-event.deltaY * 0.0015)));
      this.request();
    }, { passive: false });
    this.canvas.addEventListener('dblclick', () => this.reset());
  }

  // [x right, y up] in clip units (−1…1) and z towards the viewer, of a Cartesian point
  project(p) {
    const v = apply(this.rotation, [0, 1, 2].map((i) => p[i] - this.centre[i]));
    return [v[0] * this.scale[0], v[1] * this.scale[1], v[2]];
  }

  draw() {
    const ratio = window.devicePixelRatio || 1;
    const [width, height] = [this.canvas.clientWidth, this.canvas.clientHeight];
    for (const c of [this.canvas, this.overlay]) {
      if (c.width !== Math.round(width * ratio)) [c.width, c.height] = [Math.round(width * ratio), Math.round(height * ratio)];
    }
    const s = (0.9 * this.zoom) / (this.extent || 1);
    this.scale = [s * Math.min(1, height / width), s * Math.min(1, width / height)];
    if (this.gl && this.scene) this.drawGl();
    this.drawOverlay(width, height, ratio);
    this.canvas.dataset.frames = Number(this.canvas.dataset.frames || 0) + 1;
  }

  drawGl() {
    const { gl, uniform, attribute } = this;
    gl.viewport(0, 0, this.canvas.width, this.canvas.height);
    gl.clearColor(1, 1, 1, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.enable(gl.DEPTH_TEST);
    // rows of the projection: scaled rotation, depth mapped so that the whole cell fits in −1…1
    const rows = this.rotation.map((row, i) => row.map((x) => x * (i < 2 ? this.scale[i] : -1 / (2 * this.extent))));
    const shift = rows.map((row) => -(row[0] * this.centre[0] + row[1] * this.centre[1] + row[2] * this.centre[2]));
    gl.uniformMatrix4fv(uniform.projection, false, [0, 1, 2, 3].flatMap((col) => (col < 3
      ? [rows[0][col], rows[1][col], rows[2][col], 0] : [...shift, 1])));
    gl.uniformMatrix3fv(uniform.rotation, false, [0, 1, 2].flatMap((col) => this.rotation.map((row) => row[col])));
    gl.uniform3fv(uniform.light, LIGHT);

    const place = (offset, size, color) => {
      gl.uniform3fv(uniform.offset, offset);
      gl.uniform1f(uniform.size, size);
      gl.uniform4fv(uniform.color, color);
    };
    const render = (mesh) => {
      gl.bindBuffer(gl.ARRAY_BUFFER, mesh.vertices);
      gl.enableVertexAttribArray(attribute.position);
      gl.vertexAttribPointer(attribute.position, 3, gl.FLOAT, false, 0, 0);
      if (mesh.normals) {
        gl.bindBuffer(gl.ARRAY_BUFFER, mesh.normals);
        gl.enableVertexAttribArray(attribute.normal);
        gl.vertexAttribPointer(attribute.normal, 3, gl.FLOAT, false, 0, 0);
      } else {
        gl.disableVertexAttribArray(attribute.normal);
        gl.vertexAttrib3f(attribute.normal, ...apply(transpose(this.rotation), LIGHT)); // unshaded
      }
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, mesh.indices);
      gl.drawElements(mesh.mode, mesh.count, gl.UNSIGNED_INT, 0);
    };

    place([0, 0, 0], 1, CELL_COLOR);
    render(this.cell);
    if (this.show.atoms) {
      for (const atom of this.scene.atoms) {
        const style = ATOM_STYLE[atom.species] || OTHER_ATOM;
        place(atom.cart, style.radius, atom.image ? style.color.map((x, i) => (i < 3 ? 0.8 * x : x)) : style.color);
        render(this.sphere);
      }
    }
    if (this.show.surface && this.surface) { // translucent, after the opaque parts, not writing depth
      gl.enable(gl.BLEND);
      gl.blendFunc(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA);
      gl.depthMask(false);
      place([0, 0, 0], 1, SURFACE_COLOR);
      render(this.surface);
      gl.depthMask(true);
      gl.disable(gl.BLEND);
    }
  }

  drawOverlay(width, height, ratio) {
    const ctx = this.overlay.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    if (!this.gl) {
      ctx.fillStyle = '#8a1c12';
      ctx.fillText('This browser has no WebGL: the 3D view cannot be drawn.', 12, 24);
      return;
    }
    if (!this.scene) return;
    const screen = (p) => {
      const [x, y] = this.project(p);
      return [(x + 1) * width / 2, (1 - y) * height / 2];
    };
    ctx.font = 'bold 13px sans-serif';
    ctx.fillStyle = '#333';
    this.scene.lattice.forEach((axis, i) => ctx.fillText('abc'[i], ...screen(axis.map((x) => 1.08 * x))));
    if (!this.show.points) return;
    const mark = (p, color, r, ring) => {
      ctx.beginPath();
      ctx.arc(...screen(p.cart), r, 0, 2 * Math.PI);
      if (ring) {
        ctx.strokeStyle = color;
        ctx.lineWidth = 2.5;
        ctx.stroke();
      } else {
        ctx.fillStyle = color;
        ctx.fill();
      }
    };
    for (const p of this.scene.critical_points) mark(p, POINT_STYLE[p.kind] || '#000', 3, false);
    if (this.scene.bottleneck) mark(this.scene.bottleneck, '#c2185b', 8, true);
    if (this.scene.molecular_bottleneck) mark(this.scene.molecular_bottleneck, '#ef6c00', 11, true);
  }
}

// A unit sphere: `rings` latitude bands × `segments` longitudes, normals = positions.
function sphereMesh(rings, segments) {
  const vertices = [];
  const triangles = [];
  for (let i = 0; i <= rings; i++) {
    const theta = (Math.PI * i) / rings;
    for (let j = 0; j <= segments; j++) {
      const phi = (2 * Math.PI * j) / segments;
      vertices.push(Math.sin(theta) * Math.cos(phi), Math.sin(theta) * Math.sin(phi), Math.cos(theta));
    }
  }
  for (let i = 0; i < rings; i++) {
    for (let j = 0; j < segments; j++) {
      const a = i * (segments + 1) + j;
      const b = a + segments + 1;
      triangles.push(a, b, a + 1, b, b + 1, a + 1);
    }
  }
  return { vertices, normals: vertices, triangles };
}

// --- 3×3 matrices (arrays of rows) -------------------------------------------------------------
function rotationX(t) {
  const [c, s] = [Math.cos(t), Math.sin(t)];
  return [[1, 0, 0], [0, c, -s], [0, s, c]];
}

function rotationY(t) {
  const [c, s] = [Math.cos(t), Math.sin(t)];
  return [[c, 0, s], [0, 1, 0], [-s, 0, c]];
}

function rotationZ(t) {
  const [c, s] = [Math.cos(t), Math.sin(t)];
  return [[c, -s, 0], [s, c, 0], [0, 0, 1]];
}

function multiply(A, B) {
  return A.map((row) => [0, 1, 2].map((j) => row[0] * B[0][j] + row[1] * B[1][j] + row[2] * B[2][j]));
}

function transpose(A) {
  return [0, 1, 2].map((j) => A.map((row) => row[j]));
}

function apply(A, v) {
  return A.map((row) => row[0] * v[0] + row[1] * v[1] + row[2] * v[2]);
}

function normalise(v) {
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}
