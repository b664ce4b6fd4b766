// make web-check's browser side: open the page in one headless browser, run every file of the bundle on its
// golden vectors (window.videoseal.goldenRun) on each backend the page uses (WASM, and WebGPU where the browser
// has an adapter), then use the page as a person would: choose a photo, embed a message, download the
// watermarked PNG, detect it again, detect the unmarked photo, and give it a non-image.
// Usage: node check.mjs chromium|firefox BROWSER_BINARY BASE_URL OUT.json PHOTO NOT_AN_IMAGE MESSAGE BACKENDS [EXTRA_URL...]
// (BACKENDS: wasm,webgpu or wasm)
// Writes OUT.json (raw outputs and what the page showed); web/check.py judges them.
import fs from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const [name, exe, base, outFile, photo, notImage, message, backends, ...extra] = process.argv.slice(2);
// The photo cases ({name: path}) and where the page's screenshots go, from web/check.py.
const cases = JSON.parse(process.env.VIDEOSEAL_WEB_CASES || '{}'), shots = process.env.VIDEOSEAL_WEB_SHOTS || '';
const t0 = Date.now();
const SKIP = Symbol('skip');  // the page's end-to-end steps do not apply to this bundle (it has no embedder)
const browser = await puppeteer.launch({
  browser: name === 'firefox' ? 'firefox' : 'chrome',
  executablePath: exe,
  headless: true,
  // Chromium's software WebGPU adapter (SwiftShader over Vulkan, libvk_swiftshader.so of the unpacked tree):
  // the page picks WebGPU whenever the browser has an adapter, so that backend is checked too.
  args: name === 'firefox' ? [] : ['--no-sandbox', '--disable-dev-shm-usage', '--enable-unsafe-webgpu',
    '--use-webgpu-adapter=swiftshader', '--enable-features=Vulkan'],
  protocolTimeout: 900000,
  env: process.env,
});
const result = {browser: name, version: await browser.version(), console_errors: [], e2e: {}};
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(300000);
  page.on('console', (m) => { if (m.type() === 'error') result.console_errors.push(m.text()); });
  page.on('pageerror', (e) => result.console_errors.push(String((e && e.message) || e)));
  await page.goto(`${base}/?accelerator=wasm`, {waitUntil: 'load'});
  await page.waitForFunction(() => document.body.dataset.ready === '1' || document.getElementById('status').className === 'error');
  result.status = await page.$eval('#status', (e) => e.textContent);
  if (!result.status.startsWith('ready')) throw new Error(`the page did not load: ${result.status}`);
  result.golden = await page.evaluate((urls) => window.videoseal.goldenRun('/bundle', urls), extra);
  result.backends = {wasm: result.golden};
  if (result.golden.webgpu && backends.split(',').includes('webgpu')) {
    try {
      result.backends.webgpu = await page.evaluate(() => window.videoseal.goldenRun('/bundle', [], 1, 'webgpu'));  // software: one timed run
    } catch (e) {
      result.backends.webgpu = {error: String(e.message || e)};
    }
  }

  const e2e = result.e2e;
  if (!Object.keys(result.golden.embedder || {}).length) {
    e2e.skipped = 'the bundle has no embedder: the page cannot embed';
    throw SKIP;
  }
  const count = (key) => page.evaluate((k) => Number(document.body.dataset[k] || 0), key);
  const until = (key, n) => page.waitForFunction((k, v) => Number(document.body.dataset[k] || 0) >= v, {}, key, n);
  await (await page.$('#embed-file')).uploadFile(photo);
  await until('covers', 1);
  await page.type('#message', message);
  await page.click('#embed-btn');
  await until('embedded', 1);
  if (shots) await page.screenshot({path: path.join(shots, `page-${name}-embedded.png`), fullPage: true});
  e2e.embed_error = await page.$eval('#embed-error', (e) => e.textContent);
  e2e.psnr_db = Number(await page.$eval('#psnr', (e) => e.textContent));
  e2e.embedded_bits = await page.$eval('#embedded-bits', (e) => e.textContent);
  // The download link's bytes, exactly what "Download" saves (a blob: URL read inside the page).
  const b64 = await page.evaluate(async () => {
    const bytes = new Uint8Array(await (await fetch(document.getElementById('download').href)).arrayBuffer());
    let s = '';
    for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
    return btoa(s);
  });
  const saved = path.join(path.dirname(outFile), `watermarked-${name}.png`);
  fs.writeFileSync(saved, Buffer.from(b64, 'base64'));
  e2e.downloaded = saved;
  const read = async () => ({
    verdict: await page.$eval('#verdict', (e) => e.textContent),
    bits: await page.$eval('#bits', (e) => e.textContent),
    accuracy: await page.$eval('#accuracy', (e) => e.textContent),
    pvalue: Number(await page.$eval('#pvalue', (e) => e.textContent)),
    mask_logit: Number(await page.$eval('#mask', (e) => e.textContent)),
  });
  await (await page.$('#detect-file')).uploadFile(saved);
  await until('detected', 1);
  e2e.detect_downloaded = await read();
  e2e.extractor_file = await page.$eval('#ex-file', (e) => e.textContent);
  await (await page.$('#detect-file')).uploadFile(photo);
  await until('detected', 2);
  e2e.detect_unmarked = await read();
  // The same downloaded file again (the same file chosen twice is a new choice), then the message typed as hex: the
  // verdict follows the message in the box, without choosing the file again.
  await (await page.$('#detect-file')).uploadFile(saved);
  await until('detected', 3);
  const flipped = e2e.embedded_bits.replace(/^./, (c) => (parseInt(c, 16) ^ 15).toString(16));  // first 4 bits inverted
  await page.$eval('#message', (el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }, flipped.toUpperCase());
  e2e.detect_retyped = {typed: flipped, ...(await read()), against: await page.$eval('#against', (e) => e.textContent)};
  await page.$eval('#message', (el) => { el.value = 'not a message'; el.dispatchEvent(new Event('input')); });
  e2e.detect_bad_message = {...(await read()), against: await page.$eval('#against', (e) => e.textContent)};
  await (await page.$('#detect-file')).uploadFile(notImage);
  await until('detectError', 1);
  e2e.not_an_image = await page.$eval('#detect-error', (e) => e.textContent);
  if (shots) await page.screenshot({path: path.join(shots, `page-${name}-detected.png`), fullPage: true});
  // A phone's width: nothing may run off the side (the page's width stays the screen's).
  const vp = page.viewport();
  try {
    await page.setViewport({width: 390, height: 844});
    e2e.width_at_390 = await page.evaluate(() => document.documentElement.scrollWidth);
    if (shots) await page.screenshot({path: path.join(shots, `page-${name}-390px.png`), fullPage: true});
    await page.setViewport(vp);
  } catch (err) {  // Firefox's WebDriver BiDi has no viewport emulation here: measured in Chromium only
    e2e.width_at_390_not_measured = String(err.message || err).split('\n')[0];
  }
  // The photos people bring (web/check.py makes them): each embedded with a random message and downloaded, while the
  // page's own thread is timed (the longest gap between 20 ms ticks: a frozen page shows a long one).
  await page.$eval('#message', (el) => { el.value = ''; el.dispatchEvent(new Event('input')); });
  e2e.cases = {};
  for (const [caseName, file] of Object.entries(cases)) {
    const c = {}, covers = await count('covers');  // counted before the upload: a small photo is taken at once
    await (await page.$('#embed-file')).uploadFile(file);
    await until('covers', covers + 1);
    await page.evaluate(() => {
      window.__gap = 0; window.__last = performance.now();
      window.__tick = setInterval(() => { const t = performance.now(); window.__gap = Math.max(window.__gap, t - window.__last); window.__last = t; }, 20);
    });
    const before = await count('embedded');
    await page.click('#embed-btn');
    c.disabled_while_working = await page.$eval('#embed-btn', (e) => e.disabled);
    await page.waitForFunction(() => document.getElementById('embed-progress').textContent.length > 0);
    c.progress_while_working = await page.$eval('#embed-progress', (e) => e.textContent);
    await page.waitForFunction((v) => Number(document.body.dataset.embedded || 0) > v || document.getElementById('embed-error').textContent, {}, before);
    c.max_gap_ms = await page.evaluate(() => { clearInterval(window.__tick); return window.__gap; });
    c.embed_error = await page.$eval('#embed-error', (e) => e.textContent);
    c.progress_done = await page.$eval('#embed-progress', (e) => e.textContent);
    c.download_name = await page.$eval('#download', (e) => e.download);
    c.download_info = await page.$eval('#download-info', (e) => e.textContent);
    if (!c.embed_error) {
      const b64c = await page.evaluate(async () => {
        const bytes = new Uint8Array(await (await fetch(document.getElementById('download').href)).arrayBuffer());
        let s = '';
        for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
        return btoa(s);
      });
      c.file = path.join(path.dirname(outFile), `case-${caseName}-${name}-${c.download_name}`);
      fs.writeFileSync(c.file, Buffer.from(b64c, 'base64'));
    }
    e2e.cases[caseName] = c;
  }
} catch (e) {
  if (e !== SKIP) result.error = String(e.message || e);
} finally {
  result.seconds = (Date.now() - t0) / 1000;
  fs.writeFileSync(outFile, JSON.stringify(result));
  await browser.close();
}
