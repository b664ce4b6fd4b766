// The page's worker: the models and every pixel loop run here, so the page stays responsive on a 24-megapixel photo.
// Messages in: {id, op: 'load' | 'embed' | 'detect', ...}; out: {id, step} while working (the step just begun and the
// milliseconds the previous one took), then {id, ok: true, result} or {id, ok: false, error}.
import * as wm from '/watermark.js';
import {readMetadata, withMetadata} from '/metadata.js';

const state = {model: null, extractor: null, embedder: null};

// LiteRT.js loads its WebAssembly glue with importScripts when it sees one, which a module worker has but refuses to
// run: this one fetches the script synchronously (allowed in a worker) and runs it at global scope, as importScripts
// does, so the glue's globals (ModuleFactory) land on self. In a worker the glue would look for its .wasm (and start
// its thread workers) beside the worker's own URL: self.Module, which LiteRT.js hands to the glue, points both at the
// glue's folder and file.
self.importScripts = (...urls) => {
  for (const url of urls) {
    const href = new URL(String(url), self.location.href).href;
    self.Module = self.Module || {locateFile: (file) => new URL(file, href).href, mainScriptUrlOrBlob: href};
    const xhr = new XMLHttpRequest();
    xhr.open('GET', String(url), false);
    xhr.send();
    if (xhr.status !== 200) throw new Error(`${url}: HTTP ${xhr.status}`);
    (0, eval)(`${xhr.responseText}\n//# sourceURL=${url}`);
  }
};

/** The variant to run: the one asked for in the URL, else the bundle's pick for the web (model.json ship), else int8. */
function pick(variants, wanted, advice) {
  const names = Object.keys(variants || {});
  const file = advice && advice.cpu_and_web && advice.cpu_and_web['web page (LiteRT.js)'];
  const recommended = names.find((n) => variants[n].file === file);
  return [wanted, recommended, 'int8'].find((n) => n && names.includes(n)) || names[0];
}

async function load({params}) {
  state.model = await (await fetch('/bundle/model.json')).json();
  const accel = params.accelerator || await wm.bestAccelerator();
  const ship = state.model.ship || {};
  const ex = pick(state.model.variants, params.extractor, ship.extractor);
  state.extractor = await wm.openModel(`/bundle/${state.model.variants[ex].file}`, accel);
  const out = {model: state.model, extractorFile: state.model.variants[ex].file, accelerator: state.extractor.accelerator,
    threads: wm.wasmInfo.threads, embedderFile: null};
  if (state.model.embedder) {
    const em = pick(state.model.embedder.variants, params.embedder, ship.embedder);
    state.embedder = await wm.openModel(`/bundle/${state.model.embedder.variants[em].file}`, accel);
    out.embedderFile = state.model.embedder.variants[em].file;
  }
  return out;
}

async function embed({file, bits, format}, step) {
  step('reading the photo');
  const cover = await wm.decodeImage(file);
  step(`watermarking ${cover.width}x${cover.height} (the official route)`);
  const marked = await wm.embed(state.embedder, state.model.embedder.route, cover, bits);
  step('saving');
  const type = format === 'jpeg' && !cover.alpha ? 'image/jpeg' : 'image/png';
  const meta = await readMetadata(file);
  const blob = await withMetadata(await wm.encodeImage(marked, cover.alpha, type), meta);
  let peak = 1e-6;
  for (let i = 0; i < marked.data.length; i++) peak = Math.max(peak, Math.abs(marked.data[i] - cover.data[i]));
  const gain = 0.5 / peak;
  step('previews');
  const previews = [wm.preview(marked), wm.preview(marked, 640, (v, i) => 0.5 + gain * (v - cover.data[i]))];
  return {transfer: previews, result: {blob, type, psnr: wm.psnr(marked.data, cover.data), gain, previews,
    width: cover.width, height: cover.height, alpha: Boolean(cover.alpha), exif: Boolean(meta.exif), icc: Boolean(meta.icc)}};
}

async function detect({file}, step) {
  step('reading the photo');
  const img = await wm.decodeImage(file);
  step('detecting');
  const r = await wm.detect(state.extractor, img);
  return {result: {...r, width: img.width, height: img.height}};
}

/** The chosen photo's size, or the named error for a file this browser cannot decode (before any model work). */
async function probe({file}) {
  let bmp;
  try {
    bmp = await createImageBitmap(file, {imageOrientation: 'from-image'});
  } catch (e) {
    throw new Error(`${file.name || 'the file'} is not an image this browser can decode`);
  }
  const result = {width: bmp.width, height: bmp.height};
  bmp.close();
  return {result};
}

const OPS = {load: async (d) => ({result: await load(d)}), probe, embed, detect};

onmessage = async ({data}) => {
  const {id, op} = data;
  let t = performance.now(), name = null;
  const times = [];
  const step = (next) => {
    const now = performance.now();
    if (name) times.push([name, now - t]);
    postMessage({id, step: next, took: name ? [name, now - t] : null});
    name = next; t = now;
  };
  try {
    const {result, transfer = []} = await OPS[op](data, step);
    if (name) times.push([name, performance.now() - t]);
    postMessage({id, ok: true, result: {...result, times}}, transfer);
  } catch (e) {
    postMessage({id, ok: false, error: String(e.message || e)});
  }
};
