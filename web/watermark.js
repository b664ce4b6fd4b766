// Embed and detect VideoSeal-family watermarks in the browser with LiteRT.js: the same files, the same
// official route and the same decoding as the bundle's Python runners (runtime/route.py, run_extractor.py).
// No build step: an ES module the page's worker (and web-check's golden run) imports; @litertjs/core is served from
// web/node_modules by an absolute path (a worker has no import map; web/serve.py points its one bare import home).
import {loadAndCompile, loadLiteRt, supportsFeature, Tensor} from '/litertjs/dist/index.js';

let runtime = null;
export const wasmInfo = {threads: false};

/** Load the LiteRT.js wasm once: threaded where the page is cross-origin isolated and the browser has relaxed
 * SIMD (LiteRT.js's threaded build needs both; Firefox ESR 140 has no relaxed SIMD: one thread there). */
export async function init() {
  if (!runtime) {
    runtime = (async () => {
      wasmInfo.threads = crossOriginIsolated && (await supportsFeature('relaxedSimd')) && (await supportsFeature('threads'));
      return loadLiteRt('/litertjs/wasm/', wasmInfo.threads ? {threads: true} : {});
    })();
  }
  await runtime;
}

/** 'webgpu' when the browser has an adapter, else 'wasm' (XNNPACK on the CPU). */
export async function bestAccelerator() {
  try {
    if (navigator.gpu && (await navigator.gpu.requestAdapter())) return 'webgpu';
  } catch (e) { /* no adapter */ }
  return 'wasm';
}

/** A compiled model: {run(inputs) -> outputs (Float32Array by name), inputs: {name: shape}, accelerator}. */
export async function openModel(url, accelerator = 'wasm') {
  await init();
  const bytes = new Uint8Array(await (await fetchOk(url)).arrayBuffer());
  let model;
  try {
    model = await loadAndCompile(bytes, {accelerator, cpuOptions: {numThreads: Math.min(navigator.hardwareConcurrency || 2, 4)}});
  } catch (e) {
    if (accelerator !== 'wasm') return openModel(url, 'wasm');  // e.g. an op WebGPU lacks: the CPU runs it
    throw new Error(`${url.split('/').pop()}: LiteRT.js cannot load it (${String(e.message || e).split('\n')[0]})`);
  }
  const details = model.getInputDetails();
  const inputs = Object.fromEntries(details.map((d) => [d.name, Array.from(d.shape)]));
  const bad = details.filter((d) => d.dtype !== 'float32');
  if (bad.length) {
    model.delete();
    throw new Error(`${url.split('/').pop()}: LiteRT.js cannot load it (input ${bad[0].name} is ${bad[0].dtype}; the page feeds float32)`);
  }
  return {
    accelerator, inputs,
    async run(feeds) {
      const tensors = Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, new Tensor(v, inputs[k])]));
      const out = await model.run(tensors);
      const result = {};
      for (const [k, t] of Object.entries(out)) {
        const cpu = t.accelerator === 'wasm' ? t : await t.moveTo('wasm');
        result[k] = Float32Array.from(cpu.toTypedArray());
        cpu.delete();
      }
      Object.values(tensors).forEach((t) => t.delete());
      return result;
    },
    delete() { model.delete(); },
  };
}

async function fetchOk(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r;
}

// ---- images: (H, W, 3) float32 in [0, 1], row-major ------------------------------------------------

/** Decode an image file or blob to {data, height, width, alpha}: RGB float32 in [0, 1], and the alpha channel as
 * bytes when the image has any transparency (null when opaque). EXIF orientation is applied (the browser's default,
 * and the project's one choice: Python's readers apply it too). A named error for anything that is not an image. */
export async function decodeImage(blob) {
  let bmp;
  try {
    bmp = await createImageBitmap(blob, {colorSpaceConversion: 'none', premultiplyAlpha: 'none', imageOrientation: 'from-image'});
  } catch (e) {
    throw new Error(`${blob.name || 'the file'} is not an image this browser can decode`);
  }
  const canvas = new OffscreenCanvas(bmp.width, bmp.height);
  const ctx = canvas.getContext('2d', {colorSpace: 'srgb'});
  ctx.drawImage(bmp, 0, 0);
  bmp.close();
  const rgba = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const n = canvas.width * canvas.height, data = new Float32Array(n * 3);
  let opaque = true;
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    data[j] = rgba[i] / 255; data[j + 1] = rgba[i + 1] / 255; data[j + 2] = rgba[i + 2] / 255;
    if (rgba[i + 3] !== 255) opaque = false;
  }
  let alpha = null;
  if (!opaque) {
    alpha = new Uint8ClampedArray(n);
    for (let i = 0; i < n; i++) alpha[i] = rgba[4 * i + 3];
  }
  return {data, height: canvas.height, width: canvas.width, alpha};
}

/** The image as a blob, rounded to bytes as the Python runner saves it, its alpha channel (when given) carried
 * untouched: PNG (lossless), or JPEG at `quality` when `type` is 'image/jpeg' (no alpha there). */
export async function encodeImage(img, alpha = null, type = 'image/png', quality = 0.95) {
  const canvas = new OffscreenCanvas(img.width, img.height);
  const ctx = canvas.getContext('2d');
  const pix = ctx.createImageData(img.width, img.height);
  for (let i = 0, j = 0, k = 0; j < img.data.length; i += 4, j += 3, k++) {
    pix.data[i] = Math.round(img.data[j] * 255); pix.data[i + 1] = Math.round(img.data[j + 1] * 255);
    pix.data[i + 2] = Math.round(img.data[j + 2] * 255); pix.data[i + 3] = alpha && type === 'image/png' ? alpha[k] : 255;
  }
  ctx.putImageData(pix, 0, 0);
  return canvas.convertToBlob(type === 'image/png' ? {type} : {type, quality});
}

export const encodePng = (img, alpha = null) => encodeImage(img, alpha);

/** A small preview of an image (longest side at most `maxSide`, nearest pixel) as an ImageBitmap a worker can
 * transfer; `map(value, index)` changes each value first (the amplified watermark). */
export function preview(img, maxSide = 640, map = (v) => v) {
  const s = Math.min(1, maxSide / Math.max(img.width, img.height));
  const w = Math.max(1, Math.round(img.width * s)), h = Math.max(1, Math.round(img.height * s));
  const canvas = new OffscreenCanvas(w, h), ctx = canvas.getContext('2d'), pix = ctx.createImageData(w, h);
  for (let y = 0; y < h; y++) {
    const sy = Math.min(img.height - 1, Math.floor(y / s));
    for (let x = 0; x < w; x++) {
      const sx = Math.min(img.width - 1, Math.floor(x / s)), j = (sy * img.width + sx) * 3, i = (y * w + x) * 4;
      for (let c = 0; c < 3; c++) pix.data[i + c] = Math.round(Math.min(Math.max(map(img.data[j + c], j + c), 0), 1) * 255);
      pix.data[i + 3] = 255;
    }
  }
  ctx.putImageData(pix, 0, 0);
  return canvas.transferToImageBitmap();
}

// torch's bilinear resize with antialias (align_corners=False), as runtime/route.py's resize_aa.
function aaWeights(nIn, nOut) {
  const scale = nIn / nOut, support = Math.max(scale, 1.0), rows = [];
  for (let i = 0; i < nOut; i++) {
    const center = scale * (i + 0.5);
    const lo = Math.max(Math.trunc(center - support + 0.5), 0), hi = Math.min(Math.trunc(center + support + 0.5), nIn);
    const w = [];
    let sum = 0;
    for (let j = lo; j < hi; j++) {
      const f = Math.max(1 - Math.abs((j - center + 0.5) / support), 0);
      w.push(f); sum += f;
    }
    rows.push({lo, w: w.map((f) => (sum > 0 ? f / sum : 0))});
  }
  return rows;
}

export function resizeAA(img, height, width, channels = 3) {
  if (img.height === height && img.width === width) return img;
  const wh = aaWeights(img.height, height), ww = aaWeights(img.width, width);
  const tmp = new Float32Array(img.height * width * channels);  // along the width first (float32, as Python's)
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < width; x++) {
      const {lo, w} = ww[x];
      for (let c = 0; c < channels; c++) {
        let s = 0;
        for (let k = 0; k < w.length; k++) s += w[k] * img.data[(y * img.width + lo + k) * channels + c];
        tmp[(y * width + x) * channels + c] = s;
      }
    }
  }
  const out = new Float32Array(height * width * channels);
  for (let y = 0; y < height; y++) {
    const {lo, w} = wh[y];
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < channels; c++) {
        let s = 0;
        for (let k = 0; k < w.length; k++) s += w[k] * tmp[((lo + k) * width + x) * channels + c];
        out[(y * width + x) * channels + c] = s;
      }
    }
  }
  return {data: out, height, width};
}

// The official JND heatmap (jnd_1_1), as runtime/route.py's jnd_heatmap: (H, W) in [0, 1/255 scale]. The three
// filters (luminance 5x5, Sobel x and y 3x3, zero padding) are summed per pixel in one pass: no full-size
// intermediate arrays, so a 24-megapixel photo needs only the luma and the result (float32, as Python's).
const KX = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]];
const KY = [[1, 2, 1], [0, 0, 0], [-1, -2, -1]];
const KLUM = [[1, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 2, 0, 2, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]];

export function jndHeatmap(img, clc = 0.3) {
  const {height: h, width: w, data} = img, n = h * w, x = new Float32Array(n), out = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = 255 * (0.299 * data[3 * i] + 0.587 * data[3 * i + 1] + 0.114 * data[3 * i + 2]);
  for (let y = 0; y < h; y++) {
    for (let xx = 0; xx < w; xx++) {
      let lum = 0, gx = 0, gy = 0;
      for (let dy = -2; dy <= 2; dy++) {
        const yy = y + dy;
        if (yy < 0 || yy >= h) continue;
        for (let dx = -2; dx <= 2; dx++) {
          const xs = xx + dx;
          if (xs < 0 || xs >= w) continue;
          const v = x[yy * w + xs];
          lum += KLUM[dy + 2][dx + 2] * v;
          if (dy >= -1 && dy <= 1 && dx >= -1 && dx <= 1) { gx += KX[dy + 1][dx + 1] * v; gy += KY[dy + 1][dx + 1] * v; }
        }
      }
      const l = lum / 32;
      const la = l <= 127 ? 17 * (1 - Math.sqrt(Math.max(l, 0) / 127 + 1e-5)) : (3 / 128) * (l - 127) + 3;
      let cm = Math.sqrt(gx * gx + gy * gy);
      cm = 0.117 * ((16 * cm ** 2.4) / (cm * cm + 26 * 26));
      out[y * w + xx] = Math.max(la + cm - clc * Math.min(la, cm), 0) / 255;
    }
  }
  return out;
}

/** Watermark an image of any size with `bits` (0/1 array) through an embedder model, by the official route. */
export async function embed(embedder, route, img, bits) {
  const size = embedder.inputs.image[1];
  const message = Float32Array.from(bits);
  if (img.height === size && img.width === size) {
    const out = await embedder.run({image: img.data, message});
    return {data: out.watermarked, height: size, width: size};
  }
  const small = resizeAA(img, size, size);
  const res = (await embedder.run({image: small.data, message})).residual;
  const up = resizeAA({data: res, height: size, width: size}, img.height, img.width);
  const heat = route.attenuation ? jndHeatmap(img) : null;
  const out = new Float32Array(img.data.length);
  for (let i = 0; i < out.length; i++) {
    const r = heat ? heat[Math.floor(i / 3)] * up.data[i] : up.data[i];
    out[i] = Math.min(Math.max(route.scaling_i * img.data[i] + route.scaling_w * r, 0), 1);
  }
  return {data: out, height: img.height, width: img.width};
}

/** Read the watermark: {maskLogit, bitLogits, bits}; any size is resized to the extractor's input as the runner does. */
export async function detect(extractor, img) {
  const size = extractor.inputs.image[1];
  const x = resizeAA(img, size, size);
  const out = await extractor.run({image: x.data});
  const bits = Array.from(out.bit_logits, (t) => (t > 0 ? 1 : 0));
  return {maskLogit: out.mask_logit[0], bitLogits: Array.from(out.bit_logits), bits};
}

/** P(at least k of n bits match by chance), p = 1/2: the false-positive p-value of a bit accuracy. */
export function binomialPValue(k, n) {
  const lf = [0];
  for (let i = 1; i <= n; i++) lf.push(lf[i - 1] + Math.log(i));
  let p = 0;
  for (let i = k; i <= n; i++) p += Math.exp(lf[n] - lf[i] - lf[n - i] - n * Math.LN2);
  return Math.min(p, 1);
}

export function psnr(a, b) {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) ** 2;
  return s === 0 ? Infinity : 10 * Math.log10(1 / (s / a.length));
}

/** A .npy file (little-endian float32) as {data, shape}. */
export async function readNpy(url) {
  const buf = await (await fetchOk(url)).arrayBuffer();
  const view = new DataView(buf), major = view.getUint8(6);
  const hlen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(new Uint8Array(buf, start, hlen));
  if (!header.includes("'<f4'")) throw new Error(`${url}: not a little-endian float32 .npy`);
  const shape = header.match(/\(([^)]*)\)/)[1].split(',').filter((s) => s.trim()).map(Number);
  return {data: new Float32Array(buf.slice(start + hlen)), shape};
}

// ---- the golden-vector run web-check drives (every file of a bundle on its golden inputs) -------------

async function median(f, runs) {
  const t = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await f();
    t.push(performance.now() - t0);
  }
  t.sort((a, b) => a - b);
  return t[Math.floor(t.length / 2)];
}

/** Every extractor and embedder file of the bundle at `base` on its golden vectors: raw outputs and timings. */
export async function goldenRun(base, extra = [], runs = 5, accelerator = 'wasm') {
  const golden = await (await fetchOk(`${base}/golden/golden.json`)).json();
  const model = await (await fetchOk(`${base}/model.json`)).json();
  await init();
  const result = {accelerator, crossOriginIsolated, threads: wasmInfo.threads, userAgent: navigator.userAgent, webgpu: await bestAccelerator() === 'webgpu',
    extractor: {}, embedder: {}, not_loadable: {}};
  // A file the accelerator cannot load or run falls back to the CPU (as the page does): `ran_on` says where it ran.
  const open = (file) => openModel(`${base}/${file}`, accelerator);
  for (const [variant, g] of Object.entries(golden.variants)) {
    let ex;
    try { ex = await open(g.file); } catch (e) { result.not_loadable[g.file] = e.message; continue; }
    const rows = [];
    let first = null, fellBack = null;
    for (const v of g.vectors) {
      const img = await decodeImage(await (await fetchOk(`${base}/golden/${v.image}`)).blob());
      first = first || img;
      let out;
      try { out = await ex.run({image: img.data}); } catch (e) {
        if (ex.accelerator === 'wasm') throw e;
        fellBack = String(e.message || e).split('\n')[0];
        ex.delete();
        ex = await openModel(`${base}/${g.file}`, 'wasm');
        out = await ex.run({image: img.data});
      }
      rows.push({image: v.image, mask_logit: out.mask_logit[0], bit_logits: Array.from(out.bit_logits)});
    }
    const ms = await median(() => ex.run({image: first.data}), runs);
    result.extractor[variant] = {file: g.file, vectors: rows, median_ms: ms, ran_on: ex.accelerator, fell_back: fellBack};
    ex.delete();
  }
  if (model.embedder) {
    const eg = await (await fetchOk(`${base}/golden/embedder/golden.json`)).json();
    for (const [variant, g] of Object.entries(eg.variants)) {
      let em;
      try { em = await open(g.file); } catch (e) { result.not_loadable[g.file] = e.message; continue; }
      const rows = [];
      let first = null, fellBack = null;
      for (const v of g.vectors) {
        const img = await decodeImage(await (await fetchOk(`${base}/golden/${v.image}`)).blob());
        const bits = Array.from(v.message, Number);
        let out;
        try { out = await embed(em, model.embedder.route, img, bits); } catch (e) {
          if (em.accelerator === 'wasm') throw e;
          fellBack = String(e.message || e).split('\n')[0];
          em.delete();
          em = await openModel(`${base}/${g.file}`, 'wasm');
          out = await embed(em, model.embedder.route, img, bits);
        }
        const want = await readNpy(`${base}/${v.watermarked}`);
        const torch = await readNpy(`${base}/${v.pytorch}`);
        if (!first && img.height === em.inputs.image[1]) first = {img, bits};
        // Sums, not pixels (megabytes per vector): the check judges the file against PyTorch (the watermark PyTorch
        // writes, the file's error on it) and against the x86 outputs from these.
        let err2 = 0, wm2 = 0, maxAbs = 0, maxX86 = 0;
        for (let i = 0; i < want.data.length; i++) {
          const d = out.data[i] - torch.data[i], w = torch.data[i] - img.data[i];
          err2 += d * d; wm2 += w * w; maxAbs = Math.max(maxAbs, Math.abs(d));
          maxX86 = Math.max(maxX86, Math.abs(out.data[i] - want.data[i]));
        }
        rows.push({image: v.image, n: want.data.length, error_sq_sum: err2, watermark_sq_sum: wm2, max_abs_diff_pytorch: maxAbs,
          max_abs_diff_x86: maxX86, shape: [out.height, out.width, 3], expected_shape: want.shape});
      }
      const ms = first ? await median(() => em.run({image: first.img.data, message: Float32Array.from(first.bits)}), runs) : null;
      result.embedder[variant] = {file: g.file, vectors: rows, median_ms: ms, ran_on: em.accelerator, fell_back: fellBack};
      em.delete();
    }
  }
  for (const url of extra) {  // files outside the bundle that web-check asks about (int8-full)
    try {
      (await openModel(url)).delete();
      result.not_loadable[url.split('/').pop()] = null;
    } catch (e) { result.not_loadable[url.split('/').pop()] = e.message; }
  }
  return result;
}
