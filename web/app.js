// The page: embed a message into a user's photo and detect watermarks, with the bundle served at /bundle. The models
// run in a worker (worker.js); this file only keeps the page: what is chosen, what is running, what came out.
import * as wm from '/watermark.js';
import {hexDigits, messageHex, parseMessage} from '/message.js';

const $ = (id) => document.getElementById(id);
const params = Object.fromEntries(new URLSearchParams(location.search));
const state = {model: null, cover: null, message: null, detected: null, busy: {embed: false, detect: false}};
const bump = (key) => { document.body.dataset[key] = String(Number(document.body.dataset[key] || 0) + 1); };

// ---- the worker: one call at a time per kind, its steps shown as they start --------------------------------
const worker = new Worker('/worker.js', {type: 'module'});
const pending = new Map();
let nextId = 0;
worker.onmessage = ({data}) => {
  const p = pending.get(data.id);
  if (!p) return;
  if (data.step !== undefined) { p.onStep(data.step, data.took); return; }
  pending.delete(data.id);
  data.ok ? p.resolve(data.result) : p.reject(new Error(data.error));
};
worker.onerror = (e) => { $('status').textContent = `the page's worker failed: ${e.message}`; $('status').className = 'error'; };
function call(op, payload = {}, onStep = () => {}) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, {resolve, reject, onStep});
    worker.postMessage({id, op, ...payload});
  });
}

const ms = (t) => (t < 1000 ? `${Math.round(t)} ms` : `${(t / 1000).toFixed(1)} s`);
function stepper(el) {
  const done = [];
  return (next, took) => {
    if (took) done.push(`${took[0]} ${ms(took[1])}`);
    el.textContent = [...done, `${next} ...`].join('; ');
  };
}
const finished = (el, times) => { el.textContent = times.map(([n, t]) => `${n} ${ms(t)}`).join('; '); };
const sizeText = (n) => (n < 1e6 ? `${(n / 1e3).toFixed(0)} kB` : `${(n / 1e6).toFixed(1)} MB`);
const stem = (name) => (name || 'photo').replace(/\.[^.]*$/, '');

async function start() {
  try {
    const r = await call('load', {params});
    state.model = r.model;
    $('ex-file').textContent = r.extractorFile;
    $('em-file').textContent = r.embedderFile || 'none in this bundle';
    $('model-id').textContent = r.model.model_id + (r.model.random_init ? ' (RANDOM WEIGHTS: not a watermark extractor)' : '');
    $('nbits').textContent = r.model.nbits;
    $('digits').textContent = hexDigits(r.model.nbits);
    $('status').textContent = `ready (${r.accelerator}${r.threads ? ', threads' : ', one thread'})`;
    $('embed-btn').disabled = !r.embedderFile;
    if (!r.embedderFile) $('embed-error').textContent = 'this bundle has no embedder: detection only';
    document.body.dataset.ready = '1';
  } catch (e) {
    $('status').textContent = `could not load the bundle: ${e.message}`;
    $('status').className = 'error';
  }
}

function clearEmbedResult() {
  $('embed-out').hidden = true; $('embed-links').hidden = true; $('embed-progress').textContent = '';
  const link = $('download');
  if (link.href) URL.revokeObjectURL(link.href);
  link.removeAttribute('href');
}

async function takeCover(file) {
  clearEmbedResult();
  $('embed-error').textContent = '';
  state.cover = null;
  $('cover-info').hidden = true;
  try {
    const {width, height} = await call('probe', {file});
    state.cover = file;
    $('cover-info').textContent = `${file.name}: ${width}x${height}, ${sizeText(file.size)}`;
    $('cover-info').hidden = false;
    bump('covers');
  } catch (e) {
    $('embed-error').textContent = e.message;
    bump('coverError');
  }
}

function readMessage() {
  const text = $('message').value.trim();
  if (!text) return Array.from(crypto.getRandomValues(new Uint8Array(state.model.nbits)), (b) => b & 1);
  return parseMessage(text, state.model.nbits);
}

async function doEmbed() {
  if (state.busy.embed) return;
  $('embed-error').textContent = '';
  if (!state.cover) { $('embed-error').textContent = 'choose a photo first'; return; }
  let bits;
  try { bits = readMessage(); } catch (e) { $('embed-error').textContent = `message: ${e.message}`; return; }
  clearEmbedResult();
  state.busy.embed = true;
  $('embed-btn').disabled = true;
  const cover = state.cover;
  try {
    const format = $('as-jpeg').checked && /jpe?g$/i.test(cover.type) ? 'jpeg' : 'png';
    const r = await call('embed', {file: cover, bits, format}, stepper($('embed-progress')));
    finished($('embed-progress'), r.times);
    for (const [id, bmp] of [['cv-marked', r.previews[0]], ['cv-residual', r.previews[1]]]) {
      const cv = $(id);
      cv.width = bmp.width; cv.height = bmp.height;
      cv.getContext('2d').drawImage(bmp, 0, 0);
      bmp.close();
    }
    $('psnr').textContent = r.psnr.toFixed(1);
    $('gain').textContent = r.gain.toFixed(0);
    const ext = r.type === 'image/jpeg' ? 'jpg' : 'png';
    const link = $('download');
    link.href = URL.createObjectURL(r.blob);
    link.download = `${stem(cover.name)}-watermarked.${ext}`;
    link.textContent = `Download ${link.download}`;
    $('download-info').textContent = `(${ext.toUpperCase()}, ${r.width}x${r.height}, ${sizeText(r.blob.size)}` +
      [['transparency', r.alpha], ['EXIF', r.exif], ['colour profile', r.icc]].filter((k) => k[1]).map((k) => `, ${k[0]} kept`).join('') +
      '; colour saved as 8-bit RGB)';
    state.message = bits;
    $('embedded-bits').textContent = messageHex(bits);
    $('embed-out').hidden = false; $('embed-links').hidden = false;
    bump('embedded');
    judge();  // a detection on the page is judged against the new message
  } catch (e) {
    $('embed-progress').textContent = '';
    $('embed-error').textContent = `embedding ${cover.name}: ${e.message}`;
    bump('embedError');
  } finally {
    state.busy.embed = false;
    $('embed-btn').disabled = false;
  }
}

/** The message detection tests: the one typed (when it parses), else the last one embedded here; and which it is. */
function messageToTest() {
  const text = $('message').value.trim();
  if (text) {
    try { return [parseMessage(text, state.model.nbits), 'the message typed above']; } catch (e) { /* not a message yet */ }
  }
  return state.message ? [state.message, 'the message embedded above'] : [null, null];
}

/** The verdict of the last detection, from its bits and the message to test (re-judged when the message changes). */
function judge() {
  const r = state.detected;
  if (!r) return;
  const det = state.model.detection || {};
  const threshold = det.pvalue_threshold ?? 1e-3;
  $('bits').textContent = messageHex(r.bits);
  $('mask').textContent = r.maskLogit.toFixed(3);
  const [message, source] = messageToTest();
  if (message) {
    const k = r.bits.reduce((s, b, i) => s + (b === message[i] ? 1 : 0), 0), p = wm.binomialPValue(k, r.bits.length);
    $('against').textContent = source;
    $('accuracy').textContent = `${k}/${r.bits.length} (${(100 * k / r.bits.length).toFixed(1)}%)`;
    $('pvalue').textContent = p.toExponential(2);
    const found = p < threshold;
    $('verdict').textContent = found ? 'Watermark detected' : 'Watermark not detected';
    $('verdict').className = 'verdict ' + (found ? 'yes' : 'no');
  } else {
    $('against').textContent = 'no message'; $('accuracy').textContent = '-'; $('pvalue').textContent = '-';
    $('verdict').textContent = `Type the message to test for (${hexDigits(state.model.nbits)} hex digits) in step 1`;
    $('verdict').className = 'verdict';
  }
  const maskShown = det.mask_trained === true;
  $('mask-verdict').hidden = !maskShown;
  if (maskShown) $('mask-verdict').textContent = `the detection logit says: ${r.maskLogit > 0 ? 'watermarked' : 'not watermarked'}`;
  $('detect-out').hidden = false;
}

async function doDetect(file) {
  if (state.busy.detect) return;
  state.busy.detect = true;
  state.detected = null;
  $('detect-error').textContent = '';
  $('detect-out').hidden = true;
  try {
    const r = await call('detect', {file}, stepper($('detect-progress')));
    finished($('detect-progress'), r.times);
    state.detected = r;
    judge();
    bump('detected');
  } catch (e) {
    $('detect-progress').textContent = '';
    $('detect-error').textContent = e.message;
    bump('detectError');
  } finally {
    state.busy.detect = false;
  }
}

function dropZone(zone, input, onFile) {
  input.addEventListener('change', () => {
    const f = input.files[0];
    input.value = '';  // choosing the same file again is a new choice
    if (f) onFile(f);
  });
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault(); zone.classList.remove('over');
    if (e.dataTransfer.files[0]) onFile(e.dataTransfer.files[0]);
  });
}

dropZone($('embed-drop'), $('embed-file'), takeCover);
dropZone($('detect-drop'), $('detect-file'), doDetect);
$('embed-btn').addEventListener('click', doEmbed);
$('message').addEventListener('input', judge);
window.videoseal = wm;  // web-check drives the golden-vector run through this
start();
