// The page: embed a message into a user's photo and detect watermarks, with the bundle served at /bundle.
import * as wm from '/watermark.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const DETECT_PVALUE = 1e-6;  // "detected" when this many matching bits would happen by chance less often than this
const state = {extractor: null, embedder: null, model: null, cover: null, marked: null, message: null};

function pick(variants, wanted) {
  const names = Object.keys(variants || {});
  return wanted && names.includes(wanted) ? wanted : names.includes('int8') ? 'int8' : names[0];
}

function show(canvas, img, map = (v) => v) {
  canvas.width = img.width; canvas.height = img.height;
  const ctx = canvas.getContext('2d'), pix = ctx.createImageData(img.width, img.height);
  for (let i = 0, j = 0; j < img.data.length; i += 4, j += 3) {
    for (let c = 0; c < 3; c++) pix.data[i + c] = Math.round(Math.min(Math.max(map(img.data[j + c], j + c), 0), 1) * 255);
    pix.data[i + 3] = 255;
  }
  ctx.putImageData(pix, 0, 0);
}

function readMessage(nbits) {
  const text = $('message').value.replace(/\s/g, '');
  if (!text) return Array.from(crypto.getRandomValues(new Uint8Array(nbits)), (b) => b & 1);
  if (!/^[01]+$/.test(text) || text.length !== nbits) throw new Error(`the message must be ${nbits} characters of 0 and 1 (got ${text.length})`);
  return Array.from(text, Number);
}

async function start() {
  try {
    state.model = await (await fetch('/bundle/model.json')).json();
    const accel = params.get('accelerator') || await wm.bestAccelerator();
    const ex = pick(state.model.variants, params.get('extractor'));
    state.extractor = await wm.openModel(`/bundle/${state.model.variants[ex].file}`, accel);
    $('ex-file').textContent = state.model.variants[ex].file;
    if (state.model.embedder) {
      const em = pick(state.model.embedder.variants, params.get('embedder'));
      state.embedder = await wm.openModel(`/bundle/${state.model.embedder.variants[em].file}`, accel);
      $('em-file').textContent = state.model.embedder.variants[em].file;
    }
    $('model-id').textContent = state.model.model_id + (state.model.random_init ? ' (RANDOM WEIGHTS: not a watermark extractor)' : '');
    $('nbits').textContent = state.model.nbits;
    $('status').textContent = `ready (${state.extractor.accelerator}${wm.wasmInfo.threads ? ', threads' : ', one thread'})`;
    $('embed-btn').disabled = !state.embedder;
    document.body.dataset.ready = '1';
  } catch (e) {
    $('status').textContent = `could not load the bundle: ${e.message}`;
    $('status').className = 'error';
  }
}

async function takeCover(file) {
  $('embed-error').textContent = '';
  try {
    state.cover = await wm.decodeImage(file);
    document.body.dataset.covers = String(Number(document.body.dataset.covers || 0) + 1);
  } catch (e) {
    state.cover = null;
    $('embed-error').textContent = e.message;
    document.body.dataset.coverError = String(Number(document.body.dataset.coverError || 0) + 1);
  }
}

async function doEmbed() {
  $('embed-error').textContent = '';
  try {
    if (!state.cover) throw new Error('choose a photo first');
    const bits = readMessage(state.model.nbits);
    const marked = await wm.embed(state.embedder, state.model.embedder.route, state.cover, bits);
    const cover = state.cover;
    let peak = 1e-6;
    for (let i = 0; i < marked.data.length; i++) peak = Math.max(peak, Math.abs(marked.data[i] - cover.data[i]));
    const gain = 0.5 / peak;
    show($('cv-marked'), marked);
    show($('cv-residual'), marked, (v, i) => 0.5 + gain * (v - cover.data[i]));
    $('psnr').textContent = wm.psnr(marked.data, cover.data).toFixed(1);
    $('gain').textContent = gain.toFixed(0);
    const png = await wm.encodePng(marked);
    const link = $('download');
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(png);
    state.message = bits;
    $('embedded-bits').textContent = bits.join('');
    $('embed-out').hidden = false; $('embed-links').hidden = false;
    document.body.dataset.embedded = String(Number(document.body.dataset.embedded || 0) + 1);
  } catch (e) {
    $('embed-error').textContent = e.message;
  }
}

async function doDetect(file) {
  $('detect-error').textContent = '';
  $('detect-out').hidden = true;
  try {
    const img = await wm.decodeImage(file);
    const r = await wm.detect(state.extractor, img);
    $('bits').textContent = r.bits.join('');
    $('mask').textContent = r.maskLogit.toFixed(3);
    let message = state.message;
    const typed = $('message').value.replace(/\s/g, '');
    if (!message && /^[01]+$/.test(typed) && typed.length === r.bits.length) message = Array.from(typed, Number);
    if (message) {
      const k = r.bits.reduce((s, b, i) => s + (b === message[i] ? 1 : 0), 0), p = wm.binomialPValue(k, r.bits.length);
      $('accuracy').textContent = `${k}/${r.bits.length} (${(100 * k / r.bits.length).toFixed(1)}%)`;
      $('pvalue').textContent = p.toExponential(2);
      const found = p < DETECT_PVALUE;
      $('verdict').textContent = found ? 'Watermark detected' : 'Watermark not detected';
      $('verdict').className = 'verdict ' + (found ? 'yes' : 'no');
    } else {
      $('accuracy').textContent = '-'; $('pvalue').textContent = '-';
      $('verdict').textContent = 'Enter the embedded message above to test for it';
      $('verdict').className = 'verdict';
    }
    $('detect-out').hidden = false;
    document.body.dataset.detected = String(Number(document.body.dataset.detected || 0) + 1);
  } catch (e) {
    $('detect-error').textContent = e.message;
    document.body.dataset.detectError = String(Number(document.body.dataset.detectError || 0) + 1);
  }
}

function dropZone(zone, input, onFile) {
  input.addEventListener('change', () => input.files[0] && onFile(input.files[0]));
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
window.videoseal = wm;  // web-check drives the golden-vector run through this
start();
